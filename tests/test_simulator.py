"""The simulator against real websockets clients on 127.0.0.1, plus its pure echo-agent logic.

Every JSON message a client here receives is parsed with the protocol module and, when the 2025
vendor contract describes its type, validated against it (see tests/beds/asyncapi.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from pi_agent.core import protocol
from pi_agent.core.audio import formats
from pi_agent.errors import ScenarioError
from pi_agent.simulator import (
    Close,
    Echo,
    Scenario,
    Send,
    SendAudio,
    SendMetadata,
    SendPing,
    SendRaw,
    Simulator,
    SimulatorOptions,
    SimulatorThread,
    Wait,
    WaitFor,
    add_arguments,
    load_scenario,
    main,
    run_from_args,
)
from pi_agent.simulator import agent as echo
from pi_agent.simulator.server import NOT_AUTHORIZED, UNKNOWN_AGENT, WS_PATH
from tests.beds import asyncapi
from tests.helpers import run

T = TypeVar("T")
Int16Array = npt.NDArray[np.int16]
JSON = dict[str, Any]

STEP_S = 5.0  # bound on every single await; loopback answers in milliseconds
TEST_S = 30.0  # bound on one test's whole event loop
MAX_FRAME = 16 * 1024 * 1024
PCM16 = formats.parse_format("pcm_16000")
QUIET = SimulatorOptions(ping_interval_s=0.0, speak_rate=0.0)  # no pings, replies in one burst


def quiet(**changes: Any) -> SimulatorOptions:
    """QUIET with some options changed."""
    return dataclasses.replace(QUIET, **changes)


def turn(rate: int, tone_s: float = 1.0, silence_s: float = 1.0, hz: float = 440.0) -> Int16Array:
    """A user turn: a tone at -20 dBFS, then silence long enough to end the turn."""
    silence = np.zeros(round(silence_s * rate), dtype=np.int16)
    return np.concatenate((echo.tone(hz, tone_s, rate, -20.0), silence))


def dominant_hz(samples: Int16Array, rate: int) -> float:
    """Frequency of the strongest spectral peak."""
    x = samples.astype(np.float64) * np.hanning(samples.size)
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * rate / samples.size


class Client:
    """A websockets client that checks every server message against protocol and contract."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[JSON] = []

    async def send(self, message: protocol.Message | protocol.UserAudioChunk | JSON) -> None:
        await self.ws.send(
            protocol.encode(message.to_wire() if not isinstance(message, dict) else message)
        )

    async def send_audio(self, samples: Int16Array, fmt: formats.AudioFormat = PCM16) -> None:
        """Stream samples as 20 ms user_audio_chunk frames, as fast as the socket takes them."""
        step = fmt.samples_for_ms(20)
        for start in range(0, samples.size, step):
            data = formats.encode(samples[start : start + step], fmt)
            await self.ws.send(protocol.encode_audio_chunk(data))

    async def recv(self) -> JSON:
        frame = await asyncio.wait_for(self.ws.recv(), STEP_S)
        assert isinstance(frame, str), "the simulator sent a binary frame"
        data: JSON = json.loads(frame)
        parsed = protocol.parse_server_message(frame)
        assert not isinstance(parsed, protocol.MalformedFrame), parsed
        if asyncapi.covered_by_contract(data["type"]):
            asyncapi.validate_server_message(_as_2025(data))
        self.seen.append(data)
        return data

    async def expect(self, kind: str, *, pong: bool = True) -> JSON:
        """Receive until a message of `kind`, answering pings on the way."""
        while True:
            data = await self.recv()
            if data["type"] == kind:
                return data
            if data["type"] == "ping" and pong:
                await self.send(protocol.Pong(data["ping_event"]["event_id"]))

    async def start(self) -> JSON:
        """Send an empty init and return the metadata event."""
        await self.send(protocol.ConversationInitiationClientData())
        meta = await self.expect("conversation_initiation_metadata")
        return dict(meta["conversation_initiation_metadata_event"])

    async def closed(self) -> tuple[int | None, str | None]:
        """Wait for the server's close; its code and reason."""
        await asyncio.wait_for(self.ws.wait_closed(), STEP_S)
        return self.ws.close_code, self.ws.close_reason


