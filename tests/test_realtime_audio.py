"""Conversations in real time through PortAudio -> ALSA pulse plugin -> a PulseAudio null sink.

The sink is the speaker and its monitor the microphone (tests/beds/pulse.py, TESTBED.md 2), so a
sound fed into the sink is heard by the client, and whatever the client plays is recorded by the
bed's reference recorder. The path is bit-exact at 16 kHz, so the tests compare samples; time is
only used as a generous bound that catches "never happened".
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from pi_agent.adapters.audio.devices import Samples
from pi_agent.adapters.client import Conversation
from pi_agent.commands.bench import SPACING_S, bench_main
from pi_agent.config import default_config
from pi_agent.core import protocol as p
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.simulator import (
    Close,
    ConversationRecord,
    Scenario,
    Send,
    SendAudio,
    Simulator,
    SimulatorOptions,
    Wait,
)
from pi_agent.simulator.agent import tone
from tests.beds.pulse import PulseBed, Recording
from tests.beds.realtime import RATE, RT_AUDIO, WAIT_S, conversation, rt_config
from tests.helpers import run

T = TypeVar("T")
# Bound on a whole test: each takes a few seconds of real-time audio; a hang fails, not blocks.
TEST_TIMEOUT_S = 40.0
# How often bounded polls look again: fine against 20 ms audio chunks.
POLL_S = 0.02
# Silence before fed audio: covers the first samples a new stream may lose (TESTBED.md 2).
LEAD_S = 0.3
SPEECH_S = 0.6  # long enough to open a turn (60 ms) and be heard as a sentence
# Software gain of the speaker in the echo test: the agent's reply (the user's own speech) plays
# ~26 dB quieter, below the simulator's -40 dBFS speech threshold, so the microphone hearing the
# reply through the monitor does not make the echo agent barge in on itself.
ECHO_TEST_VOLUME = 0.05
ECHO_GAIN_TOLERANCE = 0.01  # int16 truncation after the gain moves the measured gain this little
# The echo agent's VAD works in 20 ms frames: a turn that starts and ends mid-frame is measured
# to within a frame at each end.
VAD_FRAME_S = 0.02
# Normalized correlation of a true copy is ~1; noise or another sound is far below.
MATCH_CORRELATION = 0.99
# The interruption test's agent tone: long, so most of it is still unplayed at the interruption.
TONE_S = 4.0
TONE_HZ = 440.0
INTERRUPT_AFTER_S = 0.5  # after the whole tone was sent (2 s at the simulator's 2x pace)
AFTER_INTERRUPT_S = 2.5  # recording continues past the point where the whole tone would end
# Behaviour bound only: "the speaker went silent after the interruption", not a latency figure.
SILENCE_BOUND_S = 1.0
SILENT_LEVEL = 64  # |sample| at or below this is silence (the null sink itself is digital zero)
# An underrun (the client's loop late by more than the speaker's FIFO, or a feed starved of CPU)
# inserts exact zeros into played audio: a glitch a loaded shared 2-core machine can cause, not
# the behaviour under test. Runs of this many zeros are cut before comparing with what was meant
# to play; a tone or voice never holds exact zero for 1 ms.
GAP_MIN_SAMPLES = 16
# A sound counts as over after this much digital silence (the fed sounds hold no such pause).
QUIET_AFTER_S = 0.2
BENCH_ROUNDS = 3  # bursts in the benchmark check: each costs SPACING_S of real time
# The pre-roll test: metadata comes this late, so the burst (0.3 s lead, 0.6 s of sound, then
# QUIET_AFTER_S to know it is over) is captured before audio can flow, with room for a slow start.
METADATA_DELAY_S = 3.0


def speech_like(seconds: float, level: float = 0.12) -> Samples:
    """A voiced, syllable-modulated harmonic tone: well above the simulator's VAD threshold."""
    t = np.arange(round(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 150.0 * k * t) / k for k in range(1, 6))
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 4.0 * t)
    return np.round(level * voice * envelope * 32767).astype(np.int16)


