"""Client tools the agent may call on the device (`client_tool_call`, reference 2.4).

A tool is a function of its parameters returning a string (or JSON-able data, sent as JSON).
Synchronous tools run in a worker thread and command tools in asyncio subprocesses, so that a
slow tool never blocks pongs or audio. Unknown tools, invalid parameters, failures and timeouts
are answered with `is_error: true` and a short reason. MCP approval requests (reference 2.9)
are answered from an allow list that fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pi_agent.config import CommandTool, ParamSpec, ParamValue, matches_type, show
from pi_agent.core import protocol as p
from pi_agent.core.bounds import MAX_ID_CHARS, RecentIds
from pi_agent.errors import ToolError

log = logging.getLogger(__name__)

ToolFunc = Callable[[Mapping[str, Any]], Any] | Callable[[Mapping[str, Any]], Awaitable[Any]]
# The agent waits for the result; past this the call answers with an error instead.
TOOL_TIMEOUT_S = 10.0
# Result strings are capped so a chatty tool cannot flood the conversation.
RESULT_LIMIT_CHARS = 16_000
# Calls running at once; a server flooding tool calls gets "busy" answers, not a fork storm.
MAX_RUNNING_CALLS = 8
# A command tool's own timeout kills it; the registry's bound waits this much longer for that.
KILL_MARGIN_S = 2.0
# After SIGKILL a process is gone within milliseconds; this only bounds a stuck reap.
REAP_TIMEOUT_S = 2.0
# Enough of stderr to explain a failure in one line.
STDERR_LIMIT_BYTES = 1024
STDOUT_FD = 1
# Longest string parameter accepted (an argument, not a document).
MAX_STRING_PARAM_CHARS = 1000
# MCP call ids remembered per conversation to answer each at most once.
MCP_ANSWERED_LIMIT = 1000
# Environment variables a command inherits; everything else (API key, credentials, the
# systemd notify socket) stays with the daemon.
CHILD_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool: its function, declared parameters (None: unchecked) and time bound."""

    func: ToolFunc
    parameters: Mapping[str, ParamSpec] | None = None
    timeout_s: float = TOOL_TIMEOUT_S


class ToolRegistry:
    """Named client tools; unknown names and failures become `is_error` results."""

    def __init__(
        self,
        tools: Mapping[str, ToolFunc | Tool] | None = None,
        *,
        mcp_allow: Collection[str] = (),
    ) -> None:
        self._tools: dict[str, Tool] = {}
        for name, tool in (tools or {}).items():
            self._tools[name] = tool if isinstance(tool, Tool) else Tool(tool)
        self.mcp_allow = frozenset(mcp_allow)
        self._running = 0

    def register(
        self,
        name: str,
        func: ToolFunc,
        *,
        parameters: Mapping[str, ParamSpec] | None = None,
        timeout_s: float = TOOL_TIMEOUT_S,
    ) -> None:
        """Add or replace tool `name`; declared `parameters` are checked before each call."""
        self._tools[name] = Tool(func, parameters, timeout_s)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    async def call(self, name: str, parameters: Mapping[str, Any]) -> tuple[str, bool]:
        """Run tool `name`; returns (result text, is_error)."""
        tool = self._tools.get(name)
        if tool is None:
            offered = ", ".join(self.names) or "none"
            return f"unknown client tool {name!r}; this device offers: {offered}", True
        if self._running >= MAX_RUNNING_CALLS:
            return f"client tool {name!r} refused: {MAX_RUNNING_CALLS} calls are running", True
        try:
            if tool.parameters is not None:
                parameters = check_parameters(tool.parameters, parameters)
        except ToolError as exc:
            return f"client tool {name!r}: {exc}", True
        log.info("client tool %r called", name)  # parameters may be private: debug only
        log.debug("client tool %r parameters: %s", name, parameters)
        self._running += 1
        try:
            value = await self._run(tool, parameters)
        except TimeoutError:
            return f"client tool {name!r} timed out after {tool.timeout_s:g} s", True
        except ToolError as exc:
            return f"client tool {name!r}: {exc}", True
        except Exception as exc:  # a tool's failure is an answer to the agent, not a crash
            log.warning("client tool %r failed: %s", name, exc)
            return f"client tool {name!r} failed: {exc}", True
        finally:
            self._running -= 1
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if not text:
            text = f"client tool {name!r} completed"
        return text[:RESULT_LIMIT_CHARS], False

    @staticmethod
    async def _run(tool: Tool, parameters: Mapping[str, Any]) -> Any:
        func = tool.func
        async with asyncio.timeout(tool.timeout_s):
            if inspect.iscoroutinefunction(func):
                return await func(parameters)
            value = await asyncio.to_thread(func, parameters)
            if inspect.isawaitable(value):
                value = await value
            return value


