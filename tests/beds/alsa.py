"""Real PortAudio over a self-contained ALSA config: a microphone that reads a raw file, a speaker
that appends to one (TESTBED.md section 1). No sound card needed; no mocks.

The speaker file is truncated whenever the device is opened (a stream, or PortAudio asking
about a rate), so it holds what the last stream played. `truncate false` does not make it
append across streams: ALSA then writes each stream to a new numbered file.

The bed is NOT paced: capture delivers a file's worth of audio in milliseconds and playback
swallows audio as fast as it comes, so tests stop on counts, never on elapsed time. After the end
of the microphone file, reads repeat its last 640 samples: `write_mic` pads with silence.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# The file plugin repeats the last 640 samples after the end of its infile; this much trailing
# silence (samples) keeps that repetition silent for a whole second at 16 kHz.
MIC_PADDING_SAMPLES = 16000
# Environment the bed sets while it is open: ALSA reads only our file; JACK (Debian's PortAudio
# is built with it) does not try to start a server.
JACK_ENV = {"JACK_NO_START_SERVER": "1"}
ASOUND_CONF = """\
pcm.!default {{ type asym capture.pcm "mic" playback.pcm "speaker" }}
pcm.mic {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{mic}"
    format "raw"
}}
pcm.speaker {{
    type file
    slave.pcm {{ type null }}
    file "{speaker}"
    format "raw"
}}
"""

Int16 = npt.NDArray[np.int16]


@dataclass
class AlsaBed:
    """Paths of one bed and the PyAudio instance created inside it."""

    directory: Path
    config: Path
    mic_file: Path
    speaker_file: Path
    pa: Any = None  # pyaudio.PyAudio, created after ALSA_CONFIG_PATH is set
    extra: list[Any] = field(default_factory=list)  # instances from new_pyaudio()

    def write_mic(self, samples: Int16, padding: int = MIC_PADDING_SAMPLES) -> None:
        """Make the microphone read `samples` then `padding` zeros (each stream starts over)."""
        data = np.concatenate((np.asarray(samples, dtype=np.int16), np.zeros(padding, np.int16)))
        data.tofile(self.mic_file)

    def speaker_samples(self) -> Int16:
        """Everything written to the speaker so far (read once its stream is closed)."""
        if not self.speaker_file.exists():
            return np.zeros(0, dtype=np.int16)
        return np.fromfile(self.speaker_file, dtype=np.int16)

    def index(self, name: str) -> int:
        """The PortAudio index of the device called exactly `name`."""
        for i in range(self.pa.get_device_count()):
            if self.pa.get_device_info_by_index(i)["name"] == name:
                return i
        raise LookupError(f"no PortAudio device {name!r}")

    def new_pyaudio(self) -> Any:
        """Another PyAudio instance in this bed; terminated by the bed unless `terminated()`."""
        import pyaudio

        pa = pyaudio.PyAudio()
        self.extra.append(pa)
        return pa

    def terminated(self, pa: Any) -> None:
        """Record that code under test terminated `pa` (terminating twice breaks PortAudio)."""
        self.extra.remove(pa)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def alsa_bed(directory: Path, mic: Int16 | None = None) -> Iterator[AlsaBed]:
    """Write the config in `directory`, point ALSA at it, and hold a PyAudio instance there."""
    import pyaudio

    directory.mkdir(parents=True, exist_ok=True)
    bed = AlsaBed(
        directory=directory,
        config=directory / "asound.conf",
        mic_file=directory / "mic.raw",
        speaker_file=directory / "speaker.raw",
    )
    # The file plugin opens its infile when the device is opened, and PortAudio opens every
    # device while listing them: the file must exist before PyAudio() is created.
    bed.write_mic(np.zeros(0, np.int16) if mic is None else mic)
    bed.config.write_text(ASOUND_CONF.format(mic=bed.mic_file, speaker=bed.speaker_file))
    # PortAudio reads the ALSA configuration when it is initialised, i.e. in PyAudio().
    with _environment({"ALSA_CONFIG_PATH": str(bed.config), **JACK_ENV}):
        bed.pa = pyaudio.PyAudio()
        try:
            yield bed
        finally:
            for pa in bed.extra:
                pa.terminate()
            bed.pa.terminate()
