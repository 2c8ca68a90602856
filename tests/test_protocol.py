"""Protocol core: every message both ways, contract conformance, unknown and malformed frames."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.core import protocol as p
from tests.beds import asyncapi

AUDIO_B64 = base64.b64encode(b"\x01\x00\xff\x7f" * 8).decode()

CLIENT_SAMPLES: list[Any] = [
    p.UserAudioChunk(b"\x00\x01" * 160),
    p.ConversationInitiationClientData(),
    p.ConversationInitiationClientData(
        conversation_config_override={
            "agent": {
                "prompt": {"prompt": "Be brief."},
                "first_message": "Hi!",
                "language": "en",
            },
            "tts": {"voice_id": "voice123"},
        },
        custom_llm_extra_body={"temperature": 0.5, "max_tokens": 100},
        dynamic_variables={"room": "kitchen", "floor": 2, "temp_c": 21.5, "lights": True},
        user_id="device-42",
        source_info={"source": "unknown", "version": "pi-agent/0.1.0"},
    ),
    p.Pong(7),
    p.ClientToolResult("call_1", "22 degrees", False),
    p.ClientToolResult("call_2", "unknown tool", True),
    p.ContextualUpdate("The user walked into the kitchen"),
    p.ContextualUpdate("Sensor: 21 C", context_id="temperature"),
    p.UserMessage("What time is it?"),
    p.UserActivity(),
    p.Feedback(12, "like"),
    p.Feedback(12, None),
    p.McpToolApprovalResult("mcp_1", False),
    p.MultimodalMessage(text={"type": "user_message", "text": "look"}),
]

SERVER_SAMPLES: list[Any] = [
    p.ConversationInitiationMetadata("conv_1", "pcm_16000", "pcm_16000"),
    p.ConversationInitiationMetadata("conv_2", "ulaw_8000", "pcm_44100"),
    p.Audio(AUDIO_B64, 3),
    p.Audio(
        AUDIO_B64,
        4,
        {"chars": ["h", "i"], "char_start_times_ms": [0, 50], "char_durations_ms": [50, 50]},
    ),
    p.Interruption(5),
    p.Interruption(5, reason="user_speech"),
    p.Ping(9, 35),
    p.Ping(10),
    p.UserTranscript("hello there", 2),
    p.TentativeUserTranscript("hello th", 2),
    p.AgentResponse("Hi! How can I help?", 2),
    p.AgentResponseCorrection("Hi! How can I help?", "Hi! How", 2),
    p.AgentChatResponsePart("Hi", "delta", 3),
    p.AgentReasoningResponsePart("thinking", "delta", "r1"),
    p.InternalTentativeAgentResponse("Hi..."),
    p.InternalTurnProbability(0.4),
    p.VadScore(0.95),
    p.ClientToolCall("get_time", "call_1", {"zone": "UTC"}, 4),
    p.AgentToolRequest("end_call", "t1", "system", 6),
    p.AgentToolResponse("end_call", "t1", "system", False, True, 6),
    p.AgentToolResponseFullPayload("lookup", "t2", "webhook", False, True, False, "{}", False, 7),
    p.McpToolCall("m1", "search", "awaiting_approval", "svc", approval_timeout_secs=300),
    p.McpConnectionStatus([{"integration_id": "i", "is_connected": True, "tool_count": 2}]),
    p.ContextUsage("gpt", 1000, 128000, 8),
    p.AsrInitiationMetadata({"model": "x"}),
    p.GuardrailTriggered(),
    p.AgentTyping(True, 1200),
    p.ExternalAgentConnected(),
    p.ExternalAgentDisconnected(),
    p.RichContent("rc1", "card", {"title": "x"}, 9),
    p.ServerContextualUpdate("context"),
    p.ErrorEvent(1008, "bad", "invalid_message", "Invalid message"),
]


def test_every_message_type_has_a_sample() -> None:
    assert {type(m).TYPE for m in SERVER_SAMPLES} == set(p.SERVER_TYPES)
    sampled = {type(m).TYPE for m in CLIENT_SAMPLES if isinstance(m, p.Message)}
    assert sampled == set(p.CLIENT_TYPES)


@pytest.mark.parametrize("message", CLIENT_SAMPLES, ids=lambda m: type(m).__name__)
def test_client_messages_round_trip_and_match_contract(message: Any) -> None:
    wire = json.loads(p.encode(message.to_wire()))
    assert p.parse_client_message(p.encode(wire)) == message
    kind = wire.get("type", "user_audio_chunk")
    if asyncapi.covered_by_contract(kind):
        asyncapi.validate_client_message(wire)


@pytest.mark.parametrize("message", SERVER_SAMPLES, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip_and_match_contract(message: Any) -> None:
    text = p.encode(message)
    assert p.parse_server_message(text) == message
    wire = json.loads(text)
    if wire["type"] == "ping" and wire["ping_event"]["ping_ms"] is None:
        # The 2026 contract (reference 3) makes ping_ms nullable; the 2025 file says integer.
        del wire["ping_event"]["ping_ms"]
    if asyncapi.covered_by_contract(wire["type"]):
        asyncapi.validate_server_message(wire)


def test_contract_literals_are_our_type_constants() -> None:
    """Each `x-fern-type: literal<...>` of the vendor contract is a type this module speaks."""
    literals = asyncapi.contract_literals()
    assert literals, "no literals found in the contract"
    ours = set(p.SERVER_TYPES) | set(p.CLIENT_TYPES)
    assert literals <= ours


def test_audio_chunk_fast_path_equals_generic_encoding() -> None:
    data = bytes(range(256)) * 3
    assert p.encode_audio_chunk(data) == p.encode(p.UserAudioChunk(data))
    asyncapi.validate_client_message(json.loads(p.encode_audio_chunk(data)))


def test_optional_none_fields_are_left_out_but_nullable_ones_kept() -> None:
    assert json.loads(p.encode(p.ContextualUpdate("x"))) == {
        "type": "contextual_update",
        "text": "x",
    }
    assert json.loads(p.encode(p.UserMessage(None))) == {"type": "user_message", "text": None}


def test_unknown_type_is_an_explicit_unknown_event() -> None:
    event = p.parse_server_message('{"type": "brand_new_event", "brand_new": {"x": 1}}')
    assert event == p.UnknownMessage(
        "brand_new_event", {"type": "brand_new_event", "brand_new": {"x": 1}}
    )


@pytest.mark.parametrize("kind", sorted(p.OPAQUE_EVENT_TYPES))
def test_known_names_without_schema_are_opaque_events(kind: str) -> None:
    event = p.parse_server_message(json.dumps({"type": kind, "anything": [1, 2]}))
    assert isinstance(event, p.OpaqueEvent)
    assert event.type == kind


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON list instead of an object"),
        ('"text"', "JSON str instead of an object"),
        ("{}", "without a string 'type'"),
        ('{"type": 5}', "without a string 'type'"),
        (b"\x00\x01binary", "binary frame of 8 bytes"),
        ('{"type": "ping"}', "ping: 'ping_event' is not an object"),
        ('{"type": "ping", "ping_event": []}', "'ping_event' is not an object"),
        ('{"type": "ping", "ping_event": {}}', "ping: missing field 'event_id'"),
        ('{"type": "ping", "ping_event": {"event_id": "7"}}', "field 'event_id' is '7'"),
        ('{"type": "ping", "ping_event": {"event_id": true}}', "expected integer"),
        ('{"type": "audio", "audio_event": {"event_id": 1}}', "missing field 'audio_base_64'"),
        (
            '{"type": "vad_score", "vad_score_event": {"vad_score": "high"}}',
            "expected number",
        ),
        (
            '{"type": "client_tool_call", "client_tool_call": {"tool_name": "x", '
            '"tool_call_id": "c", "parameters": [1]}}',
            "field 'parameters'",
        ),
    ],
)
def test_malformed_server_frames_become_protocol_errors(frame: str | bytes, fragment: str) -> None:
    result = p.parse_server_message(frame)
    assert isinstance(result, p.MalformedFrame)
    assert fragment in str(result)


def test_protocol_error_excerpt_is_bounded() -> None:
    result = p.parse_server_message("{" + "x" * 10_000)
    assert isinstance(result, p.MalformedFrame)
    assert len(str(result)) < 400


def test_bad_base64_audio_is_reported_not_raised() -> None:
    event = p.parse_server_message(
        '{"type":"audio","audio_event":{"audio_base_64":"!!!","event_id":1}}'
    )
    assert isinstance(event, p.Audio)
    assert isinstance(event.decode_audio(), p.MalformedFrame)


def test_16_mib_audio_frame_parses() -> None:
    raw = bytes(12 * 1024 * 1024)  # 16 MiB of base64 text
    frame = p.encode(p.Audio(base64.b64encode(raw).decode(), 1))
    assert len(frame) > 16_000_000
    event = p.parse_server_message(frame)
    assert isinstance(event, p.Audio)
    assert event.decode_audio() == raw


def test_client_side_parser_rejects_bad_audio_chunks() -> None:
    assert isinstance(p.parse_client_message('{"user_audio_chunk": 5}'), p.MalformedFrame)
    assert isinstance(p.parse_client_message('{"user_audio_chunk": "@@"}'), p.MalformedFrame)
    assert isinstance(p.parse_client_message('{"type": "pong"}'), p.MalformedFrame)


def test_error_event_describes_itself() -> None:
    err = p.ErrorEvent(1002, "LLM took too long", "llm_timeout", "timeout")
    assert err.describe() == "llm_timeout (code 1002): LLM took too long"
    assert p.ERROR_TYPES["llm_timeout"] == 1002


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([*p.SERVER_TYPES, *p.OPAQUE_EVENT_TYPES, "zzz"]),
    payload=json_values,
    key=st.sampled_from(["", "payload"]),
)
def test_parser_never_raises_on_arbitrary_shapes(kind: str, payload: Any, key: str) -> None:
    cls = p.SERVER_TYPES.get(kind)
    payload_key = key or (cls.PAYLOAD if cls is not None and cls.PAYLOAD else "data")
    frame = json.dumps({"type": kind, payload_key: payload})
    result = p.parse_server_message(frame)
    assert isinstance(result, p.MalformedFrame | p.UnknownMessage | p.OpaqueEvent | p.Message)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=50))
def test_parser_never_raises_on_arbitrary_text(frame: str | bytes) -> None:
    p.parse_server_message(frame)
    p.parse_client_message(frame)
