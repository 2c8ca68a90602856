#!/usr/bin/env python3
"""Audio latency and CPU of pi-agent and the official SDK, side by side, on the PulseAudio bed.

Usage: python scripts/bench_latency.py [--bursts N] [--seconds S] [--json FILE]
                                       [--only pi-agent|sdk]

Each client runs in a child process (so its CPU time and peak RSS are its own) against the
project's simulator, one after the other, on one private PulseAudio null sink (TESTBED.md 2):
the sink is the speaker, its monitor the microphone, and a reference recorder timestamps the
monitor. One scripted conversation per client measures, in order:

  A  mic-to-wire      bursts fed into the sink -> the user_audio_chunk holding each onset
  B  wire-to-speaker  an `audio` event holding a burst leaves the simulator -> onset on monitor
  C  barge-in         `interruption` leaves the simulator while a tone plays -> silence
  D  two-way CPU      the agent talks for S seconds while the microphone streams

Prints a table and JSON; never asserts a speed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout: pi_agent and tests/beds/pulse.py

from pi_agent.core import protocol as p  # noqa: E402
from pi_agent.core.figures import summary  # noqa: E402
from pi_agent.simulator import (  # noqa: E402
    Close,
    ConversationRecord,
    Scenario,
    Send,
    SendAudio,
    SimulatorOptions,
    SimulatorThread,
    Step,
    Wait,
)
from pi_agent.simulator.server import SPEAK_RATE  # noqa: E402
from tests.beds.pulse import PulseBed, Recording, missing_tools  # noqa: E402

Int16 = npt.NDArray[np.int16]
RATE = 16_000  # the SDK's fixed rate; the sink and pi-agent's default too
AGENT_ID = "agent_bench"
# pi-agent's audio section: the defaults (20 ms chunks, 40 ms jitter buffer), except that the
# microphone is never gated (the echo guard must not shape what is measured; the SDK has none)
# and earcons are off (they would sound on the bed like agent audio).
PI_AGENT_AUDIO: dict[str, object] = {
    "backend": "pyaudio",
    "mic_while_speaking": "open",
    "earcons": {"wake": False, "end": False, "error": False},
}
KINDS = ("pi-agent", "sdk")

# ---- the marker sound: a 1 kHz cosine burst starting at its peak, so its onset is one sample.
MARKER_S = 0.1
MARKER_HZ = 1000.0
MARKER_PEAK = 8000  # about -12 dBFS: loud, far from clipping
ONSET_LEVEL = 2000  # a quarter of the marker's peak: the marker's first sample already exceeds it
SILENT_LEVEL = 64  # |sample| at or below this is silence (the null sink is digital zero)
QUIET_S = 0.3  # a new onset needs this much quiet before it (markers are 0.1 s long)
# The reference recorder stamps blocks when its thread reads them, a few ms after the monitor
# handed them out; a client's chunk may arrive that much "before" the burst entered.
RECORDER_LAG_S = 0.05

# ---- phase A: mic-to-wire
MIC_LEAD_S = 1.0  # the scenario's wait covers the client's start (the SDK opens its mic late)
# Apart enough that the SDK's 250 ms chunks never hold two bursts; a whole number of every
# client's buffer periods (4 SDK capture buffers, 50 pi-agent chunks).
BURST_SPACING_S = 1.0
# At exactly that spacing every burst would hit the same phase of the capture buffer; each gap is
# longer by this spread / N, so N bursts sweep the phase evenly over a whole 250 ms SDK buffer
# (and over 20 ms pi-agent chunks) instead of measuring one point of it N times.
BURST_PHASE_SPREAD_S = 0.25
MIC_TAIL_S = 1.0  # the last burst's chunk reaches the simulator before phase B starts
# ---- phase B: wire-to-speaker
# Between marker events: the speaker is idle again before each, and each marker is a new reply to
# pi-agent's jitter buffer (a gap under 0.5 s after running dry would count as an underrun).
MARKER_SPACING_S = 1.0
MARKER_PHASE_SPREAD_S = 0.0625  # markers sweep the SDK's 62.5 ms output period, as above
# ---- phase C: barge-in
BARGE_TONE_S = 2.5  # sent in 1.25 s at the simulator's 2x pace: a second is left at the cut
BARGE_TONE_HZ = 440.0
BARGE_WAIT_S = 0.25  # after the whole tone was sent, before the interruption
BARGE_PHASE_SPREAD_S = 0.25  # the cuts sweep evenly over a 250 ms audio event of the tone
BARGE_GAP_S = 1.4  # after the interruption: longer than the rest of the tone would have played
BARGE_WINDOW_S = 1.3  # silence is looked for this long after the interruption
PLAYING_CHECK_S = 0.05  # the tone must be audible this long before the interruption to count
# ---- phase D: two-way audio for CPU
TWO_WAY_HZ = 330.0
CPU_EDGE_S = 0.5  # start-up and wind-down of the agent's speech stay out of the CPU window
TWO_WAY_TAIL_S = 1.0  # after playback should have finished, before the simulator closes
# ---- event ids: ascending, and above every interruption id before them (the SDK drops
# audio with event_id <= the last interruption's, pi-agent drops only ids below it).
MARKER_FIRST_ID = 1
BARGE_FIRST_ID = 1000
TWO_WAY_ID = 5000
# ---- process handling
CONNECT_TIMEOUT_S = 20.0  # child start-up (imports, PortAudio, connect) on a loaded machine
AUDIO_START_TIMEOUT_S = 15.0  # the first user_audio_chunk after the conversation opened
CHILD_GRACE_S = 30.0  # after the scenario should have ended, before the child is killed
CHILD_POLL_S = 0.1  # bounded wait loops look again this often
CPU_SAMPLE_S = 0.25  # the child samples its CPU clock this often
SDK_JOIN_S = 10.0  # bound on the SDK's end_session / thread join in the child
RECORD_TAIL_S = 0.3  # keep recording this long after the child exits


# ------------------------------------------------------------------------------ the plan


def marker() -> Int16:
    """The burst: a cosine (first sample at its peak) of MARKER_S."""
    t = np.arange(round(MARKER_S * RATE)) / RATE
    return np.round(MARKER_PEAK * np.cos(2 * np.pi * MARKER_HZ * t)).astype(np.int16)


@dataclass(frozen=True, slots=True)
class Plan:
    """One benchmark conversation: the scenario, and the feed of phase A."""

    scenario: Scenario
    mic_feed: Int16  # fed into the sink once the client's audio flows
    mic_wait_s: float
    two_way_s: float
    total_s: float


def plan(bursts: int, seconds: float) -> Plan:
    """The scenario and microphone feed for `bursts` markers and `seconds` of two-way audio."""
    burst = marker()
    pieces: list[Int16] = []
    for _ in range(bursts):
        gap = BURST_SPACING_S + BURST_PHASE_SPREAD_S / bursts
        pieces += [burst, np.zeros(round(gap * RATE) - burst.size, np.int16)]
    feed = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    mic_wait = MIC_LEAD_S + feed.size / RATE + MIC_TAIL_S
    steps: list[Step] = [Wait(mic_wait)]
    total = mic_wait
    for i in range(bursts):
        gap = MARKER_SPACING_S + MARKER_PHASE_SPREAD_S / bursts
        steps += [SendAudio(burst, event_id=MARKER_FIRST_ID + i, paced=False), Wait(gap)]
        total += gap
    cuts = max(1, bursts // 2)
    for i in range(cuts):
        wait = BARGE_WAIT_S + BARGE_PHASE_SPREAD_S * (i + 0.5) / cuts
        event_id = BARGE_FIRST_ID + 2 * i
        steps += [
            SendAudio(duration_s=BARGE_TONE_S, tone_hz=BARGE_TONE_HZ, event_id=event_id),
            Wait(wait),
            Send(p.Interruption(event_id=event_id + 1)),
            Wait(BARGE_GAP_S),
        ]
        total += BARGE_TONE_S / SPEAK_RATE + wait + BARGE_GAP_S
    talk = seconds / SPEAK_RATE
    steps += [
        SendAudio(duration_s=seconds, tone_hz=TWO_WAY_HZ, event_id=TWO_WAY_ID),
        Wait(seconds - talk + TWO_WAY_TAIL_S),  # until the speech has been played out
        Close(),
    ]
    total += seconds + TWO_WAY_TAIL_S
    return Plan(Scenario(tuple(steps)), feed, mic_wait, seconds, total)


# ------------------------------------------------------------------------------ analysis


def onsets(samples: Int16, level: int = ONSET_LEVEL, quiet_s: float = QUIET_S) -> list[int]:
    """Indexes where |x| first exceeds `level` after at least `quiet_s` below it."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > level)
    if not loud.size:
        return []
    starts = [int(loud[0])]
    gaps = np.flatnonzero(np.diff(loud) > quiet_s * RATE)
    starts += [int(loud[g + 1]) for g in gaps]
    return starts


