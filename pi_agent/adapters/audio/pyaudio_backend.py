"""The `pyaudio` backend: PortAudio capture and playback in callback mode.

PortAudio calls our callbacks on its own thread. Capture copies each buffer and posts it to the
loop with `call_soon_threadsafe` (never touching the network); playback pulls frames from a short
locked FIFO that the loop fills, padding with silence when it runs dry. Both streams are mono
int16 in native byte order (PortAudio's paInt16). One PyAudio instance serves both devices and is
terminated once neither uses it. Opening, probing and closing streams block (ALSA opens the
device), so they run on one PortAudio thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from pi_agent.adapters.audio.devicelist import (
    CANDIDATE_RATES,
    CAPTURE_RATE_HZ,
    PyAudioFactory,
    describe_portaudio_error,
    device_label,
    find_device,
    load_pyaudio,
    pick_rate,
    probe_rates,
)
from pi_agent.adapters.audio.devices import ChunkQueue, Samples
from pi_agent.config import AudioConfig
from pi_agent.errors import AudioError

# find_device and pick_rate live in devicelist now; they stay importable from here.
__all__ = ["PortAudioHost", "PyAudioMicrophone", "PyAudioSpeaker", "SampleFifo"]
__all__ += ["find_device", "open_pyaudio_devices", "pick_rate"]
log = logging.getLogger(__name__)
T = TypeVar("T")

# Playback FIFO depth in chunk periods: one period rides out a late loop turn, and a barge-in
# flush can only leave PortAudio's own buffer (its reported latency) to be heard.
PLAYBACK_FIFO_PERIODS = 2
# PortAudio has no "stream died" event, so waits re-check the stream this often (seconds): an
# unplugged device is reported within half a second, far inside the server's turn timeouts.
STREAM_CHECK_S = 0.5
# drain() waits for the audio PortAudio already holds to reach the DAC, but never longer than
# this (seconds): a bogus latency report must not stall the end of a conversation.
DRAIN_TAIL_MAX_S = 0.5
DEFAULT_CHUNK_MS = 20  # the config's default audio.chunk_ms
# A lost microphone (USB unplugged, device busy) is reopened after this wait, doubling up to
# the cap: quick enough to catch a replug, slow enough not to spin on a device that is gone.
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 8.0


class PortAudioHost:
    """The PyAudio instance a microphone and a speaker share; each one is terminated just once."""

    # Terminating twice would also shut down every other PyAudio instance in the process
    # (PortAudio counts initialisations globally), hence the bookkeeping here.

    def __init__(self, factory: PyAudioFactory | None = None, *, pa: Any = None) -> None:
        self._factory = factory
        self._pa = pa
        self._users = 0
        self.owned = factory is not None  # borrowed instances are never terminated here
        # Every blocking PortAudio call (opening, probing, closing a stream) runs on this one
        # thread: the event loop never waits on a sound card, and PortAudio sees one caller.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="portaudio")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the PortAudio thread; the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(fn, *args, **kwargs))

    async def open_stream(self, pa: Any, **kwargs: Any) -> Any:
        """`pa.open(**kwargs)` on the PortAudio thread; a stream that opens after the caller
        was cancelled is closed there too, so no device stays held."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._worker, functools.partial(pa.open, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._close_late)
            raise

    def _close_late(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._worker.submit(_close_stream, future.result())

    @classmethod
    def borrowing(cls, pa: Any) -> PortAudioHost:
        """A host over someone else's PyAudio instance: used, never terminated."""
        return cls(pa=pa)

    def instance(self) -> Any:
        """The live PyAudio instance; an owned host creates a new one after terminating."""
        if self._pa is None:
            if self._factory is None:
                raise AudioError("PortAudio was shut down; the audio devices must be reopened")
            try:
                self._pa = self._factory()
            except OSError as exc:
                raise AudioError(
                    f"cannot start PortAudio: {describe_portaudio_error(exc)}"
                ) from exc
        return self._pa

    def acquire(self) -> Any:
        """The live instance, counted as in use until `release()`."""
        pa = self.instance()
        self._users += 1
        return pa

    def release(self) -> None:
        """Stop using the instance; the last user out terminates an owned one."""
        self._users = max(0, self._users - 1)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Terminate an owned instance that no stream uses (idempotent)."""
        if self._users == 0 and self.owned and self._pa is not None:
            pa, self._pa = self._pa, None
            pa.terminate()


def _as_host(pa: Any) -> PortAudioHost:
    return pa if isinstance(pa, PortAudioHost) else PortAudioHost.borrowing(pa)


def _check_alive(stream: Any, what: str) -> None:
    try:
        active = stream.is_active()
    except OSError as exc:
        raise AudioError(f"{what} failed: {describe_portaudio_error(exc)}") from exc
    if not active:
        raise AudioError(f"{what} stopped (device unplugged or failed)")


def _close_stream(stream: Any) -> None:
    # Pa_CloseStream discards what is still buffered (no blocking drain). It runs on the
    # PortAudio thread once submitted, so a cancellation of the waiting task cannot skip it.
    # A stream already closed by a terminated PyAudio instance raises nothing here.
    with contextlib.suppress(OSError):
        stream.close()


class PyAudioMicrophone:
    """Captures mono int16 chunks of `chunk_ms` from a PortAudio input device."""

    def __init__(
        self, pa: Any, device: int, rate: int, chunk_ms: int, channel: int | None = None
    ) -> None:
        self._host = _as_host(pa)
        self.device = device
        self.sample_rate = rate
        self.chunk_samples = max(1, rate * chunk_ms // 1000)
        self.channel = channel  # None: mono; N: open N + 1 channels and keep channel N
        self.channels = 1 if channel is None else channel + 1
        # Chunks the callback gathers before waking the loop: 1 in a conversation; the capture
        # hub raises it while idle, when nothing needs each 20 ms as it comes.
        self.batch = 1
        self.overflows = 0  # buffers PortAudio flagged as overflowed (audio lost before us)
        self.losses = 0  # times the device was lost and had to be reopened

    @property
    def finished(self) -> bool:
        return False  # a live microphone never runs out

    async def run(self, queue: ChunkQueue) -> None:
        """Capture until cancelled; a lost device is reported once and reopened with backoff."""
        loop = asyncio.get_running_loop()
        delay = REOPEN_FIRST_S
        lost_at: float | None = None
        while True:
            opened = asyncio.Event()
            try:
                await self._capture(queue, opened)
            except AudioError as exc:
                if opened.is_set():
                    delay = REOPEN_FIRST_S  # it ran for a while: start the backoff afresh
                if lost_at is None:
                    lost_at = loop.time()
                    self.losses += 1
                    log.warning("%s; reopening it every %g-%g s", exc, delay, REOPEN_MAX_S)
                else:
                    log.debug("microphone still unavailable: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REOPEN_MAX_S)
                continue
            finally:
                if opened.is_set() and lost_at is not None:
                    log.warning("microphone back after %.1f s", loop.time() - lost_at)
                    lost_at = None

    async def _capture(self, queue: ChunkQueue, opened: asyncio.Event) -> None:
        """Open the stream, post chunks until it dies; raises one AudioError saying why."""
        pyaudio = load_pyaudio()
        loop = asyncio.get_running_loop()
        cont, abort, overflow = pyaudio.paContinue, pyaudio.paAbort, pyaudio.paInputOverflow
        channels, channel = self.channels, self.channel or 0
        gathered: list[Samples] = []

        def on_audio(
            data: bytes | None, frames: int, time_info: Any, status: int
        ) -> tuple[None, int]:
            # PortAudio's thread: copy, post, return. No locks, no logging, no I/O.
            if status & overflow:
                self.overflows += 1
            if data:
                chunk = np.frombuffer(data, dtype=np.int16)
                if channels > 1:
                    chunk = chunk.reshape(-1, channels)[:, channel]
                gathered.append(chunk.copy())
                if len(gathered) < self.batch:
                    return None, cont
                chunk = gathered[0] if len(gathered) == 1 else np.concatenate(gathered)
                gathered.clear()
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                except RuntimeError:  # the loop is closed: nobody will read, stop the stream
                    return None, abort
            return None, cont

        pa = self._host.acquire()
        try:
            what = f"microphone {device_label(pa, self.device)}"
            try:
                stream = await self._host.open_stream(
                    pa,
                    format=pyaudio.paInt16,
                    channels=self.channels,
                    rate=self.sample_rate,
                    input=True,
                    input_device_index=self.device,
                    frames_per_buffer=self.chunk_samples,
                    stream_callback=on_audio,
                    start=False,  # started below, once `opened` tells the device is back
                )
            except OSError as exc:
                raise AudioError(
                    f"cannot open {what} at {self.sample_rate} Hz: {describe_portaudio_error(exc)}"
                ) from exc
            opened.set()
            try:
                try:
                    await self._host.call(stream.start_stream)
                except OSError as exc:
                    raise AudioError(
                        f"cannot start {what}: {describe_portaudio_error(exc)}"
                    ) from exc
                while True:
                    _check_alive(stream, what)
                    await asyncio.sleep(STREAM_CHECK_S)
            finally:
                await self._host.call(_close_stream, stream)
        finally:
            self._host.release()


class SampleFifo:
    """Thread-safe int16 FIFO: the loop pushes frames, the PortAudio callback pulls exact counts."""

    def __init__(self) -> None:
        self._frames: deque[Samples] = deque()
        self._offset = 0  # samples of the first frame already pulled
        self._queued = 0
        self._lock = threading.Lock()  # held only for list operations, never across I/O
        self._silence = b""  # cached zeros for idle pulls

    @property
    def queued(self) -> int:
        """Samples waiting to be pulled."""
        return self._queued

    def push(self, samples: Samples) -> None:
        """Append samples (not copied: the caller must not modify them afterwards)."""
        if len(samples):
            with self._lock:
                self._frames.append(samples)
                self._queued += len(samples)

    def pull(self, count: int) -> tuple[bytes, int]:
        """`count` samples as native int16 bytes, zero-padded, and how many were real audio."""
        if not self._queued:
            # The idle speaker asks for silence 50 times a second: answer without allocating.
            if len(self._silence) != 2 * count:
                self._silence = bytes(2 * count)
            return self._silence, 0
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        with self._lock:
            while filled < count and self._frames:
                head = self._frames[0]
                take = min(count - filled, len(head) - self._offset)
                out[filled : filled + take] = head[self._offset : self._offset + take]
                filled += take
                self._offset += take
                if self._offset == len(head):
                    self._frames.popleft()
                    self._offset = 0
            self._queued -= filled
        return out.tobytes(), filled

    def clear(self) -> int:
        """Drop everything queued at once; returns the number of samples dropped."""
        with self._lock:
            dropped = self._queued
            self._frames.clear()
            self._offset = 0
            self._queued = 0
        return dropped


class PyAudioSpeaker:
    """Plays mono int16 frames on a PortAudio output device through a FIFO of two chunk periods."""

    def __init__(
        self, pa: Any, device: int, volume: float = 1.0, chunk_ms: int = DEFAULT_CHUNK_MS
    ) -> None:
        self._host = _as_host(pa)
        self.device = device
        self.volume = volume
        self.chunk_ms = chunk_ms
        self.sample_rate = 0  # set by open()
        self.underruns = 0  # callbacks that ran out of audio part-way (includes each reply's end)
        self._fifo = SampleFifo()
        self._capacity = 0  # samples the FIFO may hold before play() waits
        self._stream: Any = None
        self._acquired = False
        self._rates: dict[int, int] = {}
        self._wake = asyncio.Event()  # set (on the loop) whenever the callback took audio
        self._heard_at = 0.0  # stream time at which the last real sample reaches the DAC
        self._what = f"speaker device {device}"

    @property
    def queued_samples(self) -> int:
        """Samples in the FIFO, not yet handed to PortAudio."""
        return self._fifo.queued

    async def device_rate(self, stream_rate: int) -> int:
        """The device rate closest to the agent's `stream_rate` that PortAudio accepts."""
        if stream_rate not in self._rates:  # asked once: probing opens the device on ALSA
            pa = self._host.instance()
            self._rates[stream_rate] = await self._host.call(
                pick_rate, pa, self.device, input=False, want=stream_rate
            )
        return self._rates[stream_rate]

    async def open(self, sample_rate: int) -> None:
        """Start the output stream at `sample_rate` (reopening it if the rate changed)."""
        if self._stream is not None:
            if sample_rate == self.sample_rate:
                return
            await self.close()
        pyaudio = load_pyaudio()
        loop = asyncio.get_running_loop()
        pa = self._host.acquire()
        self._acquired = True
        self._wake = asyncio.Event()  # bound to this loop on first wait; a new one per stream
        self._heard_at = 0.0
        self._what = f"speaker {device_label(pa, self.device)}"
        period = max(1, sample_rate * self.chunk_ms // 1000)
        cont, abort = pyaudio.paContinue, pyaudio.paAbort

        def on_play(data: Any, frames: int, time_info: Any, status: int) -> tuple[bytes, int]:
            # PortAudio's thread: take from the FIFO, post a wake-up only when audio moved.
            out, filled = self._fifo.pull(frames)
            if filled:
                if filled < frames:
                    self.underruns += 1
                start = time_info.get("output_buffer_dac_time") or time_info.get("current_time")
                self._heard_at = float(start or 0.0) + filled / sample_rate
                try:
                    loop.call_soon_threadsafe(self._wake.set)
                except RuntimeError:  # the loop is closed: stop the stream
                    return out, abort
            return out, cont

        try:
            self._stream = await self._host.open_stream(
                pa,
                format=pyaudio.paInt16,
                channels=1,
                rate=sample_rate,
                output=True,
                output_device_index=self.device,
                frames_per_buffer=period,
                stream_callback=on_play,
            )
        except OSError as exc:
            self._acquired = False
            self._host.release()
            raise AudioError(
                f"cannot open {self._what} at {sample_rate} Hz: {describe_portaudio_error(exc)}"
            ) from exc
        self.sample_rate = sample_rate
        self._capacity = PLAYBACK_FIFO_PERIODS * period

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while True:
            self._wake.clear()
            if done():
                return
            stream = self._stream
            if stream is None:
                raise AudioError(f"{self._what} was closed")
            try:
                async with asyncio.timeout(STREAM_CHECK_S):
                    await self._wake.wait()
            except TimeoutError:
                _check_alive(stream, self._what)

    async def play(self, frame: Samples) -> None:
        """Queue `frame`; returns once the FIFO has room for another frame of its size."""
        if self._stream is None:
            raise AudioError(f"{self._what} is not open")
        if self.volume != 1.0:
            scaled = np.asarray(frame, dtype=np.float32) * self.volume
            samples = np.clip(scaled, -32768, 32767).astype(np.int16)
        else:
            samples = np.array(frame, dtype=np.int16)  # a copy: the caller may reuse its buffer
        self._fifo.push(samples)
        room = max(0, self._capacity - len(samples))
        await self._wait_until(lambda: self._fifo.queued <= room)

    async def flush(self) -> None:
        """Drop every queued frame at once (barge-in); PortAudio's own buffer still plays."""
        dropped = self._fifo.clear()
        self._wake.set()  # a play() waiting for room returns now
        if dropped:
            log.debug("flushed %d queued samples", dropped)

    async def drain(self) -> None:
        """Wait until the FIFO is empty and its last sample has reached the DAC."""
        if self._stream is None:
            return
        await self._wait_until(lambda: self._fifo.queued == 0)
        try:
            tail = self._heard_at - self._stream.get_time()
        except OSError as exc:
            raise AudioError(f"{self._what} failed: {describe_portaudio_error(exc)}") from exc
        if tail > 0:
            await asyncio.sleep(min(tail, DRAIN_TAIL_MAX_S))

    async def close(self) -> None:
        """Stop at once (queued audio is dropped), release the device; idempotent."""
        stream, self._stream = self._stream, None
        self._fifo.clear()
        self._wake.set()  # a play() or drain() still waiting returns now
        if stream is not None:
            await self._host.call(_close_stream, stream)
        if self._acquired:
            self._acquired = False
            self._host.release()
        else:
            self._host.close_if_idle()


def open_pyaudio_devices(
    cfg: AudioConfig, factory: PyAudioFactory | None = None
) -> tuple[PyAudioMicrophone, PyAudioSpeaker]:
    """Microphone and speaker for the configured devices, at rates PortAudio says they accept."""
    host = PortAudioHost(factory or load_pyaudio().PyAudio)
    try:
        pa = host.instance()
        mic_index = find_device(pa, cfg.input_device, input=True)
        spk_index = find_device(pa, cfg.output_device, input=False)
        rate = pick_rate(pa, mic_index, input=True, want=CAPTURE_RATE_HZ)
        if cfg.input_channel is not None:
            have = int(pa.get_device_info_by_index(mic_index)["maxInputChannels"])
            if cfg.input_channel >= have:
                raise AudioError(
                    f"audio.input_channel is {cfg.input_channel} but microphone "
                    f"{device_label(pa, mic_index)} has {have} input channel(s): 0 to {have - 1}"
                )
        # The agent's output rate is known only at conversation start; fail now, not then, if
        # the speaker takes no rate at all (or is held by another program).
        accepted, problem = probe_rates(pa, spk_index, input=False)
        if not accepted:
            why = problem or f"accepts none of the rates {list(CANDIDATE_RATES)} Hz"
            raise AudioError(f"speaker {device_label(pa, spk_index)}: {why}")
        log.info(
            "microphone %s at %d Hz; speaker %s (%s Hz)",
            device_label(pa, mic_index),
            rate,
            device_label(pa, spk_index),
            "/".join(map(str, accepted)),
        )
    except BaseException:
        host.close_if_idle()
        raise
    mic = PyAudioMicrophone(host, mic_index, rate, cfg.chunk_ms, cfg.input_channel)
    return mic, PyAudioSpeaker(host, spk_index, cfg.volume, cfg.chunk_ms)
