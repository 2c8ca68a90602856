"""Pure playback queue: agent audio cut into short frames, with interruption gating.

Server audio events can hold many seconds of speech (reference 4.2), so they are split into
frames of a few milliseconds on arrival; an interruption then drops everything not yet played
and only the frame already handed to the device is heard (reference 4.5).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


class PlaybackQueue:
    """FIFO of equal-length int16 frames; `interrupt(N)` drops all and then audio with id < N."""

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._frames: deque[Samples] = deque()
        self._partial: Samples = np.zeros(0, dtype=np.int16)
        self._gate = -(2**62)  # lowest event id still played; raised by interruptions
        self.stale_events = 0  # audio events dropped because they predate an interruption
        self.dropped_samples = 0  # samples discarded by interruptions
        self.queued_total = 0  # samples ever accepted

    @property
    def gate(self) -> int:
        """Audio events with an id below this are stale and dropped."""
        return self._gate

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be played, including a trailing partial frame."""
        return len(self._frames) * self.frame_samples + len(self._partial)

    def __len__(self) -> int:
        return len(self._frames) + (1 if len(self._partial) else 0)

    def push(self, event_id: int, samples: Samples) -> bool:
        """Queue one audio event's samples; False (and nothing queued) if it is stale."""
        # Drop strictly older ids only: the reply to the interrupting turn may carry the
        # interruption's own id (reference 4.5, issue #829 in the vendor SDK).
        if event_id < self._gate:
            self.stale_events += 1
            return False
        if len(samples) == 0:
            return True
        self.queued_total += len(samples)
        data = np.concatenate((self._partial, samples)) if len(self._partial) else samples
        n = self.frame_samples
        whole = len(data) // n * n
        for start in range(0, whole, n):
            self._frames.append(data[start : start + n])
        self._partial = data[whole:].copy()
        return True

    def pop(self, *, allow_partial: bool = True) -> Samples | None:
        """Next frame to play, or None when empty; the tail shorter than a frame comes last."""
        if self._frames:
            return self._frames.popleft()
        if allow_partial and len(self._partial):
            tail, self._partial = self._partial, np.zeros(0, dtype=np.int16)
            return tail
        return None

    def interrupt(self, event_id: int) -> int:
        """Drop all queued audio and gate out ids below `event_id`; returns samples dropped."""
        dropped = self.queued_samples
        self.clear()
        self.dropped_samples += dropped
        self._gate = max(self._gate, event_id)
        return dropped

    def clear(self) -> None:
        """Forget queued audio without touching the gate (local barge-in, shutdown)."""
        self._frames.clear()
        self._partial = np.zeros(0, dtype=np.int16)
