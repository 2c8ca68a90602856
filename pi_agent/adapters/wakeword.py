"""Offline wake word (`pi-agent[wakeword]`): a detector on the idle microphone stream.

`WakeWordDetector` is the core: it resamples microphone chunks to the backend's rate, asks the
backend for a score and reports a `Detection` when the score exceeds the threshold, at most once
per refractory period. Stream positions (samples since the capture hub started) are its clock, so
it is deterministic and needs no loop. `WakeWordListener` runs it on a worker thread fed by a
bounded queue; detections come back to the event loop through `call_soon_threadsafe`.

The backend is injectable; `load_backend` loads a microWakeWord model bundled in the
pymicro-wakeword wheel, with its own TFLite runtime (nothing downloads at run time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pi_agent.config import DEFAULT_REFRACTORY_S, WakewordConfig
from pi_agent.core.audio.resample import Resampler
from pi_agent.errors import WakewordUnavailable

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]

INSTALL_HINT = "wakeword.enabled needs pi-agent[wakeword]: pip install 'pi-agent[wakeword]'"
MICRO_RATE = 16000  # Hz: microWakeWord's features are computed on 16 kHz mono int16
# Chunks waiting for the worker thread; 50 chunks of 20 ms = 1 s. When the worker falls that far
# behind, the oldest chunk is dropped and counted, and the detector restarts at the gap.
QUEUE_CHUNKS = 50
# Shutdown: the worker finishes at most the chunk it holds (about a millisecond of work).
STOP_TIMEOUT_S = 2.0
# Where the wake word ends, before the point it is detected: microWakeWord averages its last 5
# outputs, one per 30 ms, so detections came 100-370 ms (median 140-230 by model) after the
# phrase on espeak-ng speech (docs/wakeword.md). The pre-roll is cut at the quietest chunk in
# this stretch: the pause after the wake word, if the user made one.
WAKE_END_MIN_MS = 120
WAKE_END_MAX_MS = 300

Detected = Callable[["Detection"], None]


class Backend(Protocol):
    """A streaming wake word model on int16 mono at `sample_rate`."""

    sample_rate: int
    default_threshold: float  # the model's own cutoff, used when wakeword.threshold is null

    def process(self, samples: Int16Array) -> float:
        """Consume `samples`; return the highest score (0..1) the model produced on them."""
        ...

    def reset(self) -> None:
        """Forget the stream so far (a gap in the audio, or a detection)."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


class MicroBackend:
    """A microWakeWord model from pymicro-wakeword; its score is the mean of its last outputs."""

    sample_rate = MICRO_RATE

    def __init__(self, model: str) -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError:
            raise WakewordUnavailable(INSTALL_HINT) from None
        try:
            self._model = MicroWakeWord.from_builtin(Model(model))
        except (OSError, ValueError) as exc:  # no TFLite runtime for this platform, bad model
            raise WakewordUnavailable(
                f"wake word model {model!r} cannot be loaded on this machine: {exc}"
            ) from None
        self._features = MicroWakeWordFeatures()
        self.name = model
        self.default_threshold = float(self._model.probability_cutoff)

    def process(self, samples: Int16Array) -> float:
        """Consume `samples`; return the highest score the model produced on them."""
        peak = 0.0
        for features in self._features.process_streaming(samples.astype("<i2").tobytes()):
            score = self._model.process_streaming_prob(features)
            if score is not None and score > peak:
                peak = score
        return peak

    def reset(self) -> None:
        """Forget the stream: features, averaged outputs and the model's streaming state."""
        self._features.reset()
        self._model.reset()

    def close(self) -> None:
        """Release the TFLite interpreter."""
        self._model.close()


def load_backend(model: str) -> Backend:
    """Load the bundled microWakeWord `model`; WakewordUnavailable without the extra."""
    return MicroBackend(model)


@dataclass(frozen=True, slots=True)
class Detection:
    """The wake word ended before stream position `position` (in microphone samples)."""

    position: int
    score: float


