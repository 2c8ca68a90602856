"""Declarative YAML schema engine: walks composed nodes so every problem names its line."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pi_agent.errors import Invalid

NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"
MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# Bounds for free-form values; aliases can make a small file describe a huge tree.
MAX_DEPTH = 32
MAX_NODES = 10_000

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlevel = 3


BAD: Final = object()  # marks a value whose problems were already reported


def show(value: object) -> str:
    """Return a bounded repr for messages; null is spelled the YAML way."""
    return "null" if value is None else _repr.repr(value)


def describe(value: object) -> str:
    """Name a constructed YAML value's type in plain words."""
    names = [(bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string")]
    names += [(list, "a list"), (dict, "a mapping"), (bytes, "binary data")]
    for typ, name in names:
        if isinstance(value, typ):
            return name
    return "a date" if hasattr(value, "isoformat") else f"a {type(value).__name__}"


def wrong_type(value: object, text: bool = False) -> Invalid:
    """Reject `value` for its type; if `text` was wanted, scalars YAML typed get a quoting hint."""
    if value is None:
        return Invalid("no value (null)")
    guessed = text and describe(value) in _GUESSED
    hint = " (put it in quotes to make it a string)" if guessed else ""
    return Invalid(f"{show(value)} is {describe(value)}{hint}")


_GUESSED = ("a boolean", "an integer", "a number", "a date")


def line_of(node: Node) -> int:
    """Return the 1-based line where `node` starts."""
    return node.start_mark.line + 1 if node.start_mark is not None else 1


def join(path: str, key: str) -> str:
    """Join a dotted key path."""
    return f"{path}.{key}" if path else key


def is_null(node: Node) -> bool:
    """Tell whether `node` is a YAML null (`~`, `null` or nothing)."""
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


class Context:
    """Collects every problem of one document, with the base folder for relative paths."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._found: list[tuple[int, str]] = []
        self.key_lines: dict[str, int] = {}  # a block mapping starts on its first key, not its own
        self._loader = yaml.SafeLoader("")

    @property
    def problems(self) -> list[str]:
        """Problems so far, ordered by line (stable for equal lines)."""
        return [text for _, text in sorted(self._found, key=lambda item: item[0])]

    def problem(self, line: int, path: str, text: str) -> None:
        """Record one problem as 'line N: path: text'."""
        self._found.append(
            (line, f"line {line}: {path}: {text}" if path else f"line {line}: {text}")
        )

    def construct(self, node: Node) -> object:
        """Build the plain value of `node` with SafeLoader semantics, or raise Invalid."""
        try:
            return self._loader.construct_object(node, deep=True)
        except (
            yaml.YAMLError,
            ValueError,
            TypeError,
            OverflowError,
            LookupError,  # PyYAML on `!!bool x`, `!!int ""`
            AttributeError,  # PyYAML on `!!timestamp x`
        ) as exc:
            problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
            raise Invalid(f"the value cannot be read ({problem})", "a plain YAML value") from None

    def pairs(self, node: MappingNode, path: str) -> Iterator[tuple[str, Node, Node, str]]:
        """Yield (key, key node, value node, key path); report bad and duplicate keys instead."""
        first: dict[str, int] = {}
        if node.tag != MAP_TAG:
            # Never constructed, but a tag like !!python/object must not pass unnoticed.
            self.problem(line_of(node), path, f"unsupported tag {node.tag!r}; expected no tag")
        for key_node, value_node in node.value:
            line = line_of(key_node)
            if key_node.tag == MERGE_TAG:
                self.problem(line, path, "merge keys ('<<') are not supported; expected plain keys")
                continue
            try:
                key = self.construct(key_node)
            except Invalid as exc:
                self.problem(line, path, f"{exc.what}; expected string keys")
                continue
            if not isinstance(key, str) or not key:
                what = "an empty key" if key == "" else f"key {show(key)} is {describe(key)}"
                self.problem(line, path, f"{what}; expected string keys")
                continue
            key_path = join(path, key)
            if key in first:
                # PyYAML would silently keep the last value; a config must not say two things.
                text = f"duplicate key (first defined on line {first[key]}); expected each key once"
                self.problem(line, key_path, text)
                continue
            first[key] = self.key_lines[key_path] = line
            yield key, key_node, value_node, key_path

    def parse(self, kind: Kind, node: Node, path: str) -> object:
        """Parse `node` with `kind`; report Invalid as a problem and return BAD."""
        try:
            return kind.parse(node, self, path)
        except Invalid as exc:
            self.problem(
                line_of(node), path, f"{exc.what}; expected {exc.expected or kind.expected}"
            )
            return BAD


class Kind:
    """How one value is checked and converted; `expected` completes '...; expected <this>'."""

    expected = "a value"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        """Return the converted value of `node`, BAD after reporting, or raise Invalid."""
        return self.check(ctx.construct(node), ctx)

    def check(self, value: object, ctx: Context) -> object:
        """Return the converted `value` or raise Invalid."""
        raise NotImplementedError


class Nullable(Kind):
    """`inner` or null (None)."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.expected = f"{inner.expected}, or null"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        return None if is_null(node) else self.inner.parse(node, ctx, path)


class Text(Kind):
    """A string; optionally non-empty, without whitespace, matching a pattern, lower-cased."""

    def __init__(
        self,
        expected: str = "a non-empty string",
        *,
        allow_empty: bool = False,
        no_space: bool = False,
        pattern: str | None = None,
        lower: bool = False,
    ) -> None:
        self.expected = expected
        self.allow_empty, self.no_space, self.lower = allow_empty, no_space, lower
        self.pattern = re.compile(pattern, re.IGNORECASE) if pattern else None

    def check(self, value: object, ctx: Context) -> object:
        if not isinstance(value, str):
            raise wrong_type(value, text=True)
        if not value and not self.allow_empty:
            raise Invalid("'' is empty")
        if self.no_space and any(ch.isspace() for ch in value):
            raise Invalid(f"{show(value)} contains whitespace")
        if self.pattern and not self.pattern.fullmatch(value):
            raise Invalid(f"{show(value)} is not valid")
        return value.lower() if self.lower else value


class Choice(Kind):
    """One string out of a fixed set."""

    def __init__(self, *options: str, fold_case: bool = False) -> None:
        self.options, self.fold_case = options, fold_case
        self.expected = "one of " + ", ".join(repr(o) for o in options)

    def check(self, value: object, ctx: Context) -> object:
        if not isinstance(value, str):
            raise wrong_type(value, text=True)
        key = value.lower() if self.fold_case else value
        if key not in self.options:
            close = difflib.get_close_matches(key, self.options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Invalid(f"{show(value)} is not a valid choice{hint}")
        return key


class Number(Kind):
    """An integer or a float (ints widen to float) within [lo, hi]; booleans never count."""

    def __init__(self, lo: float, hi: float, *, integer: bool = False) -> None:
        self.lo, self.hi, self.integer = lo, hi, integer
        what = "an integer" if integer else "a number"
        self.expected = f"{what} from {lo:g} to {hi:g}"

    def check(self, value: object, ctx: Context) -> object:
        # bool is a subclass of int, so `yes` would otherwise pass as 1.
        allowed = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise wrong_type(value)
        if not (self.lo <= value <= self.hi):  # also rejects nan
            raise Invalid(f"{show(value)} is out of range")
        return value if self.integer else float(value)


class Flag(Kind):
    """A YAML boolean (true/false, yes/no, on/off)."""

    expected = "true or false"

    def check(self, value: object, ctx: Context) -> object:
        if not isinstance(value, bool):
            raise wrong_type(value)
        return value


class NameOrIndex(Kind):
    """A non-empty name or a non-negative index (an audio device)."""

    expected = "a device name (substring) or a non-negative index"

    def check(self, value: object, ctx: Context) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise wrong_type(value)
        if value == "" or (isinstance(value, int) and value < 0):
            raise Invalid(f"{show(value)} is {'empty' if value == '' else 'negative'}")
        return value


OUTPUT_EXPECTED = "a regular file, or a path for a new one"


class FilePath(Kind):
    """A path (~ expanded, relative to the config folder); `need` checks the filesystem."""

    def __init__(self, need: str = "file") -> None:
        # "file": a readable regular file; "parent": its folder must exist; "output": as
        # "parent", and if it exists, a regular file and not a symbolic link (written to).
        self.need = need
        self.expected = "a readable file" if need == "file" else "a path in an existing folder"

    def check(self, value: object, ctx: Context) -> object:
        if not isinstance(value, str):
            raise wrong_type(value, text=True)
        if not value:
            raise Invalid("'' is empty")
        try:
            path = ctx.base_dir / Path(value).expanduser()
        except RuntimeError:  # `~nosuchuser/...`: the home folder cannot be found
            raise Invalid(f"{show(value)} names the home folder of an unknown user") from None
        named = show(value) if str(path) == value else f"{show(value)} (resolved to {str(path)!r})"
        if self.need in ("parent", "output"):
            if not path.parent.is_dir():
                raise Invalid(f"{named}: folder {str(path.parent)!r} does not exist")
            if self.need == "output" and path.is_symlink():  # never written through a link
                raise Invalid(f"{named} is a symbolic link", OUTPUT_EXPECTED)
            if path.is_dir():
                raise Invalid(f"{named} is a folder")
            if self.need == "output" and path.exists() and not path.is_file():
                raise Invalid(f"{named} is not a regular file", OUTPUT_EXPECTED)
            return path
        try:
            if not path.is_file():
                raise Invalid(
                    f"{named} {'is not a regular file' if path.exists() else 'does not exist'}"
                )
            # Opening proves readability (ACLs, root) without reading a byte of a secret.
            with path.open("rb"):
                pass
        except OSError as exc:
            raise Invalid(f"{named} cannot be read ({exc.strerror or exc})") from None
        return path


class Variables(Kind):
    """A mapping of identifier-like names to scalar values (str, int, float, bool); null = {}."""

    expected = "a mapping of names to strings, numbers or booleans"
    NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what {{name}} placeholders can refer to

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if is_null(node):
            return MappingProxyType({})
        if not isinstance(node, MappingNode):
            raise wrong_type(ctx.construct(node))
        items: dict[str, object] = {}
        for key, key_node, value_node, key_path in ctx.pairs(node, path):
            if not self.NAME.fullmatch(key):
                text = f"{key!r} is not a valid name; expected letters, digits and '_'"
                ctx.problem(line_of(key_node), key_path, text + ", not starting with a digit")
            items[key] = ctx.parse(_VARIABLE, value_node, key_path)
        return MappingProxyType(items)


class _Scalar(Kind):
    expected = "a string, number or boolean"

    def check(self, value: object, ctx: Context) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{show(value)} is not a finite number")
        if not isinstance(value, (str, int, float)):
            raise wrong_type(value)
        return value


_VARIABLE = _Scalar()


class JsonObject(Kind):
    """A mapping of JSON-compatible values, deep-frozen (MappingProxyType and tuples)."""

    expected = "a mapping of JSON values (strings, numbers, booleans, null, lists, mappings)"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if not isinstance(node, MappingNode):
            raise wrong_type(ctx.construct(node))
        return self._walk(node, ctx, path, 0, [MAX_NODES])

    def _walk(self, node: Node, ctx: Context, path: str, depth: int, budget: list[int]) -> object:
        budget[0] -= 1
        if depth > MAX_DEPTH or budget[0] < 0:
            ctx.problem(
                line_of(node),
                path,
                f"too deep or too large; expected a JSON value "
                f"at most {MAX_DEPTH} levels deep and {MAX_NODES} values in all",
            )
            budget[0] = -(10**9)  # one report is enough
            return BAD
        if isinstance(node, MappingNode):
            items = {
                k: self._walk(v, ctx, p, depth + 1, budget) for k, _, v, p in ctx.pairs(node, path)
            }
            return MappingProxyType(items)
        if isinstance(node, SequenceNode):
            if node.tag != SEQ_TAG:
                ctx.problem(line_of(node), path, f"unsupported tag {node.tag!r}; expected no tag")
            return tuple(
                self._walk(v, ctx, f"{path}[{i}]", depth + 1, budget)
                for i, v in enumerate(node.value)
            )
        return ctx.parse(_JSON_SCALAR, node, path)


class _JsonScalar(_Scalar):
    expected = "a JSON value (string, number, boolean or null)"

    def check(self, value: object, ctx: Context) -> object:
        return None if value is None else super().check(value, ctx)


_JSON_SCALAR = _JsonScalar()


def thaw(value: Any) -> Any:
    """Return a deep copy of a frozen value as dicts and lists (e.g. for json.dumps)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return os.fspath(value) if isinstance(value, Path) else value


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One key of a section: its kind, default (already converted) and documentation."""

    name: str
    kind: Kind
    default: object = None
    doc: str = ""
    required: bool = False


CrossCheck = Callable[[Mapping[str, object]], Iterator[tuple[str, str]]]


class Section(Kind):
    """A mapping of known keys built into the dataclass `build`; null means all defaults."""

    def __init__(
        self,
        name: str,
        build: type,
        fields: Sequence[Field],
        cross: CrossCheck | None = None,
        expected: str = "",
    ) -> None:
        self.name, self.build, self.cross = name, build, cross
        self.fields = {f.name: f for f in fields}
        self.expected = expected or f"a mapping of {name} settings"
        # The table and the dataclass must not drift apart: fail at import, not at runtime.
        attrs = {f.name: f for f in dataclasses.fields(build)}
        unset = dataclasses.MISSING
        extra = [n for n, a in attrs.items() if n not in self.fields and a.default is unset]
        if set(self.fields) - set(attrs) or extra:
            raise TypeError(f"schema for {name!r} does not match {build.__name__}")

    def defaults(self) -> Any:
        """Build the dataclass from defaults only (no required keys allowed)."""
        return self.build(**{f.name: f.default for f in self.fields.values()})

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if not is_null(node) and not isinstance(node, MappingNode):
            raise wrong_type(ctx.construct(node))
        values: dict[str, object] = {}
        here = ctx.key_lines.get(path, line_of(node))
        pairs = ctx.pairs(node, path) if isinstance(node, MappingNode) else iter(())
        for key, key_node, value_node, key_path in pairs:
            field = self.fields.get(key)
            if field is None:
                ctx.problem(line_of(key_node), key_path, self._unknown(key))
                continue
            values[key] = ctx.parse(field.kind, value_node, key_path)
        for field in self.fields.values():
            if field.name in values:
                continue
            if field.required:
                noun = "section" if isinstance(field.kind, Section) else "key"
                text = f"missing required {noun}; expected {field.kind.expected}"
                ctx.problem(here, join(path, field.name), text)
                values[field.name] = BAD
            else:
                values[field.name] = field.default
        for key, text in self.cross(values) if self.cross else ():
            ctx.problem(ctx.key_lines.get(join(path, key), here), join(path, key), text)
        if any(v is BAD for v in values.values()):
            return BAD
        return self.build(**values)

    def _unknown(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        return "unknown key; expected one of: " + ", ".join(self.fields)
