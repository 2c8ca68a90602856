"""Property tests on hostile input: protocol parsers, the config loader and the session core.

Each test has a fixed example budget and a derandomized seed, so CI runs the same examples every
time; a failure prints the shrunk frame or document to reproduce it with.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import string
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pi_agent.config import SCHEMA, Config, parse_config, schema
from pi_agent.core import protocol as p
from pi_agent.core.audio.formats import FORMATS
from pi_agent.core.ending import EndReason
from pi_agent.core.session import (
    Action,
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
from pi_agent.errors import EX_CONFIG, ConfigError

# Example budgets: large enough to reach every message type and schema key many times, small
# enough that the whole file runs in well under 30 s on two cores.
PARSER_EXAMPLES = 800
CONFIG_EXAMPLES = 1000
GARBAGE_CONFIG_EXAMPLES = 800
SESSION_EXAMPLES = 250
MAX_FRAMES_PER_SESSION = 12
_FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(max_examples: int) -> settings:
    """Return the fixed, reproducible settings with an example budget of `max_examples`."""
    return settings(_FUZZ, max_examples=max_examples)


PROBLEM_LINE = re.compile(r"^line \d+(, column \d+)?: ")
HUGE_INT = 10**400  # a JSON/YAML integer no float can hold

# ------------------------------------------------------------------------ JSON shapes

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-HUGE_INT, max_value=HUGE_INT),
    st.floats(),
    st.text(max_size=24),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
AUDIO_B64 = st.binary(max_size=400).map(lambda raw: base64.b64encode(raw).decode("ascii"))
FORMAT_NAMES = st.sampled_from(sorted(FORMATS)) | st.text(max_size=12)
# Fields whose realistic values a generic strategy would almost never produce.
SPECIAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "audio_base_64": AUDIO_B64 | st.text(max_size=40),
    "agent_output_audio_format": FORMAT_NAMES,
    "user_input_audio_format": FORMAT_NAMES,
    "error_type": st.sampled_from(sorted(p.ERROR_TYPES)) | st.text(max_size=12),
}


# How a payload field is drawn: mostly well typed, so typed messages come out, else any JSON.
FIELD_CHOICES = ("typed",) * 8 + ("any", "absent")


def typed_values(hint: Any) -> st.SearchStrategy[Any]:
    """Return values that fit the annotation `hint` (the parser's own idea of the field)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return st.one_of([typed_values(arg) for arg in typing.get_args(hint)])
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=24),
        int: st.integers() | st.integers(min_value=-HUGE_INT, max_value=HUGE_INT),
        float: st.floats() | st.integers(),
        bool: st.booleans(),
        type(None): st.none(),
    }
    if hint in simple:
        return simple[hint]
    origin = typing.get_origin(hint) or hint
    if origin is list:
        return st.lists(JSON_VALUES, max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4)
    return JSON_VALUES


@st.composite
def payloads(draw: st.DrawFn, cls: type[p.Message]) -> dict[str, Any]:
    """Draw a payload for `cls`: each field absent, well typed or any JSON, plus stray keys."""
    hints = typing.get_type_hints(cls)
    payload: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        choice = draw(st.sampled_from(FIELD_CHOICES))
        if choice == "absent":
            continue
        if choice == "any":
            payload[f.name] = draw(JSON_VALUES)
        else:
            payload[f.name] = draw(SPECIAL_FIELDS.get(f.name, typed_values(hints[f.name])))
    payload.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return payload


@st.composite
def message_frames(draw: st.DrawFn, known: dict[str, type[p.Message]]) -> str:
    """Draw a JSON text frame with a real `type` and a payload tree resembling the real one."""
    cls = known[draw(st.sampled_from(sorted(known)))]
    payload: Any = draw(st.one_of(payloads(cls), payloads(cls), payloads(cls), JSON_VALUES))
    data: dict[str, Any] = {"type": cls.TYPE}
    if cls.PAYLOAD is None and isinstance(payload, dict):
        data = {**payload, "type": cls.TYPE}
    else:
        data[cls.PAYLOAD or draw(st.text(max_size=8))] = payload
    return json.dumps(data)


