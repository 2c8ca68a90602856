"""Acoustic echo cancellation: WebRTC's AEC3 through pywebrtc-audio (the `aec` extra).

The far end is exactly what the speaker is handed, converted to the microphone's rate; the near
end is each microphone chunk. Both go to the canceller in 10 ms frames, far end first; AEC3's
own delay estimator finds the speaker-to-microphone delay (device buffers and the air). Noise
suppression and automatic gain, when switched on, run in the same pass, after the canceller.

Where the binding is missing (32-bit Raspberry Pi OS has no wheel), `audio.mic_while_speaking:
aec` falls back to `mute` with one log line.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import deque
from typing import Any

import numpy as np

from pi_agent.adapters.audio.devices import Samples
from pi_agent.core.audio.resample import Resampler

log = logging.getLogger(__name__)

BINDING = "pywebrtc_audio"
INSTALL_HINT = "pip install 'pi-agent[aec]'"
FRAME_MS = 10  # AEC3 works on 10 ms frames
# Far-end audio waiting for its echo at most: the speaker's buffers plus the room, with room to
# spare; beyond it the oldest is dropped (the speaker ran ahead of a stalled microphone).
FAR_END_MAX_S = 0.5


@functools.cache
def processor_class() -> Any | None:
    """The binding's AudioProcessor, or None (logged once) when it cannot be loaded."""
    try:
        return importlib.import_module(BINDING).AudioProcessor
    except ImportError as exc:
        log.warning(
            "echo cancellation is not available here (%s); the microphone is muted while the "
            "agent speaks instead. To cancel echo: %s",
            exc,
            INSTALL_HINT,
        )
        return None


class EchoCanceller:
    """Cleans microphone chunks of what the speaker played; optionally denoises and levels them.

    `near()` returns as many samples as it is given, one 10 ms frame late at most (the
    remainder of a chunk that is not a whole number of frames waits for the next chunk).
    """

    def __init__(
        self,
        rate: int,
        *,
        echo: bool = True,
        noise_suppression: bool = False,
        auto_gain: bool = False,
        processor: Any | None = None,
    ) -> None:
        cls = processor if processor is not None else processor_class()
        if cls is None:
            raise ImportError(f"{BINDING} is not installed ({INSTALL_HINT})")
        self.rate = rate
        self.frame = max(1, rate * FRAME_MS // 1000)
        self.echo = echo
        self._apm = cls(
            sample_rate=rate,
            num_channels=1,
            echo_cancellation=echo,
            noise_suppression=noise_suppression,
            auto_gain_control=auto_gain,
            high_pass_filter=True,
        )
        self._far: deque[Samples] = deque()
        self._far_samples = 0
        self._far_max = int(FAR_END_MAX_S * rate)
        self._far_resampler: Resampler | None = None
        self._far_rate = rate
        self._pending = np.zeros(0, dtype=np.int16)  # near samples short of a whole frame
        self._out = np.zeros(0, dtype=np.int16)  # processed samples not yet returned
        self.far_dropped = 0  # far-end samples dropped because the microphone fell behind

    def new_stream(self) -> None:
        """A new conversation borrows the microphone: forget the last one's queued samples, keep
        what the canceller learnt of the room (a converged filter from the first moment)."""
        self._far.clear()
        self._far_samples = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)

    def far(self, samples: Samples, rate: int) -> None:
        """The speaker was handed `samples` at `rate`: that is what the microphone will hear."""
        if not self.echo or len(samples) == 0:
            return
        if rate != self._far_rate:
            self._far_resampler = None if rate == self.rate else Resampler(rate, self.rate)
            self._far_rate = rate
        if self._far_resampler is not None:
            samples = self._far_resampler.process(samples)
        self._far.append(np.asarray(samples, dtype=np.int16))
        self._far_samples += len(samples)
        while self._far_samples - len(self._far[0]) >= self._far_max:
            dropped = self._far.popleft()
            self._far_samples -= len(dropped)
            self.far_dropped += len(dropped)

    def skip(self, count: int) -> None:
        """The microphone's next `count` samples are not used (push-to-talk released): drop the
        far end that goes with them, so the two stay aligned."""
        if self.echo:
            self._take_far(count)

    def _take_far(self, count: int) -> Samples:
        """The next `count` far-end samples, zeros where the speaker had nothing to play."""
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._far:
            head = self._far[0]
            take = min(count - filled, len(head))
            out[filled : filled + take] = head[:take]
            filled += take
            if take == len(head):
                self._far.popleft()
            else:
                self._far[0] = head[take:]
            self._far_samples -= take
        return out

    def near(self, chunk: Samples) -> Samples:
        """`chunk` from the microphone, with the speaker's echo taken out."""
        data = np.concatenate((self._pending, chunk)) if len(self._pending) else chunk
        n = self.frame
        whole = len(data) // n * n
        frames = [
            self._apm.process(data[i : i + n], self._take_far(n) if self.echo else None)
            for i in range(0, whole, n)
        ]
        self._pending = data[whole:].copy()
        if frames:
            self._out = np.concatenate((self._out, *frames))
        if len(self._out) < len(chunk):  # the first chunk of a stream: start one frame late
            self._out = np.concatenate((np.zeros(len(chunk) - len(self._out), np.int16), self._out))
        result, self._out = self._out[: len(chunk)], self._out[len(chunk) :]
        return result
