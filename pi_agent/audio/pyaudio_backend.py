"""The `pyaudio` backend: PortAudio capture and playback in callback mode.

PortAudio calls our callbacks on its own thread. Capture copies each buffer and posts it to the
loop with `call_soon_threadsafe` (never touching the network); playback pulls frames from a small
locked FIFO that the loop fills, padding with silence when it runs dry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from pi_agent.audio.devices import ChunkQueue, Samples
from pi_agent.config import AudioConfig
from pi_agent.errors import AudioError

log = logging.getLogger(__name__)

# Rates tried, best first, when a device refuses the one we want (USB microphones often refuse
# 16 kHz with -9997 "Invalid sample rate"); the resampler converts to the agent's format.
PREFERRED_RATES = (16000, 48000, 44100, 32000, 24000, 22050, 8000)
# Playback keeps about this much audio queued ahead of the device: enough to ride out loop
# hiccups, small enough that a barge-in flush leaves at most this much to be heard.
PLAYBACK_AHEAD_MS = 60
# How often the capture task checks that the stream is still alive (device unplugged).
STREAM_CHECK_S = 0.5

PyAudioFactory = Callable[[], Any]


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - a dependency, but say what to do
        raise AudioError(
            "the pyaudio backend needs PyAudio (pip install pyaudio; Debian: python3-pyaudio)"
        ) from exc
    return pyaudio


def find_device(pa: Any, wanted: str | int | None, *, input: bool) -> int:
    """PortAudio index of the device named by substring or index; default device when None."""
    key = "maxInputChannels" if input else "maxOutputChannels"
    kind = "input" if input else "output"
    devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    usable = [d for d in devices if int(d.get(key, 0)) > 0]
    if wanted is None:
        try:
            info = (
                pa.get_default_input_device_info() if input else pa.get_default_output_device_info()
            )
        except OSError:
            info = usable[0] if usable else None
        if info is None:
            raise AudioError(f"no {kind} audio device found")
        return int(info["index"])
    for d in usable:
        if wanted == int(d["index"]) or (
            isinstance(wanted, str) and wanted.lower() in str(d["name"]).lower()
        ):
            return int(d["index"])
    names = ", ".join(f"{int(d['index'])}: {d['name']}" for d in usable) or "none"
    raise AudioError(f"no {kind} device matches {wanted!r}; {kind} devices: {names}")


def pick_rate(pa: Any, index: int, *, input: bool, want: int | None = None) -> int:
    """A sample rate the device accepts, asking PortAudio rather than guessing."""
    pyaudio = _pyaudio()
    info = pa.get_device_info_by_index(index)
    candidates = [r for r in (want, *PREFERRED_RATES, int(info["defaultSampleRate"])) if r]
    for rate in dict.fromkeys(candidates):
        kwargs: dict[str, Any] = {"rate": rate}
        if input:
            kwargs.update(input_device=index, input_channels=1, input_format=pyaudio.paInt16)
        else:
            kwargs.update(output_device=index, output_channels=1, output_format=pyaudio.paInt16)
        try:
            if pa.is_format_supported(**kwargs):
                return int(rate)
        except ValueError:
            continue
    raise AudioError(f"device {info['name']!r} accepts none of the rates {candidates}")


class PyAudioMicrophone:
    """Captures mono int16 chunks of `chunk_ms` from a PortAudio input device."""

    def __init__(self, pa: Any, device: int, rate: int, chunk_ms: int) -> None:
        self._pa = pa
        self.device = device
        self.sample_rate = rate
        self.chunk_samples = max(1, rate * chunk_ms // 1000)
        self.overflows = 0

    @property
    def finished(self) -> bool:
        return False  # a live microphone never runs out

    async def run(self, queue: ChunkQueue) -> None:
        pyaudio = _pyaudio()
        loop = asyncio.get_running_loop()

        def on_audio(
            data: bytes | None, frames: int, time_info: Any, status: int
        ) -> tuple[None, int]:
            if status & pyaudio.paInputOverflow:
                self.overflows += 1
            if data:
                chunk = np.frombuffer(data, dtype="<i2").astype(np.int16)
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return None, pyaudio.paContinue

        try:
            stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.sample_rate,
                input=True,
                input_device_index=self.device,
                frames_per_buffer=self.chunk_samples,
                stream_callback=on_audio,
            )
        except OSError as exc:
            raise AudioError(f"could not open the microphone: {exc}") from exc
        try:
            while stream.is_active():  # noqa: ASYNC110 - PortAudio has no death event
                await asyncio.sleep(STREAM_CHECK_S)
            raise AudioError("the microphone stream stopped (device unplugged?)")
        finally:
            stream.stop_stream()
            stream.close()


class PyAudioSpeaker:
    """Plays mono int16 frames on a PortAudio output device with a short FIFO."""

    def __init__(self, pa: Any, device: int, volume: float = 1.0) -> None:
        self._pa = pa
        self.device = device
        self.volume = volume
        self._rate = 0
        self._fifo: deque[Samples] = deque()
        self._fifo_samples = 0
        self._lock = threading.Lock()
        self._stream: Any = None
        self._space = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.underruns = 0

    def device_rate(self, stream_rate: int) -> int:
        return pick_rate(self._pa, self.device, input=False, want=stream_rate)

    async def open(self, sample_rate: int) -> None:
        pyaudio = _pyaudio()
        self._rate = sample_rate
        self._loop = asyncio.get_running_loop()
        period = max(1, sample_rate * PLAYBACK_AHEAD_MS // 3000)
        try:
            self._stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=sample_rate,
                output=True,
                output_device_index=self.device,
                frames_per_buffer=period,
                stream_callback=self._on_play,
            )
        except OSError as exc:
            raise AudioError(f"could not open the speaker: {exc}") from exc

    def _on_play(self, data: Any, frames: int, time_info: Any, status: int) -> tuple[bytes, int]:
        out = np.zeros(frames, dtype=np.int16)
        filled = 0
        with self._lock:
            while filled < frames and self._fifo:
                head = self._fifo[0]
                take = min(frames - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._fifo.popleft()
                else:
                    self._fifo[0] = head[take:]
                self._fifo_samples -= take
            had_audio = filled > 0
        if had_audio and filled < frames:
            self.underruns += 1
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._space.set)
        return out.astype("<i2").tobytes(), _pyaudio().paContinue

    def _ahead_samples(self) -> int:
        return self._rate * PLAYBACK_AHEAD_MS // 1000

    async def play(self, frame: Samples) -> None:
        if self.volume != 1.0:
            frame = np.clip(frame.astype(np.float32) * self.volume, -32768, 32767).astype(np.int16)
        with self._lock:
            self._fifo.append(frame)
            self._fifo_samples += len(frame)
        while True:
            with self._lock:
                if self._fifo_samples <= self._ahead_samples():
                    return
            self._space.clear()
            await self._space.wait()

    async def flush(self) -> None:
        with self._lock:
            self._fifo.clear()
            self._fifo_samples = 0

    async def drain(self) -> None:
        while True:
            with self._lock:
                if not self._fifo:
                    return
            self._space.clear()
            await self._space.wait()

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.stop_stream()
            self._stream.close()
            self._stream = None


def open_pyaudio_devices(
    cfg: AudioConfig, factory: PyAudioFactory | None = None
) -> tuple[PyAudioMicrophone, PyAudioSpeaker]:
    """Microphone and speaker for the configured devices, at rates they accept."""
    pa = (factory or _pyaudio().PyAudio)()
    mic_index = find_device(pa, cfg.input_device, input=True)
    spk_index = find_device(pa, cfg.output_device, input=False)
    rate = pick_rate(pa, mic_index, input=True)
    log.info("microphone: device %d at %d Hz; speaker: device %d", mic_index, rate, spk_index)
    return PyAudioMicrophone(pa, mic_index, rate, cfg.chunk_ms), PyAudioSpeaker(
        pa, spk_index, cfg.volume
    )
