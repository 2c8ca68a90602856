"""The daemon's pure state machine: every pair handled, push-to-talk, toggle, barge-in, ends."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pi_agent.core.ending import EndKind, EndReason
from pi_agent.core.machine import (
    EVENT_TYPES,
    TABLE,
    AgentAudio,
    AgentDone,
    EndConversation,
    Ended,
    EndRequest,
    Event,
    FlushPlayback,
    Interrupted,
    LongPress,
    Machine,
    MachineConfig,
    MuteToggle,
    Press,
    Release,
    SetMic,
    StartConversation,
    Started,
    StateChanged,
    Tick,
    UserSpeech,
    UserTurn,
    Wake,
)
from pi_agent.core.states import State

OK = EndReason(EndKind.COMPLETED, "done")
LOCAL = EndReason(EndKind.LOCAL, "ended on request")
FAILED = EndReason(EndKind.CONNECTION_LOST, "link dropped")


def states(commands: Sequence[object]) -> list[State]:
    return [c.new for c in commands if isinstance(c, StateChanged)]


def test_table_covers_every_state_and_event() -> None:
    missing = [(s, e.__name__) for s in State for e in EVENT_TYPES if (s, e) not in TABLE]
    assert missing == []


def test_hold_mode_push_to_talk_conversation() -> None:
    m = Machine(MachineConfig(mode="hold"))
    out = m.handle(Press(), 0.0)
    assert out == [StateChanged(State.IDLE, State.CONNECTING, "button"), StartConversation(True)]
    assert states(m.handle(Started("conv_1"), 0.3)) == [State.USER_SPEAKING]  # still held
    out = m.handle(Release(1.5), 1.5)
    assert SetMic(False) in out  # silence goes out: the server ends the turn at once
    assert m.state is State.THINKING
    assert states(m.handle(AgentAudio(), 2.0)) == [State.AGENT_SPEAKING]
    assert states(m.handle(AgentDone(), 4.0)) == [State.LISTENING]
    out = m.handle(Press(), 5.0)  # talk again
    assert out[-1] == SetMic(True)
    assert m.state in (State.USER_SPEAKING,)
    m.handle(Release(1.0), 6.0)
    m.handle(AgentAudio(), 6.5)
    out = m.handle(Press(), 7.0)  # barge-in while the agent speaks
    assert out[0] == FlushPlayback()
    assert m.state in (State.USER_SPEAKING,)
    assert m.mic_live
    assert m.violations == []


def test_release_before_the_socket_is_up_keeps_the_pre_roll_turn() -> None:
    m = Machine(MachineConfig(mode="hold"))
    m.handle(Press(), 0.0)
    assert m.handle(Release(0.8), 0.8) == [SetMic(False)]
    assert states(m.handle(Started("c"), 1.0)) == [State.LISTENING]


def test_toggle_mode_press_starts_and_press_ends() -> None:
    m = Machine(MachineConfig(mode="toggle"))
    assert m.handle(Press(), 0.0)[-1] == StartConversation(True)
    m.handle(Release(0.1), 0.1)
    assert m.mic_live  # hands-free: the release does not close the microphone
    m.handle(Started("c"), 0.5)
    m.handle(UserSpeech(), 1.0)
    m.handle(UserTurn(), 2.0)
    m.handle(AgentAudio(), 2.5)
    out = m.handle(Press(), 3.0)  # a press while the agent speaks interrupts, not ends
    assert out[0] == FlushPlayback()
    m.handle(Release(0.1), 3.1)
    out = m.handle(Press(), 4.0)
    assert isinstance(out[-1], EndConversation)
    assert m.state is State.ENDING
    assert states(m.handle(Ended(LOCAL), 5.0)) == [State.IDLE]


def test_long_press_and_end_request_end_the_conversation() -> None:
    for event in (LongPress(), EndRequest("pi-agent end")):
        m = Machine()
        m.handle(Wake(), 0.0)
        m.handle(Started("c"), 0.2)
        out = m.handle(event, 1.0)
        assert isinstance(out[-1], EndConversation)
        assert m.state is State.ENDING


def test_idle_timeout_ends_only_when_nobody_speaks() -> None:
    m = Machine(MachineConfig(idle_timeout_s=30))
    m.handle(Wake(), 0.0)
    m.handle(Started("c"), 0.0)
    assert m.handle(Tick(), 29.0) == []
    m.handle(UserSpeech(), 29.0)
    m.handle(UserTurn(), 31.0)
    m.handle(AgentAudio(), 32.0)
    assert m.handle(Tick(), 100.0) == []  # the agent is speaking: not idle
    m.handle(AgentDone(), 100.0)
    assert m.handle(Tick(), 120.0) == []
    out = m.handle(Tick(), 130.0)
    assert out[-1] == EndConversation("nobody spoke for 30 s")


def test_failures_show_the_error_state_then_idle() -> None:
    m = Machine(MachineConfig(error_display_s=4))
    m.handle(Wake(), 0.0)
    assert states(m.handle(Ended(FAILED), 1.0)) == [State.ERROR]
    assert m.last_end == FAILED
    assert m.handle(Tick(), 4.0) == []
    assert states(m.handle(Tick(), 5.0)) == [State.IDLE]


def test_a_trigger_during_the_error_display_retries_at_once() -> None:
    m = Machine()
    m.handle(Wake(), 0.0)
    m.handle(Ended(FAILED), 1.0)
    assert isinstance(m.handle(Press(), 1.5)[-1], StartConversation)


@pytest.mark.parametrize("kind", [EndKind.COMPLETED, EndKind.AGENT_ENDED, EndKind.TIME_LIMIT])
def test_normal_ends_go_back_to_idle(kind: EndKind) -> None:
    m = Machine()
    m.handle(Wake(), 0.0)
    m.handle(Started("c"), 0.1)
    assert states(m.handle(Ended(EndReason(kind, "x")), 2.0)) == [State.IDLE]


def test_mute_ignores_triggers() -> None:
    m = Machine()
    assert states(m.handle(MuteToggle(), 0.0)) == [State.MUTED]
    assert m.handle(Press(), 1.0) == []
    assert m.handle(Wake(), 1.0) == []
    assert states(m.handle(MuteToggle(), 2.0)) == [State.IDLE]


def test_server_interruption_hands_the_turn_to_the_user() -> None:
    m = Machine()
    m.handle(Wake(), 0.0)
    m.handle(Started("c"), 0.1)
    m.handle(AgentAudio(), 1.0)
    assert states(m.handle(Interrupted(), 1.5)) == [State.USER_SPEAKING]


def test_random_event_sequences_never_hit_an_unhandled_pair() -> None:
    rng = random.Random(1234)
    samples: list[Event] = [
        Wake(), Press(), Release(0.5), LongPress(), EndRequest(), MuteToggle(), Started("c"),
        UserSpeech(), UserTurn(), AgentAudio(), AgentDone(), Interrupted(), Ended(OK),
        Ended(FAILED), Tick(),
    ]  # fmt: skip
    for mode in ("hold", "toggle"):
        m = Machine(MachineConfig(mode=mode))
        for step in range(20_000):
            m.handle(rng.choice(samples), step * 0.5)
        assert m.violations == []
