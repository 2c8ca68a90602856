"""Scripted conversations: steps that make the simulator send any message sequence.

A `Scenario` (run by the server's session) starts after `conversation_initiation_metadata`, or
instead of it with `send_metadata=False` plus an optional `SendMetadata` step placed anywhere.
Load one from JSON/YAML-shaped data with `Scenario.from_data`; each step is a one-key mapping,
the key naming the step kind, or a bare string for a kind without parameters:

    [{"send": {"type": "ping", "ping_event": {"event_id": 7}}},
     {"wait_for": {"type": "pong", "timeout_s": 2}},
     {"send_raw": {"base64": "AAEC"}}, {"wait": 0.1}, "echo"]

Fault steps (`drop`, `stall`, `send_big`, `ping_flood`, `tool_call_flood`, `error`, and
`send_audio` with `format`) are described in `pi_agent.simulator.faults`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import yaml

from pi_agent.core import protocol
from pi_agent.core.audio import formats
from pi_agent.core.audio.formats import AudioFormat
from pi_agent.errors import ScenarioError
from pi_agent.simulator.agent import TONE_LEVEL_DBFS, tone

Int16Array = npt.NDArray[np.int16]
Sendable: TypeAlias = protocol.Message | protocol.UnknownMessage | dict[str, Any]

MAX_FRAME_BYTES = 16 * 1024 * 1024  # reference 1.4: the service's stated maximum frame size
MAX_BIG_FRAME_BYTES = 64 * 1024 * 1024  # bound on a send_big fault step's frame
MAX_PING_FLOOD = 100_000  # bound on a ping_flood fault step
DEFAULT_WAIT_FOR_TIMEOUT_S = 5.0  # long enough for any loopback client, short enough for tests
MAX_WAIT_S = 3600.0  # a longer wait is a typo (ms for s), not a test
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: control frame payload 125 bytes minus the code
# Close codes an endpoint may send (RFC 6455 7.4.1; 1004-1006 and 1015 are reserved).
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(
    range(3000, 5000)
)


@dataclass(frozen=True, slots=True)
class Send:
    """Send a protocol message object, or a raw dict encoded as JSON as it is."""

    message: Sendable


@dataclass(frozen=True, slots=True)
class SendRaw:
    """Send exactly this: text as a text frame, bytes as a binary frame."""

    data: str | bytes


@dataclass(frozen=True, slots=True, eq=False)
class SendAudio:
    """Send agent audio in the output format: `samples`, or a tone of `duration_s`, in chunks."""

    samples: Int16Array | None = None  # at the output format's sample rate
    duration_s: float = 0.5
    tone_hz: float = 440.0
    level_dbfs: float = TONE_LEVEL_DBFS
    event_id: int = 1
    chunk_ms: int | None = None  # None: the simulator's audio_chunk_ms
    paced: bool = True  # False: all chunks at once, whatever speak_rate says
    wire_format: str | None = None  # fault: bytes of this format, whatever metadata announced

    def audio(self, fmt: AudioFormat) -> Int16Array:
        """The samples this step sends: its own, or its tone at the format's rate."""
        if self.samples is not None:
            return np.asarray(self.samples, dtype=np.int16)
        return tone(self.tone_hz, self.duration_s, fmt.sample_rate, self.level_dbfs)


