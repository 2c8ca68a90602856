"""The official ElevenLabs Python SDK holds conversations with the simulator, unpatched.

The SDK is threaded (its own socket thread, our feeder thread), so the simulator runs on its own
loop in a SimulatorThread. The SDK always speaks 16 kHz PCM (reference 7), the default formats.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pi_agent.core.audio import formats
from pi_agent.simulator import SimulatorOptions, SimulatorThread

with warnings.catch_warnings():
    # The SDK names websockets' deprecated legacy classes at import time; not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import (
        AudioInterface,
        Conversation,
        ConversationInitiationData,
    )
    from elevenlabs.version import __version__ as sdk_version

Int16Array = npt.NDArray[np.int16]

RATE = 16_000  # the SDK's fixed rate
CHUNK = 4000  # the SDK's input buffer: 250 ms at 16 kHz (reference 7)
CHUNK_S = CHUNK / RATE  # fed in real time, as a microphone would
WAIT_S = 15.0  # bound on each wait for the SDK's threads; a reply normally takes ~2 s
AGENT_ID = "agent_sdk"


def speech_like(seconds: float) -> Int16Array:
    """A voiced, syllable-modulated harmonic tone: louder than the VAD threshold all through."""
    t = np.arange(round(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 150.0 * k * t) / k for k in range(1, 6))
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 4.0 * t)  # ~4 syllables a second
    return formats.from_float(0.12 * voice * envelope)


class FeedingInterface(AudioInterface):
    """Feeds speech then silence in 250 ms chunks from a thread; collects what the SDK plays."""

    def __init__(self, speech: Int16Array) -> None:
        self.speech = speech
        self.played: list[bytes] = []
        self.interruptions = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, input_callback: Callable[[bytes], None]) -> None:
        self._thread = threading.Thread(target=self._feed, args=(input_callback,), daemon=True)
        self._thread.start()

    def _feed(self, input_callback: Callable[[bytes], None]) -> None:
        position = 0
        while not self._stop.is_set():
            chunk = self.speech[position : position + CHUNK]
            chunk = np.concatenate((chunk, np.zeros(CHUNK - chunk.size, dtype=np.int16)))
            input_callback(chunk.astype("<i2").tobytes())
            position += CHUNK
            self._stop.wait(CHUNK_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(WAIT_S)

    def output(self, audio: bytes) -> None:
        with self._lock:
            self.played.append(audio)

    def interrupt(self) -> None:
        self.interruptions += 1

    def played_bytes(self) -> bytes:
        with self._lock:
            return b"".join(self.played)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition the SDK's threads make true; fail after WAIT_S."""
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def end(conversation: Any) -> str | None:
    """end_session, then wait_for_session_end, bounded (it joins the SDK's thread)."""
    conversation.end_session()
    result: list[str | None] = []
    waiter = threading.Thread(target=lambda: result.append(conversation.wait_for_session_end()))
    waiter.start()
    waiter.join(WAIT_S)
    assert result, "wait_for_session_end did not return"
    return result[0]


def test_sdk_holds_a_conversation_with_the_echo_agent() -> None:
    speech = speech_like(1.0)
    options = SimulatorOptions(agent_ids=frozenset({AGENT_ID}), ping_interval_s=0.5)
    with SimulatorThread(options) as st:
        client = ElevenLabs(base_url=st.http_url, api_key="test")
        audio = FeedingInterface(speech)
        responses: list[str] = []
        transcripts: list[str] = []
        latencies: list[int] = []
        conversation: Any = Conversation(
            client,
            AGENT_ID,
            "pi-test-user",
            requires_auth=False,
            audio_interface=audio,
            config=ConversationInitiationData(dynamic_variables={"room": "lab"}),
            callback_agent_response=responses.append,
            callback_user_transcript=transcripts.append,
            callback_latency_measurement=latencies.append,  # reads ping_ms of every ping
        )
        conversation.start_session()
        try:
            record = st.run(st.sim.next_conversation(WAIT_S), WAIT_S)
            st.run(record.wait_until(lambda: bool(record.agent_turns), WAIT_S), WAIT_S + 1)
            reply = record.agent_turns[0]
            wait_for(lambda: bool(responses), "the agent_response callback")
            wait_for(lambda: len(audio.played_bytes()) >= len(reply.audio), "the reply's audio")
        finally:
            conversation_id = end(conversation)
        st.run(record.wait_ended(WAIT_S), WAIT_S + 1)

    # What the simulator saw from the SDK.
    assert record.init is not None and not record.implicit_init
    assert record.init.source_info == {"source": "python_sdk", "version": sdk_version}
    assert (
        record.init.dynamic_variables == {"room": "lab"} and record.init.user_id == "pi-test-user"
    )
    assert record.query["source"] == "python_sdk"
    assert np.array_equal(record.user_audio()[: speech.size], speech)
    assert record.rtts_ms and not record.violations and not record.protocol_errors
    assert all(isinstance(ms, int) for ms in latencies)
    assert (record.closed_by, record.close_code) == ("client", 1000)
    assert conversation_id == record.conversation_id

    # What the SDK got: the agent's audio, bit for bit, which is the user's own speech.
    assert transcripts == ["(1.00 seconds of speech)"]
    assert responses == [reply.agent_response]
    assert reply.chunks_sent == reply.chunks_total and not reply.interrupted
    played = audio.played_bytes()
    assert played == reply.audio
    assert np.array_equal(formats.decode(played, formats.parse_format("pcm_16000")), speech)
    assert audio.interruptions == 0


def test_sdk_fetches_a_signed_url_for_a_private_agent() -> None:
    options = SimulatorOptions(
        api_keys=frozenset({"sk-test"}), first_message="Hello from the simulator", ping_interval_s=0
    )
    with SimulatorThread(options) as st:
        client = ElevenLabs(base_url=st.http_url, api_key="sk-test")
        responses: list[str] = []
        audio = FeedingInterface(np.zeros(0, dtype=np.int16))
        conversation: Any = Conversation(
            client,
            AGENT_ID,
            requires_auth=True,
            audio_interface=audio,
            callback_agent_response=responses.append,
        )
        conversation.start_session()
        try:
            wait_for(lambda: bool(responses), "the greeting")
            record = st.run(st.sim.next_conversation(WAIT_S), WAIT_S)
        finally:
            conversation_id = end(conversation)
        st.run(record.wait_ended(WAIT_S), WAIT_S + 1)
    assert responses == ["Hello from the simulator"]
    assert record.query["conversation_signature"] == "***"
    assert conversation_id == record.conversation_id and record.closed_by == "client"