# ---------------------------------------------------------------------------- parameters


def _expected(spec: ParamSpec) -> str:
    """What a value of `spec` must be, for messages."""
    if spec.enum is not None:
        return "one of " + ", ".join(show(v) for v in spec.enum)
    what = {"string": "a string", "integer": "an integer", "number": "a number"}.get(
        spec.type, "true or false"
    )
    if spec.min is not None and spec.max is not None:
        return f"{what} from {spec.min:g} to {spec.max:g}"
    if spec.min is not None:
        return f"{what} of at least {spec.min:g}"
    if spec.max is not None:
        return f"{what} of at most {spec.max:g}"
    if spec.type == "string":
        return f"a string of at most {MAX_STRING_PARAM_CHARS} characters, not starting with '-'"
    return what


def check_value(name: str, spec: ParamSpec, value: object) -> ParamValue:
    """Return `value` converted to the parameter's type, or raise ToolError naming `name`."""
    problem: str | None = None
    if not matches_type(value, spec.type):
        problem = f"{show(value)} has the wrong type"
    elif isinstance(value, float) and not math.isfinite(value):
        problem = f"{show(value)} is not a finite number"
    elif spec.enum is not None:
        if not any(matches_type(e, spec.type) and e == value for e in spec.enum):
            problem = f"{show(value)} is not allowed"
    elif spec.min is not None and isinstance(value, int | float) and value < spec.min:
        problem = f"{show(value)} is too small"
    elif spec.max is not None and isinstance(value, int | float) and value > spec.max:
        problem = f"{show(value)} is too large"
    elif isinstance(value, str):
        if len(value) > MAX_STRING_PARAM_CHARS:
            problem = f"a string of {len(value)} characters is too long"
        elif value.startswith("-"):
            # Whole arguments cannot break out of argv, but '-x' could still pass as an option.
            problem = f"{show(value)} starts with '-'"
        elif "\0" in value:
            problem = f"{show(value)} contains a NUL character"
    if problem is not None:
        raise ToolError(f"parameter {name!r}: {problem}; expected {_expected(spec)}")
    assert isinstance(value, str | int | float | bool)
    if spec.type == "integer" and isinstance(value, float):
        return int(value)
    return value


def check_parameters(
    specs: Mapping[str, ParamSpec], parameters: Mapping[str, Any]
) -> dict[str, ParamValue]:
    """Every declared parameter present and valid, nothing else; ToolError names the first."""
    if not isinstance(parameters, Mapping):
        raise ToolError(f"parameters {show(parameters)} are not a JSON object")
    for name in parameters:
        if name not in specs:
            takes = ", ".join(specs) or "no parameters"
            raise ToolError(f"unexpected parameter {name!r}; this tool takes: {takes}")
    checked: dict[str, ParamValue] = {}
    for name, spec in specs.items():
        if name not in parameters:
            raise ToolError(f"parameter {name!r} is missing; expected {_expected(spec)}")
        checked[name] = check_value(name, spec, parameters[name])
    return checked


def as_argument(value: ParamValue) -> str:
    """A parameter value as one command-line argument (booleans as true/false; -0.0 is 0.0)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value + 0.0) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a command produced: its output (decoded), whether cut, and an error, if any."""

    output: str
    truncated: bool = False
    error: str | None = None