@dataclass(frozen=True, slots=True)
class SendMetadata:
    """Send conversation_initiation_metadata now; None fields take the configured values."""

    conversation_id: str | None = None
    input_format: str | None = None
    output_format: str | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Do nothing for `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Wait for the next client message of `message_type` (since the previous WaitFor matched).

    Types are wire names (`pong`, `client_tool_result`, ...), `user_audio_chunk`,
    `protocol_error` for unparseable frames, or an unknown type's own name. When `required`
    and nothing arrives within `timeout_s`, the scenario fails: close 1011 naming the step.
    """

    message_type: str
    timeout_s: float = DEFAULT_WAIT_FOR_TIMEOUT_S
    required: bool = True


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a ping now (recorded and timed like the periodic ones)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the conversation with this code and reason; ends the scenario."""

    code: int = protocol.CloseCode.NORMAL
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Echo:
    """Hand the rest of the conversation to the echo agent; ends the scenario."""


# ---------------------------------------------------------------------- fault steps (faults.py)


@dataclass(frozen=True, slots=True)
class Drop:
    """Fault: abort the TCP connection now, without a close frame; ends the scenario."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Fault: for `seconds`, stop reading the client's frames and/or stop sending (pings too)."""

    seconds: float
    reading: bool = True
    sending: bool = True


@dataclass(frozen=True, slots=True)
class SendBig:
    """Fault: one text frame of exactly `size_bytes`: an `audio` event of silence, or padding."""

    size_bytes: int = MAX_FRAME_BYTES
    message_type: str = "audio"  # any other type: an event of that type with a padding field
    event_id: int = 1


@dataclass(frozen=True, slots=True)
class PingFlood:
    """Fault: `count` pings back to back, with no wait between them."""

    count: int = 1000


@dataclass(frozen=True, slots=True)
class ToolCallFlood:
    """Fault: `count` client_tool_call events back to back, ids flood-0, flood-1, ... (or all
    flood-0 with `same_id`); with `read=False` the client's frames are not read from then on."""

    count: int = 1000
    tool_name: str = "get_time"
    same_id: bool = False
    read: bool = True


@dataclass(frozen=True, slots=True)
class SendError:
    """Fault: an `error` event of `error_type` then the close code the reference gives it."""

    error_type: str
    message: str | None = None  # None: the simulator's text for that type
    code: int | None = None  # None: the reference's code for that type (6.1)


Step: TypeAlias = (
    Send
    | SendRaw
    | SendAudio
    | SendMetadata
    | Wait
    | WaitFor
    | SendPing
    | Close
    | Echo
    | Drop
    | Stall
    | SendBig
    | PingFlood
    | ToolCallFlood
    | SendError
)
_TERMINAL = (Close, Echo, Drop, SendError)


@dataclass(frozen=True, slots=True)
class Scenario:
    """Steps to run in order; `send_metadata=False` suppresses the automatic metadata."""

    steps: tuple[Step, ...] = ()
    send_metadata: bool = True

    def __post_init__(self) -> None:
        for index, step in enumerate(self.steps[:-1], 1):
            if isinstance(step, _TERMINAL):
                raise ScenarioError(
                    f"step {index} ({_kind_of(step)}) ends the scenario but steps follow it"
                )

    @classmethod
    def from_data(cls, data: object) -> Scenario:
        """Build from JSON/YAML data: a list of steps, or {"metadata": bool, "steps": [...]}."""
        send_metadata = True
        if isinstance(data, Mapping):
            extra = set(data) - {"metadata", "steps"}
            if extra:
                raise ScenarioError(
                    f"unknown scenario key(s) {sorted(extra)}; expected metadata, steps"
                )
            send_metadata = _bool(data.get("metadata", True), "scenario 'metadata'")
            data = data.get("steps", [])
        if not isinstance(data, list):
            raise ScenarioError(f"a scenario is a list of steps, got {type(data).__name__}")
        steps = tuple(_parse_step(index, raw) for index, raw in enumerate(data, 1))
        return cls(steps, send_metadata)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a .json, .yaml or .yml file; ScenarioError names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    except ValueError as exc:
        raise ScenarioError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return Scenario.from_data(data)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------- parsing


def _kind_of(step: Step) -> str:
    return next(kind for kind, (cls, _) in _KINDS.items() if isinstance(step, cls))


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{what} must be true or false, got {value!r}")
    return value


def _number(value: object, what: str, low: float, high: float, kind: type = float) -> Any:
    ok = int if kind is int else int | float
    if isinstance(value, bool) or not isinstance(value, ok) or not math.isfinite(value):
        raise ScenarioError(
            f"{what} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    if not low <= value <= high:
        raise ScenarioError(f"{what} must be between {low:g} and {high:g}, got {value!r}")
    return kind(value)


def _int(value: object, what: str, low: int, high: int) -> int:
    return int(_number(value, what, low, high, int))


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{what} must be a string, got {value!r}")
    return value


def _params(value: object, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{what} takes a mapping of {', '.join(allowed)}; got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ScenarioError(
            f"{what}: unknown field(s) {unknown}; expected one of: {', '.join(allowed)}"
        )
    return dict(value)


def _send(value: object, what: str) -> Step:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{what} takes the message as a JSON object, got {value!r}")
    return Send(dict(value))


def _send_raw(value: object, what: str) -> Step:
    if isinstance(value, str):
        return SendRaw(value)
    p = _params(value, what, ("text", "base64"))
    if len(p) != 1:
        raise ScenarioError(f"{what} takes a string, or exactly one of text, base64")
    if "text" in p:
        return SendRaw(_str(p["text"], f"{what} text"))
    try:
        return SendRaw(base64.b64decode(_str(p["base64"], f"{what} base64"), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ScenarioError(f"{what} base64 is not valid base64: {exc}") from exc


def _send_audio(value: object, what: str) -> Step:
    names = ("duration_s", "tone_hz", "level_dbfs", "event_id", "chunk_ms", "paced", "format")
    p = _params(value, what, names)
    step = SendAudio()
    wire_format = p.get("format")
    if wire_format is not None and wire_format not in formats.FORMATS:
        raise ScenarioError(
            f"{what} format {wire_format!r} is not one of {', '.join(formats.FORMATS)}"
        )
    return SendAudio(
        duration_s=_number(p.get("duration_s", step.duration_s), f"{what} duration_s", 0.0, 600.0),
        tone_hz=_number(p.get("tone_hz", step.tone_hz), f"{what} tone_hz", 0.0, 24_000.0),
        level_dbfs=_number(p.get("level_dbfs", step.level_dbfs), f"{what} level_dbfs", -120.0, 0.0),
        event_id=_int(p.get("event_id", step.event_id), f"{what} event_id", 0, 2**53),
        chunk_ms=None
        if p.get("chunk_ms") is None
        else _int(p["chunk_ms"], f"{what} chunk_ms", 1, 60_000),
        paced=_bool(p.get("paced", True), f"{what} paced"),
        wire_format=wire_format,
    )


def _metadata(value: object, what: str) -> Step:
    p = _params(value, what, ("conversation_id", "input_format", "output_format"))
    for key in ("input_format", "output_format"):
        if p.get(key) is not None and p[key] not in formats.FORMATS:
            raise ScenarioError(
                f"{what} {key} {p[key]!r} is not one of {', '.join(formats.FORMATS)}"
            )
    cid = p.get("conversation_id")
    return SendMetadata(
        None if cid is None else _str(cid, f"{what} conversation_id"),
        p.get("input_format"),
        p.get("output_format"),
    )


def _wait(value: object, what: str) -> Step:
    if isinstance(value, Mapping):
        value = _params(value, what, ("seconds",)).get("seconds")
    return Wait(_number(value, f"{what} seconds", 0.0, MAX_WAIT_S))


def _wait_for(value: object, what: str) -> Step:
    if isinstance(value, str):
        return WaitFor(value)
    p = _params(value, what, ("type", "timeout_s", "required"))
    if "type" not in p:
        raise ScenarioError(f"{what} needs a message type")
    return WaitFor(
        _str(p["type"], f"{what} type"),
        _number(
            p.get("timeout_s", DEFAULT_WAIT_FOR_TIMEOUT_S), f"{what} timeout_s", 0.0, MAX_WAIT_S
        ),
        _bool(p.get("required", True), f"{what} required"),
    )


def _close(value: object, what: str) -> Step:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"code": value}
    p = _params(value, what, ("code", "reason"))
    code = _int(p.get("code", protocol.CloseCode.NORMAL), f"{what} code", 1000, 4999)
    if code not in SENDABLE_CLOSE_CODES:
        raise ScenarioError(f"{what} code {code} is reserved and cannot be sent (RFC 6455 7.4.1)")
    reason = _str(p.get("reason", ""), f"{what} reason")
    if len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
        raise ScenarioError(f"{what} reason is over {MAX_CLOSE_REASON_BYTES} bytes (RFC 6455 5.5)")
    return Close(code, reason)


def _stall(value: object, what: str) -> Step:
    if not isinstance(value, Mapping):
        value = {"seconds": value}
    p = _params(value, what, ("seconds", "reading", "sending"))
    return Stall(
        _number(p.get("seconds"), f"{what} seconds", 0.0, MAX_WAIT_S),
        _bool(p.get("reading", True), f"{what} reading"),
        _bool(p.get("sending", True), f"{what} sending"),
    )


def _send_big(value: object, what: str) -> Step:
    p = _params(value, what, ("size_bytes", "type", "event_id"))
    return SendBig(
        _int(p.get("size_bytes", MAX_FRAME_BYTES), f"{what} size_bytes", 1, MAX_BIG_FRAME_BYTES),
        _str(p.get("type", "audio"), f"{what} type"),
        _int(p.get("event_id", 1), f"{what} event_id", 0, 2**53),
    )


def _ping_flood(value: object, what: str) -> Step:
    if isinstance(value, Mapping):
        value = _params(value, what, ("count",)).get("count")
    return PingFlood(_int(1000 if value is None else value, f"{what} count", 1, MAX_PING_FLOOD))


def _tool_call_flood(value: object, what: str) -> Step:
    p = _params(value, what, ("count", "tool_name", "same_id", "read"))
    return ToolCallFlood(
        _int(p.get("count", 1000), f"{what} count", 1, MAX_PING_FLOOD),
        _str(p.get("tool_name", "get_time"), f"{what} tool_name"),
        _bool(p.get("same_id", False), f"{what} same_id"),
        _bool(p.get("read", True), f"{what} read"),
    )


def _send_error(value: object, what: str) -> Step:
    if isinstance(value, str):
        value = {"type": value}
    p = _params(value, what, ("type", "message", "code"))
    if "type" not in p:
        raise ScenarioError(f"{what} needs an error type")
    code = None if p.get("code") is None else _int(p["code"], f"{what} code", 1000, 4999)
    if code is not None and code not in SENDABLE_CLOSE_CODES:
        raise ScenarioError(f"{what} code {code} is reserved and cannot be sent (RFC 6455 7.4.1)")
    message = p.get("message")
    return SendError(
        _str(p["type"], f"{what} type"),
        None if message is None else _str(message, f"{what} message"),
        code,
    )


def _no_params(cls: Callable[[], Step]) -> Callable[[object, str], Step]:
    def build(value: object, what: str) -> Step:
        _params(value, what, ())
        return cls()

    return build


_KINDS: dict[str, tuple[type, Callable[[object, str], Step]]] = {
    "send": (Send, _send),
    "send_raw": (SendRaw, _send_raw),
    "send_audio": (SendAudio, _send_audio),
    "metadata": (SendMetadata, _metadata),
    "wait": (Wait, _wait),
    "wait_for": (WaitFor, _wait_for),
    "ping": (SendPing, _no_params(SendPing)),
    "close": (Close, _close),
    "echo": (Echo, _no_params(Echo)),
    "drop": (Drop, _no_params(Drop)),
    "stall": (Stall, _stall),
    "send_big": (SendBig, _send_big),
    "ping_flood": (PingFlood, _ping_flood),
    "tool_call_flood": (ToolCallFlood, _tool_call_flood),
    "error": (SendError, _send_error),
}


def _parse_step(index: int, raw: object) -> Step:
    if isinstance(raw, str):
        kind, value = raw, None
    elif isinstance(raw, Mapping) and len(raw) == 1:
        kind, value = next(iter(raw.items()))
    else:
        raise ScenarioError(
            f"step {index}: expected a one-key mapping {{kind: parameters}} "
            f"or a kind name, got {raw!r}"
        )
    if kind not in _KINDS:
        raise ScenarioError(
            f"step {index}: unknown kind {kind!r}; expected one of: {', '.join(_KINDS)}"
        )
    return _KINDS[kind][1](value, f"step {index} ({kind})")
