"""Pure synthesis of the short state sounds (earcons): wake, end, error."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

NOTE_S = 0.09  # one note of a chime: short enough not to delay the first word
FADE_S = 0.01  # raised-cosine fade in and out, so notes start and stop without clicks
ERROR_NOTE_S = 0.18
# Notes in Hz: a rising fifth for "listening", the same falling for "done", a low pair for errors.
WAKE_NOTES = (660.0, 990.0)
END_NOTES = (990.0, 660.0)
ERROR_NOTES = (220.0, 196.0)
EARCONS = ("wake", "end", "error")


def _note(freq_hz: float, seconds: float, rate: int, volume: float) -> Samples:
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    wave = np.sin(2 * np.pi * freq_hz * t)
    fade = min(n // 2, int(FADE_S * rate))
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * volume * 32767).astype(np.int16)


def earcon(kind: str, rate: int, volume: float = 0.3) -> Samples:
    """The earcon `kind` ('wake', 'end' or 'error') as int16 mono at `rate`."""
    if kind == "wake":
        notes, length = WAKE_NOTES, NOTE_S
    elif kind == "end":
        notes, length = END_NOTES, NOTE_S
    elif kind == "error":
        notes, length = ERROR_NOTES, ERROR_NOTE_S
    else:
        raise ValueError(f"unknown earcon {kind!r}; expected one of {EARCONS}")
    return np.concatenate([_note(f, length, rate, volume) for f in notes])
