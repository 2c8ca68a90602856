"""Fault injection: what the simulator can do wrong on purpose, for the reliability tests.

Scenario steps (`pi_agent.simulator.scenario`; the YAML/JSON kind in brackets):

- `Drop` [drop]: abort the TCP connection without a close frame (a link that dies mid-reply);
- `Stall` [stall]: for N s stop reading the client's frames and/or stop sending, pings included
  (a frozen server, or a link that black-holes traffic);
- `SendBig` [send_big]: one text frame of exactly N bytes (16 MiB is the service's maximum);
- `PingFlood` [ping_flood]: N pings back to back;
- `ToolCallFlood` [tool_call_flood]: N client tool calls back to back, each with its own id or
  all with one id, optionally no longer reading what the client sends (a hostile server);
- `SendError` [error]: the `error` event of a reference 6.1 error type, then its close code;
- `SendAudio(wire_format=...)` [send_audio: {format: ...}]: audio bytes of another format than
  the metadata announced (e.g. pcm_44100 samples while pcm_16000 was announced);
- `SendRaw` [send_raw]: malformed JSON, binary frames, unknown types, wrong shapes;
- `Scenario(send_metadata=False)`: accept the conversation and never send metadata.

`SimulatorOptions` (HTTP): `refuse_status` answers the WebSocket handshake with that status
(401, 403, 429, 500, ...); `signed_url_status`, `signed_url_body` and `signed_url_scheme` break
the signed-URL call (an error status, a body that is not the expected JSON, a URL whose scheme
is not ws/wss).
"""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.server import ServerConnection

from pi_agent.core import protocol

# Close codes of the error types the reference lists (6.1): the protocol module's table.
ERROR_TYPE_CODES = protocol.ERROR_TYPES
# The close code for an error type whose code the reference does not give.
FALLBACK_CLOSE = protocol.CloseCode.INTERNAL
# The simulator's message per error type: the reference's wording where it has one.
ERROR_TEXTS: dict[str, str] = {
    "invalid_message": "The AI agent you are trying to reach does not exist.",
    "override_error": "Override for field 'agent.prompt.prompt' is not allowed by config.",
    "missing_dynamic_variable": "Missing required dynamic variables in first message: {'name'}",
    "safety_violation": "The conversation was ended for a safety violation.",
    "llm_timeout": "The LLM took over 20 s to respond.",
    "transport_receive_timeout": "No user input received for 60 s.",
    "asyncio_timeout": "An operation timed out.",
    "max_duration_exceeded": "Conversation has exceeded maximum duration",
    "cascade_brain_error": "All LLMs failed.",
    "tts_cascade_error": "All TTS models failed.",
    "unknown_websocket_crash": "Unexpected error in websocket endpoint",
}

# Retry-After sent with a refused handshake of HTTP 429 or 503 (RFC 9110 10.2.3), in seconds.
RETRY_AFTER_S = 1
# Bodies of refused handshakes, in the shape of the service's REST errors.
_HTTP_DETAIL: dict[int, dict[str, str]] = {
    401: {"status": "invalid_api_key", "message": "Invalid API key"},
    403: {"status": "forbidden", "message": "Not allowed to start this conversation"},
    404: {"status": "agent_not_found", "message": "Agent not found"},
    429: {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"},
}


def error_close(
    error_type: str, message: str | None = None, code: int | None = None
) -> tuple[protocol.ErrorEvent, int, str]:
    """The `error` event for an error type and the close (code, reason) that follows it."""
    event_code = code if code is not None else ERROR_TYPE_CODES.get(error_type)
    text = ERROR_TEXTS.get(error_type, f"simulated {error_type}") if message is None else message
    event = protocol.ErrorEvent(event_code, text, error_type, reason=text)
    return event, event_code if event_code is not None else FALLBACK_CLOSE, text


def big_frame(size_bytes: int, message_type: str = "audio", event_id: int = 1) -> str:
    """A JSON text frame of exactly size_bytes: an `audio` event of silence, or padding.

    The audio is base64 of zero bytes; JSON whitespace fills up the last one to three bytes.
    """
    if message_type == "audio":
        head = f'{{"type":"audio","audio_event":{{"event_id":{event_id},"audio_base_64":"'
        tail = '"}'
    else:
        event = json.dumps({"event_id": event_id})[:-1]
        head = f'{{"type":{json.dumps(message_type)},{json.dumps(message_type + "_event")}:'
        head += f'{event},"padding":"'
        tail = '"}'
    fixed = len(head.encode()) + len(tail.encode()) + 1  # + the final "}"
    room = size_bytes - fixed
    if room < 0:
        raise ValueError(f"a {message_type} frame needs at least {fixed} bytes, not {size_bytes}")
    body = room - room % 4
    return head + "A" * body + tail + " " * (room - body) + "}"


def abort(ws: ServerConnection) -> None:
    """Drop the TCP connection at once: no close frame, no FIN handshake (RST)."""
    ws.transport.abort()


def refusal(status: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and extra headers of an HTTP refusal with `status` (handshake, signed URL)."""
    detail: object = _HTTP_DETAIL.get(status, "Internal Server Error" if status >= 500 else "")
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}
    return {"detail": detail}, headers