def child_env() -> dict[str, str]:
    """The environment of a command: a few harmless variables of the daemon's."""
    env = {key: os.environ[key] for key in CHILD_ENV_KEEP if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def _kill_group(pid: int | None) -> None:
    """SIGKILL a command's whole process group (it was started in a session of its own)."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the first bytes of stdout and stderr and drops the rest, so a child never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out = bytearray()
        self.err = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.SubprocessTransport | None = None

    @property
    def truncated(self) -> bool:
        return len(self.out) > self.limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if fd == STDOUT_FD:
            was_cut = self.truncated
            self.out += raw[: self.limit + 1 - len(self.out)]  # a byte past the limit marks a cut
            if self.truncated and not was_cut and self._transport is not None:
                _kill_group(self._transport.get_pid())  # the rest is not needed
        else:
            self.err += raw[: STDERR_LIMIT_BYTES - len(self.err)]

    def connection_lost(self, exc: Exception | None) -> None:
        """The process exited and every pipe is closed."""
        if not self.done.done():
            self.done.set_result(None)


async def run_command(
    argv: Sequence[str], timeout_s: float, max_output_bytes: int
) -> CommandOutcome:
    """Run argv without a shell, as the daemon's user; bounded in time and output.

    The process (and anything it started) is killed on timeout, on too much output, and when the
    caller is cancelled.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.subprocess_exec(
            lambda: _Collector(max_output_bytes),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            cwd="/",
            start_new_session=True,  # its own process group, so a kill reaches its children
        )
    except (OSError, ValueError) as exc:  # ValueError: an argument with a NUL byte
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return CommandOutcome("", error=f"could not start {argv[0]}: {why}")
    try:
        finished, _ = await asyncio.wait([proto.done], timeout=timeout_s)
    finally:
        try:
            if not proto.done.done():  # timed out or cancelled
                _kill_group(transport.get_pid())
                await asyncio.wait([proto.done], timeout=REAP_TIMEOUT_S)
        finally:
            transport.close()  # closes the pipes (and kills the process if still there)
    if not finished:
        return CommandOutcome("", error=f"timed out after {timeout_s:g} s")
    text = proto.out[:max_output_bytes].decode("utf-8", errors="replace").rstrip()
    status = transport.get_returncode()
    if status != 0 and not proto.truncated:  # a truncated command was killed by us
        reason = proto.err.decode("utf-8", errors="replace").strip().splitlines()
        detail = f": {reason[-1]}" if reason else ""
        return CommandOutcome(text, error=f"exited with status {status}{detail}")
    return CommandOutcome(text, proto.truncated)


def command_tool(cfg: CommandTool) -> Tool:
    """A Tool running `cfg.argv` with each '{name}' argument replaced by that parameter."""

    async def run(parameters: Mapping[str, Any]) -> str:
        argv = [cfg.argv[0]]
        for arg in cfg.argv[1:]:
            name = arg[1:-1] if arg.startswith("{") and arg.endswith("}") else ""
            if name not in cfg.parameters:
                argv.append(arg)
                continue
            value = as_argument(parameters[name])
            if value.startswith("-") and "--" not in argv:
                # A negative number would reach the program as an option ('-5'); after a '--'
                # argument, option parsers take it as an operand.
                raise ToolError(
                    f"parameter {name!r}: {value} would reach {cfg.argv[0]} as an option; "
                    f"expected a number of at least 0 (a tool that takes negative numbers "
                    f"puts '--' before '{{{name}}}' in its argv)"
                )
            argv.append(value)
        outcome = await run_command(argv, cfg.timeout_s, cfg.max_output_bytes)
        if outcome.error is not None:
            raise ToolError(outcome.error)
        if outcome.truncated:
            return f"{outcome.output}\n[output cut at {cfg.max_output_bytes} bytes]"
        return outcome.output or "done (no output)"

    return Tool(run, cfg.parameters, cfg.timeout_s + KILL_MARGIN_S)


# ---------------------------------------------------------------------------- MCP approvals


class McpApprovals:
    """Answers MCP approval requests (2.9): approve only allowed tools, each call id once."""

    def __init__(self, allow: Collection[str]) -> None:
        self.allow = frozenset(allow)
        self._answered = RecentIds(MCP_ANSWERED_LIMIT)

    def answer(self, call: p.McpToolCall) -> p.McpToolApprovalResult | None:
        """The approval result to send for `call`, or None (not awaiting approval, or answered)."""
        too_long = max(len(call.tool_call_id), len(call.tool_name)) > MAX_ID_CHARS
        if call.state != "awaiting_approval" or too_long:
            return None
        if not self._answered.first_time(call.tool_call_id):
            return None
        approved = call.tool_name in self.allow
        log.info(
            "MCP tool %r (%s): %s",
            call.tool_name,
            call.tool_call_id,
            "approved (tools.mcp_allow)" if approved else "denied (not in tools.mcp_allow)",
        )
        return p.McpToolApprovalResult(call.tool_call_id, approved)
