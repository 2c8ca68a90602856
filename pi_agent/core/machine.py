"""The daemon's pure state machine: triggers and conversation events in, commands out.

Every (state, event) pair is either a transition or an explicit "ignore" in `TABLE`; a pair that
is in neither is a bug: it is recorded in `violations` (tests assert there are none) and
otherwise ignored, so a surprise never takes the daemon down. Told the time; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pi_agent.core.ending import EndReason
from pi_agent.core.states import State

# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Wake:
    """Start a hands-free conversation: SIGUSR1, `pi-agent wake`, a wake word."""

    source: str = "wake"


@dataclass(frozen=True, slots=True)
class Press:
    """The button went down."""


@dataclass(frozen=True, slots=True)
class Release:
    """The button came up after `held_s`."""

    held_s: float = 0.0


@dataclass(frozen=True, slots=True)
class LongPress:
    """The button has been held for `button.long_press_s`."""


@dataclass(frozen=True, slots=True)
class EndRequest:
    """`pi-agent end` or shutdown: end the conversation in order."""

    why: str = "ended on request"


@dataclass(frozen=True, slots=True)
class MuteToggle:
    """`pi-agent mute`: ignore triggers until unmuted."""


@dataclass(frozen=True, slots=True)
class Started:
    """Conversation metadata arrived: the conversation is live."""

    conversation_id: str


@dataclass(frozen=True, slots=True)
class UserSpeech:
    """The server's voice activity says the user is talking."""


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The user's turn ended (final transcript)."""


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent audio started or continues playing."""


@dataclass(frozen=True, slots=True)
class AgentDone:
    """Playback ran out: the agent finished speaking for now."""


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The server says the user barged in (`interruption`)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The conversation task finished with `reason`."""

    reason: EndReason


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes (idle timeout, error display)."""


Event = (
    Wake
    | Press
    | Release
    | LongPress
    | EndRequest
    | MuteToggle
    | Started
    | UserSpeech
    | UserTurn
    | AgentAudio
    | AgentDone
    | Interrupted
    | Ended
    | Tick
)
EVENT_TYPES: tuple[type, ...] = (
    Wake,
    Press,
    Release,
    LongPress,
    EndRequest,
    MuteToggle,
    Started,
    UserSpeech,
    UserTurn,
    AgentAudio,
    AgentDone,
    Interrupted,
    Ended,
    Tick,
)

# ---------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class StartConversation:
    """Open a conversation; `mic_live` says whether the microphone starts open."""

    mic_live: bool


@dataclass(frozen=True, slots=True)
class EndConversation:
    """Stop the microphone, let queued audio play, close the socket."""

    why: str


@dataclass(frozen=True, slots=True)
class SetMic:
    """Open the microphone, or send silence in its place (push-to-talk released)."""

    live: bool


@dataclass(frozen=True, slots=True)
class FlushPlayback:
    """Local barge-in: silence the agent now."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The state changed: LEDs, STATUS= and the control socket follow."""

    old: State
    new: State
    why: str


Command = StartConversation | EndConversation | SetMic | FlushPlayback | StateChanged

LIVE = frozenset({State.LISTENING, State.USER_SPEAKING, State.THINKING, State.AGENT_SPEAKING})


@dataclass(frozen=True, slots=True)
class StateBounds:
    """How long a state may last before the daemon counts as wedged, in seconds.

    Derived from the configuration (`pi_agent.wiring.state_bounds`): each is the longest the
    adapters' own timeouts allow, plus a margin. A state that outlives its bound means a timeout
    did not fire; the watchdog stops being fed.
    """

    connecting_s: float
    ending_s: float
    error_s: float
    conversation_s: float  # from the trigger to the end, whatever the states in between


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """What the machine needs from the configuration."""

    mode: str = "hold"  # button.mode: hold (push-to-talk) or toggle
    idle_timeout_s: float = 30.0
    error_display_s: float = 4.0


Handler = Callable[["Machine", Event, float], list[Command]]
IGNORE = "ignore"


