"""`pi-agent test-audio`: level report and playback through real PortAudio and the file backend."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pi_agent.adapters.audio.pyaudio_backend import PyAudioMicrophone, PyAudioSpeaker
from pi_agent.adapters.audio.wavfile import read_wav, write_wav
from pi_agent.commands.test_audio import measure, run_test_audio
from tests.beds.alsa import AlsaBed, alsa_bed

RATE = 16000


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[AlsaBed]:
    with alsa_bed(tmp_path / "alsa") as b:
        yield b


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.round(np.sin(2 * np.pi * 500 * t) * amplitude * 32767).astype(np.int16)


def test_measure_levels_and_verdicts() -> None:
    ok = measure(tone(1, 0.1), RATE)
    assert ok.rms_dbfs == pytest.approx(-23.0, abs=0.2)  # 0.1 full-scale sine: -20 - 3 dB
    assert ok.peak_dbfs == pytest.approx(-20.0, abs=0.1)
    assert ok.verdict == "OK"
    assert measure(tone(1, 0.001), RATE).verdict.startswith("very quiet")
    loud = np.clip(tone(1, 2.0).astype(np.int32) * 1, -32768, 32767).astype(np.int16)
    assert measure(
        np.where(np.abs(tone(1, 1.0)) > 30000, 32767, loud).astype(np.int16), RATE
    ).verdict.startswith("clipping")


def test_records_reports_and_plays_back_through_portaudio(bed: AlsaBed) -> None:
    recording = tone(0.5, 0.2)
    bed.write_mic(recording)
    mic = PyAudioMicrophone(bed.pa, bed.index("mic"), RATE, 20)
    speaker = PyAudioSpeaker(bed.pa, bed.index("speaker"), chunk_ms=20)
    out = io.StringIO()
    status = asyncio.run(asyncio.wait_for(run_test_audio(mic, speaker, 0.5, out), 30))
    assert status == 0
    assert (
        "level: -17.0 dBFS RMS, peak -14.0 dBFS, clipped 0.00% of samples -> OK" in out.getvalue()
    )
    # The unpaced bed pulls faster than frames arrive, so the callback pads with silence
    # between frames: compare the non-zero samples, which must be the recording, in order.
    played = bed.speaker_samples()
    assert np.array_equal(played[played != 0], recording[recording != 0])


def test_cli_with_the_file_backend(tmp_path: Path) -> None:
    write_wav(tmp_path / "in.wav", tone(1.0, 0.001), RATE)
    config = tmp_path / "pi-agent.yaml"
    config.write_text(
        "agent:\n  agent_id: a\naudio:\n  backend: file\n  input_file: in.wav\n"
        "  output_file: out.wav\n  file_speed: 0\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pi_agent",
            "test-audio",
            "--config",
            str(config),
            "--seconds",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 74  # too quiet is a failed check
    assert "very quiet" in result.stdout
    played, rate = read_wav(tmp_path / "out.wav")
    assert rate == RATE
    assert len(played) == RATE // 2
