"""Pure playback queue: agent audio in short frames, a jitter buffer, interruption gating.

Server audio events can hold many seconds of speech (reference 4.2), so they are split into
frames of a few milliseconds on arrival; an interruption then drops everything not yet played
and only the frame already handed to the device is heard (reference 4.5).

Jitter buffer: after being idle (or running dry), playback waits until `target` samples are
queued, or until the oldest has waited `target`'s duration, so a late packet does not cut a word in
two. The target follows the measured lateness of audio events (RFC 3550-style smoothed jitter)
and grows after each underrun, never beyond `max_target`; each reply that plays without an
underrun brings it back toward the configured base. A reply is recognised by its event id (the
service numbers turns, reference 4.5): a gap before a new id is the next reply, not lateness.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

# Smoothing of the jitter estimate: each new lateness sample moves it 1/16 of the way,
# as RTP receivers do (RFC 3550, 6.4.1).
JITTER_GAIN = 1.0 / 16.0
# The buffer target covers this many times the smoothed jitter.
JITTER_MULTIPLE = 2.0
# A gap in arrivals shorter than this after running dry is an underrun inside one reply;
# a longer one is the next reply, which starts with a fresh fill.
UNDERRUN_WINDOW_S = 0.5
# Each underrun adds this much to the target, so the buffer learns a bad link quickly.
UNDERRUN_STEP_S = 0.02
# After a clean reply the target keeps this share of its excess over the base: a link that got
# better is trusted again over a few replies, not at once.
TARGET_DECAY = 0.5
# Agent audio queued at most, in seconds. The service sends a reply faster than real time, and
# one 16 MiB frame can hold 390 s of pcm_16000; a server sending hours at once must still not
# fill the memory of a Pi Zero 2 W (600 s at 48 kHz is 58 MB). Audio beyond it is dropped and
# counted.
MAX_QUEUED_S = 600.0


class PlaybackQueue:
    """FIFO of int16 frames with a jitter buffer; `interrupt(N)` drops all, then ids < N."""

    def __init__(
        self,
        frame_samples: int,
        *,
        sample_rate: int = 16000,
        target_ms: int = 0,
        max_target_ms: int = 300,
        max_queued_s: float = MAX_QUEUED_S,
    ) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        self.base_target = sample_rate * target_ms // 1000
        self.max_target = max(self.base_target, sample_rate * max_target_ms // 1000)
        self.max_queued = max(frame_samples, int(max_queued_s * sample_rate))
        self.target = self.base_target  # samples to queue before playing after being dry
        self.jitter_s = 0.0  # smoothed lateness of audio events
        self._frames: deque[Samples] = deque()
        self._partial: Samples = np.zeros(0, dtype=np.int16)
        self._gate = -(2**62)  # lowest event id still played; raised by interruptions
        self._playing = False  # primed: frames flow to the device
        self._waiting_since: float | None = None  # when the first unplayed sample arrived
        self._dry_at: float | None = None  # when playback last ran dry
        self._media_t0: float | None = None  # transit time of the previous event of this stream
        self._media_s = 0.0
        self._reply_id: int | None = None  # event id of the reply being received
        self._reply_underruns = 0
        self.stale_events = 0  # audio events dropped because they predate an interruption
        self.dropped_samples = 0  # samples discarded by interruptions
        self.queued_total = 0  # samples ever accepted
        self.underruns = 0  # times playback ran dry in the middle of a reply
        self.overflow_samples = 0  # samples dropped because MAX_QUEUED_S was queued already

    @property
    def gate(self) -> int:
        """Audio events with an id below this are stale and dropped."""
        return self._gate

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be played, including a trailing partial frame."""
        return len(self._frames) * self.frame_samples + len(self._partial)

    @property
    def room(self) -> int:
        """Samples that can still be queued before MAX_QUEUED_S is reached."""
        return max(0, self.max_queued - self.queued_samples)

    def overflowed(self, count: int) -> None:
        """Count `count` samples dropped for want of room (also those cut before resampling)."""
        self.overflow_samples += count

    @property
    def playing(self) -> bool:
        """Whether the buffer is primed and handing out frames."""
        return self._playing

    def __len__(self) -> int:
        return len(self._frames) + (1 if len(self._partial) else 0)

    def push(self, event_id: int, samples: Samples, now: float = 0.0) -> bool:
        """Queue one audio event's samples; False (and nothing queued) if it is stale."""
        # Drop strictly older ids only: the reply to the interrupting turn may carry the
        # interruption's own id (reference 4.5, issue #829 in the vendor SDK).
        if event_id < self._gate:
            self.stale_events += 1
            return False
        room = self.room
        if len(samples) > room:
            self.overflowed(len(samples) - room)
            # A copy: frames are views, and a view of a few samples would keep the whole event
            # (up to 16 MiB of audio) alive.
            samples = samples[:room].copy()
        if len(samples) == 0:
            return True
        self._note_arrival(event_id, len(samples), now)
        self.queued_total += len(samples)
        data = np.concatenate((self._partial, samples)) if len(self._partial) else samples
        n = self.frame_samples
        whole = len(data) // n * n
        for start in range(0, whole, n):
            self._frames.append(data[start : start + n])
        self._partial = data[whole:].copy()
        if self._waiting_since is None:
            self._waiting_since = now
        return True

    def _note_arrival(self, event_id: int, count: int, now: float) -> None:
        """Update the jitter estimate; count an underrun if this reply resumed soon after dry."""
        if event_id != self._reply_id:
            self._new_reply(event_id)
        elif self._dry_at is not None and now - self._dry_at < UNDERRUN_WINDOW_S:
            self.underruns += 1
            self._reply_underruns += 1
            step = int(UNDERRUN_STEP_S * self.sample_rate)
            self.target = min(self.max_target, self.target + step)
        elif self._dry_at is not None:
            self._media_t0 = None  # a long pause inside a reply: restart the arrival clock
        self._dry_at = None
        transit = now - self._media_s  # arrival time minus the audio's own clock
        if self._media_t0 is None:
            self._media_s = 0.0
            transit = now
        else:
            # RFC 3550 jitter on the change in transit time, counting only increases: audio
            # arriving early (the service streams faster than real time) needs no buffering.
            late = max(0.0, transit - self._media_t0)
            self.jitter_s += (late - self.jitter_s) * JITTER_GAIN
            wanted = int(JITTER_MULTIPLE * self.jitter_s * self.sample_rate)
            self.target = min(self.max_target, max(self.target, wanted))
        self._media_t0 = transit  # the previous event's transit time
        self._media_s += count / self.sample_rate

    def _new_reply(self, event_id: int) -> None:
        """A new reply starts: the last one's gaps are not lateness, and a clean one decays."""
        if self._reply_id is not None and self._reply_underruns == 0:
            excess = self.target - self.base_target
            self.target = self.base_target + int(excess * TARGET_DECAY)
        self._reply_id = event_id
        self._reply_underruns = 0
        self._media_t0 = None

    def pop(self, now: float = 0.0) -> Samples | None:
        """Next frame to play, or None while filling or empty; the short tail comes last."""
        if not self._playing:
            if not self._frames and not len(self._partial):
                return None
            waited = now - (self._waiting_since if self._waiting_since is not None else now)
            if self.queued_samples < self.target and waited * self.sample_rate < self.target:
                return None
            self._playing = True
        if self._frames:
            return self._frames.popleft()
        if len(self._partial):
            tail, self._partial = self._partial, np.zeros(0, dtype=np.int16)
            return tail
        self._run_dry(now)
        return None

    def _run_dry(self, now: float) -> None:
        self._playing = False
        self._waiting_since = None
        self._dry_at = now

    def interrupt(self, event_id: int) -> int:
        """Drop all queued audio and gate out ids below `event_id`; returns samples dropped."""
        dropped = self.queued_samples
        self.clear()
        self.dropped_samples += dropped
        self._gate = max(self._gate, event_id)
        return dropped

    def clear(self) -> None:
        """Forget queued audio without touching the gate (local barge-in, shutdown)."""
        self._frames.clear()
        self._partial = np.zeros(0, dtype=np.int16)
        self._playing = False
        self._waiting_since = None
        self._dry_at = None  # a flush is not an underrun
        self._media_t0 = None
