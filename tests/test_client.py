"""Conversation client against the real simulator on 127.0.0.1 (real websockets both ends)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from pi_agent.adapters import client as client_mod
from pi_agent.adapters.audio.devices import ChunkQueue, FileMicrophone, FileSpeaker, Samples
from pi_agent.adapters.audio.wavfile import read_wav, write_wav
from pi_agent.adapters.client import Conversation
from pi_agent.adapters.link import LinkSettings
from pi_agent.adapters.tools import ToolRegistry
from pi_agent.config import Config, default_config
from pi_agent.core import protocol as p
from pi_agent.core.audio import formats
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.errors import AudioError
from pi_agent.once import run_talk
from pi_agent.simulator import (
    Close,
    Echo,
    Scenario,
    Send,
    SendAudio,
    SendPing,
    SendRaw,
    Simulator,
    SimulatorOptions,
    Wait,
    WaitFor,
)
from pi_agent.wiring import build_init
from tests.beds import asyncapi
from tests.helpers import run

T = TypeVar("T")
TEST_TIMEOUT_S = 60.0
RATE = 16000


def tone(freq: float, seconds: float, rate: int = RATE, level: float = 0.3) -> Samples:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def peak_hz(samples: Samples, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def speech_file(tmp_path: Path, seconds: float = 1.0, silence_s: float = 1.0) -> Path:
    """A 16 kHz WAV: a 440 Hz tone (the 'speech') then silence."""
    path = tmp_path / "mic.wav"
    write_wav(
        path, np.concatenate((tone(440, seconds), np.zeros(int(silence_s * RATE), np.int16))), RATE
    )
    return path


def file_config(sim: Simulator, tmp_path: Path, *, speed: float = 0.0, **agent: Any) -> Config:
    return default_config(
        agent.pop("agent_id", "agent_1"),
        sim.url,
        audio={
            "backend": "file",
            "input_file": str(speech_file(tmp_path)),
            "output_file": str(tmp_path / "out.wav"),
            "file_speed": speed,
        },
        conversation={"reply_timeout_s": 10},
        **({"agent": agent} if agent else {}),
    )


def test_talk_echo_conversation_end_to_end(tmp_path: Path) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0.2)) as sim:
            out = io.StringIO()
            reason, conv = await run_talk(file_config(sim, tmp_path), out=out)
            record = await sim.next_conversation()
        assert reason.kind is EndKind.COMPLETED, reason
        assert reason.policy.exit_code == 0
        text = out.getvalue()
        assert "you: (1.00 seconds of speech)" in text
        assert "agent: You said something 1.0 seconds long" in text
        # The init went first and carried our source info.
        assert record.received[0].type == "conversation_initiation_client_data"
        assert record.init is not None
        assert record.init.source_info == {"source": "unknown", "version": "pi-agent/0.1.0"}
        # The simulator heard our microphone bit for bit (16 kHz in, pcm_16000 on the wire).
        heard = record.user_audio()
        sent, _ = read_wav(tmp_path / "mic.wav")
        assert np.array_equal(heard[: len(sent)], sent)
        # The agent's reply (our own tone) was written to the output WAV at 16 kHz.
        played, rate = read_wav(tmp_path / "out.wav")
        assert rate == 16000
        assert abs(len(played) / rate - 1.0) < 0.1
        assert abs(peak_hz(played, rate) - 440) < 5
        # Everything our client sent is valid under the vendor contract.
        assert not record.protocol_errors
        for event in record.received:
            assert not isinstance(event.message, p.MalformedFrame)
            wire = event.message.to_wire()
            if asyncapi.covered_by_contract(wire.get("type", "user_audio_chunk")):
                asyncapi.validate_client_message(wire)
        # Every ping was answered with its own id.
        assert record.pings
        assert all(ping.pong_at is not None for ping in record.pings[:-1])
        assert not record.violations
        assert conv.session.rtt_ms is not None

    run(main())


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_every_output_format_is_decoded_at_its_rate(tmp_path: Path, fmt: str) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(output_format=fmt, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
        assert reason.ok, reason
        played, rate = read_wav(tmp_path / "out.wav")
        assert rate == formats.FORMATS[fmt].sample_rate
        assert abs(len(played) / rate - 1.0) < 0.1
        assert abs(peak_hz(played, rate) - 440) < 5

    run(main())


@pytest.mark.parametrize("fmt", ["pcm_8000", "pcm_44100", "ulaw_8000"])
def test_microphone_is_converted_to_the_input_format(tmp_path: Path, fmt: str) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(input_format=fmt, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
            record = await sim.next_conversation()
        assert reason.ok, reason
        heard = record.user_audio()
        rate = formats.FORMATS[fmt].sample_rate
        first_second = heard[:rate]
        assert abs(peak_hz(first_second, rate) - 440) < 5
        assert (
            abs(formats.rms_dbfs(first_second[rate // 10 :]) - formats.rms_dbfs(tone(440, 1))) < 1
        )

    run(main())


class BlockedSpeaker(FileSpeaker):
    """A speaker whose device never takes a frame: playback is stuck."""

    def __init__(self) -> None:
        super().__init__(None, 0.0)
        self.stuck = asyncio.Event()

    async def play(self, frame: Samples) -> None:
        await self.stuck.wait()


def test_pong_is_immediate_while_audio_and_tools_are_stuck(tmp_path: Path) -> None:
    """Pongs go out on the receive path: a stuck speaker and a hung tool cannot delay them."""
    hang = asyncio.Event()

    async def hung_tool(params: Any) -> str:
        await hang.wait()
        return "never"

    scenario = Scenario(
        (
            SendAudio(duration_s=20.0, event_id=1, paced=False, chunk_ms=1000),
            Send(p.ClientToolCall("slow", "call_1", {}, 1)),
            SendPing(),
            WaitFor("pong", timeout_s=5),
            SendPing(),
            WaitFor("pong", timeout_s=5),
            Close(1000, "done"),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            conv = Conversation(
                LinkSettings(sim.url, "agent_1"),
                p.ConversationInitiationClientData(),
                FileMicrophone(speech_file(tmp_path), 20, 1.0),
                BlockedSpeaker(),
                tools=ToolRegistry({"slow": hung_tool}),
            )
            run_task = asyncio.create_task(conv.run())
            record = await sim.next_conversation()
            await record.wait_ended(20)
            conv.end(EndReason(EndKind.LOCAL, "test over"))
            run_task.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        assert record.scenario_error is None, record.scenario_error
        assert len(record.pings) == 2
        assert all(ping.pong_at is not None for ping in record.pings)
        assert [m.event_id for m in record.messages("pong")] == [
            ping.event_id for ping in record.pings
        ]
        assert record.close_reason == "done"

    run(main())


def test_interruption_drops_queued_and_stale_audio(tmp_path: Path) -> None:
    """After interruption(N): queued audio is gone, ids < N are dropped, ids >= N play."""
    scenario = Scenario(
        (
            SendAudio(duration_s=3.0, tone_hz=440, event_id=4, paced=False),
            Wait(0.3),
            Send(p.Interruption(5)),
            SendAudio(duration_s=1.0, tone_hz=880, event_id=4, paced=False),  # stale
            SendAudio(duration_s=1.0, tone_hz=1320, event_id=5, paced=False),  # the reply
            Wait(1.5),
            Close(1000, ""),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            cfg = file_config(sim, tmp_path, speed=1.0)
            reason, conv = await run_talk(cfg)
        assert reason.kind is EndKind.SERVER_CLOSED, reason
        played, rate = read_wav(tmp_path / "out.wav")
        frame = rate // 10
        peaks = [peak_hz(played[i : i + frame], rate) for i in range(0, len(played) - frame, frame)]

        def near(freq: float) -> int:
            return sum(1 for x in peaks if abs(x - freq) < 30)

        assert near(880) == 0  # the stale audio never played
        assert 8 <= near(1320) <= 10  # the whole reply played
        assert 1 <= near(440) <= 6  # the interrupted audio stopped early, not after 3 s
        assert conv.playback is not None
        assert conv.playback.stale_events >= 1

    run(main())


def test_16_mib_frame_is_received(tmp_path: Path) -> None:
    samples = tone(300, 370.0)  # 370 s at 16 kHz: 11.8 MB raw, 15.8 MB of base64
    audio = base64.b64encode(formats.encode(samples, formats.FORMATS["pcm_16000"])).decode()
    assert len(audio) > 15 * 1024 * 1024
    scenario = Scenario((Send(p.Audio(audio, 1)), Wait(0.5), Close(1000, "")))

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, conv = await run_talk(file_config(sim, tmp_path))
        assert reason.kind is EndKind.SERVER_CLOSED, reason
        assert conv.session.counters.audio_samples == len(samples)
        played, _ = read_wav(tmp_path / "out.wav")
        assert np.array_equal(played, samples)

    run(main())


def test_garbage_from_the_server_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = Scenario(
        (
            SendRaw("{not json"),
            SendRaw(b"\x00\x01\x02"),
            SendRaw('{"type": "from_the_future", "x": 1}'),
            SendRaw('{"type": "ping", "ping_event": {"event_id": "nope"}}'),
            Echo(),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, conv = await run_talk(file_config(sim, tmp_path))
        assert reason.kind is EndKind.COMPLETED, reason
        assert conv.session.counters.protocol_errors == 3
        assert conv.session.counters.unknown_types == 1

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "malformed JSON" in caplog.text
    assert "binary frame" in caplog.text
    assert "from_the_future" in caplog.text


def test_agent_hang_up_lets_the_goodbye_finish(tmp_path: Path) -> None:
    scenario = Scenario(
        (
            Send(p.AgentResponse("Goodbye!", 1)),
            SendAudio(duration_s=1.0, tone_hz=660, event_id=1, paced=False),
            Send(p.AgentToolResponse("end_call", "t1", "system", False, True, 1)),
            Close(1000, "agent ended the call"),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path, speed=1.0))
        assert reason.kind is EndKind.AGENT_ENDED, reason
        played, rate = read_wav(tmp_path / "out.wav")
        assert len(played) == rate  # the whole second of goodbye was played

    run(main())


def test_unknown_agent_is_a_clear_failure(tmp_path: Path) -> None:
    async def main() -> None:
        options = SimulatorOptions(agent_ids=frozenset({"known"}), ping_interval_s=0)
        async with Simulator(options) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path, agent_id="missing"))
        assert reason.kind is EndKind.SERVER_ERROR
        assert reason.close_code == 1008
        assert "does not exist" in reason.detail
        assert reason.policy.exit_code != 0

    run(main())


@pytest.mark.parametrize(
    ("code", "kind"), [(1011, EndKind.SERVER_ERROR), (1000, EndKind.SERVER_CLOSED)]
)
def test_server_close_codes_become_end_reasons(tmp_path: Path, code: int, kind: EndKind) -> None:
    scenario = Scenario((Wait(0.2), Close(code, "internal trouble")))

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
        assert reason.kind is kind
        assert reason.close_code == code
        assert "internal trouble" in reason.detail

    run(main())


def test_missing_metadata_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "METADATA_TIMEOUT_S", 0.5)
    scenario = Scenario((Wait(5.0),), send_metadata=False)

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
        assert reason.kind is EndKind.PROTOCOL
        assert "conversation_initiation_metadata" in reason.detail

    run(main())


def test_connection_refused_is_a_connect_failure(tmp_path: Path) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions()) as sim:
            cfg = file_config(sim, tmp_path)
        # The simulator is closed now: nothing listens on its port any more.
        reason, _ = await run_talk(cfg)
        assert reason.kind is EndKind.CONNECT_FAILED
        assert "connection refused" in reason.detail

    run(main())


def test_unknown_client_tool_answers_is_error(tmp_path: Path) -> None:
    scenario = Scenario(
        (
            Send(p.ClientToolCall("open_garage", "call_9", {"door": 1}, 1)),
            WaitFor("client_tool_result", timeout_s=5),
            Close(1000, ""),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
            record = await sim.next_conversation()
        assert reason.ok, reason
        (result,) = record.messages("client_tool_result")
        assert result.tool_call_id == "call_9"
        assert result.is_error
        assert "open_garage" in result.result

    run(main())


def test_init_carries_overrides_variables_and_user_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            cfg = file_config(
                sim,
                tmp_path,
                user_id="kitchen-pi",
                dynamic_variables={"room": "kitchen", "floor": 2},
                overrides={"first_message": "Hello from the kitchen", "language": "en"},
            )
            reason, _ = await run_talk(cfg)
            record = await sim.next_conversation()
        assert reason.ok, reason
        assert record.init == build_init(cfg)
        assert record.init is not None
        assert record.init.user_id == "kitchen-pi"
        assert record.init.dynamic_variables == {"room": "kitchen", "floor": 2}
        override = record.init.conversation_config_override
        assert override == {"agent": {"first_message": "Hello from the kitchen", "language": "en"}}

    run(main())


def test_capture_queue_drops_oldest_and_counts() -> None:
    async def main() -> None:
        q = ChunkQueue(3)
        for i in range(5):
            q.put_nowait(np.full(4, i, dtype=np.int16))
        assert q.dropped == 2
        assert [int((await q.get())[0]) for _ in range(3)] == [2, 3, 4]

    run(main())


class UnpluggedMicrophone(FileMicrophone):
    """Delivers a few chunks, then fails the way a pulled USB microphone does."""

    async def run(self, queue: ChunkQueue) -> None:
        for _ in range(5):
            queue.put_nowait(np.zeros(self.chunk_samples, dtype=np.int16))
            await asyncio.sleep(0.02)
        raise AudioError("the microphone stream stopped (device unplugged?)")


def test_a_failing_microphone_ends_the_conversation_clearly(tmp_path: Path) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            cfg = file_config(sim, tmp_path)
            mic = UnpluggedMicrophone(speech_file(tmp_path), 20, 1.0)
            reason, _ = await run_talk(cfg, devices=(mic, FileSpeaker(None, 0)))
        assert reason.kind is EndKind.DEVICE
        assert "unplugged" in reason.detail
        assert reason.policy.exit_code == 74

    run(main())


def test_talk_answers_built_in_client_tools(tmp_path: Path) -> None:
    scenario = Scenario(
        (
            Send(p.ClientToolCall("get_time", "call_t", {}, 1)),
            WaitFor("client_tool_result", timeout_s=5),
            Close(1000, ""),
        )
    )

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            reason, _ = await run_talk(file_config(sim, tmp_path))
            record = await sim.next_conversation()
        assert reason.ok, reason
        (result,) = record.messages("client_tool_result")
        assert result.tool_call_id == "call_t"
        assert not result.is_error
        assert "local_time" in result.result

    run(main())