def stats(values_s: Sequence[float]) -> dict[str, Any]:
    """pi_agent.core.figures.summary in milliseconds, plus the values themselves."""
    out = summary(values_s)
    if out["n"]:
        out["values_ms"] = [round(v * 1000.0, 1) for v in values_s]
    return out


def user_audio(record: ConversationRecord) -> tuple[Int16, npt.NDArray[np.int64], list[float]]:
    """The user audio the simulator received, each chunk's end index and arrival time."""
    chunks: list[Int16] = []
    times: list[float] = []
    for event in record.received:
        if isinstance(event.message, p.UserAudioChunk):
            chunks.append(np.frombuffer(event.message.audio, dtype="<i2").astype(np.int16))
            times.append(event.at)
    if not chunks:
        return np.zeros(0, np.int16), np.zeros(0, np.int64), []
    ends = np.cumsum([c.size for c in chunks])
    return np.concatenate(chunks), ends, times


def mic_to_wire(record: ConversationRecord, rec: Recording, until: float) -> list[float]:
    """Per burst: arrival of the chunk holding its onset minus when the monitor showed it."""
    audio, ends, times = user_audio(record)
    wire = [times[int(np.searchsorted(ends, i, side="right"))] for i in onsets(audio)]
    out: list[float] = []
    for index in onsets(rec.samples):
        entered = rec.seen_at(index)
        if entered >= until:
            break
        # The first onset on the wire after this one (the recorder's own delivery may lag a
        # client's by a little), and never as late as the next burst.
        match = [t for t in wire if entered - RECORDER_LAG_S < t < entered + BURST_SPACING_S / 2]
        if match:
            out.append(match[0] - entered)
    return out


