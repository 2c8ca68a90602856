"""Tests for pi_agent.adapters.audio.wavfile: round trips, conversions, errors naming the file."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pi_agent.adapters.audio.wavfile import WavWriter, read_wav, write_wav
from pi_agent.errors import AudioError

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3


def riff(payload: bytes, *, tag: int, channels: int, rate: int, bits: int) -> bytes:
    """A minimal RIFF/WAVE file around `payload`, built by hand so any header is possible."""
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_raw(path: Path, frames: bytes, *, channels: int, width: int, rate: int) -> None:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(width)
        wf.setframerate(rate)
        wf.writeframes(frames)


def noise(n: int) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(5)
    return rng.integers(-32768, 32768, n).astype(np.int16)


def test_round_trip_16_bit_mono(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    x = np.concatenate((np.array([-32768, 32767, 0, 1, -1], dtype=np.int16), noise(1000)))
    write_wav(path, x, 16000)
    y, rate = read_wav(path)
    assert rate == 16000
    assert y.dtype == np.int16
    np.testing.assert_array_equal(y, x)
    with wave.open(str(path), "rb") as wf:
        assert (wf.getnchannels(), wf.getsampwidth(), wf.getnframes()) == (1, 2, x.size)


def test_file_bytes_are_little_endian(tmp_path: Path) -> None:
    path = tmp_path / "le.wav"
    write_wav(path, np.array([0x0102, -2], dtype=np.int16), 8000)
    assert path.read_bytes().endswith(b"\x02\x01\xfe\xff")
    assert path.read_bytes()[:4] == b"RIFF"


def test_accepts_str_paths_and_empty_audio(tmp_path: Path) -> None:
    path = str(tmp_path / "empty.wav")
    write_wav(path, np.zeros(0, dtype=np.int16), 24000)
    y, rate = read_wav(path)
    assert (y.size, rate) == (0, 24000)


def test_stereo_is_mixed_down_by_averaging(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = np.array([1000, -32768, 32767, 3, 0], dtype=np.int16)
    right = np.array([3000, -32768, 32767, 4, -1], dtype=np.int16)
    frames = np.stack((left, right), axis=1).astype("<i2").tobytes()
    write_raw(path, frames, channels=2, width=2, rate=44100)
    y, rate = read_wav(path)
    assert rate == 44100
    # Means 2000, -32768, 32767, 3.5 and -0.5 round to nearest (ties to even).
    assert y.tolist() == [2000, -32768, 32767, 4, 0]


def test_eight_bit_unsigned_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    write_raw(path, bytes([128, 0, 255, 129]), channels=1, width=1, rate=8000)
    y, _ = read_wav(path)
    assert y.tolist() == [0, -32768, 32512, 256]


def test_24_and_32_bit_are_scaled_to_16_bits(tmp_path: Path) -> None:
    path24 = tmp_path / "s24.wav"
    # 0x7FFFFF, -0x800000, 0x000100 (= 1 in 16-bit units), 0x000080 (half a unit), 0x000040
    samples24 = [0x7FFFFF, -0x800000, 0x100, 0x80, 0x40]
    frames = b"".join(v.to_bytes(3, "little", signed=True) for v in samples24)
    write_raw(path24, frames, channels=1, width=3, rate=48000)
    y24, rate = read_wav(path24)
    assert rate == 48000
    assert y24.tolist() == [32767, -32768, 1, 0, 0]  # 0.5 rounds to even
    path32 = tmp_path / "s32.wav"
    samples32 = np.array([2**31 - 1, -(2**31), 3 << 16, -(5 << 16)], dtype="<i4")
    write_raw(path32, samples32.tobytes(), channels=1, width=4, rate=22050)
    y32, _ = read_wav(path32)
    assert y32.tolist() == [32767, -32768, 3, -5]


def test_truncated_data_keeps_whole_frames(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    full = riff(
        b"\x01\x00\x02\x00\x03\x00\x04\x00", tag=WAVE_FORMAT_PCM, channels=2, rate=8000, bits=16
    )
    path.write_bytes(full[:-3])  # the header still promises two whole frames
    y, _ = read_wav(path)
    assert y.tolist() == [2]  # mean of (1, 3); the half-written second frame is dropped


def test_streaming_writer_finalises_header(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    x = noise(5000)
    with WavWriter(path, 16000) as writer:
        for part in np.array_split(x, 7):
            writer.write(part)
        assert writer.frames_written == x.size
    with wave.open(str(path), "rb") as wf:
        assert wf.getnframes() == x.size
    y, _ = read_wav(path)
    np.testing.assert_array_equal(y, x)


def test_writer_close_is_idempotent_and_final(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "w.wav", 8000)
    writer.write(np.ones(3, dtype=np.int16))
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.ones(3, dtype=np.int16))
    assert read_wav(tmp_path / "w.wav")[0].tolist() == [1, 1, 1]


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WavWriter(tmp_path / "r.wav", 0)
    with WavWriter(tmp_path / "d.wav", 8000) as writer, pytest.raises(ValueError):
        writer.write(np.zeros(3, dtype=np.float32))


def test_write_into_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir.wav"
    with pytest.raises(AudioError, match=str(path)):
        write_wav(path, np.zeros(3, dtype=np.int16), 8000)


def _read_error(path: Path) -> str:
    with pytest.raises(AudioError) as info:
        read_wav(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "No such file" in _read_error(tmp_path / "absent.wav")


def test_directory_is_not_a_wav(tmp_path: Path) -> None:
    _read_error(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not audio at all", b"RIFF\x04\x00\x00\x00WAVE", b"RIFF\x10\x00\x00\x00AVI "],
)
def test_not_a_wav(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    message = _read_error(path)
    assert "expected" in message
    assert "()" not in message  # the reason is spelled out even when wave gives none


def test_float_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    payload = np.array([0.5, -0.5], dtype="<f4").tobytes()
    path.write_bytes(riff(payload, tag=WAVE_FORMAT_IEEE_FLOAT, channels=1, rate=16000, bits=32))
    assert "integer PCM" in _read_error(path)


def test_64_bit_samples_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s64.wav"
    payload = np.array([1, -1], dtype="<i8").tobytes()
    path.write_bytes(riff(payload, tag=WAVE_FORMAT_PCM, channels=1, rate=16000, bits=64))
    assert "64-bit" in _read_error(path)


def test_audio_error_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_wav(tmp_path / "absent.wav")