def mangled(frames: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Frames cut short or with a character replaced: broken JSON that looks almost right."""

    def mangle(frame: str, cut: int, char: str) -> str:
        at = cut % (len(frame) + 1)
        return frame[:at] + char + frame[at + 1 :]

    return st.builds(
        mangle, frames, st.integers(min_value=0), st.sampled_from(['"', "}", "", "\\"])
    )


OPAQUE_FRAMES = st.builds(
    lambda kind, data: json.dumps({**data, "type": kind}),
    st.sampled_from(sorted(p.OPAQUE_EVENT_TYPES)),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
)


def frames_for(known: dict[str, type[p.Message]]) -> st.SearchStrategy[str | bytes]:
    """Every kind of frame a peer could send: half typed-looking, half broken or foreign."""
    typed = message_frames(known)
    broken = st.one_of(
        mangled(typed),
        OPAQUE_FRAMES,
        JSON_VALUES.map(json.dumps),
        st.text(max_size=60),
        st.binary(max_size=60),
    )
    # one_of would flatten `broken` into six equal branches; a coin keeps typed frames at half.
    return st.booleans().flatmap(lambda coin: typed if coin else broken)


SERVER_FRAMES = frames_for(p.SERVER_TYPES)
PARSED = (p.MalformedFrame, p.UnknownMessage, p.OpaqueEvent, p.Message, p.UserAudioChunk)


def check_parsed(result: object, frame: str | bytes) -> None:
    """A parse result is one of the promised types and usable without raising."""
    assert isinstance(result, PARSED), (frame, result)
    event("typed" if isinstance(result, p.Message | p.UserAudioChunk) else type(result).__name__)
    if isinstance(result, p.MalformedFrame):
        assert str(result)
        return
    assert isinstance(result.to_wire(), dict)
    if isinstance(result, p.Audio):
        assert isinstance(result.decode_audio(), bytes | p.MalformedFrame)
    if isinstance(result, p.ErrorEvent):
        assert result.describe()


@fuzz(PARSER_EXAMPLES)
@given(SERVER_FRAMES)
@example('{"type":"ping","ping_event":{"event_id":1,"ping_ms":' + "9" * 400 + "}}")
@example("[" * 100_000)
@example(b"\x00\xff")
def test_server_parser_never_raises(frame: str | bytes) -> None:
    check_parsed(p.parse_server_message(frame), frame)


CHUNK_FRAMES = st.one_of(AUDIO_B64, JSON_VALUES).map(lambda v: json.dumps({"user_audio_chunk": v}))


@fuzz(PARSER_EXAMPLES)
@given(frames_for(p.CLIENT_TYPES) | CHUNK_FRAMES)
@example('{"user_audio_chunk":"not base64!"}')
@example('{"type":"pong","event_id":true}')
def test_client_parser_never_raises(frame: str | bytes) -> None:
    result = p.parse_client_message(frame)
    check_parsed(result, frame)
    assert not isinstance(result, p.OpaqueEvent)


# ------------------------------------------------------------------------ config documents

# YAML value texts: every type the schema knows, edge numbers, paths, hostile tags and aliases.
YAML_SCALARS = (
    "null", "~", "true", "false", "yes", "off", "0", "-1", "1", "20", "27", "40", "255", "86401",
    "1.5", "-0.1", ".nan", ".inf", "-.inf", "1.0e+400", "0x1F", "0o17", "1_000", "9" * 400,
    "2024-01-01", "2024-02-30", "12:30:00", "''", "' '", "a b", "GPIO17", "BOARD11", "J8:11",
    "PIN", "blue pulse", "'#ff8800 blink'", "plaid pulse", "off", "hold", "toggle", "file",
    "pyaudio", "mute", "duck", "rgb", "apa102", "single", "debug", "LOUD", "en", "pt-BR",
    "ws://127.0.0.1:8765", "wss://api.elevenlabs.io", "ws://example.com", "https://h",
    "wss://u:p@h", "wss://h/x", "wss://h:99999", "in.wav", "key", "open-key", "ca.pem",
    "missing.wav", "out/reply.wav", "no/dir/x", ".", "/", "~/x", "~nosuchuser/x",
    '"a\\0b"', '"\\u0007"', '"\\t"', "!!python/object/apply:os.getcwd []", "!!binary aGk=",
    "!!binary '@@'", "!!str 5", "!!int x", "!!float abc", "!!set {a, b}", "!!omap [a: 1]",
    "!!timestamp x", "!!bool x", '!!int ""', '!!float ""', "!custom 1", "*undefined",
    "&anchor 5", "{}", "[]", "[5, 6, 13]", "[5, 5, 6]", "[GPIO5, 6, board33]", "{a: 1}",
    "{<<: {a: 1}}", "[[[[[[1]]]]]]", "&r [*r]", "{a: &x [1, 2], b: *x}", "? complex\n",
    "- item", "@reserved", "`tick",
)  # fmt: skip
YAML_VALUES = st.one_of(
    st.sampled_from(YAML_SCALARS),
    st.integers().map(str),
    st.floats().map(repr),
    st.text(max_size=20).map(json.dumps),
)
UNKNOWN_KEYS = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
YamlTree = dict[str, Any]


def section_trees(section: schema.Section) -> st.SearchStrategy[YamlTree]:
    """Documents built from `section`'s own keys with random values, and some unknown keys."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in section.fields.items():
        if isinstance(field.kind, schema.Section):
            fields[name] = st.one_of(section_trees(field.kind), YAML_VALUES)
        else:
            fields[name] = YAML_VALUES | st.lists(YAML_VALUES, max_size=3)
    known = st.fixed_dictionaries({}, optional=fields)
    unknown = st.dictionaries(UNKNOWN_KEYS, YAML_VALUES, max_size=1)
    return st.builds(lambda k, u: {**u, **k}, known, unknown | st.just({}))


# Values of the kinds a generic rule cannot produce (patterns, pins, URLs, mappings).
VALID_BY_PATH: dict[str, tuple[str, ...]] = {
    "agent.server_url": ("wss://api.elevenlabs.io", "ws://127.0.0.1:8765", "WSS://h:443/"),
    "agent.api_key_file": ("key", "null"),
    "agent.overrides.language": ("en", "PT-br", "null"),
    "agent.dynamic_variables": ("{user: Ana, n: 2, vip: true}", "{}", "null"),
    "agent.custom_llm_extra_body": ("{t: 0.2, tags: [a, {b: null}]}", "null"),
    "button.pin": ("17", "GPIO27", "board11", "null"),
    "leds.pin": ("27", "J8:13"),
    "leds.pins": ("[5, 6, 13]", "[GPIO5, 6, board33]"),
    "leds.patterns": ("{thinking: purple pulse, error: '#ff0000 fast-blink'}", "null"),
}
NAME_CHARS = string.ascii_letters + string.digits + "_-"


def valid_values(kind: schema.Kind, path: str) -> st.SearchStrategy[str] | None:
    """Return YAML texts that `kind` at `path` accepts, or None when there is no rule for it."""
    if path in VALID_BY_PATH:
        return st.sampled_from(VALID_BY_PATH[path])
    if isinstance(kind, schema.Nullable):
        inner = valid_values(kind.inner, path)
        return st.just("null") if inner is None else st.just("null") | inner
    if isinstance(kind, schema.Choice):
        return st.sampled_from(kind.options)
    if isinstance(kind, schema.Flag):
        return st.sampled_from(("true", "false", "yes", "off"))
    if isinstance(kind, schema.Number) and kind.integer:
        return st.integers(int(kind.lo), int(kind.hi)).map(str)
    if isinstance(kind, schema.Number):
        # Four decimals keep the dot YAML 1.1 needs to read a float and stay within bounds.
        return st.floats(kind.lo, kind.hi).map(lambda x: f"{x:.4f}")
    if isinstance(kind, schema.FilePath):
        return st.just("out/reply.wav" if kind.need == "parent" else "in.wav")
    if isinstance(kind, schema.NameOrIndex):
        return st.sampled_from(("USB", "0", "3"))
    if isinstance(kind, schema.Text):
        return st.text(alphabet=NAME_CHARS, min_size=1, max_size=12)
    return None


def plausible_trees(section: schema.Section, path: str = "") -> st.SearchStrategy[YamlTree]:
    """Documents with every required key and valid values: they reach the loaded path."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in section.fields.items():
        key_path = f"{path}.{name}" if path else name
        value: st.SearchStrategy[Any] | None
        if isinstance(field.kind, schema.Section):
            value = plausible_trees(field.kind, key_path)
        else:
            value = valid_values(field.kind, key_path)
        if value is None:
            continue
        (required if field.required else optional)[name] = value
    return st.fixed_dictionaries(required, optional=optional)


def emit(tree: YamlTree, indent: int = 0) -> str:
    """Write `tree` as block YAML; leaves are raw YAML texts, lists become flow sequences."""
    pad = "  " * indent
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key}:\n{emit(value, indent + 1)}")
        elif isinstance(value, list):
            out.append(f"{pad}{key}: [{', '.join(value)}]\n")
        else:
            out.append(f"{pad}{key}: {value}\n")
    return "".join(out)


def mangle_text(text: str, at: int, insert: str) -> str:
    """Insert `insert` at position `at` (wrapped): tabs, colons, quotes, control characters."""
    pos = at % (len(text) + 1)
    return text[:pos] + insert + text[pos:]


SCHEMA_DOCUMENTS = section_trees(SCHEMA).map(emit)
PLAUSIBLE_DOCUMENTS = plausible_trees(SCHEMA).map(emit)
DOCUMENTS = st.one_of(
    SCHEMA_DOCUMENTS,
    PLAUSIBLE_DOCUMENTS,
    st.builds(
        mangle_text,
        SCHEMA_DOCUMENTS | PLAUSIBLE_DOCUMENTS,
        st.integers(min_value=0),
        st.sampled_from(["\t", ": ", "'", '"', "\x07", "\ufeff", "- ", "[", "{", "&a ", "*a", "!"]),
    ),
)
GARBAGE = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="{}[]:,-?&*!|>'\"#%@` \n\tab01", max_size=120),
)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder where some of the paths the documents name exist."""
    folder = tmp_path_factory.mktemp("fuzz-config")
    (folder / "out").mkdir()
    (folder / "in.wav").write_bytes(b"RIFF")
    (folder / "ca.pem").write_text("pem\n")
    (folder / "key").write_text("sk_fuzz\n")
    (folder / "key").chmod(0o600)
    (folder / "open-key").write_text("sk_fuzz\n")
    (folder / "open-key").chmod(0o666)
    return folder


def check_document(text: str, base_dir: Path) -> None:
    """parse_config returns a Config or raises ConfigError whose problems each name a line."""
    outcome: Config | ConfigError
    try:
        outcome = parse_config(text, "fuzz.yaml", base_dir)
    except ConfigError as exc:
        outcome = exc
    event("refused" if isinstance(outcome, ConfigError) else "loaded")
    if isinstance(outcome, ConfigError):
        assert outcome.exit_code == EX_CONFIG and outcome.problems, text
        for problem in outcome.problems:
            assert PROBLEM_LINE.match(problem), (text, problem)
    else:
        assert isinstance(outcome, Config) and repr(outcome)


@fuzz(CONFIG_EXAMPLES)
@given(text=DOCUMENTS)
@example(text="agent:\n  agent_id: a\n  api_key_file: ~nosuchuser/key\n")
@example(text="agent:\n  agent_id: a\n  api_key_file: open-key\n")
@example(text="agent: !!timestamp x\n")
@example(text="agent: !!bool x\n")
@example(text='agent: !!int ""\n')
@example(text="agent:\n  agent_id: a\naudio:\n  chunk_ms: " + "9" * 5000 + "\n")
def test_config_documents_from_the_schema_load_or_fail_cleanly(text: str, base_dir: Path) -> None:
    check_document(text, base_dir)


@fuzz(GARBAGE_CONFIG_EXAMPLES)
@given(text=GARBAGE)
@example(text="\ufeff")
@example(text="- " * 3000)
def test_garbage_text_loads_or_fails_cleanly(text: str, base_dir: Path) -> None:
    check_document(text, base_dir)


# ------------------------------------------------------------------------ session core

ACTIONS = (SendFrame, MetadataReceived, Play, Interrupt, Line, ToolCall, Problem, Notice)
# A valid start, audio and pings: without them, random sessions would rarely reach playback.
METADATA_FRAMES = st.builds(
    lambda cid, out_fmt, in_fmt: json.dumps(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": cid,
                "agent_output_audio_format": out_fmt,
                "user_input_audio_format": in_fmt,
            },
        }
    ),
    st.text(max_size=12),
    st.sampled_from(sorted(FORMATS)),
    st.sampled_from(sorted(FORMATS)),
)
AUDIO_FRAMES = st.builds(
    lambda audio, event_id: json.dumps(
        {"type": "audio", "audio_event": {"audio_base_64": audio, "event_id": event_id}}
    ),
    AUDIO_B64,
    st.integers(),
)
PING_FRAMES = st.builds(
    lambda event_id, ping_ms: json.dumps(
        {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": ping_ms}}
    ),
    st.integers(),
    st.none() | st.floats() | st.integers() | st.integers(-HUGE_INT, HUGE_INT),
)
SESSIONS = st.builds(
    lambda start, rest: start + rest,
    st.lists(METADATA_FRAMES, max_size=1),
    st.lists(SERVER_FRAMES | AUDIO_FRAMES | PING_FRAMES, max_size=MAX_FRAMES_PER_SESSION),
)
CLOSE_CODES = st.none() | st.sampled_from([1000, 1001, 1002, 1006, 1008, 1011]) | st.integers()


@fuzz(SESSION_EXAMPLES)
@given(SESSIONS, CLOSE_CODES, st.text(max_size=20))
@example(['{"type":"ping","ping_event":{"event_id":1,"ping_ms":' + str(HUGE_INT) + "}}"], 1000, "")
def test_session_never_raises_on_random_frames(
    frames: list[str | bytes], close_code: int | None, close_reason: str
) -> None:
    session = Session()
    for now, frame in enumerate(frames):
        actions: list[Action] = session.on_frame(frame, float(now))
        assert all(isinstance(action, ACTIONS) for action in actions), actions
        for action in actions:
            event(type(action).__name__)
        sends = [i for i, action in enumerate(actions) if isinstance(action, SendFrame)]
        assert sends in ([], [0]), "a pong, when due, is the first and only send"
    assert session.counters.frames == len(frames)
    assert isinstance(session.end_reason(close_code, close_reason), EndReason)
