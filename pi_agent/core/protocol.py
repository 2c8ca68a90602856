"""Sans-I/O messages of the Agents conversation WebSocket, both directions.

Every message is a frozen dataclass that knows its wire shape (`to_wire()`), and the two parsers
(`parse_server_message`, used by the client, and `parse_client_message`, used by the simulator)
turn a frame into a typed message, an `UnknownMessage` for a `type` this module does not know, or a
`MalformedFrame` value for malformed JSON or a wrong shape. Parsers never raise.

Shapes follow the protocol reference (shared protocol notes, sections 2 and 3) and the vendor
AsyncAPI contract; optional fields the reference marks unconfirmed are accepted when absent.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, TypeVar, Union

JSON: TypeAlias = dict[str, Any]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the service, the simulator and the client use (RFC 6455 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002  # the service's operational class: timeouts, LLM/TTS/ASR (6.1)
    ABNORMAL = 1006  # reported locally: the link died without a close frame
    POLICY = 1008  # the service's input and contract class (6.1)
    TOO_BIG = 1009  # we close with it when a frame is over our limit
    INTERNAL = 1011  # an internal error; also our keepalive timeout
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# The error_type values of the `error` event and the close code each comes with (reference 6.1).
ERROR_TYPES: dict[str, int | None] = {
    "invalid_message": 1008,
    "telephony_agent_error": 1008,
    "mcp_tool_error": 1008,
    "mcp_https_error": 1008,
    "value_error": 1008,
    "missing_fields": 1008,
    "override_error": 1008,
    "missing_dynamic_variable_transfer": 1008,
    "missing_dynamic_variable": 1008,
    "websocket_disconnect": None,
    "safety_violation": 1002,
    "llm_timeout": 1002,
    "transport_receive_timeout": 1002,
    "asyncio_timeout": 1002,
    "http_exception": 1002,
    "max_duration_exceeded": 1000,
    "llm_error": 1002,
    "custom_llm_error": 1002,
    "cascade_brain_error": 1002,
    "asr_transcription_error": 1002,
    "vad_error": 1002,
    "turn_probability_error": 1002,
    "tts_cascade_error": 1002,
    "redis_timeout_error": 1002,
    "unknown_websocket_crash": 1011,
    "unknown": None,
}

# How much of a bad frame a MalformedFrame keeps: enough to debug, never a whole audio payload.
EXCERPT_CHARS = 120


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A frame that could not be understood: logged and skipped, never raised."""

    reason: str
    excerpt: str = ""

    def __str__(self) -> str:
        return f"{self.reason} (frame starts {self.excerpt!r})" if self.excerpt else self.reason


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A well-formed JSON message whose `type` this module does not know."""

    type: str
    data: JSON

    def to_wire(self) -> JSON:
        return dict(self.data)


class Message:
    """Base of every known message: `TYPE` on the wire, payload under `PAYLOAD` (or top level)."""

    TYPE: ClassVar[str]
    PAYLOAD: ClassVar[str | None] = None
    # Fields sent even when their value is None (the contract marks them nullable, not optional).
    KEEP_NONE: ClassVar[frozenset[str]] = frozenset()

    def payload(self) -> JSON:
        """The message's fields as wire JSON, leaving out optional fields that are None."""
        out: JSON = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name not in self.KEEP_NONE:
                continue
            out[f.name] = value
        return out

    def to_wire(self) -> JSON:
        """The whole message as the JSON object that goes on the wire."""
        if self.PAYLOAD is None:
            return {"type": self.TYPE, **self.payload()}
        return {"type": self.TYPE, self.PAYLOAD: self.payload()}


def encode(message: Message | UserAudioChunk | UnknownMessage | JSON) -> str:
    """Serialise one message to a compact JSON text frame."""
    data = message if isinstance(message, dict) else message.to_wire()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class UserAudioChunk:
    """Microphone audio in the agent's input format; the only message without a `type` (2.1)."""

    audio: bytes

    def to_wire(self) -> JSON:
        return {"user_audio_chunk": base64.b64encode(self.audio).decode("ascii")}