def _as_2025(data: JSON) -> JSON:
    """The 2026 contract (reference S1) allows ping_ms null; the 2025 snapshot says integer."""
    ping = data.get("ping_event")
    if isinstance(ping, dict) and "ping_ms" in ping and ping["ping_ms"] is None:
        return {**data, "ping_event": {k: v for k, v in ping.items() if k != "ping_ms"}}
    return data


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[Client]:
    async with connect(url, compression=None, max_size=MAX_FRAME, open_timeout=STEP_S) as ws:
        yield Client(ws)


def audio_of(
    messages: list[JSON], fmt: formats.AudioFormat, event_id: int | None = None
) -> Int16Array:
    chunks = [
        base64.b64decode(m["audio_event"]["audio_base_64"])
        for m in messages
        if m["type"] == "audio" and (event_id is None or m["audio_event"]["event_id"] == event_id)
    ]
    return formats.decode(b"".join(chunks), fmt)


async def collect_reply(c: Client, fmt: formats.AudioFormat, seconds: float) -> list[JSON]:
    """Messages until `seconds` of reply audio arrived."""
    start = len(c.seen)
    while (
        audio_of(c.seen[start:], fmt).size
        < round(seconds * fmt.sample_rate) - fmt.sample_rate // 50
    ):
        await c.expect("audio")
    return c.seen[start:]


