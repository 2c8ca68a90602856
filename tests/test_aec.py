"""Echo cancellation (`audio.mic_while_speaking: aec`): the real WebRTC AEC3 binding, on synthetic
echoes and on the real-time PulseAudio bed, where the speaker's sound reaches the microphone.

A fresh canceller suppresses double talk while it learns the room, so the daemon keeps one for
its whole life; talking over the very start of the first answer after start-up is the case that
does not work yet.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import numpy as np
import pytest

from pi_agent.adapters.audio import aec
from pi_agent.adapters.audio.aec import EchoCanceller
from pi_agent.adapters.client import AudioOptions, Conversation, make_canceller
from pi_agent.config import default_config
from pi_agent.core.audio import formats
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.simulator import Close, Scenario, SendAudio, Simulator, SimulatorOptions, Wait
from tests.beds.pulse import PulseBed
from tests.beds.realtime import WAIT_S, conversation, rt_config
from tests.helpers import run

RATE = 16000
CHUNK = 320
HEARD_DBFS = -40.0  # the simulator's speech threshold: louder than this is heard as speech
# The user talking over the agent, 10 dB above the agent's echo (4000 -> 12650), a second into
# the answer: a fresh canceller (as each bed test has) has converged on the agent's voice by then.
BARGE_LEVEL = 12650.0
HEARD_FIRST_S = 1.0
AEC3_DELAY_SAMPLES = 128  # the canceller's output lags its input by 8 ms at 16 kHz
MIN_ERLE_DB = 15.0  # well below what AEC3 reaches here (20-45 dB), well above no cancelling


def babble(seconds: float, seed: int, level: float = 4000.0) -> np.ndarray:
    """Noise with a syllable-rate envelope: broadband like speech (a pure tone defeats AEC3's
    delay estimator, a voice does not)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    return (rng.standard_normal(t.size) * level * envelope).astype(np.int16)


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9))


def room(far: np.ndarray, delay_s: float = 0.06) -> np.ndarray:
    """What a microphone near the speaker hears of `far`: delayed, quieter, one reflection."""
    delay = int(delay_s * RATE)
    echo = np.zeros(far.size, np.float64)
    echo[delay:] = far[:-delay] * 0.5
    echo[delay + 80 :] += far[: -(delay + 80)] * 0.2
    return echo


def cancel(canceller: EchoCanceller, far: np.ndarray, near: np.ndarray, chunk: int) -> np.ndarray:
    out = []
    for i in range(0, far.size, chunk):
        canceller.far(far[i : i + chunk], RATE)
        out.append(canceller.near(near[i : i + chunk]))
    return np.concatenate(out)


def test_the_canceller_takes_out_a_delayed_echo() -> None:
    far = babble(4.0, seed=1)
    near = room(far).astype(np.int16)
    out = cancel(EchoCanceller(RATE), far, near, CHUNK)
    erle = level_db(near[RATE:]) - level_db(out[RATE:])  # after a second to converge
    assert erle > MIN_ERLE_DB, erle


