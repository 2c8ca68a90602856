"""Pure echo guard for boards without echo cancellation (`audio.mic_while_speaking`).

While the agent's voice is audible, plus a tail for room echo, the microphone is muted (silence
is sent, so the link's timing and the server's turn detection carry on), ducked, or left open.
Told the time; no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

GUARD_MODES = ("mute", "duck", "open")


class EchoGuard:
    """Gates microphone chunks while agent audio is audible; `mode` is mute, duck or open."""

    def __init__(self, mode: str = "mute", tail_s: float = 0.25, duck_db: float = -20.0) -> None:
        if mode not in GUARD_MODES:
            raise ValueError(f"echo guard mode {mode!r}; expected one of {GUARD_MODES}")
        self.mode = mode
        self.tail_s = tail_s
        self.duck_gain = float(10 ** (duck_db / 20))
        self.audible_until = float("-inf")  # when the last audio handed to the speaker ends
        self.guarded_chunks = 0

    def agent_audible(self, until: float) -> None:
        """Audio handed to the speaker will be heard until `until` (loop clock)."""
        self.audible_until = max(self.audible_until, until)

    def silence_now(self) -> None:
        """Playback was flushed (barge-in): the speaker is quiet from now on, tail included."""
        self.audible_until = float("-inf")

    def active(self, now: float) -> bool:
        """Whether the guard is on at `now`."""
        return self.mode != "open" and now < self.audible_until + self.tail_s

    def process(self, chunk: Samples, now: float) -> Samples:
        """The chunk to send: unchanged, silenced or attenuated."""
        if not self.active(now):
            return chunk
        self.guarded_chunks += 1
        if self.mode == "mute":
            return np.zeros_like(chunk)
        return (chunk.astype(np.float32) * self.duck_gain).astype(np.int16)
