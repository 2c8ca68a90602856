"""Client tools: parameters, built-ins, command tools (real subprocesses), MCP approvals."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from pi_agent.adapters.audio.devices import FileMicrophone, FileSpeaker
from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.builtins import (
    DeviceHooks,
    SpeakerVolume,
    build_registry,
    device_facts,
    end_when_asked,
)
from pi_agent.adapters.client import Conversation
from pi_agent.adapters.hardware.leds import LedController
from pi_agent.adapters.link import LinkSettings
from pi_agent.adapters.tools import (
    MAX_RUNNING_CALLS,
    McpApprovals,
    ToolRegistry,
    check_parameters,
    command_tool,
    run_command,
)
from pi_agent.config import BUILTIN_NAMES, CommandTool, ParamSpec, ToolsConfig, parse_config
from pi_agent.core import protocol as p
from pi_agent.core.patterns import COLORS, FAST_BLINK_PERIOD_S, Pattern
from pi_agent.core.states import State
from pi_agent.errors import ConfigError, ToolError
from pi_agent.simulator import Close, Scenario, Send, Simulator, SimulatorOptions, WaitFor
from pi_agent.simulator.records import ConversationRecord
from tests.beds import asyncapi
from tests.helpers import run

T = TypeVar("T")
TEST_TIMEOUT_S = 60.0
RATE = 16000
NOW = datetime(2025, 3, 4, 14, 5, 9, tzinfo=timezone(timedelta(hours=1)))


def spec(kind: str, **extra: Any) -> ParamSpec:
    return ParamSpec(kind, extra.get("enum"), extra.get("min"), extra.get("max"), "")


def command(
    argv: list[str],
    timeout_s: float = 5.0,
    limit: int = 4096,
    name: str = "cmd",
    **params: ParamSpec,
) -> CommandTool:
    return CommandTool(name, "", tuple(argv), params, timeout_s, limit)


class FakeSpeaker:
    volume = 1.0


class Recorder:
    """Hooks that record what the built-ins did."""

    def __init__(self) -> None:
        self.leds: list[Pattern | None] = []
        self.ends = 0

    def set_led(self, pattern: Pattern | None) -> None:
        self.leds.append(pattern)

    def end(self) -> None:
        self.ends += 1


def hooks_for(tmp_path: Path, rec: Recorder, speaker: object = None) -> DeviceHooks:
    (tmp_path / "temp").write_text("48312\n")
    (tmp_path / "uptime").write_text("12345.67 40000.00\n")
    (tmp_path / "model").write_text("Raspberry Pi 4 Model B Rev 1.4\0")
    return DeviceHooks(
        volume=SpeakerVolume.of(speaker) if speaker is not None else None,
        set_led=rec.set_led,
        end_conversation=rec.end,
        now=lambda: NOW,
        hostname=lambda: "kitchen-pi",
        thermal_path=tmp_path / "temp",
        uptime_path=tmp_path / "uptime",
        model_path=tmp_path / "model",
    )


def registry(tmp_path: Path, rec: Recorder, speaker: object = None, **cfg: Any) -> ToolRegistry:
    tools = ToolsConfig(cfg.get("builtins", BUILTIN_NAMES), cfg.get("commands", ()), ())
    return build_registry(tools, hooks_for(tmp_path, rec, speaker))


def running(cmdline: bytes) -> bool:
    """Whether a process with exactly this /proc cmdline exists."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == cmdline:
                return True
        except OSError:
            continue
    return False