def http_get(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"xi-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=STEP_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ------------------------------------------------------------------------ start, refusals


def test_metadata_follows_init_with_configured_formats() -> None:
    async def body() -> None:
        options = quiet(input_format="pcm_22050", output_format="ulaw_8000")
        async with Simulator(options) as sim:
            init = protocol.ConversationInitiationClientData(
                conversation_config_override={"agent": {"language": "en"}},
                dynamic_variables={"room": "kitchen", "floor": 2},
                user_id="device-1",
                source_info={"source": "unknown", "version": "test"},
            )
            async with client(sim.conversation_url("agent_1", source="test")) as c:
                await c.send(init)
                first = await c.recv()
            assert first["type"] == "conversation_initiation_metadata"
            meta = first["conversation_initiation_metadata_event"]
            assert meta["user_input_audio_format"] == "pcm_22050"
            assert meta["agent_output_audio_format"] == "ulaw_8000"
            assert meta["conversation_id"].startswith("conv_")
            record = await sim.next_conversation(STEP_S)
            await record.wait_ended(STEP_S)
            assert record.init == init and not record.implicit_init
            assert record.agent_id == "agent_1" and record.query["source"] == "test"
            assert record.conversation_id == meta["conversation_id"]
            assert record.sent[0].type == "conversation_initiation_metadata"
            assert (record.closed_by, record.close_code) == ("client", 1000)

    run(body())


def test_audio_first_is_an_implicit_init_and_silence_gets_metadata_anyway() -> None:
    async def body() -> None:
        options = quiet(first_message_timeout_s=0.2)
        async with Simulator(options) as sim:
            async with client(sim.conversation_url()) as c:
                await c.send_audio(np.zeros(320, dtype=np.int16))
                assert (await c.recv())["type"] == "conversation_initiation_metadata"
            async with client(sim.conversation_url()) as c:  # sends nothing at all
                assert (await c.recv())["type"] == "conversation_initiation_metadata"
            first, second = sim.conversations
            await first.wait_ended(STEP_S)
            assert first.implicit_init and first.init is None
            assert first.user_audio().size == 320
            assert second.init is None and not second.implicit_init

    run(body())


@pytest.mark.parametrize(
    ("url_agent", "error_type", "message"),
    [("nobody", "invalid_message", UNKNOWN_AGENT), (None, "missing_fields", "agent_id")],
)
def test_unknown_or_missing_agent_gets_error_event_and_close_1008(
    url_agent: str | None, error_type: str, message: str
) -> None:
    async def body() -> None:
        async with Simulator(quiet(agent_ids=frozenset({"agent_1"}))) as sim:
            url = sim.conversation_url(url_agent) if url_agent else sim.url + WS_PATH
            async with client(url) as c:
                error = (await c.recv())["error_event"]
                code, reason = await c.closed()
            assert error["code"] == 1008 and error["error_type"] == error_type
            assert message in error["message"]
            assert code == 1008 and reason is not None and message in reason
            record = sim.conversations[0]
            await record.wait_ended(STEP_S)
            assert (record.closed_by, record.close_code) == ("server", 1008)
            assert record.sent_types() == ["error"]

    run(body())


def test_override_not_allowed_is_an_override_error() -> None:
    async def body() -> None:
        options = quiet(allowed_overrides=frozenset({"agent.language", "tts"}))
        async with Simulator(options) as sim:
            allowed = {"agent": {"language": "de"}, "tts": {"voice_id": "v"}}
            async with client(sim.conversation_url()) as c:
                await c.send(protocol.ConversationInitiationClientData(allowed))
                assert (await c.recv())["type"] == "conversation_initiation_metadata"
            forbidden = {"agent": {"prompt": {"prompt": "Be evil."}}}
            async with client(sim.conversation_url()) as c:
                await c.send(protocol.ConversationInitiationClientData(forbidden))
                error = (await c.recv())["error_event"]
                code, reason = await c.closed()
            assert (
                error["error_type"] == "override_error"
                and "agent.prompt.prompt" in error["message"]
            )
            assert code == 1008 and reason == error["message"]

    run(body())


def test_other_paths_are_404_before_upgrade() -> None:
    async def body() -> None:
        async with Simulator(QUIET) as sim:
            with pytest.raises(InvalidStatus) as info:
                async with client(sim.url + "/v1/other?agent_id=a"):
                    pass
            assert info.value.response.status_code == 404
            status, data = await asyncio.to_thread(http_get, sim.http_url + "/v1/voices")
            assert (status, data) == (404, {"detail": "Not Found"})

    run(body())


# ------------------------------------------------------------------------ signed URLs


def test_signed_url_flow(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> str:
        options = quiet(agent_ids=frozenset({"agent_1"}), api_keys=frozenset({"key-1"}))
        async with Simulator(options) as sim:
            base = sim.http_url + "/v1/convai/conversation/get-signed-url"
            get = asyncio.to_thread
            for key in (None, "wrong"):
                status, data = await get(http_get, base + "?agent_id=agent_1", key)
                assert status == 401
                assert data == {
                    "detail": {"status": "invalid_api_key", "message": "Invalid API key"}
                }
            assert (await get(http_get, base + "?agent_id=other", "key-1"))[0] == 404
            assert (await get(http_get, base, "key-1"))[0] == 422
            old = sim.http_url + "/v1/convai/conversation/get_signed_url?agent_id=agent_1"
            assert (await get(http_get, old, "key-1"))[0] == 200  # deprecated spelling still works
            status, data = await get(http_get, base + "?agent_id=agent_1", "key-1")
            assert status == 200
            signed = data["signed_url"]
            assert signed.startswith(
                sim.url + WS_PATH + "?agent_id=agent_1&conversation_signature="
            )
            token: str = signed.rsplit("=", 1)[1]

            async with client(sim.conversation_url("agent_1")) as c:  # no token
                assert (await c.recv())["error_event"]["message"] == NOT_AUTHORIZED
                assert await c.closed() == (1008, NOT_AUTHORIZED)
            async with client(signed + "&source=python_sdk&version=2") as c:  # as the SDK does
                await c.start()
            async with client(signed) as c:  # single use
                assert (await c.recv())["type"] == "error"
                assert (await c.closed())[0] == 1008
            other = sim.conversation_url("agent_1", conversation_signature="made-up")
            async with client(other) as c:
                assert (await c.recv())["type"] == "error"
            assert sim.conversations[1].query["conversation_signature"] == "***"
            return token

    token = run(body())
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pi_agent")]
    assert ours and not any(token in line or "key-1" in line for line in ours)


def test_expired_or_foreign_token_is_refused() -> None:
    async def body() -> None:
        options = quiet(api_keys=frozenset({"k"}), token_ttl_s=0.0)
        async with Simulator(options) as sim:
            token = sim.issue_token("agent_1")
            async with client(sim.conversation_url("agent_1", conversation_signature=token)) as c:
                assert (await c.recv())["error_event"]["message"] == NOT_AUTHORIZED
        options = quiet(api_keys=frozenset({"k"}))
        async with Simulator(options) as sim:
            token = sim.issue_token("agent_1")
            async with client(sim.conversation_url("agent_2", token=token)) as c:
                assert (await c.recv())["error_event"]["message"] == NOT_AUTHORIZED

    run(body())


# ------------------------------------------------------------------------ pings


def test_ping_pong_round_trips_are_recorded() -> None:
    async def body() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0.05)) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                pings = [(await c.expect("ping", pong=False))["ping_event"] for _ in range(3)]
                for ping in pings:
                    await c.send(protocol.Pong(ping["event_id"]))
                await c.send(protocol.Pong(999))
                later = (await c.expect("ping", pong=False))["ping_event"]
                record = sim.conversations[0]
                await record.wait_until(lambda: len(record.violations) == 1, STEP_S)
            ids = [p["event_id"] for p in [*pings, later]]
            assert ids == sorted(ids) and len(set(ids)) == 4
            assert pings[0].get("ping_ms") is None  # nothing measured yet
            assert isinstance(later["ping_ms"], int) and later["ping_ms"] >= 0
            assert len(record.rtts_ms) == 3 and all(0 <= rtt < 5000 for rtt in record.rtts_ms)
            assert record.violations == ["pong for unknown ping event_id 999"]

    run(body())


