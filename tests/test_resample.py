"""Tests for pi_agent.core.audio.resample: tone fidelity, alias rejection, streaming exactness."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from pi_agent.core.audio.resample import Quality, Resampler, resample
from pi_agent.errors import AudioFormatError

RATES = [8000, 16000, 22050, 24000, 44100, 48000]
PAIRS = [(s, d) for s, d in itertools.product(RATES, RATES) if s != d]
DOWN_PAIRS = [(s, d) for s, d in PAIRS if d < s]
AMPLITUDE = 0.5  # of full scale: loud, with headroom for filter overshoot
SECONDS = 0.25
EDGE_S = 0.02  # skip this much at each end: the stream starts and ends abruptly
FULL_SCALE = 32768.0

Float64Array = npt.NDArray[np.float64]


def tone(freq: float, rate: int, seconds: float = SECONDS) -> npt.NDArray[np.int16]:
    n = np.arange(round(rate * seconds))
    x = AMPLITUDE * FULL_SCALE * np.sin(2 * np.pi * freq * n / rate)
    return np.rint(x).astype(np.int16)


def steady(y: npt.NDArray[np.int16], rate: int) -> tuple[Float64Array, Float64Array]:
    """Sample times (s) and values of the part of y away from the stream edges."""
    edge = round(EDGE_S * rate)
    t = np.arange(y.size)[edge : y.size - edge] / rate
    return t, y[edge : y.size - edge].astype(np.float64)


def fit_tone(y: npt.NDArray[np.int16], rate: int, freq: float) -> tuple[float, float, float]:
    """Least-squares fit of sin/cos at freq: (gain dB re AMPLITUDE, phase rad, SNR dB)."""
    t, v = steady(y, rate)
    basis = np.stack((np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)), axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, v, rcond=None)
    amplitude = math.hypot(a, b)
    residual = v - basis @ np.array([a, b])
    snr = 20 * math.log10(amplitude / math.sqrt(2) / max(float(np.std(residual)), 1e-9))
    return 20 * math.log10(amplitude / (AMPLITUDE * FULL_SCALE)), math.atan2(b, a), snr


def peak_hz(y: npt.NDArray[np.int16], rate: int) -> float:
    """Frequency of the strongest spectral peak (Hann window, parabolic interpolation)."""
    _, v = steady(y, rate)
    spectrum = np.abs(np.fft.rfft(v * np.hanning(v.size), 8 * v.size))
    i = int(np.argmax(spectrum[1:-1])) + 1
    lo, mid, hi = np.log(spectrum[i - 1 : i + 2])
    offset = 0.5 * (lo - hi) / (lo - 2 * mid + hi)
    return float((i + offset) * rate / (8 * v.size))


@pytest.mark.parametrize(("src", "dst"), [*PAIRS, *((r, r) for r in RATES)])
def test_1khz_tone_keeps_frequency_level_and_phase(src: int, dst: int) -> None:
    y = resample(tone(1000, src), src, dst)
    assert y.dtype == np.int16
    assert y.size == round(src * SECONDS) * dst // src
    assert peak_hz(y, dst) == pytest.approx(1000, abs=0.5)
    gain_db, phase, snr_db = fit_tone(y, dst, 1000)
    assert abs(gain_db) < 0.5
    assert abs(phase) < 0.01  # radians: output is time-aligned with the input (< 2 us)
    assert snr_db > 60  # no images, aliases or gain ripple to speak of


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_passband_is_flat_to_80_percent_of_lower_nyquist(src: int, dst: int) -> None:
    nyquist = min(src, dst) / 2
    for fraction in (0.05, 0.3, 0.6, 0.8):
        freq = fraction * nyquist
        gain_db, _, snr_db = fit_tone(resample(tone(freq, src), src, dst), dst, freq)
        assert abs(gain_db) < 0.5, f"{freq:.0f} Hz: {gain_db:+.3f} dB"
        assert snr_db > 55, f"{freq:.0f} Hz: SNR {snr_db:.1f} dB"


@pytest.mark.parametrize(("src", "dst"), DOWN_PAIRS)
def test_content_above_output_nyquist_is_suppressed(src: int, dst: int) -> None:
    # Sweep the band that would alias: from just above the output Nyquist to the input's.
    low, high = 1.01 * dst / 2, 0.98 * src / 2
    for freq in np.linspace(low, high, 6):
        x = tone(float(freq), src)
        y = resample(x, src, dst)
        _, out = steady(y, dst)
        out_rms = float(np.sqrt(np.mean(out**2)))
        in_rms = AMPLITUDE * FULL_SCALE / math.sqrt(2)
        attenuation_db = 20 * math.log10(in_rms / max(out_rms, 1e-9))
        assert attenuation_db > 50, f"{freq:.0f} Hz: only {attenuation_db:.1f} dB"


def _stream(
    r: Resampler, x: npt.NDArray[np.int16], sizes: list[int]
) -> tuple[npt.NDArray[np.int16], list[int]]:
    parts, pos, counts = [], 0, []
    for size in sizes:
        parts.append(r.process(x[pos : pos + size]))
        pos += size
        counts.append(sum(p.size for p in parts))
    parts.append(r.process(x[pos:]))
    parts.append(r.flush())
    return np.concatenate(parts), counts


@pytest.mark.parametrize(
    ("src", "dst"),
    [(48000, 16000), (16000, 44100), (44100, 16000), (8000, 22050), (24000, 22050), (22050, 8000)],
)
def test_streaming_in_random_chunks_equals_one_shot(src: int, dst: int) -> None:
    rng = np.random.default_rng(src + dst)
    x = rng.integers(-20000, 20000, src // 2).astype(np.int16)
    sizes = [int(s) for s in rng.choice([0, 1, 2, 7, 160, 441, 882, 1500], size=60)]
    streamed, _ = _stream(Resampler(src, dst), x, sizes)
    whole = resample(x, src, dst)
    assert streamed.size == whole.size == x.size * dst // src
    assert int(np.max(np.abs(streamed.astype(np.int32) - whole))) <= 1


@pytest.mark.parametrize(
    ("src", "dst"), [(44100, 16000), (16000, 44100), (22050, 48000), (48000, 8000), (8000, 24000)]
)
def test_output_length_is_exact_over_many_chunks(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    r = Resampler(src, dst)
    held_back = math.ceil(r.delay_s * dst) + 1
    total_in = total_out = 0
    for _ in range(2000):
        n = int(rng.integers(0, 1000))
        total_in += n
        total_out += r.process(np.zeros(n, dtype=np.int16)).size
        final = total_in * dst // src
        # Never ahead of the input, never more than the filter delay behind it.
        assert final - held_back <= total_out <= final
    total_out += r.flush().size
    assert total_out == total_in * dst // src


def test_twenty_ms_chunks_give_fixed_sized_output() -> None:
    r = Resampler(44100, 16000)
    sizes = [r.process(np.zeros(882, dtype=np.int16)).size for _ in range(500)]
    assert set(sizes[5:]) == {320}
    assert sum(sizes) + r.flush().size == 500 * 320


def test_identity_passes_samples_through() -> None:
    r = Resampler(16000, 16000)
    x = np.arange(-50, 50, dtype=np.int16)
    y = r.process(x)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    assert r.flush().size == 0
    assert r.delay_s == 0.0
    np.testing.assert_array_equal(resample(x, 8000, 8000), x)


def test_delay_is_a_few_milliseconds() -> None:
    for src, dst in PAIRS:
        assert 0.0 < Resampler(src, dst).delay_s < 0.005
    assert Resampler(48000, 8000, quality="high").delay_s > Resampler(48000, 8000).delay_s


def test_flush_resets_for_a_new_stream() -> None:
    x = tone(440, 16000, 0.05)
    r = Resampler(16000, 48000)
    first = np.concatenate((r.process(x), r.flush()))
    second = np.concatenate((r.process(x), r.flush()))
    np.testing.assert_array_equal(first, second)
    r.process(x[:100])
    r.reset()
    np.testing.assert_array_equal(np.concatenate((r.process(x), r.flush())), first)


def test_empty_input() -> None:
    r = Resampler(48000, 16000)
    assert r.process(np.zeros(0, dtype=np.int16)).size == 0
    assert r.flush().size == 0
    assert resample(np.zeros(0, dtype=np.int16), 8000, 44100).size == 0


def test_full_scale_input_clips_instead_of_wrapping() -> None:
    square = np.tile(np.array([32767] * 20 + [-32768] * 20, dtype=np.int16), 50)
    y = resample(square, 48000, 16000)
    # Gibbs overshoot must saturate; wrap-around would put big negatives in the positive half.
    assert y.min() >= -32768
    assert y.max() == 32767


QUALITIES: list[Quality] = ["fast", "default", "high"]


@pytest.mark.parametrize("quality", QUALITIES)
def test_quality_settings_all_suppress_aliases(quality: Quality) -> None:
    r = Resampler(48000, 8000, quality=quality)
    y = np.concatenate((r.process(tone(6000, 48000)), r.flush()))
    _, out = steady(y, 8000)
    out_rms = max(float(np.std(out)), 1e-9)  # the alias may round away to digital silence
    assert 20 * math.log10(AMPLITUDE * FULL_SCALE / math.sqrt(2) / out_rms) > 55


@pytest.mark.parametrize("bad", [0, -16000, 16000.0, True, "16000"])
def test_bad_rates_are_rejected(bad: object) -> None:
    with pytest.raises(AudioFormatError):
        Resampler(bad, 16000)  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError):
        Resampler(16000, bad)  # type: ignore[arg-type]


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(AudioFormatError):
        Resampler(16000, 8000, quality="ultra")  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError, match="phases"):
        Resampler(44101, 48000)
    r = Resampler(16000, 8000)
    with pytest.raises(AudioFormatError):
        r.process(np.zeros(4, dtype=np.float32))
    with pytest.raises(AudioFormatError):
        r.process(np.zeros((2, 2), dtype=np.int16))