def call(reg: ToolRegistry, name: str, params: Mapping[str, Any] | None = None) -> tuple[str, bool]:
    return run(reg.call(name, params or {}))


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("specs", "params", "problem"),
    [
        (
            {"n": spec("integer")},
            {"n": "5"},
            "parameter 'n': '5' has the wrong type; expected an integer",
        ),
        ({"n": spec("integer")}, {"n": True}, "parameter 'n': True has the wrong type"),
        (
            {"n": spec("integer", min=0, max=10)},
            {"n": 11},
            "'n': 11 is too large; expected an integer from 0 to 10",
        ),
        (
            {"n": spec("number", min=1)},
            {"n": 0.5},
            "'n': 0.5 is too small; expected a number of at least 1",
        ),
        (
            {"r": spec("string", enum=("a", "b"))},
            {"r": "c"},
            "'r': 'c' is not allowed; expected one of 'a', 'b'",
        ),
        ({"r": spec("string")}, {"r": "-rf"}, "'r': '-rf' starts with '-'"),
        ({"r": spec("string")}, {"r": "x" * 1001}, "'r': a string of 1001 characters is too long"),
        (
            {"b": spec("boolean")},
            {"b": "yes"},
            "'b': 'yes' has the wrong type; expected true or false",
        ),
        ({"n": spec("integer")}, {}, "parameter 'n' is missing; expected an integer"),
        ({}, {"x": 1}, "unexpected parameter 'x'; this tool takes: no parameters"),
    ],
)
def test_invalid_parameters_name_the_parameter(
    specs: dict[str, ParamSpec], params: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ToolError) as info:
        check_parameters(specs, params)
    assert problem in str(info.value)


def test_valid_parameters_are_converted() -> None:
    specs = {"n": spec("integer"), "x": spec("number"), "s": spec("string"), "b": spec("boolean")}
    got = check_parameters(specs, {"n": 3.0, "x": 2, "s": "hi there", "b": False})
    assert got == {"n": 3, "x": 2, "s": "hi there", "b": False}
    assert isinstance(got["n"], int)


# ---------------------------------------------------------------------------- built-ins


def test_get_time_gives_local_time_date_and_zone(tmp_path: Path) -> None:
    text, error = call(registry(tmp_path, Recorder()), "get_time")
    assert not error
    assert json.loads(text) == {
        "local_time": "14:05",
        "local_date": "2025-03-04",
        "weekday": "Tuesday",
        "timezone": "UTC+01:00",
        "utc_offset": "+0100",
        "iso": "2025-03-04T14:05:09+01:00",
    }


def test_volume_get_and_set_change_the_speaker_gain(tmp_path: Path) -> None:
    speaker = FakeSpeaker()
    reg = registry(tmp_path, Recorder(), speaker)
    assert call(reg, "get_volume") == ('{"percent": 100}', False)
    assert call(reg, "set_volume", {"percent": 40}) == ('{"percent": 40}', False)
    assert speaker.volume == pytest.approx(0.4)
    assert call(reg, "get_volume") == ('{"percent": 40}', False)
    text, error = call(reg, "set_volume", {"percent": 250})
    assert error and "parameter 'percent': 250 is too large" in text
    assert speaker.volume == pytest.approx(0.4)


def test_volume_without_a_software_gain_is_an_error(tmp_path: Path) -> None:
    assert SpeakerVolume.of(FileSpeaker(None)) is None
    text, error = call(registry(tmp_path, Recorder()), "get_volume")
    assert error and "no volume control" in text


def test_set_led_hook_gets_the_pattern_and_default_restores(tmp_path: Path) -> None:
    rec = Recorder()
    reg = registry(tmp_path, rec)
    text, error = call(reg, "set_led", {"pattern": "Red Pulse"})
    assert not error and "red pulse" in text
    assert call(reg, "set_led", {"pattern": "default"})[1] is False
    assert rec.leds == [Pattern("pulse", COLORS["red"]), None]
    text, error = call(reg, "set_led", {"pattern": "plaid"})
    assert error and "parameter 'pattern'" in text and "'plaid'" in text
    assert len(rec.leds) == 2


def test_end_conversation_calls_the_end_hook(tmp_path: Path) -> None:
    rec = Recorder()
    text, error = call(registry(tmp_path, rec), "end_conversation")
    assert not error and "ends" in text
    assert rec.ends == 1