def wire_to_speaker(record: ConversationRecord, rec: Recording) -> list[float]:
    """Per marker event: its onset on the monitor minus when the simulator sent it."""
    sound = onsets(rec.samples)
    out: list[float] = []
    for sent in record.sent:
        if sent.type != "audio" or not isinstance(sent.event_id, int):
            continue
        if not MARKER_FIRST_ID <= sent.event_id < BARGE_FIRST_ID:
            continue
        start = rec.index_at(sent.at)
        later = [i for i in sound if i >= start]
        if later and rec.seen_at(later[0]) < sent.at + MARKER_SPACING_S:
            out.append(rec.seen_at(later[0]) - sent.at)
    return out


def barge_in(record: ConversationRecord, rec: Recording) -> tuple[list[float], int]:
    """Per interruption: the first silent moment on the monitor minus its send time.

    Also returns how many interruptions came while the speaker was already silent (not timed).
    """
    loud = np.abs(rec.samples.astype(np.int32)) > SILENT_LEVEL
    out: list[float] = []
    not_playing = 0
    for sent in record.sent:
        if sent.type != "interruption":
            continue
        start = rec.index_at(sent.at)
        before = loud[max(0, start - round(PLAYING_CHECK_S * RATE)) : start]
        if not before.any():
            not_playing += 1
            continue
        end = rec.index_at(sent.at + BARGE_WINDOW_S)
        after = np.flatnonzero(loud[start:end])
        last = start + int(after[-1]) if after.size else start - 1
        if last + 1 < rec.samples.size:
            out.append(rec.seen_at(last + 1) - sent.at)
    return out, not_playing


