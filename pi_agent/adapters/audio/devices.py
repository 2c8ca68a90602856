"""Audio device interfaces, the bounded capture queue, and the `file` backend.

A microphone posts int16 mono chunks into a `ChunkQueue`; a speaker plays int16 mono frames.
Real devices run on foreign threads and post through `loop.call_soon_threadsafe`; the file
backend (WAV in, WAV out) runs on the loop and paces itself like a device would.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pi_agent.adapters.audio.wavfile import WavWriter, read_wav

Samples = npt.NDArray[np.int16]
log = logging.getLogger(__name__)


class ChunkQueue:
    """Bounded FIFO of audio chunks; a device thread never waits: when full, the oldest goes."""

    def __init__(self, maxlen: int) -> None:
        self._queue: asyncio.Queue[Samples] = asyncio.Queue(maxlen)
        self.dropped = 0  # chunks discarded because the consumer fell behind

    def put_nowait(self, chunk: Samples) -> None:
        """Add a chunk, dropping the oldest when full (call on the loop thread)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(chunk)

    async def put(self, chunk: Samples) -> None:
        """Add a chunk, waiting for room (for sources that are not real time)."""
        await self._queue.put(chunk)

    async def get(self) -> Samples:
        """The oldest chunk, waiting for one."""
        return await self._queue.get()

    def qsize(self) -> int:
        return self._queue.qsize()

    def clear(self) -> int:
        """Drop everything queued; returns how many chunks were dropped."""
        n = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            n += 1
        return n


class Microphone(Protocol):
    """A capture source producing chunks of `chunk_samples` int16 mono at `sample_rate`."""

    sample_rate: int
    chunk_samples: int

    @property
    def finished(self) -> bool:
        """True once a finite source (a file) has delivered all of its audio."""
        ...

    async def run(self, queue: ChunkQueue) -> None:
        """Capture until cancelled, posting chunks to `queue`."""
        ...


class Speaker(Protocol):
    """A playback sink for int16 mono frames."""

    async def device_rate(self, stream_rate: int) -> int:
        """The rate frames must have, given the agent's output rate."""
        ...

    async def open(self, sample_rate: int) -> None:
        """Prepare to play at `sample_rate` (called once the agent's format is known)."""
        ...

    async def play(self, frame: Samples) -> None:
        """Hand one frame to the device; returns when the device can take the next one."""
        ...

    async def flush(self) -> None:
        """Discard what the device still holds (barge-in)."""
        ...

    async def drain(self) -> None:
        """Wait until everything handed over has been heard."""
        ...

    async def close(self) -> None:
        """Release the device."""
        ...


class Pacer:
    """Sleeps so that consecutive blocks of audio take their real duration divided by `speed`."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._deadline: float | None = None

    async def wait(self, duration_s: float) -> None:
        """Account for `duration_s` of audio; speed 0 means as fast as possible."""
        if self.speed <= 0:
            await asyncio.sleep(0)  # still let other tasks (pongs) run between blocks
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None or self._deadline < now - duration_s:
            self._deadline = now  # first block, or we were idle: restart the clock
        self._deadline += duration_s / self.speed
        await asyncio.sleep(max(0.0, self._deadline - now))

    def reset(self) -> None:
        self._deadline = None


class FileMicrophone:
    """Streams a WAV file as microphone chunks, then silence, paced at `speed` x real time."""

    def __init__(self, path: Path, chunk_ms: int, speed: float = 1.0) -> None:
        self.samples, self.sample_rate = read_wav(path)
        self.chunk_samples = max(1, self.sample_rate * chunk_ms // 1000)
        self.speed = speed
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    async def run(self, queue: ChunkQueue) -> None:
        n = self.chunk_samples
        chunk_s = n / self.sample_rate
        pacer = Pacer(self.speed)
        for start in range(0, len(self.samples), n):
            chunk = self.samples[start : start + n]
            if len(chunk) < n:
                chunk = np.concatenate((chunk, np.zeros(n - len(chunk), dtype=np.int16)))
            # A file is not a live device: wait for room instead of dropping audio.
            await queue.put(chunk)
            await pacer.wait(chunk_s)
        self._finished = True
        # After the file, a quiet room: silence keeps flowing so the server's turn detection
        # sees the end of the user's turn, as it would with a real microphone.
        silence = np.zeros(n, dtype=np.int16)
        quiet = Pacer(max(self.speed, 1.0))
        while True:
            queue.put_nowait(silence)
            await quiet.wait(chunk_s)


class FileSpeaker:
    """Writes agent audio to a WAV file (or nowhere), paced like a real device."""

    def __init__(self, path: Path | None, speed: float = 1.0) -> None:
        self.path = path
        self._pacer = Pacer(speed)
        self._writer: WavWriter | None = None
        self._rate = 0
        self.frames_played = 0
        self.samples_played = 0

    async def device_rate(self, stream_rate: int) -> int:
        return stream_rate  # the output WAV's header carries the agent's own rate

    async def open(self, sample_rate: int) -> None:
        self._rate = sample_rate
        if self.path is not None and self._writer is None:
            self._writer = WavWriter(self.path, sample_rate)

    async def play(self, frame: Samples) -> None:
        if self._writer is not None:
            self._writer.write(frame)
        self.frames_played += 1
        self.samples_played += len(frame)
        await self._pacer.wait(len(frame) / self._rate)

    async def flush(self) -> None:
        self._pacer.reset()

    async def drain(self) -> None:
        return None  # a file has nothing in flight once written

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
