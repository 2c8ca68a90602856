#!/usr/bin/env python3
"""Soak test: many conversations in a row, or one long conversation, against the simulator.

Prints resource figures (file descriptors, threads, asyncio tasks, RSS) at the start, along the
way and at the end, plus missed pongs and queue sizes, as JSON and a table. Asserts nothing.

    .venv/bin/python scripts/soak.py conversations --count 1000
    .venv/bin/python scripts/soak.py continuous --seconds 3600
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pi_agent.adapters.audio.devices import ChunkQueue, FileSpeaker, Pacer, Samples
from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.config import default_config
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.once import run_talk
from pi_agent.simulator import Simulator, SimulatorOptions
from pi_agent.wiring import build_conversation

RATE = 16000
CHUNK = 320  # 20 ms at 16 kHz
SPEECH_S = 0.6  # each utterance: long enough for the echo agent to open a turn
PING_INTERVAL_S = 0.25  # frequent pings: many chances to miss a pong
SAY_EVERY_S = 5.0  # continuous mode: one utterance this often (a lively conversation)
SAMPLE_EVERY_S = 60.0  # continuous mode: resource figures this often


@dataclass
class Snapshot:
    """Resource use of this process at one moment."""

    label: str
    fds: int
    threads: int
    tasks: int
    rss_kib: int


@dataclass
class Report:
    """What a soak run measured."""

    mode: str
    snapshots: list[Snapshot] = field(default_factory=list)
    conversations: int = 0
    failures: list[str] = field(default_factory=list)
    pings: int = 0
    missed_pongs: int = 0
    capture_dropped: int = 0
    max_capture_queue: int = 0
    max_playback_queue: int = 0
    seconds: float = 0.0


def snapshot(label: str) -> Snapshot:
    """Figures for this process now (after a garbage collection, so they are comparable)."""
    gc.collect()
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    return Snapshot(label, len(os.listdir("/proc/self/fd")), threading.active_count(), tasks, rss)


def tone(seconds: float, freq: float = 330.0) -> Samples:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 9000).astype(np.int16)


def forget_settled(record: Any, report: Report, now: float) -> None:
    """Account for and drop what the in-process simulator recorded, so its memory is not ours.

    The simulator keeps every audio chunk it heard for tests; over an hour that is hundreds of MB
    that would hide (or fake) a leak in the client. Pings older than a second are settled.
    """
    settled = [p for p in record.pings if p.sent_at < now - 1.0]
    report.pings += len(settled)
    report.missed_pongs += sum(1 for p in settled if p.pong_at is None)
    record.pings[: len(settled)] = []
    record._audio.clear()
    record.received.clear()
    record.sent.clear()
    del record.agent_turns[:-1]  # each past reply keeps its audio; the current one is in use


def count_pongs(record: Any, report: Report) -> None:
    """Every ping but one still in flight at the close must have had its pong."""
    pings = record.pings
    report.pings += len(pings)
    unanswered = [p for p in pings if p.pong_at is None]
    if unanswered and unanswered[-1] is pings[-1]:
        unanswered.pop()  # sent just before the close: its pong could not arrive
    report.missed_pongs += len(unanswered)


async def soak_conversations(count: int, *, every: int = 100, out: Any = None) -> Report:
    """`count` one-shot conversations (file audio, unpaced) in a row against one simulator."""
    report = Report("conversations")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "in.wav"
        write_wav(wav, np.concatenate((tone(SPEECH_S), np.zeros(RATE // 2, np.int16))), RATE)
        async with Simulator(SimulatorOptions(ping_interval_s=PING_INTERVAL_S)) as sim:
            cfg = default_config(
                "soak",
                sim.url,
                audio={"backend": "file", "input_file": str(wav), "file_speed": 0},
            )
            report.snapshots.append(snapshot("start"))
            for i in range(1, count + 1):
                reason, conv = await run_talk(cfg, out=io.StringIO())
                report.conversations += 1
                if not reason.ok:
                    report.failures.append(str(reason))
                report.capture_dropped += conv.capture.dropped
                record = sim.conversations[-1]
                await record.wait_ended(5)
                count_pongs(record, report)
                sim.conversations.clear()  # the simulator's own records are not ours to keep
                if i % every == 0 or i == count:
                    report.snapshots.append(snapshot(f"after {i}"))
                    if out is not None:
                        print(f"{i} conversations, {asdict(report.snapshots[-1])}", file=out)
    report.seconds = time.monotonic() - started
    return report


class TalkingMic:
    """A real-time microphone that says something every SAY_EVERY_S seconds."""

    sample_rate = RATE
    chunk_samples = CHUNK
    finished = False

    async def run(self, queue: ChunkQueue) -> None:
        pacer = Pacer(1.0)
        speech = tone(SPEECH_S)
        period = int(SAY_EVERY_S * RATE / CHUNK)
        n = 0
        while True:
            k = n % period
            chunk = speech[k * CHUNK : (k + 1) * CHUNK] if k * CHUNK < len(speech) else None
            out = np.zeros(CHUNK, np.int16)
            if chunk is not None:
                out[: len(chunk)] = chunk
            queue.put_nowait(out)
            n += 1
            await pacer.wait(CHUNK / RATE)


async def soak_continuous(
    seconds: float, *, every_s: float = SAMPLE_EVERY_S, out: Any = None
) -> Report:
    """One conversation held for `seconds` of real time, the user speaking regularly."""
    report = Report("continuous")
    started = time.monotonic()
    options = SimulatorOptions(ping_interval_s=PING_INTERVAL_S)
    async with Simulator(options) as sim:
        cfg = default_config("soak", sim.url, audio={"backend": "file", "input_file": __file__})
        conv = build_conversation(
            cfg, TalkingMic(), FileSpeaker(None, 1.0), max_duration_s=seconds + 60
        )
        task = asyncio.create_task(conv.run())
        loop = asyncio.get_running_loop()
        report.snapshots.append(snapshot("start"))
        next_sample = started + every_s
        while time.monotonic() - started < seconds:
            await asyncio.sleep(min(1.0, max(0.0, started + seconds - time.monotonic())))
            if sim.conversations:
                forget_settled(sim.conversations[-1], report, loop.time())
            report.max_capture_queue = max(report.max_capture_queue, conv.capture.qsize())
            if conv.playback is not None:
                report.max_playback_queue = max(
                    report.max_playback_queue, conv.playback.queued_samples
                )
            if time.monotonic() >= next_sample:
                next_sample += every_s
                report.snapshots.append(snapshot(f"{time.monotonic() - started:.0f} s"))
                if out is not None:
                    print(asdict(report.snapshots[-1]), file=out, flush=True)
        conv.end(EndReason(EndKind.LOCAL, "soak over"))
        reason = await task
        report.conversations = 1
        if reason.kind is not EndKind.LOCAL:
            report.failures.append(str(reason))
        report.capture_dropped = conv.capture.dropped
        record = sim.conversations[-1]
        await record.wait_ended(5)
        count_pongs(record, report)
        report.snapshots.append(snapshot("end"))
    report.seconds = time.monotonic() - started
    return report


def table(report: Report) -> str:
    """A plain-text table of a report."""
    rows = [f"{'when':>16} {'fds':>5} {'threads':>7} {'tasks':>5} {'RSS KiB':>9}"]
    rows += [
        f"{s.label:>16} {s.fds:>5} {s.threads:>7} {s.tasks:>5} {s.rss_kib:>9}"
        for s in report.snapshots
    ]
    rows.append(
        f"conversations {report.conversations}, failures {len(report.failures)}, "
        f"pings {report.pings}, missed pongs {report.missed_pongs}, "
        f"capture drops {report.capture_dropped}, max capture queue {report.max_capture_queue}, "
        f"max playback queue {report.max_playback_queue} samples, {report.seconds:.0f} s"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("conversations")
    c.add_argument("--count", type=int, default=1000)
    c.add_argument("--every", type=int, default=100)
    l = sub.add_parser("continuous")  # noqa: E741
    l.add_argument("--seconds", type=float, default=3600)
    l.add_argument("--every-s", type=float, default=SAMPLE_EVERY_S)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.mode == "conversations":
        report = asyncio.run(soak_conversations(args.count, every=args.every, out=sys.stderr))
    else:
        report = asyncio.run(soak_continuous(args.seconds, every_s=args.every_s, out=sys.stderr))
    data = asdict(report)
    print(json.dumps(data, indent=2))
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