def test_end_when_asked_waits_for_the_goodbye(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pi_agent.adapters.builtins.END_GRACE_S", 0.05)
    ended: list[float] = []

    async def main() -> None:
        asked, idle = asyncio.Event(), asyncio.Event()
        grace = asyncio.Event()
        real_sleep = asyncio.sleep

        async def grace_sleep(seconds: float) -> None:
            await real_sleep(seconds)
            grace.set()

        monkeypatch.setattr("pi_agent.adapters.builtins.asyncio.sleep", grace_sleep)
        task = asyncio.create_task(
            end_when_asked(asked, idle, lambda: ended.append(time.monotonic()))
        )
        await real_sleep(0)
        assert not grace.is_set() and not ended  # not asked yet: no grace period started
        asked.set()
        await grace.wait()  # the grace period is over
        await real_sleep(0)
        assert not ended  # the agent's audio is still playing
        idle.set()
        await asyncio.wait_for(task, 1)
        assert len(ended) == 1

    run(main())


def test_device_info_reads_hostname_uptime_temperature_model(tmp_path: Path) -> None:
    text, error = call(registry(tmp_path, Recorder()), "device_info")
    assert not error
    facts = json.loads(text)
    assert facts["hostname"] == "kitchen-pi"
    assert facts["uptime_s"] == 12346
    assert facts["soc_temperature_c"] == 48.3
    assert facts["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert "pi_agent_version" in facts


def test_device_info_leaves_out_what_cannot_be_read(tmp_path: Path) -> None:
    hooks = hooks_for(tmp_path, Recorder())
    hooks.thermal_path = tmp_path / "missing"
    (tmp_path / "uptime").write_text("garbage")
    facts = device_facts(hooks)
    assert "soc_temperature_c" not in facts and "uptime_s" not in facts
    assert facts["hostname"] == "kitchen-pi"


def test_switched_off_builtins_are_unknown(tmp_path: Path) -> None:
    reg = registry(tmp_path, Recorder(), builtins=("get_time",))
    assert reg.names == ["get_time"]
    text, error = call(reg, "device_info")
    assert error and "unknown client tool 'device_info'" in text and "get_time" in text


class RecordingDriver:
    """A LedDriver that records each frame written."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, tuple[float, float, float]]] = []

    def set_level(self, level: float, color: tuple[float, float, float]) -> None:
        self.frames.append((level, color))

    def close(self) -> None:
        pass


def test_led_override_replaces_and_restores_the_state_pattern() -> None:
    driver = RecordingDriver()
    patterns = {
        State.IDLE: Pattern("on", COLORS["blue"]),
        State.LISTENING: Pattern("on", COLORS["green"]),
    }
    leds = LedController(driver, patterns, clock=lambda: 0.0)
    leds.show(State.IDLE)
    leds.override(Pattern("on", COLORS["red"]))
    leds.show(State.LISTENING)  # a state change while overridden: remembered, not shown
    assert leds.shown == Pattern("on", COLORS["red"])
    leds.override(None)
    assert driver.frames == [(1.0, COLORS["blue"]), (1.0, COLORS["red"]), (1.0, COLORS["green"])]
    leds.override(Pattern("on", COLORS["red"]))
    leds.close()  # off at shutdown, whatever was overridden
    assert driver.frames[-1] == (0.0, (0.0, 0.0, 0.0))


def test_led_override_animates_as_the_clock_steps() -> None:
    driver = RecordingDriver()
    now = [100.0]
    leds = LedController(driver, {State.IDLE: Pattern("on", COLORS["blue"])}, clock=lambda: now[0])
    leds.show(State.IDLE)
    leds.override(Pattern("fast-blink", COLORS["red"]))
    assert leds.shown.animated
    for _ in range(4):  # quarter periods of the fast blink: on, off, off, on again
        now[0] += FAST_BLINK_PERIOD_S / 4
        leds.render()
    assert [level for level, _ in driver.frames[1:]] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert {color for _, color in driver.frames[1:]} == {COLORS["red"]}


# ---------------------------------------------------------------------------- command tools


def test_command_tool_substitutes_whole_arguments() -> None:
    tool = command(["/bin/echo", "{room}", "{level}", "{on}", "a b"],
                   room=spec("string"), level=spec("integer"), on=spec("boolean"))  # fmt: skip
    reg = ToolRegistry({"echo": command_tool(tool)})
    text, error = run(reg.call("echo", {"room": "living room; rm -rf /", "level": 3, "on": True}))
    assert (text, error) == ("living room; rm -rf / 3 true a b", False)


def test_command_tool_bad_parameters_are_errors_naming_them() -> None:
    tool = command(["/bin/echo", "{room}"], room=spec("string", enum=("kitchen", "hall")))
    reg = ToolRegistry({"echo": command_tool(tool)})
    text, error = run(reg.call("echo", {"room": "attic"}))
    assert error and "parameter 'room': 'attic' is not allowed" in text
    text, error = run(reg.call("echo", {"room": 5}))
    assert error and "parameter 'room': 5 has the wrong type" in text


def test_command_timeout_kills_it_and_is_an_error() -> None:
    async def main() -> None:
        reg = ToolRegistry({"slow": command_tool(command(["/bin/sleep", "29.5"], timeout_s=0.3))})
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        text, error = await reg.call("slow", {})
        tick_task.cancel()
        await asyncio.gather(tick_task, return_exceptions=True)
        assert error and "timed out after 0.3 s" in text
        assert ticks > 10  # the loop kept running while the command did
        assert not running(b"/bin/sleep\x0029.5\x00")

    run(main())


def test_huge_output_is_cut_and_the_command_stopped() -> None:
    outcome = run(run_command(["/usr/bin/yes", "spam"], timeout_s=10, max_output_bytes=1000))
    assert outcome.error is None and outcome.truncated
    assert len(outcome.output.encode()) <= 1000
    assert not running(b"/usr/bin/yes\x00spam\x00")  # stopped at once, not left running
    reg = ToolRegistry({"yes": command_tool(command(["/usr/bin/yes"], timeout_s=10, limit=100))})
    text, error = run(reg.call("yes", {}))
    assert not error and text.endswith("[output cut at 100 bytes]")


def test_failing_command_reports_status_and_stderr(tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho working\necho 'sensor not found' >&2\nexit 3\n")
    script.chmod(0o755)
    reg = ToolRegistry({"fail": command_tool(command([str(script)]))})
    text, error = run(reg.call("fail", {}))
    assert error
    assert text == "client tool 'fail': exited with status 3: sensor not found"


def test_command_gets_no_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_secret")
    outcome = run(run_command(["/usr/bin/env"], timeout_s=5, max_output_bytes=65536))
    assert "sk_secret" not in outcome.output and "PATH=" in outcome.output


def test_cancelled_command_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    script = tmp_path / "wait.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec /bin/sleep 30\n")
    script.chmod(0o755)

    async def main() -> None:
        task = asyncio.create_task(run_command([str(script)], timeout_s=30, max_output_bytes=10))
        while not marker.exists() or not marker.read_text().strip():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pid = int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    run(main())


def test_too_many_calls_at_once_are_refused() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def wait(_: Mapping[str, Any]) -> str:
            await gate.wait()
            return "ok"

        reg = ToolRegistry({"wait": wait})
        calls = [asyncio.create_task(reg.call("wait", {})) for _ in range(MAX_RUNNING_CALLS + 1)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*calls)
        assert sum(error for _, error in results) == 1

    run(main())


def test_missing_executable_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "agent:\n  agent_id: a\ntools:\n  commands:\n"
            "    - name: garage\n      argv: [/usr/bin/no-such-tool, open]\n"
        )
    assert info.value.problems == [
        "line 6: tools.commands[0].argv[0]: '/usr/bin/no-such-tool' does not exist; "
        "expected an absolute path to an executable file"
    ]


def test_placeholder_must_name_a_declared_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "agent:\n  agent_id: a\ntools:\n  commands:\n    - name: lights\n"
            "      argv: [/bin/echo, '{levle}']\n      parameters:\n"
            "        level: {type: integer, min: 0, max: 10}\n"
        )
    assert info.value.problems == [
        "line 6: tools.commands[0].argv: '{levle}' (argv[1]) names no declared parameter; "
        "expected one of the parameters: level",
        "line 7: tools.commands[0].parameters: 'level' is not used in argv; "
        "expected an argument '{level}'",
    ]


# ---------------------------------------------------------------------------- MCP approvals


def mcp(call_id: str, name: str, state: str = "awaiting_approval") -> p.McpToolCall:
    return p.McpToolCall(call_id, name, state, service_id="svc", parameters={})


def test_mcp_policy_fails_closed_once_per_id() -> None:
    policy = McpApprovals({"calendar_read"})
    assert policy.answer(mcp("1", "calendar_read")) == p.McpToolApprovalResult("1", True)
    assert policy.answer(mcp("1", "calendar_read")) is None
    assert policy.answer(mcp("2", "delete_everything")) == p.McpToolApprovalResult("2", False)
    for state in ("loading", "success", "failure"):
        assert policy.answer(mcp("3", "calendar_read", state)) is None
    assert McpApprovals(()).answer(mcp("4", "calendar_read")) == p.McpToolApprovalResult("4", False)


# ---------------------------------------------------------------------------- end to end


def converse(tmp_path: Path, steps: tuple[Any, ...], reg: ToolRegistry) -> ConversationRecord:
    """One conversation with `reg` against a simulator scenario; returns what it recorded."""
    path = tmp_path / "mic.wav"
    write_wav(path, np.zeros(RATE, np.int16), RATE)

    async def main() -> ConversationRecord:
        options = SimulatorOptions(scenario=Scenario(steps), ping_interval_s=0)
        async with Simulator(options) as sim:
            conv = Conversation(
                LinkSettings(sim.url, "agent_1"),
                p.ConversationInitiationClientData(),
                FileMicrophone(path, 20, 1.0),
                FileSpeaker(None),
                tools=reg,
            )
            reason = await conv.run()
            record = await sim.next_conversation()
        assert reason.ok, reason
        assert record.scenario_error is None, record.scenario_error
        return record

    return run(main())


def test_tool_calls_end_to_end_through_the_simulator(tmp_path: Path) -> None:
    speaker = FakeSpeaker()
    echo = command(["/bin/echo", "{what}"], name="echo", what=spec("string"))
    reg = registry(tmp_path, Recorder(), speaker, commands=(echo,))
    steps = (
        Send(p.ClientToolCall("get_time", "c1", {}, 1)),
        WaitFor("client_tool_result"),
        Send(p.ClientToolCall("set_volume", "c2", {"percent": 70}, 2)),
        WaitFor("client_tool_result"),
        Send(p.ClientToolCall("echo", "c3", {"what": "hello"}, 3)),
        WaitFor("client_tool_result"),
        Send(p.ClientToolCall("echo", "c4", {"what": 7}, 4)),
        WaitFor("client_tool_result"),
        Send(p.ClientToolCall("open_garage", "c5", {}, 5)),
        WaitFor("client_tool_result"),
        Close(1000, ""),
    )
    record = converse(tmp_path, steps, reg)
    for message in record.messages("client_tool_result"):
        asyncapi.validate_client_message(message.to_wire())
    results = {r.tool_call_id: r for r in record.messages("client_tool_result")}
    assert json.loads(results["c1"].result)["local_time"] == "14:05"
    assert not results["c2"].is_error and speaker.volume == pytest.approx(0.7)
    assert (results["c3"].result, results["c3"].is_error) == ("hello", False)
    assert results["c4"].is_error and "parameter 'what'" in results["c4"].result
    assert results["c5"].is_error and "open_garage" in results["c5"].result
    assert all(isinstance(r.result, str) for r in results.values())


def test_mcp_approvals_end_to_end_through_the_simulator(tmp_path: Path) -> None:
    steps = (
        Send(mcp("m1", "search_docs", "loading")),
        Send(mcp("m1", "search_docs")),
        WaitFor("mcp_tool_approval_result"),
        Send(mcp("m1", "search_docs")),  # asked again: not answered twice
        Send(mcp("m2", "send_email")),
        WaitFor("mcp_tool_approval_result"),
        Send(mcp("m2", "send_email", "failure")),
        Close(1000, ""),
    )
    record = converse(tmp_path, steps, ToolRegistry(mcp_allow={"search_docs"}))
    if asyncapi.covered_by_contract("mcp_tool_approval_result"):
        for message in record.messages("mcp_tool_approval_result"):
            asyncapi.validate_client_message(message.to_wire())
    answers = [(m.tool_call_id, m.is_approved) for m in record.messages("mcp_tool_approval_result")]
    assert answers == [("m1", True), ("m2", False)]