@dataclass(slots=True)
class Machine:
    """The daemon's state, advanced by `handle(event, now)`."""

    config: MachineConfig = field(default_factory=MachineConfig)
    state: State = State.IDLE
    conversation_id: str | None = None
    last_activity: float = 0.0
    error_since: float = 0.0
    last_end: EndReason | None = None
    mic_live: bool = False
    button_held: bool = False
    entered_at: float = 0.0  # when the current state began
    conversation_since: float | None = None  # when the running conversation was triggered
    violations: list[str] = field(default_factory=list)

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply one event; returns the commands to carry out, in order."""
        if isinstance(event, Press):
            self.button_held = True
        elif isinstance(event, Release):
            self.button_held = False
        entry = TABLE.get((self.state, type(event)))
        if entry is None:
            self.violations.append(f"{type(event).__name__} in state {self.state}")
            return []
        if entry == IGNORE:
            return []
        assert callable(entry)
        before = self.state
        commands = entry(self, event, now)
        if self.state != before:
            self.entered_at = now
        return commands

    def overdue(self, now: float, bounds: StateBounds) -> str | None:
        """Why the machine has outlived a bound at `now` (a wedge), or None."""
        limit = {
            State.CONNECTING: bounds.connecting_s,
            State.ENDING: bounds.ending_s,
            State.ERROR: bounds.error_s,
        }.get(self.state)
        lasted = now - self.entered_at
        if limit is not None and lasted > limit:
            return f"{self.state.value} for {lasted:.0f} s, over its bound of {limit:.0f} s"
        since = self.conversation_since
        if since is not None and now - since > bounds.conversation_s:
            return (
                f"a conversation running for {now - since:.0f} s, over its bound of "
                f"{bounds.conversation_s:.0f} s"
            )
        return None

    def _go(self, new: State, why: str) -> list[Command]:
        old, self.state = self.state, new
        return [StateChanged(old, new, why)] if old != new else []

    def _mic(self, live: bool) -> list[Command]:
        if live == self.mic_live:
            return []
        self.mic_live = live
        return [SetMic(live)]

    # --------------------------------------------------------------- transitions

    def start(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        self.conversation_id = None
        self.conversation_since = now
        hands_free = not isinstance(event, Press) or self.config.mode == "toggle"
        self.mic_live = hands_free or self.button_held
        why = event.source if isinstance(event, Wake) else "button"
        return [*self._go(State.CONNECTING, why), StartConversation(self.mic_live)]

    def started(self, event: Event, now: float) -> list[Command]:
        assert isinstance(event, Started)
        self.conversation_id = event.conversation_id
        self.last_activity = now
        new = State.USER_SPEAKING if self.button_held else State.LISTENING
        return self._go(new, "conversation started")

    def end(self, event: Event, now: float) -> list[Command]:
        why = {
            LongPress: "long press",
            EndRequest: event.why if isinstance(event, EndRequest) else "",
            Press: "button",
            Tick: f"nobody spoke for {self.config.idle_timeout_s:g} s",
        }.get(type(event), "ended")
        return [*self._go(State.ENDING, why), *self._mic(False), EndConversation(why)]

    def press_live(self, event: Event, now: float) -> list[Command]:
        """A press during a conversation: talk (hold), or end it (toggle), or barge in."""
        self.last_activity = now
        if self.state == State.AGENT_SPEAKING:
            return [FlushPlayback(), *self._go(State.USER_SPEAKING, "barge-in"), *self._mic(True)]
        if self.config.mode == "toggle":
            return self.end(event, now)
        return [*self._go(State.USER_SPEAKING, "button"), *self._mic(True)]

    def release_live(self, event: Event, now: float) -> list[Command]:
        """Push-to-talk released: silence goes out so the server ends the turn at once."""
        if self.config.mode != "hold":
            return []
        self.last_activity = now
        new = State.THINKING if self.state == State.USER_SPEAKING else self.state
        return [*self._mic(False), *self._go(new, "button released")]

    def wake_live(self, event: Event, now: float) -> list[Command]:
        """A wake signal during a conversation barges in if the agent speaks."""
        if self.state != State.AGENT_SPEAKING:
            return []
        self.last_activity = now
        return [FlushPlayback(), *self._go(State.USER_SPEAKING, "barge-in"), *self._mic(True)]

    def user_speech(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        return self._go(State.USER_SPEAKING, "user speaking")

    def user_turn(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        return self._go(State.THINKING, "user turn ended")

    def agent_audio(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        if self.button_held:  # the user holds the button: their turn, not the agent's
            return []
        return self._go(State.AGENT_SPEAKING, "agent speaking")

    def agent_done(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        return self._go(State.LISTENING, "agent finished")

    def interrupted(self, event: Event, now: float) -> list[Command]:
        self.last_activity = now
        return self._go(State.USER_SPEAKING, "interrupted by the user")

    def ended(self, event: Event, now: float) -> list[Command]:
        assert isinstance(event, Ended)
        self.last_end = event.reason
        self.mic_live = False
        self.conversation_id = None
        self.conversation_since = None
        if not event.reason.policy.shows_error:
            return self._go(State.IDLE, str(event.reason))
        self.error_since = now
        return self._go(State.ERROR, str(event.reason))

    def tick_live(self, event: Event, now: float) -> list[Command]:
        if self.state == State.LISTENING and now - self.last_activity >= self.config.idle_timeout_s:
            return self.end(event, now)
        return []

    def tick_error(self, event: Event, now: float) -> list[Command]:
        if now - self.error_since >= self.config.error_display_s:
            return self._go(State.IDLE, "error shown")
        return []

    def mute(self, event: Event, now: float) -> list[Command]:
        return self._go(State.MUTED if self.state == State.IDLE else State.IDLE, "mute toggled")

    def error_trigger(self, event: Event, now: float) -> list[Command]:
        """A trigger while the error shows: the user wants to try again, so do."""
        return self.start(event, now)


def _table() -> dict[tuple[State, type], Handler | str]:
    m = Machine
    t: dict[tuple[State, type], Handler | str] = {}

    def on(states: set[State] | frozenset[State], event: type, entry: Handler | str) -> None:
        for s in states:
            t[(s, event)] = entry

    all_states = set(State)
    on({State.IDLE}, Wake, m.start)
    on({State.IDLE}, Press, m.start)
    on({State.ERROR}, Wake, m.error_trigger)
    on({State.ERROR}, Press, m.error_trigger)
    on({State.IDLE, State.ERROR}, Release, IGNORE)
    on({State.IDLE, State.ERROR, State.MUTED, State.ENDING}, LongPress, IGNORE)
    on({State.IDLE, State.ERROR, State.MUTED, State.ENDING}, EndRequest, IGNORE)
    on({State.IDLE, State.MUTED}, MuteToggle, m.mute)
    on(all_states - {State.IDLE, State.MUTED}, MuteToggle, IGNORE)
    on({State.MUTED}, Wake, IGNORE)
    on({State.MUTED}, Press, IGNORE)
    on({State.MUTED}, Release, IGNORE)
    on({State.CONNECTING}, Started, m.started)
    on(all_states - {State.CONNECTING}, Started, IGNORE)  # late metadata of an ended one
    on({State.CONNECTING}, Press, IGNORE)  # already starting
    on({State.CONNECTING}, Wake, IGNORE)
    on({State.CONNECTING}, Release, m.release_live)
    on({State.CONNECTING} | LIVE, LongPress, m.end)
    on({State.CONNECTING} | LIVE, EndRequest, m.end)
    on(LIVE, Press, m.press_live)
    on(LIVE, Release, m.release_live)
    on(LIVE, Wake, m.wake_live)
    on({State.ENDING}, Press, IGNORE)
    on({State.ENDING}, Release, IGNORE)
    on({State.ENDING}, Wake, IGNORE)
    # Conversation events: meaningful while live, stragglers otherwise.
    stragglers = {State.IDLE, State.CONNECTING, State.ENDING, State.ERROR, State.MUTED}
    on({State.LISTENING, State.THINKING, State.AGENT_SPEAKING}, UserSpeech, m.user_speech)
    on({State.USER_SPEAKING}, UserSpeech, IGNORE)
    on(stragglers, UserSpeech, IGNORE)
    on({State.USER_SPEAKING, State.LISTENING}, UserTurn, m.user_turn)
    on({State.THINKING, State.AGENT_SPEAKING}, UserTurn, IGNORE)
    on(stragglers, UserTurn, IGNORE)
    on({State.LISTENING, State.THINKING, State.USER_SPEAKING}, AgentAudio, m.agent_audio)
    on({State.AGENT_SPEAKING}, AgentAudio, IGNORE)
    on(stragglers, AgentAudio, IGNORE)
    on({State.AGENT_SPEAKING}, AgentDone, m.agent_done)
    on({State.LISTENING, State.USER_SPEAKING, State.THINKING}, AgentDone, IGNORE)
    on(stragglers, AgentDone, IGNORE)
    on(LIVE, Interrupted, m.interrupted)
    on(stragglers, Interrupted, IGNORE)
    on({State.CONNECTING, State.ENDING} | LIVE, Ended, m.ended)
    on({State.IDLE, State.ERROR, State.MUTED}, Ended, IGNORE)
    on(LIVE, Tick, m.tick_live)
    on({State.ERROR}, Tick, m.tick_error)
    on({State.IDLE, State.CONNECTING, State.ENDING, State.MUTED}, Tick, IGNORE)
    return t


TABLE = _table()
