"""Templated dynamic variables, periodic context, transcripts and override errors.

End-to-end cases run `pi-agent run` (the Daemon) against the simulator, as tests/test_daemon.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from pi_agent.adapters.audio.devices import FileMicrophone, FileSpeaker
from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.context import (
    OVERRIDE_HINT,
    TranscriptLog,
    explain_end,
    send_periodic_context,
    template_values,
)
from pi_agent.adapters.control import request
from pi_agent.config import (
    PeriodicContext,
    default_config,
    expand_template,
    parse_config,
    template_fields,
)
from pi_agent.core import protocol as p
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.core.session import Line
from pi_agent.errors import ConfigError
from pi_agent.simulator import Close, Scenario, Send, Simulator, SimulatorOptions, Wait, WaitFor
from pi_agent.wiring import build_conversation, build_init
from tests.beds import asyncapi
from tests.beds.daemon import daemon_bed
from tests.helpers import run

NOON = datetime(2025, 6, 1, 12, 30).astimezone()
VALUES = {
    "hostname": "kitchen-pi",
    "location": "Lisbon",
    "local_time": "12:30",
    "local_date": "2025-06-01",
    "weekday": "Sunday",
}


# ---------------------------------------------------------------------------- templates


def test_template_fields_and_expansion() -> None:
    text = "It is {local_time} in {location} on {{hostname}}"
    assert template_fields(text) == ["local_time", "location"]
    assert expand_template(text, VALUES) == "It is 12:30 in Lisbon on {hostname}"
    for bad in ("{tme}", "{}", "{0}", "{hostname!r}", "{hostname:>9}", "a { b", "b } a"):
        with pytest.raises(ValueError, match=r"unknown placeholder|unmatched brace"):
            template_fields(bad)


def test_template_values_of_the_device() -> None:
    values = template_values("the kitchen", NOON, hostname=lambda: "pi")
    assert values == {
        "hostname": "pi",
        "location": "the kitchen",
        "local_time": "12:30",
        "local_date": "2025-06-01",
        "weekday": "Sunday",
    }
    assert template_values(None)["hostname"] == socket.gethostname()
    assert template_values(None)["location"] == ""


def test_init_expands_dynamic_variables() -> None:
    cfg = default_config(
        "a",
        agent={
            "dynamic_variables": {
                "device": "{hostname}",
                "now": "It is {local_time} in {location}",
                "floor": 2,
                "vip": True,
            }
        },
        context={"location": "Lisbon"},
    )
    init = build_init(cfg, VALUES)
    assert init.dynamic_variables == {
        "device": "kitchen-pi",
        "now": "It is 12:30 in Lisbon",
        "floor": 2,
        "vip": True,
    }
    live = build_init(cfg).dynamic_variables
    assert live is not None
    assert live["device"] == socket.gethostname()
    assert str(live["now"]).endswith(" in Lisbon")


def test_unknown_placeholder_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "agent:\n  agent_id: a\n  dynamic_variables:\n    ok: '{hostname}'\n"
            "    greeting: 'Hello from {room}'\n"
        )
    assert info.value.problems == [
        "line 5: agent.dynamic_variables.greeting: 'Hello from {room}' has an unknown "
        "placeholder {room}; expected placeholders from {hostname}, {location}, {local_time}, "
        "{local_date}, {weekday} ('{{' and '}}' for literal braces)"
    ]


# ---------------------------------------------------------------------------- periodic context


class Sink:
    def __init__(self) -> None:
        self.updates: list[tuple[str, str | None]] = []

    async def send_contextual_update(self, text: str, context_id: str | None = None) -> None:
        self.updates.append((text, context_id))


def test_periodic_context_repeats_and_skips_failures(caplog: pytest.LogCaptureFixture) -> None:
    entries = [
        PeriodicContext(("/bin/echo", "21.5 C"), 0.1, "Temperature:"),
        PeriodicContext(("/bin/false",), 0.1, "never"),
    ]
    sink = Sink()

    async def main() -> None:
        task = asyncio.create_task(send_periodic_context(sink, entries))
        await asyncio.sleep(0.35)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="pi_agent.adapters.context"):
        run(main())
    assert 3 <= len(sink.updates) <= 5
    assert set(sink.updates) == {("Temperature: 21.5 C", "pi-agent-periodic-0")}
    assert "periodic context /bin/false: exited with status 1; nothing sent" in caplog.text


def test_periodic_context_reaches_the_simulator(tmp_path: Path) -> None:
    periodic = [{"argv": ["/bin/echo", "21.5 C"], "every_s": 10, "prefix": "Room temperature:"}]

    async def main() -> None:
        async with daemon_bed(tmp_path, context={"periodic": periodic}) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            record = bed.sim.conversations[0]
            await record.wait_until(lambda: bool(record.messages("contextual_update")))
            (update,) = record.messages("contextual_update")
            assert update == p.ContextualUpdate("Room temperature: 21.5 C", "pi-agent-periodic-0")
            asyncapi.validate_client_message(update.to_wire())
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")

    run(main())


# ---------------------------------------------------------------------------- transcripts


def test_transcript_correction_replaces_the_agent_line(caplog: pytest.LogCaptureFixture) -> None:
    log = TranscriptLog("conv_1", enabled=True)
    with caplog.at_level(logging.INFO, logger="pi_agent.adapters.context"):
        log.add(Line("user", "tell me a story", 1))
        log.add(Line("agent", "Once upon a time there was a dragon", 2))
        log.add(Line("user", "stop", 3))
        log.add(Line("agent-correction", "Once upon a time", 2))
    assert [(line.role, line.text) for line in log.lines] == [
        ("user", "tell me a story"),
        ("agent", "Once upon a time"),
        ("user", "stop"),
    ]
    assert caplog.messages == [
        "conversation conv_1 user: tell me a story",
        "conversation conv_1 agent: Once upon a time there was a dragon",
        "conversation conv_1 user: stop",
        "conversation conv_1 agent (correction, replaces the interrupted reply): Once upon a time",
    ]


def test_transcripts_are_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    log = TranscriptLog("conv_1", enabled=False)
    with caplog.at_level(logging.DEBUG, logger="pi_agent.adapters.context"):
        log.add(Line("user", "private", 1))
    assert caplog.messages == []
    assert len(log.lines) == 1


def test_daemon_logs_transcripts_with_the_conversation_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = Scenario(
        (
            Send(p.UserTranscript("what is the weather", 1)),
            Send(p.AgentResponse("It is sunny and warm all week long", 2)),
            Send(p.AgentResponseCorrection("It is sunny and warm all week long", "It is sunny", 2)),
            Wait(30),
        )
    )
    options = SimulatorOptions(scenario=scenario, ping_interval_s=0)

    async def main() -> None:
        async with daemon_bed(tmp_path, options, logging={"transcripts": True}) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            async with asyncio.timeout(10):
                while "correction" not in caplog.text:  # noqa: ASYNC110 - log records, polled
                    await asyncio.sleep(0.02)
            cid = bed.daemon.machine.conversation_id
            assert cid is not None and cid.startswith("conv_")
            assert [(line.role, line.text) for line in bed.daemon.transcript.lines] == [
                ("user", "what is the weather"),
                ("agent", "It is sunny"),
            ]
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")
        lines = [m for m in caplog.messages if m.startswith("conversation conv_")]
        assert lines == [
            f"conversation {cid} user: what is the weather",
            f"conversation {cid} agent: It is sunny and warm all week long",
            f"conversation {cid} agent (correction, replaces the interrupted reply): It is sunny",
        ]

    with caplog.at_level(logging.INFO, logger="pi_agent.adapters.context"):
        run(main())


# ---------------------------------------------------------------------------- override_error


def test_explain_end_adds_the_fix_for_override_errors() -> None:
    refused = EndReason(EndKind.SERVER_ERROR, "refused", 1008, "override_error")
    assert explain_end(refused).detail == f"refused; {OVERRIDE_HINT}"
    assert explain_end(explain_end(refused)) == explain_end(refused)
    other = EndReason(EndKind.SERVER_ERROR, "refused", 1008, "invalid_message")
    assert explain_end(other) is other


def test_refused_override_is_explained_by_the_simulator(tmp_path: Path) -> None:
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.zeros(16000, np.int16), 16000)

    async def main() -> EndReason:
        options = SimulatorOptions(allowed_overrides=frozenset(), ping_interval_s=0)
        async with Simulator(options) as sim:
            cfg = default_config("a", sim.url, agent={"overrides": {"first_message": "Hi!"}})
            conv = build_conversation(cfg, FileMicrophone(mic, 20, 0.0), FileSpeaker(None))
            return explain_end(await conv.run())

    reason = run(main())
    assert reason.kind is EndKind.SERVER_ERROR
    assert reason.error_type == "override_error"
    assert "agent.first_message" in reason.detail
    assert "enable it in the agent's Security settings" in reason.detail
    assert "remove it from agent.overrides" in reason.detail


def test_daemon_status_explains_a_refused_override(tmp_path: Path) -> None:
    error = p.ErrorEvent(
        code=1008,
        message="Override for field 'agent.language' is not allowed by config.",
        error_type="override_error",
    )
    scenario = Scenario((Send(error), Close(1008, "override_error")))
    options = SimulatorOptions(scenario=scenario, ping_interval_s=0)

    async def main() -> None:
        async with daemon_bed(tmp_path, options) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("error: server_error")
            status = await request(bed.control, "status")
            last = status["last_conversation"]
            assert last["conversation_id"].startswith("conv_")
            assert isinstance(last["duration_s"], float)
            assert "agent.language" in last["end"] and OVERRIDE_HINT in last["end"]

    run(main())


# ---------------------------------------------------------------------------- daemon built-ins


def test_daemon_end_conversation_tool_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pi_agent.adapters.builtins.END_GRACE_S", 0.1)
    scenario = Scenario(
        (
            Wait(0.2),
            Send(p.ClientToolCall("end_conversation", "e1", {}, 1)),
            WaitFor("client_tool_result"),
            Wait(30),
        )
    )
    options = SimulatorOptions(scenario=scenario, ping_interval_s=0)

    async def main() -> None:
        async with daemon_bed(tmp_path, options) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("idle: local: the agent ended the conversation")
            record = bed.sim.conversations[0]
            (result,) = record.messages("client_tool_result")
            assert not result.is_error
            await record.wait_ended(5)
            assert record.close_code == 1000

    run(main())


def test_daemon_set_led_tool_overrides_the_leds_for_the_conversation(tmp_path: Path) -> None:
    scenario = Scenario(
        (
            Wait(0.3),
            Send(p.ClientToolCall("set_led", "l1", {"pattern": "red"}, 1)),
            WaitFor("client_tool_result"),
            Wait(30),
        )
    )
    options = SimulatorOptions(scenario=scenario, ping_interval_s=0)

    async def main() -> None:
        async with daemon_bed(tmp_path, options) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            record = bed.sim.conversations[0]
            await record.wait_until(lambda: bool(record.messages("client_tool_result")))
            assert not record.messages("client_tool_result")[0].is_error
            assert bed.rgb() == (1.0, 0.0, 0.0)  # red instead of the listening blue
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")
            assert bed.rgb() == (0.0, 0.0, 0.0)  # idle: off again

    run(main())