def cpu_rate(samples: Sequence[Sequence[float]], t0: float, t1: float) -> float | None:
    """CPU seconds per minute between monotonic t0 and t1, from (time, cpu) samples."""
    if len(samples) < 2 or t1 <= t0:
        return None
    times = np.array([s[0] for s in samples])
    cpu = np.array([s[1] for s in samples])
    if t0 < times[0] or t1 > times[-1]:
        return None
    used = float(np.interp(t1, times, cpu) - np.interp(t0, times, cpu))
    return round(used / (t1 - t0) * 60.0, 3)


# ------------------------------------------------------------------------------ the child


class CpuSampler:
    """A daemon thread sampling (time.monotonic(), time.process_time()) every CPU_SAMPLE_S."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), time.process_time()))
            self._stop.wait(CPU_SAMPLE_S)

    def stop(self) -> list[tuple[float, float]]:
        """Stop sampling (one last sample) and return them all."""
        self._stop.set()
        self._thread.join(SDK_JOIN_S)
        self.samples.append((time.monotonic(), time.process_time()))
        return self.samples


def child_pi_agent(url: str, max_s: float) -> dict[str, Any]:
    """One pi-agent conversation with the pyaudio backend on the default devices."""
    import asyncio

    from pi_agent.adapters.audio.pyaudio_backend import open_pyaudio_devices
    from pi_agent.config import default_config
    from pi_agent.wiring import build_conversation

    cfg = default_config(AGENT_ID, url, audio=PI_AGENT_AUDIO)
    mic, speaker = open_pyaudio_devices(cfg.audio)
    conv = build_conversation(cfg, mic, speaker, max_duration_s=max_s)
    reason = asyncio.run(conv.run())
    playback = conv.playback
    return {
        "end": str(reason),
        "config": {
            "chunk_ms": cfg.audio.chunk_ms,
            "jitter_ms": cfg.audio.jitter_ms,
            "mic_while_speaking": cfg.audio.mic_while_speaking,
        },
        "chunks_sent": conv.chunks_sent,
        "capture_dropped": conv.capture.dropped,
        "mic_overflows": mic.overflows,
        "speaker_underruns": speaker.underruns,
        "playback_underruns": None if playback is None else playback.underruns,
        "jitter_target_ms_at_end": (
            None if playback is None else round(playback.target * 1000 / playback.sample_rate)
        ),
    }


def child_sdk(http_url: str, max_s: float) -> dict[str, Any]:
    """One SDK conversation with its DefaultAudioInterface, ended by the server's close."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK names legacy websockets
        from elevenlabs.client import ElevenLabs
        from elevenlabs.conversational_ai.conversation import Conversation
        from elevenlabs.conversational_ai.default_audio_interface import DefaultAudioInterface
        from elevenlabs.version import __version__ as sdk_version

    ended = threading.Event()
    details: list[str] = []

    def on_disconnect(info: Any) -> None:
        details.append(str(getattr(info, "reason", info)))
        ended.set()

    client = ElevenLabs(base_url=http_url, api_key="bench")
    conversation: Any = Conversation(
        client,
        AGENT_ID,
        requires_auth=False,
        audio_interface=DefaultAudioInterface(),  # type: ignore[no-untyped-call]
        callback_disconnect=on_disconnect,
    )
    conversation.start_session()
    if not ended.wait(max_s):
        details.append("time limit")
        conversation.end_session()
    joiner = threading.Thread(target=conversation.wait_for_session_end, daemon=True)
    joiner.start()
    joiner.join(SDK_JOIN_S)
    return {"end": ", ".join(details), "sdk_version": sdk_version}


