"""Pure core of one conversation as the client sees it: server frames in, actions out.

No I/O and no clock: the caller passes `now` (seconds, any monotonic origin). The asyncio client
(`pi_agent.adapters.client`) carries the actions out; tests drive this class directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pi_agent.core import protocol as p
from pi_agent.core.audio import formats
from pi_agent.core.bounds import MAX_ID_CHARS, MAX_LINE_CHARS, clip, printable, quote
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.errors import AudioFormatError

Samples = npt.NDArray[np.int16]

# A ping_ms beyond this (10 minutes) is garbage, not a round trip: it is not recorded.
MAX_PLAUSIBLE_RTT_MS = 600_000
# Distinct unknown message types reported once each; more are counted, not remembered.
MAX_UNKNOWN_TYPES_REMEMBERED = 64


# ---------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send this text frame now (pongs and tool results)."""

    text: str


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    """Metadata arrived: the conversation is live and the audio formats are known."""

    conversation_id: str
    input_format: formats.AudioFormat
    output_format: formats.AudioFormat


@dataclass(frozen=True, slots=True)
class Play:
    """Decoded agent audio (int16 at the output format's rate) for the playback queue."""

    event_id: int
    samples: Samples


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The user barged in: flush playback and gate out audio with id < event_id."""

    event_id: int


@dataclass(frozen=True, slots=True)
class Line:
    """A transcript line: role is 'user', 'agent' or 'agent-correction'."""

    role: str
    text: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The agent asks the device to run a client tool."""

    call: p.ClientToolCall


