"""The pre-roll ring: the last moments of audio before a trigger, kept while idle."""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


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

    def cut_at_quietest(self, keep_samples: int, search_samples: int) -> int:
        """Drop all before the quietest chunk in `search_samples` past the newest `keep_samples`."""
        # Returns the samples dropped: the wake word goes, the words said after it stay.
        newest_first = list(reversed(self._chunks))
        kept = 0
        index = 0  # chunks newest-first; everything from `index` on is older than `keep_samples`
        while index < len(newest_first) and kept + len(newest_first[index]) <= keep_samples:
            kept += len(newest_first[index])
            index += 1
        cut, searched = index, 0  # default: keep only the chunks after the detection point
        quietest = float("inf")
        while index < len(newest_first) and searched < search_samples:
            chunk = newest_first[index]
            energy = float(np.mean(np.square(chunk, dtype=np.float64))) if len(chunk) else 0.0
            if energy <= quietest:  # ties go to the earlier chunk: more of a pause is kept
                quietest, cut = energy, index + 1
            searched += len(chunk)
            index += 1
        dropped = 0
        for _ in range(len(newest_first) - cut):
            dropped += len(self._chunks.popleft())
        self._samples -= dropped
        return dropped