class WakeWordDetector:
    """Microphone chunks in, detections out; positions are the clock (no loop, no threads)."""

    def __init__(
        self,
        backend: Backend,
        input_rate: int,
        *,
        threshold: float | None = None,
        refractory_s: float = DEFAULT_REFRACTORY_S,
    ) -> None:
        self.backend = backend
        self.input_rate = input_rate
        self.threshold = backend.default_threshold if threshold is None else threshold
        self.refractory_samples = round(refractory_s * input_rate)
        same = input_rate == backend.sample_rate
        self._resampler = None if same else Resampler(input_rate, backend.sample_rate)
        self._expected: int | None = None  # where the next chunk starts if nothing was missed
        self._quiet_until = -1  # detections before this position are ignored (refractory)
        self.samples = 0  # microphone samples processed
        self.gaps = 0  # restarts because audio was missing (a conversation, a dropped chunk)
        self.suppressed = 0  # scores above the threshold inside a refractory period
        self.peak = 0.0  # highest score seen (for evaluation)

    def process(self, chunk: Int16Array, end_position: int) -> Detection | None:
        """Feed one chunk that ends at stream position `end_position`; a Detection if it fired."""
        if self._expected is not None and end_position - len(chunk) != self._expected:
            self.gaps += 1
            self.reset()
        self._expected = end_position
        self.samples += len(chunk)
        samples = chunk if self._resampler is None else self._resampler.process(chunk)
        score = self.backend.process(samples) if len(samples) else 0.0
        self.peak = max(self.peak, score)
        if score <= self.threshold:
            return None
        if end_position < self._quiet_until:
            self.suppressed += 1
            return None
        self._quiet_until = end_position + self.refractory_samples
        # The averaged score stays high for a while; starting over makes one utterance one wake.
        self.backend.reset()
        return Detection(end_position, score)

    def reset(self) -> None:
        """Start over on fresh audio (the refractory period still counts)."""
        self.backend.reset()
        if self._resampler is not None:
            self._resampler.reset()
        self._expected = None

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()


class WakeWordListener:
    """Runs a detector on a worker thread; `feed` is a CaptureHub idle listener (loop thread)."""

    def __init__(
        self, detector: WakeWordDetector, on_detect: Detected, *, max_queue: int = QUEUE_CHUNKS
    ) -> None:
        self.detector = detector
        self.on_detect = on_detect
        self.min_tail = detector.input_rate * WAKE_END_MIN_MS // 1000
        self.max_tail = detector.input_rate * WAKE_END_MAX_MS // 1000
        self._queue: queue.Queue[tuple[Int16Array, int] | None] = queue.Queue(max_queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: asyncio.Future[None] | None = None
        self.chunks = 0  # chunks fed
        self.dropped = 0  # chunks dropped because the worker fell behind
        self.detections = 0
        self.cpu_s = 0.0  # worker thread CPU time spent in the detector

    @classmethod
    def from_config(
        cls,
        cfg: WakewordConfig,
        input_rate: int,
        on_detect: Detected,
        load: Callable[[str], Backend] = load_backend,
    ) -> WakeWordListener:
        """Load the configured model; WakewordUnavailable when the extra is not installed."""
        backend = load(cfg.model)
        detector = WakeWordDetector(
            backend, input_rate, threshold=cfg.threshold, refractory_s=cfg.refractory_s
        )
        return cls(detector, on_detect)

    def feed(self, chunk: Int16Array, end_position: int) -> None:
        """Queue a chunk for the worker; never blocks: when full, the oldest chunk goes."""
        self.chunks += 1
        self._put((chunk, end_position))

    def _put(self, item: tuple[Int16Array, int] | None) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # Only the loop thread puts, so one chunk taken makes room for this one.
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
                self.dropped += 1
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(item)

    async def run(self) -> None:
        """Detect until cancelled (the daemon owns this task); raises if the detector fails."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._failure = loop.create_future()
        worker = threading.Thread(target=self._work, name="wakeword", daemon=True)
        worker.start()
        try:
            await self._failure
        finally:
            self._put(None)
            await asyncio.to_thread(worker.join, STOP_TIMEOUT_S)
            if worker.is_alive():
                log.warning("wake word worker did not stop within %.0f s", STOP_TIMEOUT_S)
            else:
                self.detector.close()
            log.info("wake word: %s", self.summary())

    def summary(self) -> str:
        """Counters for the log: audio heard, detections, drops, CPU share."""
        audio_s = self.detector.samples / self.detector.input_rate
        cpu = 100 * self.cpu_s / audio_s if audio_s else 0.0
        return (
            f"{audio_s:.0f} s of audio, {self.detections} detections, {self.dropped} chunks "
            f"dropped, CPU {cpu:.2f}% of real time"
        )

    def _work(self) -> None:
        """The worker thread: run the detector on each chunk, post detections to the loop."""
        assert self._loop is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            started = time.thread_time()
            try:
                detection = self.detector.process(*item)
            except Exception as exc:  # a broken model must surface, not silence the wake word
                self._loop.call_soon_threadsafe(self._fail, exc)
                return
            finally:
                self.cpu_s += time.thread_time() - started
            if detection is not None:
                self._loop.call_soon_threadsafe(self._deliver, detection)

    def _deliver(self, detection: Detection) -> None:
        self.detections += 1
        self.on_detect(detection)

    def _fail(self, exc: Exception) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(exc)
