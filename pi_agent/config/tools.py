"""Config sections of client tools and conversation context: `tools`, `context`, templates."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, SequenceNode

from pi_agent.config.schema import (
    BAD,
    Choice,
    Context,
    Field,
    Kind,
    Nullable,
    Number,
    Section,
    Text,
    Variables,
    describe,
    is_null,
    join,
    line_of,
    show,
    wrong_type,
)
from pi_agent.errors import Invalid

# Built-in client tools, in the order the example config lists them.
BUILTIN_NAMES = (
    "get_time",
    "get_volume",
    "set_volume",
    "set_led",
    "end_conversation",
    "device_info",
)
PARAM_TYPES = ("string", "integer", "number", "boolean")
DEFAULT_COMMAND_TIMEOUT_S = 5.0
MAX_COMMAND_TIMEOUT_S = 60.0  # the agent waits for the result; a minute is already very long
DEFAULT_MAX_OUTPUT_BYTES = 4096
# The service keeps at most 64 KB of a tool result (reference section 3); more is wasted.
MAX_OUTPUT_BYTES_LIMIT = 65_536
# Bounds of a parameter's min/max: wide for any device setting, short in messages.
PARAM_BOUND = 999_999
MIN_PERIODIC_EVERY_S = 10.0  # more often floods the agent's context and costs tokens
MAX_PERIODIC_EVERY_S = 86_400.0
# Placeholders a dynamic variable's value may use; see `pi_agent.adapters.context.template_values`.
TEMPLATE_NAMES = ("hostname", "location", "local_time", "local_date", "weekday")
TOOL_NAME = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHOLE_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

ParamValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One typed parameter of a command tool; enum and min/max narrow it further."""

    type: str
    enum: tuple[ParamValue, ...] | None
    min: float | None
    max: float | None
    description: str


@dataclass(frozen=True, slots=True)
class CommandTool:
    """A client tool that runs argv (never a shell) with parameters as whole arguments."""

    name: str
    description: str
    argv: tuple[str, ...]
    parameters: Mapping[str, ParamSpec]
    timeout_s: float
    max_output_bytes: int


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """Client tools on this device and the MCP approval policy (deny unless allowed)."""

    builtins: tuple[str, ...]
    commands: tuple[CommandTool, ...]
    mcp_allow: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeriodicContext:
    """A command whose output goes to the agent as a contextual_update every `every_s`."""

    argv: tuple[str, ...]
    every_s: float
    prefix: str


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """Device context: the location text for templates and periodic context commands."""

    location: str | None
    periodic: tuple[PeriodicContext, ...]


# ------------------------------------------------------------------------------ templates


def template_fields(text: str) -> list[str]:
    """Placeholder names in `text` ('{name}'; '{{' and '}}' are literal braces).

    Raises ValueError naming the first problem: a stray brace, an unknown placeholder, or a
    format spec or conversion (not supported).
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:  # a lone '{' or '}'
        raise ValueError(f"{show(text)} has an unmatched brace") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_NAMES or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"{show(text)} has an unknown placeholder {{{shown}}}")
        names.append(name)
    return names


def expand_template(text: str, values: Mapping[str, str]) -> str:
    """`text` with each placeholder replaced by its value (validated by template_fields)."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)


_TEMPLATE_EXPECTED = (
    "placeholders from "
    + ", ".join("{" + n + "}" for n in TEMPLATE_NAMES)
    + " ('{{' and '}}' for literal braces)"
)


class TemplateVariables(Variables):
    """Dynamic variables whose string values may use device placeholders such as {hostname}."""

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        values = super().parse(node, ctx, path)
        assert isinstance(values, Mapping)
        for key, value in values.items():
            if not isinstance(value, str):
                continue
            try:
                template_fields(value)
            except ValueError as exc:
                line = ctx.key_lines.get(join(path, key), line_of(node))
                ctx.problem(line, join(path, key), f"{exc}; expected {_TEMPLATE_EXPECTED}")
        return values


# ------------------------------------------------------------------------------ kinds


class ListOf(Kind):
    """A list of `item` values as a tuple; null means an empty list."""

    def __init__(self, item: Kind, expected: str, *, unique: bool = False) -> None:
        self.item, self.expected, self.unique = item, expected, unique

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise wrong_type(ctx.construct(node))
        items = []
        for index, item_node in enumerate(node.value):
            item_path = f"{path}[{index}]"
            value = ctx.parse(self.item, item_node, item_path)
            if self.unique and value is not BAD and value in items:
                ctx.problem(
                    line_of(item_node),
                    item_path,
                    f"{show(value)} is listed twice; expected {self.expected} without repeats",
                )
                value = BAD
            items.append(value)
        return BAD if BAD in items else tuple(items)