# ------------------------------------------------------------------------ echo agent


def test_echo_turn_returns_the_users_audio() -> None:
    async def body() -> None:
        async with Simulator(QUIET) as sim:
            sent = turn(16000)
            async with client(sim.conversation_url()) as c:
                await c.start()
                await c.send_audio(sent)
                reply = await collect_reply(c, PCM16, 1.0)
            kinds = [m["type"] for m in c.seen]
            assert "vad_score" in kinds and "tentative_user_transcript" in kinds
            assert (
                kinds.index("user_transcript")
                < kinds.index("agent_response")
                < kinds.index("audio")
            )
            transcript = next(m for m in c.seen if m["type"] == "user_transcript")
            assert transcript["user_transcription_event"] == {
                "user_transcript": "(1.00 seconds of speech)",
                "event_id": 1,
            }
            response = next(m for m in c.seen if m["type"] == "agent_response")
            assert response["agent_response_event"]["event_id"] == 1
            assert "1.0 seconds" in response["agent_response_event"]["agent_response"]
            got = audio_of(reply, PCM16)
            assert np.array_equal(got, sent[:16000])
            assert {m["audio_event"]["event_id"] for m in reply if m["type"] == "audio"} == {1}
            scores = [m["vad_score_event"]["vad_score"] for m in c.seen if m["type"] == "vad_score"]
            assert max(scores) > 0.9 and scores[-1] < 0.1
            record = sim.conversations[0]
            assert np.array_equal(record.user_audio(), sent)
            assert formats.decode(record.agent_turns[0].audio, PCM16).tobytes() == got.tobytes()

    run(body())


@pytest.mark.parametrize(
    ("input_name", "output_name"),
    [("pcm_16000", "pcm_44100"), ("ulaw_8000", "ulaw_8000"), ("pcm_22050", "pcm_8000")],
)
def test_echo_turn_in_other_formats(input_name: str, output_name: str) -> None:
    async def body() -> None:
        fin, fout = formats.parse_format(input_name), formats.parse_format(output_name)
        options = quiet(input_format=input_name, output_format=output_name)
        async with Simulator(options) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                await c.send_audio(turn(fin.sample_rate), fin)
                reply = await collect_reply(c, fout, 1.0)
            got = audio_of(reply, fout)
            assert abs(got.size / fout.sample_rate - 1.0) < 0.03
            assert abs(dominant_hz(got, fout.sample_rate) - 440.0) < 5.0
            assert abs(formats.rms_dbfs(got) - -20.0) < 1.5

    run(body())


