"""`pi-agent test-audio`: record a few seconds, report level and clipping, play it back.

The first thing to run after wiring a microphone: it shows whether the right device is used,
whether it hears anything, and whether the speaker works, without any network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from pi_agent.adapters.audio.devices import ChunkQueue, Microphone, Samples, Speaker
from pi_agent.adapters.systemd import configure_logging
from pi_agent.config import load_config
from pi_agent.core.audio import formats
from pi_agent.core.audio.resample import Resampler
from pi_agent.errors import EX_IOERR, EX_OK, AudioError
from pi_agent.wiring import open_devices

# Below this RMS level (dBFS) over the recording, the microphone probably hears nothing:
# a quiet room with a working USB microphone reads around -60 to -50 dBFS, speech -30 to -15.
QUIET_DBFS = -50.0
# More than this share of samples at full scale means the input gain is too high.
CLIPPING_LIMIT = 0.001
FULL_SCALE = 32767
# Upper bound on waiting for the device to deliver the recording, beyond its own length.
RECORD_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class LevelReport:
    """Loudness figures of a recording."""

    seconds: float
    rms_dbfs: float
    peak_dbfs: float
    clipped_share: float

    @property
    def verdict(self) -> str:
        if self.clipped_share > CLIPPING_LIMIT:
            return "clipping: lower the microphone gain (alsamixer, capture volume)"
        if self.rms_dbfs < QUIET_DBFS:
            return "very quiet: is this the right microphone, and is it unmuted?"
        return "OK"


def measure(samples: Samples, rate: int) -> LevelReport:
    """Level, peak and clipping of int16 samples."""
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if len(samples) else 0
    clipped = int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= FULL_SCALE))
    return LevelReport(
        seconds=len(samples) / rate,
        rms_dbfs=formats.rms_dbfs(samples),
        peak_dbfs=20 * math.log10(peak / 32768) if peak else float("-inf"),
        clipped_share=clipped / len(samples) if len(samples) else 0.0,
    )


class _Recording(ChunkQueue):
    """Keeps the first `want` samples it is given and ignores the rest (never drops the start)."""

    def __init__(self, want: int) -> None:
        super().__init__(1)
        self.want = want
        self.chunks: list[Samples] = []
        self.have = 0
        self.full = asyncio.Event()

    def put_nowait(self, chunk: Samples) -> None:
        if self.have < self.want:
            self.chunks.append(chunk)
            self.have += len(chunk)
            if self.have >= self.want:
                self.full.set()

    async def put(self, chunk: Samples) -> None:
        self.put_nowait(chunk)


async def record(mic: Microphone, seconds: float) -> Samples:
    """Capture the first `seconds` of audio from `mic`."""
    recording = _Recording(int(seconds * mic.sample_rate))
    task = asyncio.create_task(mic.run(recording), name="test-audio-capture")
    full = asyncio.create_task(recording.full.wait())
    try:
        done, _ = await asyncio.wait(
            {full, task}, timeout=seconds + RECORD_SLACK_S, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise AudioError(
                f"the microphone delivered {recording.have / mic.sample_rate:.1f} s of audio "
                f"in {seconds + RECORD_SLACK_S:g} s; is it the right device, and not in use?"
            )
        if not full.done():
            task.result()  # the microphone failed: raise its AudioError
    finally:
        full.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if not recording.chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(recording.chunks)[: recording.want]


async def play(speaker: Speaker, samples: Samples, rate: int, frame_ms: int = 20) -> None:
    """Play `samples` (at `rate`) on `speaker`, resampling to a rate it accepts."""
    device_rate = await speaker.device_rate(rate)
    await speaker.open(device_rate)
    try:
        if device_rate != rate:
            resampler = Resampler(rate, device_rate)
            samples = np.concatenate((resampler.process(samples), resampler.flush()))
        n = max(1, device_rate * frame_ms // 1000)
        for start in range(0, len(samples), n):
            await speaker.play(samples[start : start + n])
        await speaker.drain()
    finally:
        await speaker.close()


def main(args: argparse.Namespace) -> int:
    """`pi-agent test-audio [--seconds N] [--no-playback]` on the configured devices."""
    cfg = load_config(args.config)
    configure_logging(args.log_level or "warning")
    mic, speaker = open_devices(cfg)
    return asyncio.run(
        run_test_audio(mic, speaker, args.seconds, sys.stdout, playback=not args.no_playback)
    )


async def run_test_audio(
    mic: Microphone, speaker: Speaker, seconds: float, out: TextIO, *, playback: bool = True
) -> int:
    """Record, report, play back; returns the exit status."""
    print(
        f"recording {seconds:g} s at {mic.sample_rate} Hz: say something ...", file=out, flush=True
    )
    samples = await record(mic, seconds)
    report = measure(samples, mic.sample_rate)
    print(
        f"level: {report.rms_dbfs:.1f} dBFS RMS, peak {report.peak_dbfs:.1f} dBFS, "
        f"clipped {report.clipped_share * 100:.2f}% of samples -> {report.verdict}",
        file=out,
        flush=True,
    )
    if playback:
        print("playing it back ...", file=out, flush=True)
        await play(speaker, samples, mic.sample_rate)
    return EX_OK if report.verdict == "OK" else EX_IOERR