class _Executable(Text):
    """An absolute path to an existing executable file (argv[0])."""

    def __init__(self) -> None:
        super().__init__("an absolute path to an executable file")

    def check(self, value: object, ctx: Context) -> object:
        text = str(super().check(value, ctx))
        path = Path(text)
        if not path.is_absolute():
            raise Invalid(f"{show(text)} is not an absolute path")
        if not path.is_file():
            raise Invalid(f"{show(text)} {'is not a file' if path.exists() else 'does not exist'}")
        if not os.access(path, os.X_OK):
            raise Invalid(f"{show(text)} is not executable")
        return text


class _Argument(Text):
    """One command-line argument: any string (empty too) without NUL characters."""

    def __init__(self) -> None:
        super().__init__("a string", allow_empty=True)

    def check(self, value: object, ctx: Context) -> object:
        text = str(super().check(value, ctx))
        if "\0" in text:
            raise Invalid(f"{show(text)} contains a NUL character")
        return text


class _Argv(Kind):
    """argv as a list: an absolute executable, then arguments; never a shell string."""

    expected = "a list like ['/usr/bin/vcgencmd', 'measure_temp'] (no shell)"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if not isinstance(node, SequenceNode):
            value = ctx.construct(node)
            if isinstance(value, str):
                raise Invalid(f"{show(value)} is a string (split it into a list of arguments)")
            raise wrong_type(value)
        if not node.value:
            raise Invalid("[] is empty")
        parts = [ctx.parse(_EXECUTABLE, node.value[0], f"{path}[0]")]
        for index, item in enumerate(node.value[1:], 1):
            parts.append(ctx.parse(_ARGUMENT, item, f"{path}[{index}]"))
        return BAD if BAD in parts else tuple(parts)


class _EnumValues(Kind):
    """Allowed values of a parameter: a non-empty list of strings, numbers or booleans."""

    expected = "a non-empty list of strings, numbers or booleans, or null"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if is_null(node):
            return None
        value = ctx.construct(node)
        if not isinstance(value, list):
            raise wrong_type(value)
        if not value:
            raise Invalid("[] is empty")
        for item in value:
            if not isinstance(item, str | int | float | bool):
                raise Invalid(f"{show(item)} in the list is {describe(item)}")
        return tuple(value)