def encode_audio_chunk(audio: bytes) -> str:
    """Fast path for the hottest message: one `user_audio_chunk` frame from raw audio bytes."""
    return '{"user_audio_chunk":"' + base64.b64encode(audio).decode("ascii") + '"}'


@dataclass(frozen=True, slots=True)
class ConversationInitiationClientData(Message):
    """First message of a conversation: overrides, variables, user id, source info (2.2)."""

    TYPE = "conversation_initiation_client_data"
    conversation_config_override: JSON | None = None
    custom_llm_extra_body: JSON | None = None
    dynamic_variables: dict[str, str | int | float | bool] | None = None
    user_id: str | None = None
    source_info: JSON | None = None
    tool_mock_config: JSON | None = None
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class Pong(Message):
    """Answer to `ping`, echoing its event id (2.3)."""

    TYPE = "pong"
    event_id: int


@dataclass(frozen=True, slots=True)
class ClientToolResult(Message):
    """Result of a client tool call; `result` is always a string (2.4)."""

    TYPE = "client_tool_result"
    tool_call_id: str
    result: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class ContextualUpdate(Message):
    """Non-interrupting background information for the agent (2.5)."""

    TYPE = "contextual_update"
    text: str
    context_id: str | None = None


@dataclass(frozen=True, slots=True)
class UserMessage(Message):
    """Text treated as if the user had said it (2.6)."""

    TYPE = "user_message"
    text: str | None
    rich_content_id: str | None = None
    KEEP_NONE = frozenset({"text"})


@dataclass(frozen=True, slots=True)
class UserActivity(Message):
    """Resets the agent's turn timeout without adding content (2.7)."""

    TYPE = "user_activity"


@dataclass(frozen=True, slots=True)
class Feedback(Message):
    """Like/dislike of an agent event; None clears it (2.8)."""

    TYPE = "feedback"
    event_id: int
    score: str | None
    KEEP_NONE = frozenset({"score"})


@dataclass(frozen=True, slots=True)
class McpToolApprovalResult(Message):
    """Approval decision for an MCP tool call awaiting approval (2.9)."""

    TYPE = "mcp_tool_approval_result"
    tool_call_id: str
    is_approved: bool


@dataclass(frozen=True, slots=True)
class MultimodalMessage(Message):
    """Text and/or an uploaded file id sent together (2.10)."""

    TYPE = "multimodal_message"
    text: JSON | None = None
    file: JSON | None = None


ClientMessage: TypeAlias = (
    UserAudioChunk
    | ConversationInitiationClientData
    | Pong
    | ClientToolResult
    | ContextualUpdate
    | UserMessage
    | UserActivity
    | Feedback
    | McpToolApprovalResult
    | MultimodalMessage
)

# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True, slots=True)
class ConversationInitiationMetadata(Message):
    """First server message: conversation id and the two audio formats (section 3)."""

    TYPE = "conversation_initiation_metadata"
    PAYLOAD = "conversation_initiation_metadata_event"
    conversation_id: str
    # The JS SDK falls back to pcm_16000 when a format is missing; so do we (reference 3).
    agent_output_audio_format: str = "pcm_16000"
    user_input_audio_format: str = "pcm_16000"


@dataclass(frozen=True, slots=True)
class Audio(Message):
    """Agent speech in the announced output format, base64 on the wire (4.2)."""

    TYPE = "audio"
    PAYLOAD = "audio_event"
    audio_base_64: str
    event_id: int
    alignment: JSON | None = None

    def decode_audio(self) -> bytes | MalformedFrame:
        """The raw audio bytes, or a MalformedFrame when the base64 is broken."""
        try:
            return base64.b64decode(self.audio_base_64, validate=True)
        except (binascii.Error, ValueError):
            return MalformedFrame("audio event with invalid base64", self.audio_base_64[:20])


@dataclass(frozen=True, slots=True)
class Interruption(Message):
    """The user barged in; audio with event_id below this one is stale (4.5)."""

    TYPE = "interruption"
    PAYLOAD = "interruption_event"
    event_id: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Must be answered at once with `pong`; ping_ms is the server's RTT estimate (5)."""

    TYPE = "ping"
    PAYLOAD = "ping_event"
    event_id: int
    ping_ms: int | float | None = None
    # Nullable, not optional: the Python SDK reads event["ping_ms"] unconditionally.
    KEEP_NONE = frozenset({"ping_ms"})