@dataclass(frozen=True, slots=True)
class Problem:
    """Something the server sent was wrong; log it once and carry on."""

    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A server event worth passing on (vad_score, tool responses, MCP, ...)."""

    event: p.ServerEvent | p.UnknownMessage


Action = SendFrame | MetadataReceived | Play | Interrupt | Line | ToolCall | Problem | Notice


@dataclass(slots=True)
class Counters:
    """What happened on the link, for status output and benchmarks."""

    frames: int = 0
    audio_events: int = 0
    audio_samples: int = 0
    pings: int = 0
    interruptions: int = 0
    protocol_errors: int = 0
    unknown_types: int = 0


@dataclass(slots=True)
class Session:
    """State of one conversation fed by server frames; returns what the client must do."""

    conversation_id: str | None = None
    input_format: formats.AudioFormat | None = None
    output_format: formats.AudioFormat | None = None
    rtt_ms: float | None = None  # the server's own ping_ms estimate (reference 5)
    started_at: float | None = None
    last_audio_at: float | None = None
    user_turns: int = 0  # user_transcript events seen
    agent_turns: int = 0  # agent_response events seen
    awaiting_reply: bool = False  # a user turn has not been answered yet
    agent_hung_up: bool = False
    error: p.ErrorEvent | None = None
    counters: Counters = field(default_factory=Counters)
    seen_unknown: set[str] = field(default_factory=set)

    def on_frame(self, frame: str | bytes, now: float) -> list[Action]:
        """Handle one frame; a pong, when due, is always the first action."""
        self.counters.frames += 1
        event = p.parse_server_message(frame)
        if isinstance(event, p.MalformedFrame):
            self.counters.protocol_errors += 1
            return [Problem(f"ignored a bad server message: {event}")]
        return self.on_event(event, now)

    def on_event(self, event: p.ServerEvent | p.UnknownMessage, now: float) -> list[Action]:
        """Handle one parsed server event."""
        match event:
            case p.Ping(event_id=event_id, ping_ms=ping_ms):
                self.counters.pings += 1
                if ping_ms is not None and 0 <= ping_ms < MAX_PLAUSIBLE_RTT_MS:
                    self.rtt_ms = float(ping_ms)
                return [SendFrame(p.encode(p.Pong(event_id)))]
            case p.Audio():
                return self._audio(event, now)
            case p.Interruption(event_id=event_id):
                self.counters.interruptions += 1
                return [Interrupt(event_id)]
            case p.ConversationInitiationMetadata():
                return self._metadata(event, now)
            case p.UserTranscript(user_transcript=text, event_id=event_id):
                self.user_turns += 1
                self.awaiting_reply = True
                return [Line("user", clip(text, MAX_LINE_CHARS), event_id)]
            case p.AgentResponse(agent_response=text, event_id=event_id):
                self.agent_turns += 1
                self.awaiting_reply = False
                return [Line("agent", clip(text, MAX_LINE_CHARS), event_id)]
            case p.AgentResponseCorrection(corrected_agent_response=text, event_id=event_id):
                return [Line("agent-correction", clip(text, MAX_LINE_CHARS), event_id)]
            case p.ClientToolCall(tool_call_id=call_id, tool_name=name) if (
                max(len(call_id), len(name)) > MAX_ID_CHARS
            ):
                self.counters.protocol_errors += 1
                longest = max(len(call_id), len(name))
                return [
                    Problem(f"ignored a client tool call with a {longest}-character id or name")
                ]
            case p.ClientToolCall():
                return [ToolCall(event)]
            case p.AgentToolResponse(tool_name="end_call"):
                self.agent_hung_up = True
                return [Notice(event)]
            case p.ErrorEvent():
                self.error = event
                return [Problem(f"server error: {quote(event.describe())}")]
            case p.UnknownMessage(type=kind):
                self.counters.unknown_types += 1
                kind = clip(kind, MAX_ID_CHARS)
                if (
                    kind in self.seen_unknown
                    or len(self.seen_unknown) >= MAX_UNKNOWN_TYPES_REMEMBERED
                ):
                    return []
                self.seen_unknown.add(kind)
                return [Problem(f"ignored server messages of unknown type {kind!r}")]
            case _:
                return [Notice(event)]

    def _metadata(self, event: p.ConversationInitiationMetadata, now: float) -> list[Action]:
        if self.conversation_id is not None:
            return [Problem("ignored a second conversation_initiation_metadata")]
        try:
            out_fmt = formats.parse_format(event.agent_output_audio_format)
            in_fmt = formats.parse_format(event.user_input_audio_format)
        except AudioFormatError as exc:
            self.counters.protocol_errors += 1
            return [Problem(f"conversation_initiation_metadata: {exc}")]
        self.conversation_id = clip(event.conversation_id, MAX_ID_CHARS)  # logged with every line
        self.output_format, self.input_format = out_fmt, in_fmt
        self.started_at = now
        actions: list[Action] = [MetadataReceived(self.conversation_id, in_fmt, out_fmt)]
        if self.conversation_id != event.conversation_id:
            self.counters.protocol_errors += 1
            actions.append(Problem("the conversation id is implausibly long; kept its start"))
        return actions

    def _audio(self, event: p.Audio, now: float) -> list[Action]:
        if self.output_format is None:
            # Audio before metadata has no known format; playing it could only be noise.
            self.counters.protocol_errors += 1
            return [Problem("ignored audio that arrived before conversation metadata")]
        raw = event.decode_audio()
        if isinstance(raw, p.MalformedFrame):
            self.counters.protocol_errors += 1
            return [Problem(str(raw))]
        samples = formats.decode(raw, self.output_format)
        self.counters.audio_events += 1
        self.counters.audio_samples += len(samples)
        self.last_audio_at = now
        return [Play(event.event_id, samples)]

    def end_reason(self, close_code: int | None, close_reason: str) -> EndReason:
        """Classify how the server side ended, from the close frame and any error event."""
        close_reason = printable(close_reason)  # at most 123 bytes (RFC 6455), maybe newlines
        err = self.error
        if err is not None and err.error_type != "max_duration_exceeded":
            return EndReason(
                EndKind.SERVER_ERROR,
                f"the server ended the conversation with {quote(err.describe())}",
                close_code if close_code is not None else err.code,
                err.error_type,
            )
        if close_code == p.CloseCode.NORMAL:
            if self.agent_hung_up:
                return EndReason(EndKind.AGENT_ENDED, "the agent ended the call", close_code)
            if err is not None:  # max_duration_exceeded comes with 1000 (reference 6.1)
                return EndReason(
                    EndKind.SERVER_CLOSED,
                    "the conversation reached the agent's maximum duration",
                    close_code,
                    err.error_type,
                )
            text = f" ({close_reason})" if close_reason else ""
            return EndReason(EndKind.SERVER_CLOSED, f"the server closed normally{text}", 1000)
        if close_code in (None, p.CloseCode.ABNORMAL, p.CloseCode.GOING_AWAY):
            return EndReason(
                EndKind.CONNECTION_LOST,
                "the connection dropped without a close handshake"
                if close_code in (None, p.CloseCode.ABNORMAL)
                else f"the server is going away ({close_reason or 'no reason'})",
                close_code,
            )
        text = close_reason or "no reason given"
        return EndReason(
            EndKind.SERVER_ERROR,
            f"the server closed the connection with code {close_code}: {text}",
            close_code,
        )