def _param_cross(values: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """enum values must have the parameter's type; min/max only for numbers, min <= max."""
    kind, enum, lo, hi = (values.get(k) for k in ("type", "enum", "min", "max"))
    if kind is BAD:
        return
    if isinstance(enum, tuple):
        wrong = [v for v in enum if not matches_type(v, str(kind))]
        if wrong:
            yield "enum", f"{show(wrong[0])} is not of type {kind}; expected {kind} values"
    numeric = kind in ("integer", "number")
    for key, bound in (("min", lo), ("max", hi)):
        if bound is not None and bound is not BAD and not numeric:
            yield key, f"{show(bound)} is set for a {kind}; expected min/max only for numbers"
    if numeric and isinstance(lo, float) and isinstance(hi, float) and lo > hi:
        yield "max", f"{hi:g} is less than min {lo:g}; expected max >= min"


def matches_type(value: object, kind: str) -> bool:
    """Tell whether a YAML/JSON `value` has parameter type `kind` (booleans are not numbers)."""
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    return kind == "string" and isinstance(value, str)


_TEXT = Text("a string", allow_empty=True)
_PARAM = Section(
    "parameter",
    ParamSpec,
    [
        Field("type", Choice(*PARAM_TYPES), None, "the parameter's JSON type", required=True),
        Field("enum", _EnumValues(), None, "the only values allowed"),
        Field("min", Nullable(Number(-PARAM_BOUND, PARAM_BOUND)), None, "lowest number allowed"),
        Field("max", Nullable(Number(-PARAM_BOUND, PARAM_BOUND)), None, "highest number allowed"),
        Field("description", _TEXT, "", "for the reader"),
    ],
    cross=_param_cross,
    expected="a mapping with 'type' and optionally 'enum', 'min', 'max', 'description'",
)


class _Parameters(Kind):
    """Parameter name -> its type and limits; names are identifiers."""

    expected = "a mapping of parameter names to {type: string|integer|number|boolean, ...}"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if is_null(node):
            return MappingProxyType({})
        if not isinstance(node, MappingNode):
            raise wrong_type(ctx.construct(node))
        specs: dict[str, object] = {}
        for key, key_node, value_node, key_path in ctx.pairs(node, path):
            if not _IDENT.fullmatch(key):
                text = f"{key!r} is not a valid name; expected letters, digits and '_'"
                ctx.problem(line_of(key_node), key_path, text + ", not starting with a digit")
                specs[key] = BAD
                continue
            specs[key] = ctx.parse(_PARAM, value_node, key_path)
        return BAD if BAD in specs.values() else MappingProxyType(specs)


def _command_cross(values: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Placeholders are whole argv elements naming declared parameters; all are used."""
    argv, params = values.get("argv"), values.get("parameters")
    if not isinstance(argv, tuple) or not isinstance(params, Mapping):
        return
    used = set()
    for index, arg in enumerate(argv[1:], 1):
        whole = _WHOLE_PLACEHOLDER.fullmatch(arg)
        inside = [name for name in params if "{" + name + "}" in arg]
        if whole and whole.group(1) not in params:
            declared = ", ".join(params) or "none"
            text = f"names no declared parameter; expected one of the parameters: {declared}"
        elif inside and not whole:
            text = f"has {{{inside[0]}}} inside other text; {_WHOLE_ARG}"
        else:
            used.update(inside)
            continue
        yield "argv", f"{show(arg)} (argv[{index}]) {text}"
    for name in params:
        if name not in used:
            yield "parameters", f"{name!r} is not used in argv; expected an argument '{{{name}}}'"


_WHOLE_ARG = "expected a placeholder as a whole argument, e.g. ['--level', '{level}']"
_TOOL_NAME = Text("a tool name like 'garage_door'", pattern=TOOL_NAME)
_TIMEOUT = Number(0.1, MAX_COMMAND_TIMEOUT_S)
_OUTPUT = Number(1, MAX_OUTPUT_BYTES_LIMIT, integer=True)

_COMMAND = Section(
    "command tool",
    CommandTool,
    [
        Field("name", _TOOL_NAME, None, "the name the agent calls", required=True),
        Field("description", _TEXT, "", "for the reader"),
        Field("argv", _Argv(), None, "program and arguments", required=True),
        Field("parameters", _Parameters(), MappingProxyType({}), "typed parameters"),
        Field("timeout_s", _TIMEOUT, DEFAULT_COMMAND_TIMEOUT_S, "killed after this long"),
        Field("max_output_bytes", _OUTPUT, DEFAULT_MAX_OUTPUT_BYTES, "stdout kept"),
    ],
    cross=_command_cross,
    expected="a mapping with 'name' and 'argv'",
)


class _Commands(ListOf):
    """Command tools; names are unique and do not shadow a built-in."""

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        commands = super().parse(node, ctx, path)
        if not isinstance(commands, tuple) or not isinstance(node, SequenceNode):
            return commands
        seen: set[str] = set()
        for index, (command, item) in enumerate(zip(commands, node.value, strict=True)):
            name, where = command.name, f"{path}[{index}].name"
            if name in seen or name in BUILTIN_NAMES:
                what = "is used twice" if name in seen else "is a built-in tool"
                text = f"{show(name)} {what}; expected a unique name that is not a built-in's"
                ctx.problem(ctx.key_lines.get(where, line_of(item)), where, text)
            seen.add(name)
        return commands


_EXECUTABLE = _Executable()
_ARGUMENT = _Argument()
_BUILTINS = "a list of built-in tool names: " + ", ".join(BUILTIN_NAMES)
_COMMANDS = "a list of command tools ({name, argv, parameters, ...})"

TOOLS_SECTION = Section(
    "tools",
    ToolsConfig,
    [
        Field("builtins", ListOf(Choice(*BUILTIN_NAMES), _BUILTINS, unique=True), BUILTIN_NAMES),
        Field("commands", _Commands(_COMMAND, _COMMANDS), (), "command tools"),
        Field(
            "mcp_allow",
            ListOf(Text("a tool name"), "a list of MCP tool names", unique=True),
            (),
            "MCP tools approved when the agent asks; all others are denied",
        ),
    ],
)

_EVERY = Number(MIN_PERIODIC_EVERY_S, MAX_PERIODIC_EVERY_S)
_PERIODIC = Section(
    "periodic context",
    PeriodicContext,
    [
        Field("argv", _Argv(), None, "program and arguments", required=True),
        Field("every_s", _EVERY, None, "interval", required=True),
        Field("prefix", _TEXT, "", "put before the output"),
    ],
    expected="a mapping with 'argv' and 'every_s'",
)

CONTEXT_SECTION = Section(
    "context",
    ContextConfig,
    [
        Field("location", Nullable(Text()), None, "where the device is, for {location}"),
        Field(
            "periodic",
            ListOf(_PERIODIC, "a list of {argv, every_s, prefix} mappings"),
            (),
            "commands whose output is sent as context",
        ),
    ],
)