def test_barge_in_interrupts_with_the_new_turn_id_then_corrects() -> None:
    async def body() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0.0, speak_rate=1.0)) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                await c.send_audio(turn(16000, silence_s=0.6))
                await c.expect("audio")
                await asyncio.sleep(0.4)  # part of the reply has played
                await c.send_audio(turn(16000, tone_s=0.3, silence_s=0.6, hz=660.0))
                interruption = await c.expect("interruption")
                correction = await c.expect("agent_response_correction")
                await collect_reply(c, PCM16, 0.3)
            seen = c.seen
            cut = seen.index(interruption)
            first_reply = [m["audio_event"]["event_id"] for m in seen[:cut] if m["type"] == "audio"]
            assert interruption["interruption_event"]["event_id"] == 2 > max(first_reply) == 1
            assert 1 <= len(first_reply) < 4  # the rest of the 1 s reply was never sent
            later = [m["audio_event"]["event_id"] for m in seen[cut:] if m["type"] == "audio"]
            assert later and set(later) == {2}
            event = correction["agent_response_correction_event"]
            original = next(m for m in seen if m["type"] == "agent_response")
            assert (
                event["original_agent_response"]
                == original["agent_response_event"]["agent_response"]
            )
            corrected = event["corrected_agent_response"]
            assert corrected and event["original_agent_response"].startswith(corrected)
            assert len(corrected) < len(event["original_agent_response"])
            assert event["event_id"] == 1
            after = [m["type"] for m in seen[cut:]]
            assert after.index("user_transcript") < after.index("agent_response")
            assert after.index("agent_response") < after.index("audio")
            turns = sim.conversations[0].agent_turns
            assert turns[0].interrupted and turns[0].chunks_sent < turns[0].chunks_total
            assert turns[0].corrected_response == corrected and not turns[1].interrupted

    run(body())


def test_first_message_greets_and_init_override_replaces_it() -> None:
    async def body() -> None:
        async with Simulator(quiet(first_message="Hello!")) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                response = await c.expect("agent_response")
                assert response["agent_response_event"] == {
                    "agent_response": "Hello!",
                    "event_id": 1,
                }
                assert (await c.expect("audio"))["audio_event"]["event_id"] == 1
            async with client(sim.conversation_url()) as c:
                override = {"agent": {"first_message": "Hi from the init"}}
                await c.send(protocol.ConversationInitiationClientData(override))
                response = await c.expect("agent_response")
                assert response["agent_response_event"]["agent_response"] == "Hi from the init"
            async with client(sim.conversation_url()) as c:  # '' = wait for the user
                await c.send(
                    protocol.ConversationInitiationClientData({"agent": {"first_message": ""}})
                )
                await c.expect("conversation_initiation_metadata")
                await c.send(protocol.UserMessage("typed"))
                response = await c.expect("agent_response")
                assert "typed" in response["agent_response_event"]["agent_response"]
            assert len(sim.conversations[2].agent_turns) == 1

    run(body())


# ------------------------------------------------------------------------ invalid client input


def test_invalid_client_messages_are_tolerated_and_recorded() -> None:
    async def body() -> None:
        async with Simulator(QUIET) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                await c.ws.send("{not json")
                await c.ws.send(b"\x00\x01")
                await c.ws.send('{"type": "brand_new", "x": 1}')
                await c.ws.send('{"type": "pong"}')
                await c.send(protocol.UserMessage("still there?"))
                await c.expect("agent_response")
            record = sim.conversations[0]
            assert len(record.protocol_errors) == 3 and record.unknown_types == ["brand_new"]
            assert [e.type for e in record.received][1:4] == ["protocol_error"] * 2 + ["brand_new"]

    run(body())


def test_strict_mode_closes_on_invalid_message() -> None:
    async def body() -> None:
        async with Simulator(quiet(strict=True)) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                await c.ws.send("{not json")
                error = (await c.expect("error"))["error_event"]
                code, _ = await c.closed()
            assert error["error_type"] == "invalid_message" and code == 1008

    run(body())


def test_close_ends_conversations_quickly() -> None:
    async def body() -> None:
        sim = await Simulator(QUIET).start()
        async with client(sim.conversation_url()) as c:
            await c.start()
            loop = asyncio.get_running_loop()
            began = loop.time()
            await sim.close()
            assert (await c.closed())[0] == 1001
            assert loop.time() - began < 2.0
        assert sim.conversations[0].ended
        await sim.close()  # idempotent

    run(body())


