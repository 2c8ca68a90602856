"""Protocol audio formats and pure sample codecs: PCM s16le mono and G.711 mu-law."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from pi_agent.errors import AudioFormatError

Encoding = Literal["pcm", "ulaw"]
Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]

MS_PER_S = 1000.0
PCM_BYTES_PER_SAMPLE = 2  # signed 16-bit
ULAW_BYTES_PER_SAMPLE = 1  # one G.711 code per sample
# The wire is little-endian whatever the host is, so the dtype says so explicitly.
PCM_WIRE_DTYPE = np.dtype("<i2")
FULL_SCALE = 32768.0  # magnitude of the most negative int16; 1.0 in float terms
INT16_MIN = -32768
INT16_MAX = 32767

# G.711 mu-law (the classic bias-and-clip formulation, equivalent to ITU-T G.711 table 2a).
ULAW_BIAS = 0x84  # 132: shifts every segment so its boundaries are powers of two
ULAW_CLIP = 32635  # largest magnitude that still fits the top segment after adding the bias
ULAW_SIGN_BIT = 0x80
ULAW_EXPONENT_SHIFT = 4  # code layout: sign(1) | exponent(3) | mantissa(4)
ULAW_MANTISSA_MASK = 0x0F
ULAW_EXPONENT_MASK = 0x07
ULAW_SEGMENT_SHIFT = 7  # (magnitude + bias) >> 7 is in 1..255; its top bit gives the segment
ULAW_MANTISSA_SHIFT = 3  # mantissa sits 3 bits above the segment's lowest bit
ULAW_CODES = 256
ULAW_INVERT_MASK = 0xFF  # codes go on the wire with every bit inverted (so 0 -> 0xFF)

_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One protocol audio format: mono samples of one encoding at one sample rate."""

    name: str
    encoding: Encoding
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        """Bytes per mono sample on the wire: 2 for PCM, 1 for mu-law."""
        return PCM_BYTES_PER_SAMPLE if self.encoding == "pcm" else ULAW_BYTES_PER_SAMPLE

    def samples_for_ms(self, ms: float) -> int:
        """Samples in `ms` milliseconds, rounded to nearest (halves up); ms must be >= 0."""
        if not ms >= 0:  # also rejects NaN
            raise AudioFormatError(f"duration must be >= 0 ms, got {ms!r}")
        return math.floor(self.sample_rate * ms / MS_PER_S + 0.5)

    def bytes_for_ms(self, ms: float) -> int:
        """Bytes of whole samples in `ms` milliseconds (see samples_for_ms)."""
        return self.samples_for_ms(ms) * self.bytes_per_sample

    def duration_s(self, nbytes: int) -> float:
        """Seconds of audio in `nbytes` bytes; a trailing partial sample counts as nothing."""
        if nbytes < 0:
            raise AudioFormatError(f"byte count must be >= 0, got {nbytes!r}")
        return (nbytes // self.bytes_per_sample) / self.sample_rate


def _build_formats() -> Mapping[str, AudioFormat]:
    table: dict[str, AudioFormat] = {}
    for rate in _RATES:
        table[f"pcm_{rate}"] = AudioFormat(f"pcm_{rate}", "pcm", rate)
    table["ulaw_8000"] = AudioFormat("ulaw_8000", "ulaw", 8000)
    return MappingProxyType(table)


FORMATS: Mapping[str, AudioFormat] = _build_formats()
DEFAULT_FORMAT: AudioFormat = FORMATS["pcm_16000"]


def parse_format(name: object) -> AudioFormat:
    """Return the protocol format called `name` exactly; AudioFormatError for anything else."""
    if isinstance(name, str) and name in FORMATS:
        return FORMATS[name]
    raise AudioFormatError(f"unknown audio format {name!r}; expected one of: {', '.join(FORMATS)}")


def _require_int16(samples: npt.NDArray[np.generic], what: str) -> Int16Array:
    """Check the array contract shared by the encoders: 1-D int16 of either byte order."""
    if (
        samples.dtype.kind != "i"
        or samples.dtype.itemsize != PCM_BYTES_PER_SAMPLE
        or samples.ndim != 1
    ):
        raise AudioFormatError(
            f"{what} needs a 1-D int16 array, got {samples.ndim}-D {samples.dtype}"
        )
    return samples.astype(np.int16, copy=False)


def _build_exponent_table() -> npt.NDArray[np.int32]:
    # Segment number = index of the highest set bit of (magnitude + bias) >> 7, clamped at 0.
    return np.array([max(i.bit_length() - 1, 0) for i in range(ULAW_CODES)], dtype=np.int32)


def _build_decode_table() -> Int16Array:
    codes = np.arange(ULAW_CODES, dtype=np.int32) ^ ULAW_INVERT_MASK
    exponent = (codes >> ULAW_EXPONENT_SHIFT) & ULAW_EXPONENT_MASK
    mantissa = codes & ULAW_MANTISSA_MASK
    # Decode to the middle of the quantisation step, then remove the bias again.
    magnitude = (((mantissa << ULAW_MANTISSA_SHIFT) + ULAW_BIAS) << exponent) - ULAW_BIAS
    values = np.where(codes & ULAW_SIGN_BIT, -magnitude, magnitude)
    table = values.astype(np.int16)
    table.flags.writeable = False  # shared module state
    return table


_ULAW_EXPONENT = _build_exponent_table()
_ULAW_DECODE = _build_decode_table()


def ulaw_encode(samples: Int16Array) -> UInt8Array:
    """Encode int16 samples to G.711 mu-law codes (0 -> 0xFF, 32767 -> 0x80, -32768 -> 0x00)."""
    x = _require_int16(np.asarray(samples), "ulaw_encode").astype(np.int32)
    sign = np.where(x < 0, ULAW_SIGN_BIT, 0)
    # int32 so that negating -32768 does not overflow before the clip.
    magnitude = np.minimum(np.abs(x), ULAW_CLIP) + ULAW_BIAS
    exponent = _ULAW_EXPONENT[magnitude >> ULAW_SEGMENT_SHIFT]
    mantissa = (magnitude >> (exponent + ULAW_MANTISSA_SHIFT)) & ULAW_MANTISSA_MASK
    code = sign | (exponent << ULAW_EXPONENT_SHIFT) | mantissa
    wire: UInt8Array = (code ^ ULAW_INVERT_MASK).astype(np.uint8)
    return wire


def ulaw_decode(codes: UInt8Array) -> Int16Array:
    """Decode G.711 mu-law codes (uint8) to int16 samples via a 256-entry table."""
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise AudioFormatError(f"ulaw_decode needs uint8 codes, got {arr.dtype}")
    return _ULAW_DECODE[arr]


def decode(data: bytes | bytearray | memoryview, fmt: AudioFormat) -> Int16Array:
    """Wire bytes to a new native-order int16 array; a trailing odd PCM byte is ignored."""
    if fmt.encoding == "ulaw":
        return ulaw_decode(np.frombuffer(data, dtype=np.uint8))
    count = len(data) // PCM_BYTES_PER_SAMPLE
    return np.frombuffer(data, dtype=PCM_WIRE_DTYPE, count=count).astype(np.int16)


def encode(samples: Int16Array, fmt: AudioFormat) -> bytes:
    """1-D int16 samples to wire bytes for `fmt` (little-endian PCM or mu-law codes)."""
    x = _require_int16(np.asarray(samples), "encode")
    if fmt.encoding == "ulaw":
        return ulaw_encode(x).tobytes()
    return x.astype(PCM_WIRE_DTYPE, copy=False).tobytes()


def to_float(samples: Int16Array) -> Float32Array:
    """int16 to float32 in [-1, 1): divides by 32768 so -32768 maps to exactly -1.0."""
    return np.asarray(samples, dtype=np.float32) / np.float32(FULL_SCALE)


def from_float(x: npt.ArrayLike) -> Int16Array:
    """Float (1.0 = full scale) to int16, rounded to nearest, clipped; NaN becomes 0."""
    scaled = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0) * FULL_SCALE
    return np.clip(np.rint(scaled), INT16_MIN, INT16_MAX).astype(np.int16)


def rms_dbfs(samples: Int16Array) -> float:
    """RMS level in dB re 32768 (a full-scale square wave is 0, a full-scale sine -3.01).

    Digital silence and an empty array give -inf.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    mean_square = float(np.mean(np.square(x)))
    if mean_square == 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square) - 20.0 * math.log10(FULL_SCALE)


def silence(n: int) -> Int16Array:
    """`n` samples of digital silence (int16 zeros)."""
    if n < 0:
        raise AudioFormatError(f"sample count must be >= 0, got {n!r}")
    return np.zeros(n, dtype=np.int16)