@dataclass(frozen=True, slots=True)
class UserTranscript(Message):
    """Final transcript of a user turn."""

    TYPE = "user_transcript"
    PAYLOAD = "user_transcription_event"
    user_transcript: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class TentativeUserTranscript(Message):
    """In-progress transcript of the user's speech."""

    TYPE = "tentative_user_transcript"
    PAYLOAD = "tentative_user_transcription_event"
    user_transcript: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentResponse(Message):
    """Full text of an agent turn, sent with its first audio."""

    TYPE = "agent_response"
    PAYLOAD = "agent_response_event"
    agent_response: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentResponseCorrection(Message):
    """Agent text truncated to what was actually spoken before an interruption."""

    TYPE = "agent_response_correction"
    PAYLOAD = "agent_response_correction_event"
    original_agent_response: str
    corrected_agent_response: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentChatResponsePart(Message):
    """Streaming text of the agent (text-only mode): start, delta, stop."""

    TYPE = "agent_chat_response_part"
    PAYLOAD = "text_response_part"
    text: str
    type: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentReasoningResponsePart(Message):
    """Experimental reasoning text; note the string event id."""

    TYPE = "agent_reasoning_response_part"
    PAYLOAD = "reasoning_response_part"
    text: str
    type: str
    event_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class InternalTentativeAgentResponse(Message):
    """Internal preview of the agent's answer."""

    TYPE = "internal_tentative_agent_response"
    PAYLOAD = "tentative_agent_response_internal_event"
    tentative_agent_response: str


@dataclass(frozen=True, slots=True)
class InternalTurnProbability(Message):
    """Internal turn-end probability."""

    TYPE = "internal_turn_probability"
    PAYLOAD = "turn_probability_internal_event"
    turn_probability: float


@dataclass(frozen=True, slots=True)
class VadScore(Message):
    """Probability that the user is speaking, 0..1."""

    TYPE = "vad_score"
    PAYLOAD = "vad_score_event"
    vad_score: float


@dataclass(frozen=True, slots=True)
class ClientToolCall(Message):
    """The agent asks the device to run a client tool; answer with ClientToolResult."""

    TYPE = "client_tool_call"
    PAYLOAD = "client_tool_call"
    tool_name: str
    tool_call_id: str
    parameters: JSON = field(default_factory=dict)
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentToolRequest(Message):
    """Informational: the agent started a tool."""

    TYPE = "agent_tool_request"
    PAYLOAD = "agent_tool_request"
    tool_name: str
    tool_call_id: str | None = None
    tool_type: str | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentToolResponse(Message):
    """Informational tool result; tool_name `end_call` means the agent hangs up."""

    TYPE = "agent_tool_response"
    PAYLOAD = "agent_tool_response"
    tool_name: str
    tool_call_id: str | None = None
    tool_type: str | None = None
    is_error: bool = False
    is_called: bool | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentToolResponseFullPayload(Message):
    """Tool result with its full payload (capped at 64 KB by the service)."""

    TYPE = "agent_tool_response_full_payload"
    PAYLOAD = "agent_tool_response_full_payload"
    tool_name: str
    tool_call_id: str | None = None
    tool_type: str | None = None
    is_error: bool = False
    is_called: bool | None = None
    is_blocked: bool | None = None
    full_tool_result: str | None = None
    truncated: bool | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class McpToolCall(Message):
    """MCP tool call progress; state `awaiting_approval` needs McpToolApprovalResult."""

    TYPE = "mcp_tool_call"
    PAYLOAD = "mcp_tool_call"
    tool_call_id: str
    tool_name: str
    state: str
    service_id: str | None = None
    tool_description: str | None = None
    parameters: JSON | None = None
    timestamp: str | None = None
    approval_timeout_secs: int | float | None = None
    result: list[Any] | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class McpConnectionStatus(Message):
    """Informational state of the agent's MCP integrations."""

    TYPE = "mcp_connection_status"
    PAYLOAD = "mcp_connection_status"
    integrations: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContextUsage(Message):
    """LLM context use after a completed agent turn."""

    TYPE = "context_usage"
    PAYLOAD = "context_usage_event"
    model: str | None = None
    context_tokens: int | None = None
    context_limit_tokens: int | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AsrInitiationMetadata(Message):
    """Free-form speech-recognition set-up information, kept whole in `data`."""

    TYPE = "asr_initiation_metadata"
    PAYLOAD = "asr_initiation_metadata_event"
    data: JSON = field(default_factory=dict)

    def payload(self) -> JSON:
        return dict(self.data)