# ------------------------------------------------------------------------ scenarios


def test_scenario_steps_send_exactly_what_they_say() -> None:
    scenario = Scenario(
        (
            Send(protocol.Ping(42)),
            WaitFor("pong", timeout_s=STEP_S),
            Send({"type": "agent_response", "agent_response_event": {"agent_response": "dict"}}),
            SendRaw('{"type":"made_up","x":1}'),
            SendRaw(b"\x00\x01\x02"),
            SendAudio(duration_s=0.5, tone_hz=500.0, event_id=7, chunk_ms=100, paced=False),
            SendPing(),
            WaitFor("user_message", timeout_s=STEP_S),
            Wait(0.01),
            Close(4001, "scripted close"),
        )
    )

    async def body() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0.0)) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                assert (await c.expect("ping", pong=False))["ping_event"]["event_id"] == 42
                await c.send(protocol.Pong(42))
                assert (await c.recv())["agent_response_event"]["agent_response"] == "dict"
                assert (await c.recv()) == {"type": "made_up", "x": 1}
                assert await asyncio.wait_for(c.ws.recv(), STEP_S) == b"\x00\x01\x02"
                audio = [await c.recv() for _ in range(5)]
                scripted = await c.expect("ping", pong=False)
                await c.send(protocol.Pong(scripted["ping_event"]["event_id"]))
                await c.send(protocol.UserMessage("go on"))
                code, reason = await c.closed()
            assert (code, reason) == (4001, "scripted close")
            samples = audio_of(audio, PCM16, event_id=7)
            assert samples.size == 8000 and abs(dominant_hz(samples, 16000) - 500.0) < 5.0
            record = sim.conversations[0]
            await record.wait_ended(STEP_S)
            assert record.scenario_error is None and record.closed_by == "server"
            assert record.sent_types().count("raw") == 2
            assert record.rtts_ms  # the scripted ping was timed like the periodic ones

    run(body())


def test_scenario_can_replace_metadata_and_fails_on_missing_message() -> None:
    scenario = Scenario(
        (SendRaw("hello"), SendMetadata(conversation_id="conv_x"), WaitFor("feedback", 0.1)),
        send_metadata=False,
    )

    async def body() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0.0)) as sim:
            async with client(sim.conversation_url()) as c:
                await c.send(protocol.ConversationInitiationClientData())
                assert await asyncio.wait_for(c.ws.recv(), STEP_S) == "hello"
                meta = await c.recv()
                assert meta["conversation_initiation_metadata_event"]["conversation_id"] == "conv_x"
                code, reason = await c.closed()
            assert code == 1011 and reason is not None and "feedback" in reason
            await sim.conversations[0].wait_ended(STEP_S)
            assert sim.conversations[0].scenario_error == reason

    run(body())


def test_scenario_echo_step_hands_over_to_the_agent() -> None:
    scenario = Scenario((Send(protocol.AgentResponse("scripted", 1)), Echo()))

    async def body() -> None:
        options = quiet(scenario=scenario, first_message="greeting")
        async with Simulator(options) as sim:
            async with client(sim.conversation_url()) as c:
                await c.start()
                first = await c.expect("agent_response")
                second = await c.expect("agent_response")
                assert first["agent_response_event"]["agent_response"] == "scripted"
                assert second["agent_response_event"]["agent_response"] == "greeting"
                await c.send_audio(turn(16000, tone_s=0.2, silence_s=0.6))
                transcript = await c.expect("user_transcript")
            assert transcript["user_transcription_event"]["event_id"] == 2
            assert len(sim.conversations[0].agent_turns) == 2

    run(body())