def child_main(kind: str, url: str, http_url: str, max_s: float) -> int:
    """Run one client; print one JSON line: CPU samples and what the client reports."""
    sampler = CpuSampler()
    try:
        report = child_pi_agent(url, max_s) if kind == "pi-agent" else child_sdk(http_url, max_s)
    finally:
        samples = sampler.stop()
    report["cpu_samples"] = samples
    print(json.dumps(report), flush=True)
    return 0


# ------------------------------------------------------------------------------ the parent


@dataclass
class ChildResult:
    """What the parent learns about one finished child."""

    report: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    stderr_tail: str = ""


def wait_child(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, Any]:
    """Wait for the child (killing it after timeout_s) and return its status and rusage."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        time.sleep(CHILD_POLL_S)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def run_client(kind: str, bed: PulseBed, the_plan: Plan, workdir: Path) -> dict[str, Any]:
    """One client's conversation on the bed; returns its figures."""
    options = SimulatorOptions(agent_ids=frozenset({AGENT_ID}), scenario=the_plan.scenario)
    log_path = workdir / f"{kind}.log"
    out_path = workdir / f"{kind}.json"
    result = ChildResult()
    with SimulatorThread(options) as st:
        bed.start_recording()
        env = {
            **bed.env,
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), bed.env.get("PYTHONPATH")))),
        }
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--url",
            st.url,
            "--http-url",
            st.http_url,
            "--max-s",
            str(round(the_plan.total_s + CHILD_GRACE_S)),
        ]
        with open(log_path, "wb") as err, open(out_path, "wb") as out:
            proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)  # noqa: S603
        try:
            record = st.run(st.sim.next_conversation(CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S + 1)
            st.run(
                record.wait_until(
                    lambda: bool(record.messages("user_audio_chunk")), AUDIO_START_TIMEOUT_S
                ),
                AUDIO_START_TIMEOUT_S + 1,
            )
            bed.feed_samples(the_plan.mic_feed)
            status, usage = wait_child(proc, the_plan.total_s + CHILD_GRACE_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                wait_child(proc, CHILD_GRACE_S)
        time.sleep(RECORD_TAIL_S)
        bed.stop_recording()
        st.run(record.wait_ended(CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S + 1)
    rec = bed.recording
    assert rec is not None
    result.status = status
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.peak_rss_mb = usage.ru_maxrss / 1024.0  # Linux reports kilobytes
    lines = out_path.read_text().strip().splitlines()
    result.report = json.loads(lines[-1]) if lines else {}
    cpu_samples = result.report.pop("cpu_samples", [])

    sent = record.sent
    marker_times = [s.at for s in sent if s.type == "audio" and s.event_id == MARKER_FIRST_ID]
    two_way = [s.at for s in sent if s.type == "audio" and s.event_id == TWO_WAY_ID]
    chunks = [e.at for e in record.received if e.type == "user_audio_chunk"]
    first_audio = chunks[0] if chunks else 0.0
    listening_end = marker_times[0] if marker_times else float("inf")
    barge, not_playing = barge_in(record, rec)
    figures: dict[str, Any] = {
        "mic_to_wire": stats(mic_to_wire(record, rec, listening_end)),
        "wire_to_speaker": stats(wire_to_speaker(record, rec)),
        "barge_in": stats(barge),
        "barge_in_not_playing": not_playing,
        "cpu_s_per_min_listening": cpu_rate(cpu_samples, first_audio + CPU_EDGE_S, listening_end),
        "cpu_s_per_min_two_way": (
            cpu_rate(
                cpu_samples,
                two_way[0] + CPU_EDGE_S,
                two_way[0] + the_plan.two_way_s - CPU_EDGE_S,
            )
            if two_way
            else None
        ),
        "cpu_s_total": round(result.cpu_s, 2),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "exit_status": status,
        "client": result.report,
        "log": str(log_path),
    }
    return figures


# ------------------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel and the versions that shape the figures."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        import pyaudio

        info["portaudio"] = pyaudio.get_portaudio_version_text()
    except ImportError:
        pass
    try:
        version = subprocess.run(
            ["pulseaudio", "--version"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=CONNECT_TIMEOUT_S,
            check=False,
        )
        info["pulseaudio"] = version.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


ROWS = (
    ("mic-to-wire median / p95 (ms)", "mic_to_wire"),
    ("wire-to-speaker median / p95 (ms)", "wire_to_speaker"),
    ("barge-in median / p95 (ms)", "barge_in"),
)


def table(results: dict[str, dict[str, Any]]) -> str:
    """The figures as a Markdown table, one column per client."""
    kinds = list(results)
    lines = ["| figure | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for label, key in ROWS:
        cells = []
        for kind in kinds:
            s = results[kind][key]
            cells.append(
                f"{s['median_ms']:.0f} / {s['p95_ms']:.0f} (n={s['n']})" if s["n"] else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (
        ("CPU, listening (s per min)", "cpu_s_per_min_listening"),
        ("CPU, two-way audio (s per min)", "cpu_s_per_min_two_way"),
        ("CPU, whole process (s)", "cpu_s_total"),
        ("peak RSS (MB)", "peak_rss_mb"),
    ):
        cells = [
            "-" if results[kind][key] is None else f"{results[kind][key]:.2f}" for kind in kinds
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line; --child and the URLs are for the script's own children."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bursts", type=int, default=20, help="markers per latency figure")
    parser.add_argument("--seconds", type=float, default=20.0, help="two-way audio for CPU")
    parser.add_argument("--json", type=Path, help="also write the JSON to this file")
    parser.add_argument("--only", choices=KINDS, help="benchmark one client only")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--http-url", help=argparse.SUPPRESS)
    parser.add_argument("--max-s", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.bursts <= 200:
        parser.error(f"--bursts must be from 1 to 200, got {args.bursts}")
    if not 2 * CPU_EDGE_S < args.seconds <= 600:
        parser.error(
            f"--seconds must be above {2 * CPU_EDGE_S:g} and at most 600, got {args.seconds}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Benchmark the clients one after the other; print the table and the JSON."""
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.url, args.http_url, args.max_s)
    missing = missing_tools()
    if missing:
        print(
            f"bench_latency: {' and '.join(missing)} not installed "
            "(apt-get install pulseaudio pulseaudio-utils libasound2-plugins)",
            file=sys.stderr,
        )
        return 2
    the_plan = plan(args.bursts, args.seconds)
    kinds = [args.only] if args.only else list(KINDS)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        for kind in kinds:
            print(f"bench_latency: {kind}: about {the_plan.total_s:.0f} s ...", file=sys.stderr)
            with PulseBed(workdir / f"pulse-{kind}", RATE) as bed:
                results[kind] = run_client(kind, bed, the_plan, workdir)
            logs = (workdir / f"{kind}.log").read_text(errors="replace").splitlines()
            results[kind]["log_tail"] = [line for line in logs if "jack" not in line.lower()][-5:]
            results[kind].pop("log")
    document = {
        "machine": machine(),
        "command": " ".join(["python", "scripts/bench_latency.py", *(argv or sys.argv[1:])]),
        "settings": {
            "bursts": args.bursts,
            "two_way_s": args.seconds,
            "rate_hz": RATE,
            "simulator_audio_chunk_ms": SimulatorOptions().audio_chunk_ms,
            "simulator_speak_rate": SPEAK_RATE,
        },
        "results": results,
    }
    text = json.dumps(document, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