def padded(samples: Samples, lead_s: float = LEAD_S, tail_s: float = LEAD_S) -> Samples:
    """Samples with silence before and after."""
    lead = np.zeros(round(lead_s * RATE), np.int16)
    tail = np.zeros(round(tail_s * RATE), np.int16)
    return np.concatenate((lead, samples, tail))


def find_exact(haystack: Samples, needle: Samples) -> int | None:
    """Index where `needle` occurs bit for bit in `haystack`, or None."""
    anchor = int(np.flatnonzero(needle)[0])  # silence would match everywhere: start on sound
    last = haystack.size - needle.size + anchor
    for hit in np.flatnonzero(haystack[anchor : last + 1] == needle[anchor]):
        start = int(hit)
        if np.array_equal(haystack[start : start + needle.size], needle):
            return start
    return None


def first_sound(samples: Samples) -> tuple[int, Samples] | None:
    """Start and samples of the first sound: nonzero to nonzero, ended by QUIET_AFTER_S of zeros.

    None until that much silence follows it. This is what reached the sink, which a starved feed
    may have cut with zeros; the client's microphone must deliver exactly this.
    """
    sound = np.flatnonzero(samples)
    if not sound.size:
        return None
    quiet = round(QUIET_AFTER_S * RATE)
    gaps = np.flatnonzero(np.diff(sound) > quiet)
    end = int(sound[gaps[0]]) if gaps.size else int(sound[-1])
    if not gaps.size and samples.size - 1 - end < quiet:
        return None
    return int(sound[0]), samples[sound[0] : end + 1]


def matches_fed(heard: Samples, fed: Samples) -> bool:
    """Whether `heard` (from the monitor) is `fed`, trimmed to sound, or it cut by gaps."""
    sound = np.flatnonzero(fed)
    trimmed = fed[sound[0] : sound[-1] + 1]
    return np.array_equal(heard, trimmed) or np.array_equal(close_gaps(heard)[0], trimmed)