def test_scenario_from_data_and_files(tmp_path: Path) -> None:
    data = [
        {"send": {"type": "ping", "ping_event": {"event_id": 1}}},
        {"wait_for": {"type": "pong", "timeout_s": 2}},
        {"send_raw": "text"},
        {"send_raw": {"base64": "AAEC"}},
        {"send_audio": {"duration_s": 0.2, "event_id": 3, "paced": False}},
        {"metadata": {"conversation_id": "conv_1"}},
        {"wait": 0.5},
        "ping",
        {"close": {"code": 4000, "reason": "bye"}},
    ]
    scenario = Scenario.from_data({"metadata": False, "steps": data})
    assert not scenario.send_metadata
    assert scenario.steps[1] == WaitFor("pong", 2.0)
    assert scenario.steps[3] == SendRaw(b"\x00\x01\x02")
    assert scenario.steps[-2:] == (SendPing(), Close(4000, "bye"))
    assert Scenario.from_data(["echo"]).steps == (Echo(),)
    (tmp_path / "s.yaml").write_text("- wait_for: pong\n- close: 1000\n")
    assert load_scenario(tmp_path / "s.yaml").steps == (WaitFor("pong"), Close(1000, ""))
    (tmp_path / "s.json").write_text(json.dumps(data))
    loaded = load_scenario(tmp_path / "s.json").steps
    assert [repr(step) for step in loaded] == [repr(step) for step in scenario.steps]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": [], "extra": 1}, "unknown scenario key"),
        ("wait", "list of steps"),
        ([{"dance": 1}], "step 1: unknown kind 'dance'"),
        ([{"wait": 1, "ping": None}], "one-key mapping"),
        ([{"send_audio": {"durations": 1}}], "unknown field(s) ['durations']"),
        ([{"wait": "soon"}], "seconds must be a number"),
        ([{"close": {"code": 1006}}], "reserved"),
        ([{"close": {"reason": "x" * 124}}], "123 bytes"),
        ([{"send_raw": {"base64": "!!"}}], "not valid base64"),
        ([{"wait_for": {"timeout_s": 1}}], "needs a message type"),
        (["echo", "ping"], "step 1 (echo) ends the scenario"),
        ([{"metadata": {"output_format": "mp3"}}], "is not one of"),
    ],
)
def test_bad_scenarios_are_named(data: object, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_data(data)
    assert message in str(info.value)


def test_bad_scenario_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml: not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")


# ------------------------------------------------------------------------ thread helper, CLI


def test_simulator_thread_serves_a_threaded_client() -> None:
    with SimulatorThread(QUIET) as st:
        with sync_connect(st.url + WS_PATH + "?agent_id=a", open_timeout=STEP_S) as ws:
            ws.send(protocol.encode(protocol.ConversationInitiationClientData()))
            assert json.loads(ws.recv(timeout=STEP_S))["type"] == "conversation_initiation_metadata"
        record = st.run(st.sim.next_conversation(STEP_S))
        st.run(record.wait_ended(STEP_S))
        assert record.closed_by == "client" and st.conversations == [record]


def test_options_are_validated() -> None:
    for bad in (
        {"output_format": "mp3_44100"},
        {"ping_interval_s": -1},
        {"speak_rate": 0.01},
        {"audio_chunk_ms": 0},
        {"api_keys": frozenset({""})},
    ):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            SimulatorOptions(**bad)


def test_cli_rejects_bad_options_with_64(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--output-format", "mp3"]) == 64
    assert "output_format 'mp3'" in capsys.readouterr().err
    assert main(["--port", "70000"]) == 64
    assert main(["--no-such-option"]) == 64
    assert main(["--scenario", str(tmp_path / "none.yaml")]) == 64
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run_from_args(parser.parse_args(["--ping-interval", "-2"])) == 64


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_signal(sig: signal.Signals) -> None:
    code = "import sys; from pi_agent.simulator import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--agent-id", "a1", "--ping-interval", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STEP_S)
        assert ready, "the simulator printed nothing"
        line = proc.stdout.readline()
        assert line.startswith("simulator listening on ws://127.0.0.1:")
        url = line.split()[-1]
        with sync_connect(url + WS_PATH + "?agent_id=a1", open_timeout=STEP_S) as ws:
            ws.send(protocol.encode(protocol.ConversationInitiationClientData()))
            assert json.loads(ws.recv(timeout=STEP_S))["type"] == "conversation_initiation_metadata"
            proc.send_signal(sig)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=STEP_S)
        assert proc.wait(timeout=STEP_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STEP_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# ------------------------------------------------------------------------ pure agent logic


def agent(speak_rate: float = 0.0) -> echo.EchoAgent:
    return echo.EchoAgent(
        echo.EchoConfig(PCM16, PCM16, 250, speak_rate, tentative_transcripts=False)
    )


def kinds(messages: list[protocol.Message]) -> list[str]:
    return [m.TYPE for m in messages if m.TYPE != "vad_score"]


def test_vad_ignores_clicks_and_short_pauses() -> None:
    a = agent()
    a.receive_audio(turn(16000, tone_s=0.04, silence_s=0.6), 0.0)  # 40 ms click
    assert kinds(a.poll(0.0)) == [] and a.last_event_id == 0
    speech = np.concatenate((turn(16000, 0.4, 0.3), turn(16000, 0.4, 0.6)))  # 300 ms pause
    a.receive_audio(speech, 1.0)
    out = a.poll(1.0)
    assert kinds(out)[:2] == ["user_transcript", "agent_response"]
    transcript = out[[m.TYPE for m in out].index("user_transcript")]
    assert isinstance(transcript, protocol.UserTranscript)
    assert transcript.user_transcript == "(1.10 seconds of speech)" and transcript.event_id == 1


def test_turn_ends_when_the_client_stops_streaming() -> None:
    a = agent()
    a.receive_audio(echo.tone(440.0, 0.3, 16000), 0.0)
    assert "user_transcript" not in kinds(a.poll(0.5))
    deadline = a.next_deadline()
    assert deadline == echo.INPUT_GAP_END_TURN_S
    assert "user_transcript" in kinds(a.poll(deadline))


def test_barge_in_during_playback_after_burst_send() -> None:
    a = agent(speak_rate=0.0)
    a.receive_audio(turn(16000, 1.0, 0.6), 0.0)
    first = a.poll(0.0)
    assert [m.TYPE for m in first].count("audio") == 4  # all at once, playback lasts 1 s
    assert a.is_speaking(0.5) and not a.is_speaking(1.01)
    a.receive_audio(turn(16000, 0.2, 0.0), 0.5)  # barge in half way through
    out = a.poll(0.5)
    assert kinds(out)[:2] == ["interruption", "agent_response_correction"]
    interruption, correction = (m for m in out if m.TYPE != "vad_score")
    assert isinstance(interruption, protocol.Interruption) and interruption.event_id == 2
    assert isinstance(correction, protocol.AgentResponseCorrection) and correction.event_id == 1
    text = correction.original_agent_response
    assert correction.corrected_agent_response == echo.truncate_text(text, 0.5)


def test_no_interruption_once_the_reply_has_played() -> None:
    a = agent(speak_rate=2.0)
    a.receive_audio(turn(16000, 1.0, 0.6), 0.0)
    sent = [m for t in (0.0, 0.125, 0.25, 0.375) for m in a.poll(t) if m.TYPE == "audio"]
    assert len(sent) == 4 and a.is_speaking(0.99) and not a.is_speaking(1.0)
    a.receive_audio(turn(16000, 0.2, 0.0), 1.2)
    assert "interruption" not in kinds(a.poll(1.2))


def test_pacing_and_playback_model() -> None:
    assert echo.due_offsets([0.25] * 4, 2.0) == [0.0, 0.125, 0.25, 0.375]
    assert echo.due_offsets([0.25] * 3, 0.0) == [0.0, 0.0, 0.0]
    # Chunks sent slower than real time leave gaps: playback waits for each one.
    assert echo.played_s([0.0, 0.5], [0.25, 0.25], 0.6) == pytest.approx(0.35)
    assert echo.playback_end([0.0, 0.1], [0.25, 0.25]) == pytest.approx(0.5)
    assert echo.playback_end([], []) == -math.inf


def test_text_truncation_and_vad_score() -> None:
    text = "You said something 1.2 seconds long."
    assert echo.truncate_text(text, 0.5) == "You said something"
    assert echo.truncate_text(text, 0.0) == "" and echo.truncate_text(text, 1.0) == text
    assert echo.vad_score(-math.inf, -40.0) == 0.0
    assert echo.vad_score(-40.0, -40.0) == 0.5 < echo.vad_score(-20.0, -40.0)
    assert echo.split_chunks(b"\x00" * 1000, PCM16, 10) == [b"\x00" * 320] * 3 + [b"\x00" * 40]