def test_the_near_end_alone_passes_through_one_aec3_block_late() -> None:
    user = babble(2.0, seed=2)
    out = cancel(EchoCanceller(RATE), np.zeros(user.size, np.int16), user, CHUNK)
    x, y = out[RATE // 2 :].astype(np.float64), user[RATE // 2 :].astype(np.float64)
    lag = AEC3_DELAY_SAMPLES  # AEC3's own look-ahead
    assert np.corrcoef(x[lag:], y[: y.size - lag])[0, 1] > 0.95
    assert abs(level_db(out[RATE // 2 :]) - level_db(user[RATE // 2 :])) < 1.0


def test_a_canceller_that_knows_the_room_lets_the_user_over_the_start_of_an_answer() -> None:
    """Why the daemon keeps one canceller: a fresh one suppresses double talk while it learns."""
    answer, user = babble(3.0, seed=1), babble(1.0, seed=2, level=BARGE_LEVEL)

    def user_level(canceller: EchoCanceller) -> float:
        near = np.clip(room(answer) + np.pad(user, (0, answer.size - user.size)), -32768, 32767)
        out = cancel(canceller, answer, near.astype(np.int16), CHUNK)
        part = slice(RATE // 10, RATE)
        return level_db(out[part]) - level_db(user[part])

    fresh = EchoCanceller(RATE)
    primed = EchoCanceller(RATE)
    earlier = babble(2.0, seed=3)
    cancel(primed, earlier, room(earlier).astype(np.int16), CHUNK)  # an earlier answer
    primed.new_stream()
    assert user_level(primed) > -20.0  # heard: the server's VAD still counts it as speech
    assert user_level(fresh) < user_level(primed) - 20.0  # the weakness the daemon avoids


@pytest.mark.parametrize("chunk", [350, 160, 882])
def test_any_chunk_size_comes_back_the_same_size(chunk: int) -> None:
    canceller = EchoCanceller(RATE, echo=False)
    sizes = [canceller.near(np.ones(chunk, np.int16)).size for _ in range(10)]
    assert sizes == [chunk] * 10


def test_without_the_binding_aec_mutes_instead_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import fails as on 32-bit Pi OS
    aec.processor_class.cache_clear()
    try:
        options = AudioOptions.from_config(
            default_config("a", audio={"mic_while_speaking": "aec"}).audio
        )
        assert options.mic_while_speaking == "aec"  # on a sound card
        with caplog.at_level(logging.WARNING, logger="pi_agent.adapters.audio.aec"):
            assert make_canceller(options, RATE) is None
            assert make_canceller(options, RATE) is None
        assert [r.getMessage() for r in caplog.records if "not available" in r.getMessage()]
        assert len(caplog.records) == 1  # once, not per conversation
    finally:
        aec.processor_class.cache_clear()


def test_the_file_backend_has_nothing_to_cancel_and_mutes() -> None:
    cfg = default_config(
        "a", audio={"backend": "file", "input_file": __file__, "mic_while_speaking": "aec"}
    )
    assert AudioOptions.from_config(cfg.audio).mic_while_speaking == "mute"


# ------------------------------------------------------------------ on the real-time bed


@pytest.mark.parametrize("mode", ["aec", "open"])
def test_with_aec_the_agent_does_not_hear_itself(pulse_bed: PulseBed, mode: str) -> None:
    reply = babble(3.0, seed=5)
    scenario = Scenario((SendAudio(samples=reply, event_id=1), Wait(4.0), Close()))

    async def main() -> np.ndarray:
        async with Simulator(SimulatorOptions(ping_interval_s=0, scenario=scenario)) as sim:
            conv = conversation(rt_config(sim, mic_while_speaking=mode))
            await conv.run()
            record = sim.conversations[0]
            await record.wait_ended(WAIT_S)
            return record.user_audio()

    heard = run(main())
    frame = RATE // 10
    levels = [
        formats.rms_dbfs(heard[i : i + frame]) for i in range(frame, heard.size - frame, frame)
    ]
    if mode == "aec":
        assert max(levels) < HEARD_DBFS  # the agent's voice is gone from the microphone
    else:
        assert max(levels) > HEARD_DBFS  # the control: the same bed without cancelling


@pytest.mark.parametrize("mode", ["aec", "mute"])
def test_with_aec_the_user_interrupts_the_agent_by_voice(pulse_bed: PulseBed, mode: str) -> None:
    """The echo agent answers a turn with that turn; a second after the answer starts (the
    canceller has heard the agent by then), the user talks over it, louder than its echo."""
    question, barge = babble(3.0, seed=7), babble(1.0, seed=8, level=BARGE_LEVEL)

    async def main() -> int:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            conv = conversation(rt_config(sim, mic_while_speaking=mode))

            def played_s() -> float:
                queue = conv.playback
                done = 0 if queue is None else queue.queued_total - queue.queued_samples
                return done / RATE

            async def watch(c: Conversation) -> None:
                record = await sim.next_conversation(WAIT_S)
                pulse_bed.feed_samples(question)
                async with asyncio.timeout(WAIT_S):  # a second of the answer has played
                    while played_s() < HEARD_FIRST_S:  # noqa: ASYNC110 - the player's progress
                        await asyncio.sleep(0.01)
                pulse_bed.feed_samples(barge)
                turn = record.agent_turns[0]
                await record.wait_until(
                    lambda: turn.interrupted or turn.chunks_sent == turn.chunks_total, WAIT_S
                )
                async with asyncio.timeout(WAIT_S):  # interrupted, or played to its end
                    while c.audio_playing and not c.session.counters.interruptions:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                c.end(EndReason(EndKind.LOCAL, "test over"))

            await conv.run(watch)
            return conv.session.counters.interruptions

    interruptions = run(main())
    if mode == "aec":
        assert interruptions >= 1  # the agent heard the user over its own voice
    else:
        assert interruptions == 0  # muted while the agent speaks: only the button barges in
