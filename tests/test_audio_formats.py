"""Tests for pi_agent.core.audio.formats: protocol format table, PCM and G.711 mu-law codecs."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from pi_agent.core.audio.formats import (
    DEFAULT_FORMAT,
    FORMATS,
    AudioFormat,
    decode,
    encode,
    from_float,
    parse_format,
    rms_dbfs,
    silence,
    to_float,
    ulaw_decode,
    ulaw_encode,
)
from pi_agent.errors import AudioFormatError

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
PROTOCOL_NAMES = [
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
]


def _ramp() -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(1)
    extremes = np.array([0, 1, -1, 32767, -32768, 255, -256], dtype=np.int16)
    return np.concatenate((extremes, rng.integers(-32768, 32768, 1000).astype(np.int16)))


def test_exactly_the_seven_protocol_formats() -> None:
    assert sorted(FORMATS) == sorted(PROTOCOL_NAMES)
    assert DEFAULT_FORMAT is FORMATS["pcm_16000"]
    for name, fmt in FORMATS.items():
        assert fmt.name == name
        assert name == f"{fmt.encoding}_{fmt.sample_rate}"


def test_format_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        FORMATS["pcm_96000"] = AudioFormat("pcm_96000", "pcm", 96000)  # type: ignore[index]


def test_format_arithmetic() -> None:
    pcm = FORMATS["pcm_16000"]
    ulaw = FORMATS["ulaw_8000"]
    assert pcm.bytes_per_sample == 2
    assert ulaw.bytes_per_sample == 1
    assert pcm.samples_for_ms(20) == 320
    assert pcm.bytes_for_ms(20) == 640
    assert ulaw.bytes_for_ms(20) == 160
    assert FORMATS["pcm_22050"].samples_for_ms(10) == 221  # 220.5 rounds half up
    assert pcm.duration_s(32000) == pytest.approx(1.0)
    assert pcm.duration_s(3) == pytest.approx(1 / 16000)  # trailing odd byte ignored
    assert ulaw.duration_s(800) == pytest.approx(0.1)
    with pytest.raises(AudioFormatError):
        pcm.samples_for_ms(-1)
    with pytest.raises(AudioFormatError):
        pcm.duration_s(-2)


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_parse_format_accepts_protocol_names(name: str) -> None:
    assert parse_format(name) is FORMATS[name]


@pytest.mark.parametrize("bad", ["pcm_11025", "PCM_16000", "", " pcm_16000", None, 16000, b"pcm"])
def test_parse_format_rejects_with_helpful_message(bad: object) -> None:
    with pytest.raises(AudioFormatError) as info:
        parse_format(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in PROTOCOL_NAMES:
        assert name in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [n for n in PROTOCOL_NAMES if n.startswith("pcm")])
def test_pcm_round_trip_is_bit_exact(name: str) -> None:
    fmt = FORMATS[name]
    x = _ramp()
    data = encode(x, fmt)
    assert len(data) == 2 * x.size
    y = decode(data, fmt)
    assert y.dtype == np.int16
    np.testing.assert_array_equal(y, x)


def test_ulaw_format_round_trip_within_quantisation() -> None:
    fmt = FORMATS["ulaw_8000"]
    x = _ramp()
    data = encode(x, fmt)
    assert len(data) == x.size
    y = decode(data, fmt)
    assert y.dtype == np.int16
    assert np.all(np.abs(y.astype(np.int32) - x) <= (np.abs(x.astype(np.int32)) + 132) / 32)


def test_pcm_is_little_endian_on_the_wire() -> None:
    fmt = FORMATS["pcm_16000"]
    x = np.array([0x0102, -2, 32767, -32768], dtype=np.int16)
    assert encode(x, fmt) == b"\x02\x01\xfe\xff\xff\x7f\x00\x80"
    np.testing.assert_array_equal(decode(b"\x02\x01\xfe\xff", fmt), [0x0102, -2])


def test_pcm_encode_accepts_big_endian_input() -> None:
    x = np.array([0x0102, -2], dtype=">i2")
    assert encode(x, FORMATS["pcm_8000"]) == b"\x02\x01\xfe\xff"
    assert ulaw_encode(x).tolist() == ulaw_encode(x.astype(np.int16)).tolist()


def test_decode_returns_native_writable_copy() -> None:
    data = bytearray(b"\x01\x00\x02\x00")
    y = decode(data, FORMATS["pcm_16000"])
    assert y.dtype == np.dtype(np.int16)
    assert y.dtype.isnative
    y[0] = 99  # must not raise (frombuffer views are read-only for bytes)
    assert data[0] == 1


def test_odd_pcm_byte_count_ignores_trailing_byte() -> None:
    y = decode(b"\x01\x00\x02\x00\x7f", FORMATS["pcm_16000"])
    np.testing.assert_array_equal(y, [1, 2])
    assert decode(b"\x7f", FORMATS["pcm_16000"]).size == 0
    assert decode(b"", FORMATS["ulaw_8000"]).size == 0


def test_encode_rejects_wrong_dtype_or_shape() -> None:
    with pytest.raises(AudioFormatError):
        encode(np.zeros(4, dtype=np.float32), DEFAULT_FORMAT)
    with pytest.raises(AudioFormatError):
        encode(np.zeros((2, 2), dtype=np.int16), DEFAULT_FORMAT)


def test_ulaw_known_values() -> None:
    x = np.array([0, 32767, -32768, 1, -1, 32635, -32635], dtype=np.int16)
    codes = ulaw_encode(x)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [0xFF, 0x80, 0x00, 0xFF, 0x7F, 0x80, 0x00]
    table = ulaw_decode(np.array([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0x7E], dtype=np.uint8))
    assert table.tolist() == [0, 0, 32124, -32124, 8, -8]


def test_ulaw_every_code_survives_decode_encode() -> None:
    codes = np.arange(256, dtype=np.uint8)
    again = ulaw_encode(ulaw_decode(codes))
    zero_codes = {0x7F, 0xFF}
    for code, back in zip(codes.tolist(), again.tolist(), strict=True):
        if code in zero_codes:
            assert back == 0xFF  # both zero codes decode to 0, which encodes to 0xFF
        else:
            assert back == code


def test_ulaw_decode_is_odd_symmetric_and_monotonic() -> None:
    positive = ulaw_decode(np.arange(0xFF, 0x7F, -1, dtype=np.uint8)).astype(np.int32)
    negative = ulaw_decode(np.arange(0x7F, -1, -1, dtype=np.uint8)).astype(np.int32)
    np.testing.assert_array_equal(positive, -negative)
    assert np.all(np.diff(positive) > 0)


def test_ulaw_error_bound_over_every_int16() -> None:
    y = ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int32)
    x = ALL_INT16.astype(np.int32)
    err = np.abs(y - x)
    magnitude = np.abs(x)
    # Inside the clip level the error is at most half a step; a segment starting at
    # 2**(e+7) - 132 has steps of 2**(e+3), so half a step is <= (|x| + 132) / 32.
    assert np.all(err <= (magnitude + 132) / 32)
    unclipped = magnitude <= 32635
    step_half = 2 ** (np.floor(np.log2((magnitude[unclipped] + 132) >> 7)) + 2)
    assert np.all(err[unclipped] <= step_half)
    # Beyond the clip level everything lands on the largest code.
    assert np.all(np.abs(y[~unclipped]) == 32124)


def test_ulaw_rejects_wrong_dtypes() -> None:
    with pytest.raises(AudioFormatError):
        ulaw_decode(np.zeros(3, dtype=np.int16))
    with pytest.raises(AudioFormatError):
        ulaw_encode(np.zeros(3, dtype=np.int32))


def test_float_conversions() -> None:
    x = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = to_float(x)
    assert f.dtype == np.float32
    assert f[0] == -1.0
    assert f.max() < 1.0
    np.testing.assert_array_equal(from_float(f), x)
    clipped = from_float(np.array([1.5, -1.5, 0.49 / 32768, 0.51 / 32768, math.nan]))
    assert clipped.tolist() == [32767, -32768, 0, 1, 0]
    assert from_float([0.5]).dtype == np.int16


def test_rms_dbfs() -> None:
    assert rms_dbfs(silence(100)) == -math.inf
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == -math.inf
    square = np.array([-32768, -32768], dtype=np.int16)
    assert rms_dbfs(square) == pytest.approx(0.0)
    n = np.arange(48000)
    sine = from_float(0.5 * np.sin(2 * np.pi * 1000 * n / 48000))
    assert rms_dbfs(sine) == pytest.approx(-3.01 - 6.02, abs=0.01)
    assert rms_dbfs(np.ones(10, dtype=np.int16)) == pytest.approx(-90.31, abs=0.01)


def test_silence() -> None:
    z = silence(5)
    assert z.dtype == np.int16
    assert z.tolist() == [0] * 5
    assert silence(0).size == 0
    with pytest.raises(AudioFormatError):
        silence(-1)