@dataclass(frozen=True, slots=True)
class GuardrailTriggered(Message):
    """A safety guardrail fired (no payload)."""

    TYPE = "guardrail_triggered"


@dataclass(frozen=True, slots=True)
class AgentTyping(Message):
    """An external (human) agent is typing."""

    TYPE = "agent_typing"
    PAYLOAD = "agent_typing_event"
    is_typing: bool
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ExternalAgentConnected(Message):
    """An external agent joined (hand-off)."""

    TYPE = "external_agent_connected"


@dataclass(frozen=True, slots=True)
class ExternalAgentDisconnected(Message):
    """An external agent left (hand-off)."""

    TYPE = "external_agent_disconnected"


@dataclass(frozen=True, slots=True)
class RichContent(Message):
    """Experimental UI component for screens; a Pi without one ignores it."""

    TYPE = "rich_content"
    PAYLOAD = "rich_content"
    rich_content_id: str | None = None
    component: str | None = None
    props: JSON | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class ServerContextualUpdate(Message):
    """Contextual update echoed by the server (listed in the 2025 contract only)."""

    TYPE = "contextual_update"
    text: str
    context_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent(Message):
    """Sent when the server is about to close because of an error (6.1)."""

    TYPE = "error"
    PAYLOAD = "error_event"
    code: int | None = None
    message: str | None = None
    error_type: str | None = None
    reason: str | None = None
    debug_message: str | None = None
    details: Any = None

    def describe(self) -> str:
        """One line naming the error type and the most specific text the server gave."""
        text = self.debug_message or self.message or self.reason or "no message"
        kind = self.error_type or "error"
        code = f" (code {self.code})" if self.code is not None else ""
        return f"{kind}{code}: {text}"


@dataclass(frozen=True, slots=True)
class OpaqueEvent:
    """A server event whose name is known but whose payload no source documents (3)."""

    type: str
    data: JSON

    def to_wire(self) -> JSON:
        return dict(self.data)


# Event names that exist but have no payload schema anywhere (reference 3).
OPAQUE_EVENT_TYPES = frozenset(
    {"agent_response_metadata", "client_error", "dtmf_request", "agent_response_complete"}
)

ServerEvent: TypeAlias = (
    ConversationInitiationMetadata
    | Audio
    | Interruption
    | Ping
    | UserTranscript
    | TentativeUserTranscript
    | AgentResponse
    | AgentResponseCorrection
    | AgentChatResponsePart
    | AgentReasoningResponsePart
    | InternalTentativeAgentResponse
    | InternalTurnProbability
    | VadScore
    | ClientToolCall
    | AgentToolRequest
    | AgentToolResponse
    | AgentToolResponseFullPayload
    | McpToolCall
    | McpConnectionStatus
    | ContextUsage
    | AsrInitiationMetadata
    | GuardrailTriggered
    | AgentTyping
    | ExternalAgentConnected
    | ExternalAgentDisconnected
    | RichContent
    | ServerContextualUpdate
    | ErrorEvent
    | OpaqueEvent
)

SERVER_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in typing.get_args(ServerEvent)
    if isinstance(cls, type) and issubclass(cls, Message)
}
CLIENT_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in typing.get_args(ClientMessage)
    if isinstance(cls, type) and issubclass(cls, Message)
}

# --------------------------------------------------------------------------- parsing

M = TypeVar("M", bound=Message)