def close_gaps(samples: Samples) -> tuple[Samples, int]:
    """Samples with every run of GAP_MIN_SAMPLES or more exact zeros removed, and the run count."""
    zero = np.concatenate(([False], samples == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    keep = np.ones(samples.size, dtype=bool)
    gaps = 0
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= GAP_MIN_SAMPLES:
            keep[start:stop] = False
            gaps += 1
    return samples[keep], gaps


def best_match(haystack: Samples, needle: Samples) -> tuple[int, float, float]:
    """Offset of the best copy of `needle` in `haystack`, its normalized correlation and gain."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(h.size + n.size)))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)
    corr = corr[: h.size - n.size + 1]
    start = int(np.argmax(corr))
    segment = h[start : start + n.size]
    energy = float(np.dot(segment, segment) * np.dot(n, n))
    normalized = float(corr[start]) / np.sqrt(energy) if energy > 0 else 0.0
    return start, normalized, float(np.dot(segment, n) / np.dot(n, n))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition that other threads or processes make true; fail after WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def stop_recording(pulse_bed: PulseBed) -> Recording:
    """Stop the bed's recorder off the loop and return the recording."""
    await asyncio.to_thread(pulse_bed.stop_recording)
    assert pulse_bed.recording is not None
    return pulse_bed.recording


def user_audio_times(record: ConversationRecord) -> list[tuple[float, int]]:
    """(arrival time, cumulative samples) of every user_audio_chunk the simulator received."""
    out: list[tuple[float, int]] = []
    total = 0
    for event in record.received:
        if isinstance(event.message, p.UserAudioChunk):
            total += len(event.message.audio) // 2
            out.append((event.at, total))
    return out


def test_echo_agent_hears_the_microphone_and_the_reply_plays(pulse_bed: PulseBed) -> None:
    speech = speech_like(SPEECH_S)

    async def main() -> tuple[ConversationRecord, Recording, EndReason]:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            conv = conversation(rt_config(sim, volume=ECHO_TEST_VOLUME))

            async def watch(c: Conversation) -> None:
                record = await sim.next_conversation(WAIT_S)
                await asyncio.to_thread(pulse_bed.start_recording)
                pulse_bed.feed_samples(padded(speech))
                await record.wait_until(
                    lambda: (
                        bool(record.agent_turns)
                        and record.agent_turns[0].chunks_sent == record.agent_turns[0].chunks_total
                    ),
                    WAIT_S,
                )
                c.end(EndReason(EndKind.COMPLETED, "reply sent"))  # end() lets it finish playing

            reason = await conv.run(watch)
            record = sim.conversations[0]
            await record.wait_ended(WAIT_S)
        await asyncio.sleep(LEAD_S)  # the monitor runs ~10 ms ahead of "played": keep the tail
        return record, await stop_recording(pulse_bed), reason

    record, recording, reason = run(main())
    assert reason.kind is EndKind.COMPLETED, reason

    # The fed speech reached the monitor, and the simulator got it from our microphone bit for
    # bit, as one user turn.
    fed = first_sound(recording.samples)
    assert fed is not None and matches_fed(fed[1], speech), "the fed speech is not on the monitor"
    fed_at, heard_speech = fed
    assert find_exact(record.user_audio(), heard_speech) is not None
    assert len(record.agent_turns) == 1, [t.user_transcript for t in record.agent_turns]
    reply = record.agent_turns[0]
    heard = re.fullmatch(r"\(([0-9.]+) seconds of speech\)", reply.user_transcript or "")
    assert heard is not None and round(abs(float(heard[1]) - SPEECH_S) / VAD_FRAME_S) <= 2, heard
    assert not reply.interrupted and reply.chunks_sent == reply.chunks_total

    # After the fed speech, the monitor carries our speaker's reply: the same speech, quieter.
    after = recording.samples[fed_at + heard_speech.size :]
    assert np.abs(after).max() > SILENT_LEVEL, "the reply never played"
    reply_audio, _ = close_gaps(after)
    margin = np.zeros(speech.size, np.int16)  # the copy may sit at either end of what is left
    _, correlation, gain = best_match(np.concatenate((margin, reply_audio, margin)), speech)
    assert correlation > MATCH_CORRELATION, f"no copy of the speech played back ({correlation:.3f})"
    assert abs(gain - ECHO_TEST_VOLUME) < ECHO_GAIN_TOLERANCE


def test_interruption_silences_the_speaker(pulse_bed: PulseBed) -> None:
    scenario = Scenario(
        (
            SendAudio(duration_s=TONE_S, tone_hz=TONE_HZ, event_id=1),
            Wait(INTERRUPT_AFTER_S),
            Send(p.Interruption(event_id=2)),
            Wait(AFTER_INTERRUPT_S),
            Close(),
        )
    )

    async def main() -> tuple[ConversationRecord, Recording, EndReason]:
        async with Simulator(SimulatorOptions(ping_interval_s=0, scenario=scenario)) as sim:
            conv = conversation(rt_config(sim))
            await asyncio.to_thread(pulse_bed.start_recording)
            reason = await conv.run()
            record = sim.conversations[0]
            await record.wait_ended(WAIT_S)
        return record, await stop_recording(pulse_bed), reason

    record, recording, reason = run(main())
    assert reason.kind is EndKind.SERVER_CLOSED or reason.ok, reason
    sent = {s.type: s.at for s in record.sent}
    interrupted_at = sent["interruption"]
    samples = recording.samples
    loud = np.flatnonzero(np.abs(samples) > SILENT_LEVEL)
    assert loud.size, "the tone never played"
    first, last = int(loud[0]), int(loud[-1])

    # The tone was playing when the interruption left the simulator.
    assert recording.seen_at(first) < interrupted_at
    # What played is the start of the tone, sample for sample.
    full = tone(TONE_HZ, TONE_S, RATE)
    begin = first - int(np.flatnonzero(np.abs(full) > SILENT_LEVEL)[0])
    played, _ = close_gaps(samples[begin : last + 1])
    assert np.array_equal(played, full[: played.size])
    # Silence came soon after the interruption and lasted to the end of the recording, which
    # runs past the moment the whole tone would have finished: the rest never played.
    assert recording.seen_at(last) < interrupted_at + SILENCE_BOUND_S
    would_end = recording.seen_at(first) + TONE_S
    assert recording.block_times[-1] > would_end
    assert played.size < full.size - RATE  # at least a second of the tone was dropped


def test_audio_captured_before_the_conversation_starts_reaches_the_agent(
    pulse_bed: PulseBed,
) -> None:
    burst = speech_like(SPEECH_S)
    scenario = Scenario((Wait(WAIT_S),))  # the test ends the conversation

    async def main() -> tuple[ConversationRecord, Samples, float, float]:
        options = SimulatorOptions(
            ping_interval_s=0, metadata_delay_s=METADATA_DELAY_S, scenario=scenario
        )
        async with Simulator(options) as sim:
            conv = conversation(rt_config(sim))
            await asyncio.to_thread(pulse_bed.start_recording)
            task = asyncio.create_task(conv.run())
            try:
                # Capture is running once chunks pile up, unsent: no metadata yet, no sender.
                await until(lambda: conv.capture.qsize() > 0, "the microphone to start")
                pulse_bed.feed_samples(padded(burst))
                await until(
                    lambda: first_sound(pulse_bed.snapshot().samples) is not None,
                    "the burst on the monitor",
                )
                snapshot = pulse_bed.snapshot()
                heard_at = snapshot.block_times[-1]
                heard = first_sound(snapshot.samples)
                assert heard is not None and matches_fed(heard[1], burst)
                heard_burst = heard[1]
                started_when_heard = conv.started
                record = await sim.next_conversation(WAIT_S)
                await record.wait_until(
                    lambda: find_exact(record.user_audio(), heard_burst) is not None, WAIT_S
                )
                conv.end(EndReason(EndKind.COMPLETED, "burst received"))
                reason = await task
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert reason.ok, reason
            await record.wait_ended(WAIT_S)
            assert not started_when_heard, "the conversation started before the burst was heard"
        await stop_recording(pulse_bed)
        return record, heard_burst, heard_at, user_audio_times(record)[0][0]

    record, heard_burst, heard_at, first_chunk_at = run(main())
    # The whole burst was on the monitor (so in the capture stream) before any audio went out.
    assert heard_at < first_chunk_at
    sent_types = [e.type for e in record.received]
    assert sent_types[0] == "conversation_initiation_client_data"
    assert find_exact(record.user_audio(), heard_burst) is not None


def test_bench_hears_every_burst_through_the_sink(pulse_bed: PulseBed, tmp_path: Path) -> None:
    cfg = default_config("agent_rt", "ws://127.0.0.1:1", audio=RT_AUDIO)  # bench sets the URL
    out = io.StringIO()
    report_path = tmp_path / "bench.json"
    assert bench_main(cfg, rounds=BENCH_ROUNDS, out=out, json_path=report_path) == 0
    report = json.loads(report_path.read_text())
    assert report["end"].startswith("server_closed"), report
    assert report["bursts_missed"] == 0 and report["round_trip"]["n"] == BENCH_ROUNDS, report
    # Sound cannot come back before it was sent, nor (on this bed) take as long as the spacing.
    assert 0 < report["round_trip"]["min_ms"] <= report["round_trip"]["max_ms"] < 1000 * SPACING_S
    assert "round trip" in out.getvalue()
