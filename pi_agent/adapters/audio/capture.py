"""One microphone stream for the daemon's whole life, with pre-roll.

While idle, the last `preroll_ms` of audio are kept in a ring; when a conversation starts, the
ring is handed over first and live chunks follow, so the word said while the button went down
(or right after the wake word) reaches the agent. The device is opened once: no re-open delay
at each trigger and no click.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pi_agent.adapters.audio.devices import ChunkQueue, Microphone, Samples
from pi_agent.core.audio.preroll import PrerollRing

# While idle with no listener, capture reaches the loop this many chunks at a time (100 ms of
# 20 ms chunks): the pre-roll ring needs no finer steps, and each wake-up of the loop costs CPU
# a Pi Zero 2 W spends around the clock. A conversation, or a wake word, gets every chunk.
IDLE_BATCH_CHUNKS = 5


@runtime_checkable
class BatchingMicrophone(Protocol):
    """A microphone that can deliver several chunks at once (the PyAudio one)."""

    batch: int


# An idle listener (a wake word detector) gets each chunk captured while no conversation borrows
# the hub, and the stream position at the chunk's end (samples captured since the hub started).
IdleListener = Callable[[Samples, int], None]


class _Router(ChunkQueue):
    """The queue the microphone writes to: the ring while idle, a conversation's queue when live."""

    def __init__(self, ring: PrerollRing) -> None:
        super().__init__(1)
        self.ring = ring
        self.target: ChunkQueue | None = None
        self.position = 0  # samples captured since the hub started
        self.listeners: list[IdleListener] = []

    def _idle(self, chunk: Samples) -> None:
        self.ring.append(chunk)
        for listener in self.listeners:
            listener(chunk, self.position)

    def put_nowait(self, chunk: Samples) -> None:
        self.position += len(chunk)
        if self.target is None:
            self._idle(chunk)
        else:
            self.target.put_nowait(chunk)

    async def put(self, chunk: Samples) -> None:
        self.position += len(chunk)
        if self.target is None:
            self._idle(chunk)
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
        self._batch(IDLE_BATCH_CHUNKS)

    def _batch(self, chunks: int) -> None:
        if isinstance(self.mic, BatchingMicrophone):
            self.mic.batch = chunks

    def _idle_batch(self) -> int:
        return 1 if self._router.listeners else IDLE_BATCH_CHUNKS

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
        self._batch(1)
        return handed

    def end(self) -> None:
        """Back to idle: capture goes to the pre-roll ring again."""
        self._router.target = None
        self._batch(self._idle_batch())

    @property
    def idle(self) -> bool:
        """True while no conversation borrows the hub (chunks go to the ring and listeners)."""
        return self._router.target is None

    @property
    def position(self) -> int:
        """Samples captured since the hub started."""
        return self._router.position

    def add_idle_listener(self, listener: IdleListener) -> None:
        """Call `listener(chunk, end_position)` on the loop for each chunk captured while idle."""
        self._router.listeners.append(listener)
        if self.idle:
            self._batch(self._idle_batch())

    def remove_idle_listener(self, listener: IdleListener) -> None:
        """Stop calling `listener`."""
        self._router.listeners.remove(listener)
        if self.idle:
            self._batch(self._idle_batch())

    def drop_wake_word(self, detected_at: int, min_tail: int, max_tail: int) -> int:
        """Cut the pre-roll where the wake word ends, max_tail..min_tail before detected_at."""
        # Positions are in samples; returns the samples dropped (none while a conversation runs).
        if not self.idle:
            return 0
        keep = max(0, self._router.position - detected_at) + min_tail
        return self.ring.cut_at_quietest(keep, max_tail - min_tail)

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
