"""Pure audio-path pieces: jitter buffer, echo guard, earcons."""

from __future__ import annotations

import numpy as np
import pytest

from pi_agent.core.audio.earcons import END_NOTES, ERROR_NOTES, WAKE_NOTES, earcon
from pi_agent.core.audio.echo import EchoGuard
from pi_agent.core.audio.playback import PlaybackQueue

RATE = 16000
FRAME = 320  # 20 ms


def ones(ms: int, value: int = 1) -> np.ndarray:
    return np.full(RATE * ms // 1000, value, dtype=np.int16)


def test_jitter_buffer_waits_for_its_target_fill() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=60)
    q.push(1, ones(40), now=0.0)
    assert q.pop(now=0.0) is None  # 40 ms queued < 60 ms target
    q.push(1, ones(40), now=0.02)
    assert q.pop(now=0.02) is not None  # 80 ms queued: play
    assert q.playing


def test_jitter_buffer_plays_a_short_reply_after_waiting_the_target_time() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=60)
    q.push(1, ones(20), now=1.0)
    assert q.pop(now=1.03) is None
    frame = q.pop(now=1.061)
    assert frame is not None
    assert len(frame) == FRAME


def test_zero_target_plays_at_once() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=0)
    q.push(1, ones(20), now=0.0)
    assert q.pop(now=0.0) is not None


def test_underrun_is_counted_and_raises_the_target() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=20, max_target_ms=100)
    q.push(1, ones(20), now=0.0)
    assert q.pop(now=0.0) is not None
    assert q.pop(now=0.02) is None  # ran dry mid-reply
    q.push(1, ones(20), now=0.1)  # the rest arrives 100 ms late
    assert q.underruns == 1
    assert q.target > RATE * 20 // 1000
    assert q.pop(now=0.1) is None  # refilling to the higher target before playing again


def test_gap_after_a_finished_reply_is_not_an_underrun() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=0)
    q.push(1, ones(20), now=0.0)
    q.pop(now=0.0)
    q.pop(now=0.02)
    q.push(2, ones(20), now=3.0)
    assert q.underruns == 0


def test_late_arrivals_grow_the_jitter_estimate_but_early_ones_do_not() -> None:
    early = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=40)
    for i in range(50):  # 100 ms of audio every 50 ms: faster than real time
        early.push(1, ones(100), now=i * 0.05)
    assert early.jitter_s == 0.0
    assert early.target == RATE * 40 // 1000
    late = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=40, max_target_ms=400)
    for i in range(50):  # 100 ms of audio every 100 ms, every other one 80 ms late
        late.push(1, ones(100), now=i * 0.1 + (0.08 if i % 2 else 0.0))
    assert late.jitter_s > 0.02
    assert late.target > RATE * 40 // 1000
    assert late.target <= RATE * 400 // 1000


def test_interruption_resets_the_fill_and_is_not_an_underrun() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=40)
    q.push(1, ones(200), now=0.0)
    assert q.pop(now=0.0) is not None
    assert q.interrupt(2) == RATE * 180 // 1000
    q.push(2, ones(20), now=0.01)
    assert q.underruns == 0
    assert q.pop(now=0.01) is None  # a fresh fill for the new reply


@pytest.mark.parametrize("mode", ["mute", "duck", "open"])
def test_echo_guard_modes(mode: str) -> None:
    guard = EchoGuard(mode, tail_s=0.25, duck_db=-20)
    speech = np.full(320, 10000, dtype=np.int16)
    assert np.array_equal(guard.process(speech, now=0.0), speech)  # agent silent: open
    guard.agent_audible(until=1.0)
    during = guard.process(speech, now=0.5)
    tail = guard.process(speech, now=1.2)
    after = guard.process(speech, now=1.26)
    expected = {"mute": 0, "duck": 1000, "open": 10000}[mode]
    assert int(during[0]) == expected
    assert int(tail[0]) == expected  # room echo lasts a little longer than the audio
    assert np.array_equal(after, speech)


def test_echo_guard_opens_at_once_on_flush() -> None:
    guard = EchoGuard("mute", tail_s=0.25)
    guard.agent_audible(until=5.0)
    guard.silence_now()
    assert not guard.active(now=1.0)
    with pytest.raises(ValueError, match="expected one of"):
        EchoGuard("loud")


@pytest.mark.parametrize(
    ("kind", "notes"), [("wake", WAKE_NOTES), ("end", END_NOTES), ("error", ERROR_NOTES)]
)
def test_earcons_have_their_notes_in_order_and_no_clicks(
    kind: str, notes: tuple[float, ...]
) -> None:
    sound = earcon(kind, 48000, volume=0.3)
    halves = np.array_split(sound.astype(np.float64), len(notes))
    for half, freq in zip(halves, notes, strict=True):
        spectrum = np.abs(np.fft.rfft(half * np.hanning(len(half))))
        assert abs(np.argmax(spectrum) * 48000 / len(half) - freq) < 15
    assert np.max(np.abs(sound)) <= int(0.3 * 32767)
    assert abs(int(sound[0])) < 200 and abs(int(sound[-1])) < 200  # faded in and out
    with pytest.raises(ValueError, match="unknown earcon"):
        earcon("fanfare", 16000)


def test_replies_spaced_closely_do_not_ratchet_the_target() -> None:
    """A new reply (new event id) after the last one ran dry is not an underrun."""
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=40, max_target_ms=300)
    now = 0.0
    for reply in range(1, 12):
        q.push(reply, ones(100), now=now)
        while (frame := q.pop(now)) is not None or q.queued_samples:
            now += 0.02 if frame is not None else 0.005
        q.pop(now)  # runs dry
        now += 0.4
    assert q.underruns == 0
    assert q.target == RATE * 40 // 1000


def test_target_decays_after_clean_replies() -> None:
    q = PlaybackQueue(FRAME, sample_rate=RATE, target_ms=20, max_target_ms=300)
    q.push(1, ones(20), now=0.0)
    q.pop(now=0.0)
    q.pop(now=0.02)  # dry mid-reply
    q.push(1, ones(20), now=0.1)  # underrun: the target grows
    grown = q.target
    assert grown > RATE * 20 // 1000
    q.push(2, ones(20), now=5.0)  # reply 1 had an underrun: no decay yet
    assert q.target == grown
    q.push(3, ones(20), now=10.0)  # reply 2 was clean: decay toward the base
    assert RATE * 20 // 1000 <= q.target < grown
