"""Streaming polyphase windowed-sinc (Kaiser) resampler for int16 mono speech; pure numpy."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pi_agent.errors import AudioFormatError

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]
Quality = Literal["fast", "default", "high"]

# Stopband attenuation the Kaiser design aims for, in dB, per quality setting.
STOPBAND_DB: dict[Quality, float] = {"fast": 60.0, "default": 80.0, "high": 100.0}
# Band edges as fractions of the lower Nyquist frequency, min(src, dst) / 2.
PASSBAND_EDGE = 0.8  # speech band kept flat up to here
STOPBAND_EDGE = 1.0  # everything from the lower Nyquist up is suppressed
CUTOFF = (PASSBAND_EDGE + STOPBAND_EDGE) / 2  # 0.9: the roll-off factor
# Kaiser's empirical design formulas (Oppenheim & Schafer, "Discrete-Time Signal Processing").
KAISER_LENGTH_OFFSET_DB = 7.95
KAISER_LENGTH_SLOPE = 2.285
KAISER_BETA_SLOPE = 0.1102
KAISER_BETA_OFFSET_DB = 8.7
# Bank size guard: a pair like 44101 -> 48000 would need 48000 phases (tens of MB).
MAX_PHASES = 2048
INT16_MIN = -32768
INT16_MAX = 32767
INT16_BYTES = 2


@dataclass(frozen=True, slots=True)
class _Design:
    """A polyphase filter bank for up = L, down = M; shared read-only via the cache."""

    up: int  # L: output rate / gcd
    down: int  # M: input rate / gcd
    taps: int  # T: input samples per output sample
    centre: int  # c: group delay of the prototype filter, in upsampled samples
    bank: Float32Array  # shape (L, T); row r weights x[q-T+1 .. q] (oldest first)


def _kaiser_beta(atten_db: float) -> float:
    # Only the A > 50 dB branch is needed: every quality setting is above that.
    return KAISER_BETA_SLOPE * (atten_db - KAISER_BETA_OFFSET_DB)


@functools.lru_cache(maxsize=128)  # 30 rate pairs x 3 qualities fit
def _design(src_rate: int, dst_rate: int, atten_db: float) -> _Design:
    """Design the prototype low-pass at rate L*src and split it into L phases."""
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    if up > MAX_PHASES:
        raise AudioFormatError(
            f"resampling {src_rate} -> {dst_rate} Hz needs {up} filter phases (max {MAX_PHASES})"
        )
    fast_rate = up * src_rate  # Hz, rate of the (virtual) zero-stuffed signal
    nyquist = min(src_rate, dst_rate) / 2
    transition = (STOPBAND_EDGE - PASSBAND_EDGE) * nyquist  # Hz
    delta_omega = 2 * math.pi * transition / fast_rate  # rad/sample at fast_rate
    length = math.ceil((atten_db - KAISER_LENGTH_OFFSET_DB) / (KAISER_LENGTH_SLOPE * delta_omega))
    taps = math.ceil((length + 1) / up)
    # Odd-length linear-phase filter so the delay is a whole number of fast samples; the
    # bank is padded with zeros up to L*T coefficients.
    centre = (up * taps - 1) // 2
    n = np.arange(2 * centre + 1, dtype=np.float64) - centre
    cutoff = CUTOFF * nyquist / fast_rate  # cycles/sample at fast_rate
    proto = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(n.size, _kaiser_beta(atten_db))
    proto *= up / proto.sum()  # unity DC gain after zero-stuffing by L
    padded = np.zeros(up * taps, dtype=np.float64)
    padded[: proto.size] = proto
    # Phase r uses h[r + p*L] against x[q - p]; reverse p so rows line up with oldest-first
    # input windows.
    bank = padded.reshape(taps, up).T[:, ::-1].astype(np.float32)
    bank.flags.writeable = False
    return _Design(up, down, taps, centre, bank)


class Resampler:
    """Streams int16 mono from src_rate to dst_rate; chunking does not change the output.

    Output sample k is aligned with input time k / dst_rate: the filter looks ahead
    `delay_s` seconds, so process() holds that much back and flush() releases it. After
    flush the stream has produced exactly floor(total_in * dst / src) samples (one per
    output period that lies wholly inside the input) and the resampler is reset.
    """

    def __init__(self, src_rate: int, dst_rate: int, *, quality: Quality = "default") -> None:
        for label, rate in (("source", src_rate), ("destination", dst_rate)):
            if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
                raise AudioFormatError(f"{label} rate must be a positive int, got {rate!r}")
        if quality not in STOPBAND_DB:
            raise AudioFormatError(f"quality must be one of {list(STOPBAND_DB)}, got {quality!r}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.quality: Quality = quality
        self._identity = src_rate == dst_rate
        self._d = None if self._identity else _design(src_rate, dst_rate, STOPBAND_DB[quality])
        self.reset()

    @property
    def delay_s(self) -> float:
        """Latency added by the filter look-ahead, in seconds (0 for identity)."""
        if self._d is None:
            return 0.0
        return self._d.centre / (self._d.up * self.src_rate)

    def reset(self) -> None:
        """Forget the stream: next process() starts at time zero with silent history."""
        self._in_count = 0  # input samples received since the stream began
        self._out_count = 0  # output samples emitted since the stream began
        taps = 1 if self._d is None else self._d.taps
        # The signal is taken as silent before it starts, hence T-1 leading zeros.
        self._hist: Float32Array = np.zeros(taps - 1, dtype=np.float32)
        self._hist_start = -(taps - 1)  # stream index of self._hist[0]

    def process(self, samples: Int16Array) -> Int16Array:
        """Feed a chunk (1-D int16) and return every output sample that is ready."""
        x = np.asarray(samples)
        if x.dtype.kind != "i" or x.dtype.itemsize != INT16_BYTES or x.ndim != 1:
            raise AudioFormatError(f"Resampler needs a 1-D int16 array, got {x.ndim}-D {x.dtype}")
        if self._d is None:
            return x.astype(np.int16)  # a native-order copy, never a view of the caller's data
        self._hist = np.concatenate((self._hist, x.astype(np.float32)))
        self._in_count += x.size
        d = self._d
        # Output k needs inputs up to q = (k*M + c) // L, so it is ready once q < in_count.
        ready = -(-(self._in_count * d.up - d.centre) // d.down)
        return self._emit(min(ready, self._final_count()))

    def flush(self) -> Int16Array:
        """End the stream: return the held-back tail (future input taken as silence), reset."""
        if self._d is None:
            return np.zeros(0, dtype=np.int16)
        # Enough trailing silence to cover the look-ahead of the last output sample.
        self._hist = np.concatenate((self._hist, np.zeros(self._d.taps + 1, dtype=np.float32)))
        out = self._emit(self._final_count())
        self.reset()
        return out

    def _final_count(self) -> int:
        """Output samples the stream will have produced at flush: floor(in * L / M)."""
        assert self._d is not None
        return self._in_count * self._d.up // self._d.down

    def _emit(self, end: int) -> Int16Array:
        """Compute outputs out_count .. end-1 from the history, then drop spent input."""
        d = self._d
        assert d is not None
        if end <= self._out_count:  # nothing ready; the history may be shorter than T
            return np.zeros(0, dtype=np.int16)
        k = np.arange(self._out_count, end, dtype=np.int64)
        fast_pos = k * d.down + d.centre
        newest = fast_pos // d.up  # q: newest input index under the filter
        phase = fast_pos % d.up
        # Row i of `windows` is hist[i : i + T] without copying; as_strided rather than
        # sliding_window_view because the latter's argument checks cost more than the maths.
        stride = self._hist.strides[0]
        windows = np.lib.stride_tricks.as_strided(
            self._hist, (self._hist.size - d.taps + 1, d.taps), (stride, stride), writeable=False
        )
        rows = windows[newest - (d.taps - 1) - self._hist_start]  # gathers a copy, (n, T)
        acc = np.einsum("ij,ij->i", rows, np.take(d.bank, phase, axis=0))
        self._out_count += k.size
        # Keep only what the next output still needs: x[q_next - T + 1 ..].
        q_next = (self._out_count * d.down + d.centre) // d.up
        drop = min(max(q_next - (d.taps - 1) - self._hist_start, 0), self._hist.size)
        self._hist = self._hist[drop:]
        self._hist_start += drop
        out: Int16Array = np.clip(np.rint(acc), INT16_MIN, INT16_MAX).astype(np.int16)
        return out


def resample(samples: Int16Array, src_rate: int, dst_rate: int) -> Int16Array:
    """One-shot resample, time-aligned with the input; floor(len * dst / src) samples."""
    r = Resampler(src_rate, dst_rate)
    return np.concatenate((r.process(samples), r.flush()))
