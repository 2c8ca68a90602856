"""One microphone stream for the daemon's whole life, with pre-roll.

While idle, the last `preroll_ms` of audio are kept in a ring; when a conversation starts, the
ring is handed over first and live chunks follow, so the word said while the button went down
(or right after the wake word) reaches the agent. The device is opened once: no re-open delay
at each trigger and no click.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pi_agent.audio.devices import ChunkQueue, Microphone, Samples


class PrerollRing:
    """Keeps the most recent chunks up to `max_samples` (pure; no I/O)."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max(0, max_samples)
        self._chunks: deque[Samples] = deque()
        self._samples = 0

    @property
    def samples(self) -> int:
        return self._samples

    def append(self, chunk: Samples) -> None:
        """Add a chunk, forgetting the oldest ones beyond the limit."""
        if self.max_samples == 0:
            return
        self._chunks.append(chunk)
        self._samples += len(chunk)
        while self._samples - len(self._chunks[0]) >= self.max_samples:
            self._samples -= len(self._chunks.popleft())

    def take(self) -> list[Samples]:
        """Everything kept, oldest first; the ring is empty afterwards."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._samples = 0
        return chunks


class _Router(ChunkQueue):
    """The queue the microphone writes to: the ring while idle, a conversation's queue when live."""

    def __init__(self, ring: PrerollRing) -> None:
        super().__init__(1)
        self.ring = ring
        self.target: ChunkQueue | None = None

    def put_nowait(self, chunk: Samples) -> None:
        if self.target is None:
            self.ring.append(chunk)
        else:
            self.target.put_nowait(chunk)

    async def put(self, chunk: Samples) -> None:
        if self.target is None:
            self.ring.append(chunk)
        else:
            await self.target.put(chunk)


class CaptureHub:
    """Runs a microphone continuously and lends it to one conversation at a time."""

    def __init__(self, mic: Microphone, preroll_ms: int) -> None:
        self.mic = mic
        self.ring = PrerollRing(mic.sample_rate * preroll_ms // 1000)
        self._router = _Router(self.ring)
        self.sample_rate = mic.sample_rate
        self.chunk_samples = mic.chunk_samples

    @property
    def finished(self) -> bool:
        return self.mic.finished

    async def run_device(self) -> None:
        """Capture until cancelled (the daemon owns this task)."""
        await self.mic.run(self._router)

    def begin(self, queue: ChunkQueue) -> int:
        """Route capture to `queue`, pre-roll first; returns the pre-roll samples handed over."""
        handed = 0
        for chunk in self.ring.take():
            queue.put_nowait(chunk)
            handed += len(chunk)
        self._router.target = queue
        return handed

    def end(self) -> None:
        """Back to idle: capture goes to the pre-roll ring again."""
        self._router.target = None

    def borrow(self) -> HubMicrophone:
        """A Microphone view for one Conversation: its `run()` borrows this hub's stream."""
        return HubMicrophone(self)


class HubMicrophone:
    """The `Microphone` a Conversation uses when the daemon's hub owns the device."""

    def __init__(self, hub: CaptureHub) -> None:
        self.hub = hub
        self.sample_rate = hub.sample_rate
        self.chunk_samples = hub.chunk_samples
        self.preroll_samples = 0

    @property
    def finished(self) -> bool:
        return self.hub.finished

    async def run(self, queue: ChunkQueue) -> None:
        self.preroll_samples = self.hub.begin(queue)
        try:
            await asyncio.Event().wait()  # until the conversation cancels us
        finally:
            self.hub.end()