def _type_ok(value: object, hint: Any) -> bool:
    """Whether a decoded JSON value fits a field's annotation (bool is never an int here)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list or hint is list:
        return isinstance(value, list)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is bytes:
        return False  # bytes never arrive as JSON; only UserAudioChunk has them
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """Readable name of an annotation: `int | None` rather than typing's repr."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number"}
    return names.get(origin, getattr(origin, "__name__", str(hint)))


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _build(cls: type[M], data: JSON, raw_type: str) -> M | MalformedFrame:
    """Construct `cls` from a payload dict, checking presence and types of its fields."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data or (data[f.name] is None and f.name not in cls.KEEP_NONE):
            if f.default is MISSING and f.default_factory is MISSING:
                return MalformedFrame(f"{raw_type}: missing field '{f.name}'")
            continue
        value = data[f.name]
        if not _type_ok(value, hints[f.name]):
            return MalformedFrame(
                f"{raw_type}: field '{f.name}' is {_describe(value)}, "
                f"expected {_type_name(hints[f.name])}"
            )
        kwargs[f.name] = value
    return cls(**kwargs)


def _load(frame: str | bytes) -> JSON | MalformedFrame:
    if isinstance(frame, bytes | bytearray | memoryview):
        return MalformedFrame(f"binary frame of {len(frame)} bytes; expected a JSON text frame")
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        return MalformedFrame(f"malformed JSON ({exc})", frame[:EXCERPT_CHARS])
    if not isinstance(data, dict):
        return MalformedFrame(
            f"JSON {type(data).__name__} instead of an object", frame[:EXCERPT_CHARS]
        )
    return data


def parse_server_message(
    frame: str | bytes,
) -> ServerEvent | UnknownMessage | MalformedFrame:
    """Parse one server frame; never raises."""
    data = _load(frame)
    if isinstance(data, MalformedFrame):
        return data
    kind = data.get("type")
    if not isinstance(kind, str):
        return MalformedFrame("message without a string 'type'", _excerpt(data))
    if kind in OPAQUE_EVENT_TYPES:
        return OpaqueEvent(kind, data)
    cls = SERVER_TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind, data)
    return _parse_known(cls, data, kind)  # type: ignore[return-value]


def parse_client_message(
    frame: str | bytes,
) -> ClientMessage | UnknownMessage | MalformedFrame:
    """Parse one client frame (the simulator's side); never raises."""
    data = _load(frame)
    if isinstance(data, MalformedFrame):
        return data
    if "user_audio_chunk" in data and "type" not in data:
        chunk = data["user_audio_chunk"]
        if not isinstance(chunk, str):
            return MalformedFrame("user_audio_chunk is not a base64 string", _excerpt(data))
        try:
            return UserAudioChunk(base64.b64decode(chunk, validate=True))
        except (binascii.Error, ValueError):
            return MalformedFrame("user_audio_chunk with invalid base64", chunk[:20])
    kind = data.get("type")
    if not isinstance(kind, str):
        return MalformedFrame("message without a string 'type'", _excerpt(data))
    cls = CLIENT_TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind, data)
    return _parse_known(cls, data, kind)  # type: ignore[return-value]


def _parse_known(cls: type[Message], data: JSON, kind: str) -> Message | MalformedFrame:
    if cls.PAYLOAD is None:
        return _build(cls, {k: v for k, v in data.items() if k != "type"}, kind)
    payload = data.get(cls.PAYLOAD)
    if payload is None and not _required_fields(cls):
        payload = {}  # an event whose optional payload was left out
    if not isinstance(payload, dict):
        return MalformedFrame(f"{kind}: '{cls.PAYLOAD}' is not an object", _excerpt(data))
    if cls is AsrInitiationMetadata:
        return AsrInitiationMetadata(payload)
    return _build(cls, payload, kind)


def _required_fields(cls: type[Message]) -> list[str]:
    return [
        f.name
        for f in fields(cls)  # type: ignore[arg-type]
        if f.default is MISSING and f.default_factory is MISSING
    ]


def _excerpt(data: JSON) -> str:
    return json.dumps(data)[:EXCERPT_CHARS]
