"""Pure conversation core: pongs first, audio decoding, interruption gating, end reasons."""

from __future__ import annotations

import base64
import json

import numpy as np

from pi_agent.core import protocol as p
from pi_agent.core.audio import formats
from pi_agent.core.audio.playback import PlaybackQueue
from pi_agent.core.ending import EndKind
from pi_agent.core.session import (
    Interrupt,
    Line,
    MetadataReceived,
    Notice,
    Play,
    Problem,
    SendFrame,
    Session,
    ToolCall,
)


def started(out: str = "pcm_16000", inp: str = "pcm_16000") -> Session:
    s = Session()
    actions = s.on_frame(p.encode(p.ConversationInitiationMetadata("c1", out, inp)), 0.0)
    assert isinstance(actions[0], MetadataReceived)
    return s


def audio_frame(samples: np.ndarray, fmt: str, event_id: int) -> str:
    data = formats.encode(samples.astype(np.int16), formats.parse_format(fmt))
    return p.encode(p.Audio(base64.b64encode(data).decode(), event_id))


def test_ping_answered_with_same_event_id_first() -> None:
    s = started()
    actions = s.on_frame(p.encode(p.Ping(41, 12)), 1.0)
    assert actions == [SendFrame('{"type":"pong","event_id":41}')]
    assert s.rtt_ms == 12.0
    assert s.on_frame(p.encode(p.Ping(42)), 1.1) == [SendFrame('{"type":"pong","event_id":42}')]
    assert s.rtt_ms == 12.0  # a ping without ping_ms keeps the last estimate


def test_metadata_sets_formats_and_rejects_unknown_format() -> None:
    s = started("ulaw_8000", "pcm_44100")
    assert s.output_format is formats.FORMATS["ulaw_8000"]
    assert s.input_format is formats.FORMATS["pcm_44100"]
    bad = Session().on_frame(
        p.encode(p.ConversationInitiationMetadata("c", "mp3_44100_128", "pcm_16000")), 0
    )
    assert isinstance(bad[0], Problem) and "mp3_44100_128" in bad[0].text


def test_metadata_without_formats_falls_back_to_pcm_16000() -> None:
    s = Session()
    frame = json.dumps(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {"conversation_id": "c"},
        }
    )
    assert isinstance(s.on_frame(frame, 0)[0], MetadataReceived)
    assert s.output_format is formats.FORMATS["pcm_16000"]


def test_audio_is_decoded_in_the_announced_format() -> None:
    tone = (np.sin(np.arange(800) / 5) * 8000).astype(np.int16)
    for fmt in formats.FORMATS:
        s = started(out=fmt)
        (action,) = s.on_frame(audio_frame(tone, fmt, 3), 2.0)
        assert isinstance(action, Play)
        assert action.event_id == 3
        if fmt.startswith("pcm"):
            assert np.array_equal(action.samples, tone)
        else:
            assert np.max(np.abs(action.samples.astype(int) - tone)) < 300
        assert s.last_audio_at == 2.0


def test_audio_before_metadata_and_bad_base64_are_problems() -> None:
    s = Session()
    assert isinstance(s.on_frame(audio_frame(np.zeros(10), "pcm_16000", 1), 0)[0], Problem)
    s = started()
    bad = '{"type":"audio","audio_event":{"audio_base_64":"***","event_id":1}}'
    assert isinstance(s.on_frame(bad, 0)[0], Problem)
    assert s.counters.protocol_errors == 1


def test_transcripts_and_reply_tracking() -> None:
    s = started()
    (line,) = s.on_frame(p.encode(p.UserTranscript("hello", 1)), 0)
    assert line == Line("user", "hello", 1)
    assert s.awaiting_reply
    (line,) = s.on_frame(p.encode(p.AgentResponse("hi", 1)), 0)
    assert line == Line("agent", "hi", 1)
    assert not s.awaiting_reply
    (line,) = s.on_frame(p.encode(p.AgentResponseCorrection("hi there", "hi", 1)), 0)
    assert line == Line("agent-correction", "hi", 1)


def test_interruption_tool_call_and_notices() -> None:
    s = started()
    assert s.on_frame(p.encode(p.Interruption(7)), 0) == [Interrupt(7)]
    call = p.ClientToolCall("lights", "c1", {"on": True}, 3)
    assert s.on_frame(p.encode(call), 0) == [ToolCall(call)]
    (notice,) = s.on_frame(p.encode(p.VadScore(0.5)), 0)
    assert isinstance(notice, Notice)


def test_unknown_types_reported_once_and_garbage_skipped() -> None:
    s = started()
    first = s.on_frame('{"type":"future_thing"}', 0)
    assert isinstance(first[0], Problem) and "future_thing" in first[0].text
    assert s.on_frame('{"type":"future_thing"}', 0) == []
    assert s.counters.unknown_types == 2
    assert isinstance(s.on_frame("garbage", 0)[0], Problem)
    assert s.counters.protocol_errors == 1


def test_end_reasons() -> None:
    s = started()
    assert s.end_reason(1000, "").kind is EndKind.SERVER_CLOSED
    assert s.end_reason(None, "").kind is EndKind.CONNECTION_LOST
    assert s.end_reason(1006, "").kind is EndKind.CONNECTION_LOST
    r = s.end_reason(1011, "boom")
    assert r.kind is EndKind.SERVER_ERROR and "1011" in r.detail and "boom" in r.detail
    s.on_frame(p.encode(p.AgentToolResponse("end_call", "t", "system", False, True, 3)), 0)
    assert s.end_reason(1000, "").kind is EndKind.AGENT_ENDED
    s = started()
    s.on_frame(p.encode(p.ErrorEvent(1008, "The AI agent does not exist.", "invalid_message")), 0)
    r = s.end_reason(1008, "The AI agent does not exist.")
    assert r.kind is EndKind.SERVER_ERROR and not r.ok
    assert r.error_type == "invalid_message" and "does not exist" in str(r)
    s = started()
    s.on_frame(p.encode(p.ErrorEvent(1000, "limit", "max_duration_exceeded")), 0)
    r = s.end_reason(1000, "")
    assert r.ok and "maximum duration" in r.detail


def test_playback_queue_frames_and_interruption_gate() -> None:
    q = PlaybackQueue(160)
    assert q.push(1, np.arange(400, dtype=np.int16))
    assert q.queued_samples == 400 and len(q) == 3
    first = q.pop()
    assert first is not None and np.array_equal(first, np.arange(160))
    assert q.interrupt(5) == 240
    assert q.pop() is None
    # Audio older than the interruption is stale; the reply may carry the same id (4.5).
    assert not q.push(4, np.ones(100, dtype=np.int16))
    assert q.push(5, np.ones(100, dtype=np.int16))
    assert q.push(6, np.ones(100, dtype=np.int16))
    assert q.stale_events == 1 and q.queued_samples == 200
    # A later, lower interruption id never lowers the gate.
    q.interrupt(3)
    assert q.gate == 5
    assert q.dropped_samples == 440


def test_playback_queue_partial_tail_order() -> None:
    q = PlaybackQueue(100)
    q.push(1, np.arange(150, dtype=np.int16))
    q.push(1, np.arange(150, 220, dtype=np.int16))
    out = []
    while (f := q.pop()) is not None:
        out.append(f)
    assert [len(f) for f in out] == [100, 100, 20]
    assert np.array_equal(np.concatenate(out), np.arange(220))
