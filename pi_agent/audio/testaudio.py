"""`pi-agent test-audio`: record a few seconds, report level and clipping, play it back.

The first thing to run after wiring a microphone: it shows whether the right device is used,
whether it hears anything, and whether the speaker works, without any network.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from pi_agent.audio import formats
from pi_agent.audio.devices import ChunkQueue, Microphone, Samples, Speaker
from pi_agent.audio.resample import Resampler
from pi_agent.errors import EX_IOERR, EX_OK

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


async def record(mic: Microphone, seconds: float) -> Samples:
    """Capture `seconds` of audio from `mic`."""
    want = int(seconds * mic.sample_rate)
    queue = ChunkQueue(max(1, want // mic.chunk_samples + 2))
    task = asyncio.create_task(mic.run(queue), name="test-audio-capture")
    got: list[Samples] = []
    have = 0
    try:
        async with asyncio.timeout(seconds + RECORD_SLACK_S):
            while have < want:
                get = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    task.result()  # the microphone failed: raise its AudioError
                chunk = get.result()
                got.append(chunk)
                have += len(chunk)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return np.concatenate(got)[:want] if got else np.zeros(0, dtype=np.int16)


async def play(speaker: Speaker, samples: Samples, rate: int, frame_ms: int = 20) -> None:
    """Play `samples` (at `rate`) on `speaker`, resampling to a rate it accepts."""
    device_rate = speaker.device_rate(rate)
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
