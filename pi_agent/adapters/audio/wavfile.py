"""WAV file adapter (stdlib wave): read any integer PCM WAV as int16 mono, write int16 mono."""

from __future__ import annotations

import errno
import os
import stat
import sys
import wave
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from pi_agent.errors import AudioError

Int16Array = npt.NDArray[np.int16]
PathLike = str | os.PathLike[str]

OUTPUT_SAMPLE_WIDTH = 2  # bytes: we always write signed 16-bit
OUTPUT_CHANNELS = 1
INT16_MIN = -32768
INT16_MAX = 32767
U8_MIDPOINT = 128  # 8-bit WAV is unsigned with silence at 128
BITS_PER_BYTE = 8
INT16_BITS = 16
INT32_BITS = 32
PACKED_24_BIT_WIDTH = 3  # bytes per 24-bit sample
SUPPORTED_WIDTHS = (1, 2, 3, 4)  # bytes per sample that we can convert
EXPECTED = "an uncompressed integer PCM WAV (8, 16, 24 or 32-bit)"


def _to_int16_units(raw: bytes, width: int) -> npt.NDArray[np.float64]:
    """Decode interleaved samples of `width` bytes into float64 scaled to int16 units."""
    if width == 1:
        codes = np.frombuffer(raw, dtype=np.uint8).astype(np.float64)
        upscaled: npt.NDArray[np.float64] = (codes - U8_MIDPOINT) * 2.0 ** (
            INT16_BITS - BITS_PER_BYTE
        )
        return upscaled
    if width == PACKED_24_BIT_WIDTH:
        # No 24-bit dtype: put the three bytes in the top of an int32 so the sign extends.
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, PACKED_24_BIT_WIDTH).astype(np.int32)
        if sys.byteorder == "big":  # wave hands samples over in host order
            b = b[:, ::-1]
        values = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).astype(np.float64)
        bits = INT32_BITS
    else:
        # wave swaps to host order on big-endian hosts, so the native dtype is the right one.
        values = np.frombuffer(raw, dtype=np.dtype(f"=i{width}")).astype(np.float64)
        bits = width * BITS_PER_BYTE
    # Dividing (not shifting) keeps the fraction so that rounding happens once, at the end.
    scaled: npt.NDArray[np.float64] = values / 2.0 ** (bits - INT16_BITS)
    return scaled


def read_wav(path: PathLike) -> tuple[Int16Array, int]:
    """Read a WAV as (int16 mono samples, sample rate); channels are averaged, AudioError if bad."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh, wave.open(fh, "rb") as wf:
            channels, width, rate = wf.getnchannels(), wf.getsampwidth(), wf.getframerate()
            if width not in SUPPORTED_WIDTHS:
                raise AudioError(
                    f"{name}: {width * BITS_PER_BYTE}-bit samples; expected {EXPECTED}"
                )
            raw = wf.readframes(wf.getnframes())
    except AudioError:
        raise
    except OSError as exc:
        raise AudioError(f"{name}: cannot read WAV file: {exc.strerror or exc}") from exc
    except (wave.Error, EOFError) as exc:  # wave signals a short header with a bare EOFError
        problem = str(exc) or "file ends inside the header"
        raise AudioError(f"{name}: not a usable WAV file ({problem}); expected {EXPECTED}") from exc
    # A truncated data chunk can end mid-frame; keep whole frames only.
    frame_bytes = width * channels
    raw = raw[: len(raw) - len(raw) % frame_bytes]
    frames = _to_int16_units(raw, width).reshape(-1, channels)
    mono = frames[:, 0] if channels == 1 else frames.mean(axis=1)
    return np.clip(np.rint(mono), INT16_MIN, INT16_MAX).astype(np.int16), rate


# An output file is created or truncated only as a regular file: never through a symbolic
# link (which could point at any file the daemon may write), never a FIFO or a device.
OUTPUT_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OUTPUT_MODE = 0o644
OUTPUT_EXPECTED = "expected a regular file to write the WAV to"


def _open_output(path: str) -> BinaryIO:
    """Open `path` for writing from its start, refusing links and anything not a regular file."""
    try:
        fd = os.open(path, OUTPUT_OPEN_FLAGS, OUTPUT_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError(
                f"{path} is a symbolic link; expected a regular file (pi-agent does not write "
                "through links)"
            ) from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads (O_NONBLOCK: we do not wait)
            raise AudioError(f"{path} is not a regular file; {OUTPUT_EXPECTED}") from None
        raise AudioError(f"{path}: cannot create WAV file: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AudioError(f"{path} is not a regular file; {OUTPUT_EXPECTED}")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


class WavWriter:
    """Streams int16 mono samples into a 16-bit WAV; the header is finalised on close()."""

    def __init__(self, path: PathLike, rate: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"sample rate must be a positive int, got {rate!r}")
        self.path = os.fspath(path)
        self.rate = rate
        self.frames_written = 0
        file = _open_output(self.path)  # long-lived on purpose: owned until close()
        self._file: BinaryIO | None = file
        self._wav = wave.open(file, "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(OUTPUT_CHANNELS)
        self._wav.setsampwidth(OUTPUT_SAMPLE_WIDTH)
        self._wav.setframerate(rate)

    def write(self, samples: Int16Array) -> None:
        """Append 1-D int16 samples."""
        if self._file is None:
            raise ValueError(f"{self.path}: write to a closed WavWriter")
        x = np.asarray(samples)
        if x.dtype.kind != "i" or x.dtype.itemsize != OUTPUT_SAMPLE_WIDTH or x.ndim != 1:
            raise ValueError(f"WavWriter needs a 1-D int16 array, got {x.ndim}-D {x.dtype}")
        try:
            # wave expects host-order frames (it byte-swaps itself on big-endian hosts).
            self._wav.writeframesraw(x.astype(np.int16, copy=False).tobytes())
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot write WAV file: {exc.strerror or exc}") from exc
        self.frames_written += x.size

    def close(self) -> None:
        """Patch the RIFF/data sizes into the header and close the file; idempotent."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            self._wav.close()  # rewrites the header with the real frame count
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot finish WAV file: {exc.strerror or exc}") from exc
        finally:
            file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_wav(path: PathLike, samples: Int16Array, rate: int) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV at `rate` Hz; AudioError on I/O failure."""
    with WavWriter(path, rate) as writer:
        writer.write(samples)
