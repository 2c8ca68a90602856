"""Tests for pi_agent.config.loader: schema, messages, paths, API key lookup and check-config."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from pi_agent.commands.check_config import check_config_main
from pi_agent.config import (
    DEFAULT_CONFIG_PATH,
    SCHEMA,
    AgentConfig,
    Config,
    Secret,
    default_config,
    load_config,
    parse_config,
    resolve_api_key,
)
from pi_agent.config import loader as cfgmod
from pi_agent.config.schema import Field, Flag, Section
from pi_agent.errors import EX_CONFIG, ConfigError
from tests.beds.faultnet import make_tls_files

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "pi-agent.yaml"
KEY = "sk_test_0123456789abcdef"  # a fake API key that must never show up in any message


def problems(text: str, base_dir: Path | None = None) -> list[str]:
    """Return the problems parse_config reports for `text` (it must fail)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=base_dir)
    assert info.value.exit_code == EX_CONFIG
    return info.value.problems


def schema_paths(section: Section = SCHEMA, prefix: str = "") -> Iterator[str]:
    """Yield the dotted path of every leaf key in the schema."""
    for name, field in section.fields.items():
        if isinstance(field.kind, Section):
            yield from schema_paths(field.kind, f"{prefix}{name}.")
        else:
            yield prefix + name


def one_key(path: str, value: str) -> tuple[str, int]:
    """Return a document setting dotted `path` to YAML `value`, and the line of that key."""
    section, _, rest = path.partition(".")
    agent_id = "" if path == "agent.agent_id" else "  agent_id: a\n"
    if section == "agent" and rest.startswith("overrides."):
        text = f"agent:\n{agent_id}  overrides:\n    {rest.split('.')[1]}: {value}\n"
    elif "." in rest:
        sub, _, key = rest.partition(".")
        text = f"agent:\n{agent_id}{section}:\n  {sub}:\n    {key}: {value}\n"
    elif section == "agent":
        text = f"agent:\n{agent_id}  {rest}: {value}\n"
    else:
        text = f"agent:\n{agent_id}{section}:\n  {rest}: {value}\n"
    return text, text.count("\n")


# ---------------------------------------------------------------- example and defaults


def test_example_validates_and_shows_every_key_with_its_default() -> None:
    loaded = load_config(EXAMPLE)
    assert loaded.source == EXAMPLE
    assert loaded == dataclasses.replace(default_config("your-agent-id"), source=EXAMPLE)
    tree = yaml.safe_load(EXAMPLE.read_text())
    for path in schema_paths():
        node = tree
        for part in path.split("."):
            assert part in node, f"{path} missing from the example"
            node = node[part]


def test_minimal_config_gets_every_default() -> None:
    cfg = parse_config("agent:\n  agent_id: agent_1\n")
    agent, audio = cfg.agent, cfg.audio
    assert (agent.agent_id, agent.server_url, agent.source) == (
        "agent_1",
        cfgmod.DEFAULT_SERVER_URL,
        "unknown",
    )
    assert (agent.api_key_file, agent.tls_ca_file, agent.user_id, agent.environment) == (None,) * 4
    assert agent.connect_timeout_s == 10.0 and isinstance(agent.connect_timeout_s, float)
    assert agent.dynamic_variables == {} and agent.custom_llm_extra_body is None
    assert all(
        getattr(agent.overrides, f.name) is None for f in dataclasses.fields(agent.overrides)
    )
    assert (audio.backend, audio.input_file, audio.output_file, audio.file_speed) == (
        "pyaudio",
        None,
        None,
        1.0,
    )
    assert (audio.input_device, audio.output_device, audio.chunk_ms, audio.volume) == (
        None,
        None,
        20,
        1.0,
    )
    assert (cfg.conversation.max_duration_s, cfg.conversation.reply_timeout_s) == (600.0, 20.0)
    assert (cfg.logging.level, cfg.logging.transcripts) == ("info", False)
    assert cfg.source is None and Path("/etc/pi-agent.yaml") == DEFAULT_CONFIG_PATH


def test_empty_sections_mean_defaults() -> None:
    cfg = parse_config("agent:\n  agent_id: a\n  overrides:\naudio:\nconversation: {}\nlogging:\n")
    assert cfg == default_config("a")


def test_config_objects_are_frozen_and_slotted() -> None:
    cfg = default_config("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.agent.agent_id = "b"  # type: ignore[misc]
    for obj in (cfg, cfg.agent, cfg.agent.overrides, cfg.audio, cfg.conversation, cfg.logging):
        assert hasattr(type(obj), "__slots__") and not hasattr(obj, "__dict__")


# ---------------------------------------------------------------- per-key errors

ID = "a non-empty string without whitespace"
TEXT, OPT_TEXT = "a non-empty string", "a non-empty string, or null"
FILE, OUT = "a readable file, or null", "a path in an existing folder, or null"
DEVICE = "a device name (substring) or a non-negative index, or null"
URL = "a URL like 'wss://api.elevenlabs.io' (ws:// only for loopback hosts)"
VARS = "a mapping of names to strings, numbers or booleans"
JSON = "a mapping of JSON values (strings, numbers, booleans, null, lists, mappings), or null"
LANG = "a language code like 'en' or 'pt-br', or null"
LEVELS = "one of 'debug', 'info', 'warning', 'error'"
QUOTE = " (put it in quotes to make it a string)"
SPEED, UNIT = "a number from 0.7 to 1.2", "a number from 0 to 1, or null"

# (key path, YAML value, what is wrong, what is expected): at least one per schema key.
GUARD = "one of 'mute', 'duck', 'open', 'aec'"
NO_DIR = "'/no/such/dir/s.sock': folder '/no/such/dir' does not exist"
PIN = "a BCM pin number (0-27) or a name like 'GPIO17' or 'BOARD11'"
FACTORIES = "one of 'lgpio', 'rpigpio', 'pigpio', 'native', 'mock', or null"
LED_DRIVERS = "one of 'none', 'single', 'pwm', 'rgb', 'apa102'"
BAD_VALUES = [
    ("agent.agent_id", "'a b'", "'a b' contains whitespace", ID),
    ("agent.agent_id", "42", f"42 is an integer{QUOTE}", ID),
    ("agent.server_url", "wss://h/x", "'wss://h/x' has a path, query or fragment", URL),
    ("agent.api_key_file", "5", f"5 is an integer{QUOTE}", FILE),
    ("agent.tls_ca_file", "[a]", "['a'] is a list", FILE),
    ("agent.user_id", "''", "'' is empty", OPT_TEXT),
    ("agent.source", "null", "no value (null)", TEXT),
    ("agent.environment", "{x: 1}", "{'x': 1} is a mapping", OPT_TEXT),
    ("agent.connect_timeout_s", "0.5", "0.5 is out of range", "a number from 1 to 120"),
    ("agent.connect_timeout_s", "true", "True is a boolean", "a number from 1 to 120"),
    ("agent.connect_timeout_s", "'10'", "'10' is a string", "a number from 1 to 120"),
    ("agent.dynamic_variables", "[a]", "['a'] is a list", VARS),
    ("agent.custom_llm_extra_body", "[1]", "[1] is a list", JSON),
    ("agent.overrides.first_message", "5", f"5 is an integer{QUOTE}", "a string, or null"),
    ("agent.overrides.language", "english", "'english' is not valid", LANG),
    ("agent.overrides.prompt", "''", "'' is empty", OPT_TEXT),
    ("agent.overrides.llm", "yes", f"True is a boolean{QUOTE}", OPT_TEXT),
    ("agent.overrides.voice_id", "[]", "[] is a list", OPT_TEXT),
    ("agent.overrides.tts_speed", "1.5", "1.5 is out of range", f"{SPEED}, or null"),
    ("agent.overrides.tts_stability", "-0.1", "-0.1 is out of range", UNIT),
    ("agent.overrides.tts_similarity_boost", "high", "'high' is a string", UNIT),
    ("agent.overrides.text_only", "1", "1 is an integer", "true or false, or null"),
    ("audio.backend", "alsa", "'alsa' is not a valid choice", "one of 'pyaudio', 'file'"),
    ("audio.backend", "pyadio", "'pyadio' is not a valid choice (did you mean 'pyaudio'?)",
     "one of 'pyaudio', 'file'"),
    ("audio.input_file", "7", f"7 is an integer{QUOTE}", FILE),
    ("audio.output_file", "true", f"True is a boolean{QUOTE}", OUT),
    ("audio.file_speed", "101", "101 is out of range", "a number from 0 to 100"),
    ("audio.input_device", "-1", "-1 is negative", DEVICE),
    ("audio.output_device", "1.5", "1.5 is a number", DEVICE),
    ("audio.output_device", "false", "False is a boolean", DEVICE),
    ("audio.chunk_ms", "5", "5 is out of range", "an integer from 10 to 100"),
    ("audio.chunk_ms", "20.0", "20.0 is a number", "an integer from 10 to 100"),
    ("audio.chunk_ms", "on", "True is a boolean", "an integer from 10 to 100"),
    ("audio.volume", ".nan", "nan is out of range", "a number from 0 to 2"),
    ("audio.volume", "2.5", "2.5 is out of range", "a number from 0 to 2"),
    ("audio.input_channel", "32", "32 is out of range", "an integer from 0 to 31, or null"),
    ("audio.preroll_ms", "2001", "2001 is out of range", "an integer from 0 to 2000"),
    ("audio.mic_while_speaking", "loud", "'loud' is not a valid choice", GUARD),
    ("audio.echo_tail_ms", "-1", "-1 is out of range", "an integer from 0 to 2000"),
    ("audio.duck_db", "3", "3 is out of range", "a number from -60 to 0"),
    ("audio.jitter_ms", "1001", "1001 is out of range", "an integer from 0 to 1000"),
    ("audio.noise_suppression", "2", "2 is an integer", "true or false"),
    ("audio.auto_gain", "maybe", "'maybe' is a string", "true or false"),
    ("audio.earcons.wake", "yes please", "'yes please' is a string", "true or false"),
    ("audio.earcons.end", "1", "1 is an integer", "true or false"),
    ("audio.earcons.error", "null", "no value (null)", "true or false"),
    ("audio.earcons.volume", "2", "2 is out of range", "a number from 0 to 1"),
    ("conversation.max_duration_s", "86401", "86401 is out of range", "a number from 1 to 86400"),
    ("conversation.reply_timeout_s", "0", "0 is out of range", "a number from 1 to 600"),
    ("conversation.idle_timeout_s", "0.5", "0.5 is out of range", "a number from 1 to 3600"),
    ("conversation.error_display_s", "-1", "-1 is out of range", "a number from 0 to 60"),
    ("button.pin", "40", "40 is not a BCM pin of the 40-pin header", PIN + ", or null"),
    ("button.pin", "GPIO", "'GPIO' is not a pin name", PIN + ", or null"),
    ("button.pull_up", "maybe", "'maybe' is a string", "true or false"),
    ("button.bounce_ms", "1001", "1001 is out of range", "an integer from 0 to 1000"),
    ("button.mode", "press", "'press' is not a valid choice", "one of 'hold', 'toggle'"),
    ("button.long_press_s", "31", "31 is out of range", "a number from 0 to 30"),
    ("button.pin_factory", "RPi.GPIO", "'RPi.GPIO' is not a valid choice", FACTORIES),
    ("leds.driver", "neopixel", "'neopixel' is not a valid choice", LED_DRIVERS),
    ("leds.pin", "-1", "-1 is not a BCM pin of the 40-pin header", PIN + ", or null"),
    ("leds.pins", "[5, 6]", "a list of 2 pins", "a list of three pins [red, green, blue], or null"),
    ("leds.active_high", "2", "2 is an integer", "true or false"),
    ("leds.apa102.count", "0", "0 is out of range", "an integer from 1 to 255"),
    ("leds.apa102.brightness", "1.5", "1.5 is out of range", "a number from 0 to 1"),
    ("leds.apa102.spi_port", "2", "2 is out of range", "an integer from 0 to 1"),
    ("leds.apa102.spi_device", "2", "2 is out of range", "an integer from 0 to 1"),
    ("leds.patterns", "[1]", "[1] is a list", "a mapping of states to patterns like 'blue pulse'"),
    ("control.socket", "/no/such/dir/s.sock", NO_DIR, "a path in an existing folder, or null"),
    ("control.group", "''", "'' is empty", "a non-empty string, or null"),
    ("logging.level", "verbose", "'verbose' is not a valid choice", LEVELS),
    ("logging.transcripts", "0", "0 is an integer", "true or false"),
    ("wakeword.enabled", "'yes'", "'yes' is a string", "true or false"),
    ("wakeword.model", "okay_nab", "'okay_nab' is not a valid choice (did you mean 'okay_nabu'?)",
     "one of 'okay_nabu', 'hey_jarvis', 'hey_mycroft', 'alexa'"),
    ("wakeword.threshold", "1.5", "1.5 is out of range", "a number from 0 to 1, or null"),
    ("wakeword.refractory_s", "-1", "-1 is out of range", "a number from 0 to 60"),
    # tools and context (pi_agent.config.tools)
    ("tools.builtins", "get_time", "'get_time' is a string",
     "a list of built-in tool names: get_time, get_volume, set_volume, set_led, "
     "end_conversation, device_info"),
    ("tools.commands", "{name: x}", "{'name': 'x'} is a mapping",
     "a list of command tools ({name, argv, parameters, ...})"),
    ("tools.mcp_allow", "'*'", "'*' is a string", "a list of MCP tool names"),
    ("context.location", "''", "'' is empty", "a non-empty string, or null"),
    ("context.periodic", "5", "5 is an integer", "a list of {argv, every_s, prefix} mappings"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "what", "expected"), BAD_VALUES)
def test_bad_value_names_line_key_value_and_expectation(
    path: str, value: str, what: str, expected: str
) -> None:
    text, line = one_key(path, value)
    assert problems(text) == [f"line {line}: {path}: {what}; expected {expected}"]


def test_every_key_has_a_bad_value_case() -> None:
    assert set(schema_paths()) == {case[0] for case in BAD_VALUES}


@pytest.mark.parametrize(
    ("path", "value", "stored"),
    [
        ("agent.connect_timeout_s", "5", 5.0),
        ("agent.overrides.language", "PT-BR", "pt-br"),
        ("agent.overrides.first_message", "''", ""),
        ("agent.overrides.text_only", "yes", True),
        ("audio.backend", "file", "file"),  # input_file given below
        ("audio.file_speed", "0", 0.0),
        ("audio.input_device", "USB Audio", "USB Audio"),
        ("audio.output_device", "2", 2),
        ("audio.chunk_ms", "100", 100),
        ("logging.level", "DEBUG", "debug"),
        ("logging.transcripts", "on", True),
    ],
)
def test_valid_edge_values_are_converted(
    path: str, value: str, stored: object, tmp_path: Path
) -> None:
    (tmp_path / "in.wav").write_bytes(b"RIFF")
    text, _ = one_key(path, value)
    if path == "audio.backend":
        text += "  input_file: in.wav\n"
    obj: object = parse_config(text, base_dir=tmp_path)
    for part in path.split("."):
        obj = getattr(obj, part)
    assert obj == stored and type(obj) is type(stored)


# ---------------------------------------------------------------- structure errors

ROOT = "a mapping with an 'agent' section"
TAB = "a tab character is not allowed here; expected spaces for indentation"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audoi: {}\n", "line 3: audoi: unknown key; did you mean 'audio'?"),
        ("  agnet_id: a\n", "line 3: agent.agnet_id: unknown key; did you mean 'agent_id'?"),
        ("audio:\n  chunkms: 20\n", "line 4: audio.chunkms: unknown key; did you mean 'chunk_ms'?"),
        ("  overrides:\n    langauge: en\n",
         "line 4: agent.overrides.langauge: unknown key; did you mean 'language'?"),
        ("logging:\n  zzz: 1\n",
         "line 4: logging.zzz: unknown key; expected one of: level, transcripts"),
    ],
)  # fmt: skip
def test_unknown_key_suggests_close_match_or_lists_keys(text: str, expected: str) -> None:
    assert problems("agent:\n  agent_id: a\n" + text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent:\n  agent_id: a\n  agent_id: b\n", "line 3: agent.agent_id"),
        ("agent: {agent_id: a}\naudio: {}\naudio: {}\n", "line 3: audio"),
    ],
)
def test_duplicate_key_names_both_lines(text: str, expected: str) -> None:
    dup = "duplicate key (first defined on line 2); expected each key once"
    assert problems(text) == [f"{expected}: {dup}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"line 1: the file is empty; expected {ROOT}"),
        ("# only a comment\n", f"line 1: the file is empty; expected {ROOT}"),
        ("- a\n", f"line 1: the document is not a mapping: ['a'] is a list; expected {ROOT}"),
        ("hello\n", f"line 1: the document is not a mapping: 'hello' is a string; expected {ROOT}"),
        ("agent:\n\tagent_id: a\n", f"line 2, column 1: {TAB}"),
        ("agent:\n  agent_id:\ta\n", f"line 2, column 12: {TAB}"),
        ("audio: {}\n",
         "line 1: agent: missing required section; expected a mapping with at least 'agent_id'"),
        ("audio: {}\nagent:\n  source: x\n",
         f"line 2: agent.agent_id: missing required key; expected {ID}"),
        ("agent:\n  agent_id: a\n  1: x\n",
         "line 3: agent: key 1 is an integer; expected string keys"),
        ("agent: \u0007\n", "line 1: character '\\x07' is not allowed; expected printable text"),
        ("agent: {agent_id: a}\n<<: {audio: {}}\n",
         "line 2: merge keys ('<<') are not supported; expected plain keys"),
        ("[" * 5000 + "]" * 5000, f"line 1: the document is nested too deeply; expected {ROOT}"),
    ],
)  # fmt: skip
def test_document_level_errors(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("agent:\n  agent_id: \"a\n", "line 3, column 1: invalid YAML: found unexpected end "
         "of stream (while scanning a quoted scalar started on line 2)"),
        ("agent:\n  agent_id: a: b\n",
         "line 2, column 14: invalid YAML: mapping values are not allowed here"),
        ("agent: {agent_id: a}\n---\nagent: {agent_id: b}\n",
         "line 2, column 1: invalid YAML: but found another document"),
    ],
)  # fmt: skip
def test_yaml_syntax_error_names_line_column_and_problem(text: str, fragment: str) -> None:
    [problem] = problems(text)
    assert problem.startswith(fragment)


def test_unsafe_tags_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"agent:\n  agent_id: !!python/object/apply:os.system ['touch {marker}']\n"
    [problem] = problems(text)
    assert problem.startswith(
        "line 2: agent.agent_id: the value cannot be read (could not determine"
    )
    assert problems("agent: !!python/object:os.system {agent_id: a}\n") == [
        "line 1: agent: unsupported tag 'tag:yaml.org,2002:python/object:os.system'; "
        "expected no tag"
    ]
    assert not marker.exists()


def test_schema_table_must_match_its_dataclass() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Two:
        a: int
        b: int

    with pytest.raises(TypeError, match="does not match Two"):
        Section("two", Two, [Field("a", Flag())])


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    text = "logging:\n  level: loud\naudio:\n  chunk_ms: 1\n  volume: -1\nagent:\n  source: ''\n"
    found = problems(text)
    assert [p.split(":")[0] for p in found] == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert found[3] == f"line 6: agent.agent_id: missing required key; expected {ID}"
    with pytest.raises(ConfigError, match=r"^cfg: 5 problems:\n  - line 2: logging.level"):
        parse_config(text, source="cfg")


# ---------------------------------------------------------------- server_url

LOOPBACK = "ws:// is only allowed for loopback hosts; use wss://"


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765"),
        ("ws://127.4.5.6", "ws://127.4.5.6"),
        ("ws://localhost:8765/", "ws://localhost:8765"),
        ("ws://[::1]:9000", "ws://[::1]:9000"),
        ("wss://example.com/", "wss://example.com"),
        ("WSS://api.elevenlabs.io:443", "wss://api.elevenlabs.io:443"),
    ],
)
def test_server_url_accepted_and_stored_without_trailing_slash(url: str, stored: str) -> None:
    assert default_config("a", url).agent.server_url == stored


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ws://example.com", f"'ws://example.com' is refused ({LOOPBACK})"),
        ("ws://10.0.0.2:8765", LOOPBACK),
        ("ws://localhost.example.com", LOOPBACK),
        ("https://api.elevenlabs.io", "not a WebSocket URL (did you mean 'wss://api.elevenlabs.io'?)"),
        ("http://127.0.0.1:8765", "(did you mean 'wss://127.0.0.1:8765'?)"),
        ("wss://h/v1/convai", "has a path, query or fragment"),
        ("wss://h?x=1", "has a path, query or fragment"),
        ("wss://h#top", "has a path, query or fragment"),
        ("wss://h:99999", "is not a valid URL"),
        ("ftp://h", "'ftp://h' is not a wss://host URL"),
        ("wss://", "'wss://' is not a wss://host URL"),
        ("wss://a b", "contains whitespace"),
    ],
)  # fmt: skip
def test_server_url_refused(url: str, fragment: str) -> None:
    [problem] = problems(f"agent:\n  agent_id: a\n  server_url: '{url}'\n")
    assert problem.startswith("line 3: agent.server_url: ")
    assert fragment in problem
    assert problem.endswith(f"; expected {URL}")


def test_server_url_password_is_never_echoed() -> None:
    [problem] = problems("agent:\n  agent_id: a\n  server_url: wss://me:hunter2@h\n")
    assert "hunter2" not in problem and "user name or password (not shown)" in problem


# ---------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, home = tmp_path / "etc", tmp_path / "home"
    (etc / "out").mkdir(parents=True)
    home.mkdir()
    (etc / "in.wav").write_bytes(b"RIFF")
    shutil.copy(make_tls_files(tmp_path / "tls").ca_cert, home / "ca.pem")
    (etc / "pi.yaml").write_text(
        "agent:\n  agent_id: a\n  tls_ca_file: ~/ca.pem\n"
        "audio:\n  backend: file\n  input_file: in.wav\n  output_file: out/agent.wav\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    cfg = load_config(Path("etc/pi.yaml"))
    assert cfg.audio.input_file == etc / "in.wav"
    assert cfg.audio.output_file == etc / "out" / "agent.wav"
    assert cfg.agent.tls_ca_file == home / "ca.pem"


def test_file_backend_requires_input_file() -> None:
    expected = (
        "audio.input_file: required when audio.backend is 'file'; expected the path of a WAV file"
    )
    assert problems("agent: {agent_id: a}\naudio:\n  backend: file\n") == [f"line 2: {expected}"]
    text = "agent: {agent_id: a}\naudio:\n  backend: file\n  input_file: null\n"
    assert problems(text) == [f"line 4: {expected}"]


def test_missing_files_are_reported_with_the_resolved_path(tmp_path: Path) -> None:
    (tmp_path / "dir.wav").mkdir()
    text = (
        "agent:\n  agent_id: a\n  api_key_file: key\n  tls_ca_file: ca.pem\n"
        "audio:\n  backend: file\n  input_file: dir.wav\n  output_file: nowhere/out.wav\n"
    )
    t = str(tmp_path)
    assert problems(text, base_dir=tmp_path) == [
        f"line 3: agent.api_key_file: 'key' (resolved to '{t}/key') does not exist; "
        f"expected {FILE}",
        f"line 4: agent.tls_ca_file: 'ca.pem' (resolved to '{t}/ca.pem') does not exist; "
        f"expected {FILE}",
        f"line 7: audio.input_file: 'dir.wav' (resolved to '{t}/dir.wav') is not a regular file; "
        f"expected {FILE}",
        f"line 8: audio.output_file: 'nowhere/out.wav' (resolved to '{t}/nowhere/out.wav'): "
        f"folder '{t}/nowhere' does not exist; expected {OUT}",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode 000 file")
def test_unreadable_api_key_file_is_reported_when_loading(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0)
    [problem] = problems("agent:\n  agent_id: a\n  api_key_file: key\n", base_dir=tmp_path)
    assert "cannot be read (Permission denied)" in problem and KEY not in problem


# ---------------------------------------------------------------- mappings


def test_dynamic_variables_are_immutable_and_checked() -> None:
    cfg = parse_config(
        "agent:\n  agent_id: a\n  dynamic_variables: {user_name: Ana, n: 2, vip: true}\n"
    )
    variables = cfg.agent.dynamic_variables
    assert isinstance(variables, MappingProxyType)
    assert variables == {"user_name": "Ana", "n": 2, "vip": True}
    copied = cfg.agent.dynamic_variables_dict()
    copied["x"] = 1
    assert "x" not in variables
    assert problems(
        "agent:\n  agent_id: a\n  dynamic_variables:\n    bad-name: 1\n    ok: null\n"
    ) == [
        "line 4: agent.dynamic_variables.bad-name: 'bad-name' is not a valid name; "
        "expected letters, digits and '_', not starting with a digit",
        "line 5: agent.dynamic_variables.ok: no value (null); expected a string, number or boolean",
    ]


def test_custom_llm_extra_body_passes_json_through_frozen() -> None:
    text = "agent:\n  agent_id: a\n  custom_llm_extra_body:\n"
    text += "    temperature: 0.2\n    tags: [a, {b: null}]\n"
    cfg = parse_config(text)
    assert json.dumps(cfg.agent.custom_llm_extra_body_dict()) == (
        '{"temperature": 0.2, "tags": ["a", {"b": null}]}'
    )
    with pytest.raises(TypeError):
        cfg.agent.custom_llm_extra_body["x"] = 1  # type: ignore[index]


def test_custom_llm_extra_body_refuses_non_json_and_alias_bombs() -> None:
    text = (
        "agent:\n  agent_id: a\n  custom_llm_extra_body:\n    when: 2024-01-01\n    list: [.inf]\n"
    )
    assert problems(text) == [
        "line 4: agent.custom_llm_extra_body.when: datetime.date(2024, 1, 1) is a date; "
        "expected a JSON value (string, number, boolean or null)",
        "line 5: agent.custom_llm_extra_body.list[0]: inf is not a finite number; "
        "expected a JSON value (string, number, boolean or null)",
    ]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    text = "agent:\n  agent_id: a\n  custom_llm_extra_body:\n    " + bomb.replace("\n", "\n    ")
    assert any("too deep or too large" in p for p in problems(text))


# ---------------------------------------------------------------- reading files


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "cannot read the file: No such file or directory"),
        (lambda p: p.mkdir(), "cannot read the file: Is a directory"),
        (lambda p: p.write_bytes(b"agent:\n  agent_id: \xff\n"), "line 2: byte 0xff is not UTF-8"),
    ],
)
def test_read_errors_name_the_path(
    make: Callable[[Path], object], reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "pi.yaml"
    make(path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: {reason}")


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("use_file", "use_credentials", "use_env", "winner"),
    [
        (True, True, True, "file"),
        (False, True, True, "credentials"),
        (False, False, True, "env"),
        (False, False, False, None),
    ],
)
def test_api_key_resolution_order(
    use_file: bool, use_credentials: bool, use_env: bool, winner: str | None, tmp_path: Path
) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "key").write_text("  file\n")
    (tmp_path / "creds" / "elevenlabs-api-key").write_text("credentials\n")
    text = "agent:\n  agent_id: a\n" + ("  api_key_file: key\n" if use_file else "")
    agent = parse_config(text, base_dir=tmp_path).agent
    environ = {"ELEVENLABS_API_KEY": " env "} if use_env else {}
    environ["CREDENTIALS_DIRECTORY"] = str(tmp_path / ("creds" if use_credentials else "none"))
    key = resolve_api_key(agent, environ)
    assert (key.reveal() if key else None) == winner


def test_empty_or_unusable_key_files_are_config_errors(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(" \n")
    agent = dataclasses.replace(default_config("a").agent, api_key_file=key)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(agent, {})
    assert str(info.value) == f"{key}: the API key file is empty; expected the API key on one line"
    key.unlink()
    key.mkdir()
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(key))}: cannot read the API key file: Is a directory"
    ):
        resolve_api_key(agent, {})
    assert resolve_api_key(default_config("a").agent, {"ELEVENLABS_API_KEY": "  "}) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode 000 file")
def test_unreadable_key_file_names_path_and_errno_text(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0)
    agent = dataclasses.replace(default_config("a").agent, api_key_file=key)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(agent, {})
    assert str(info.value).startswith(f"{key}: cannot read the API key file: Permission denied")
    assert KEY not in str(info.value)


def test_key_never_appears_in_messages_or_reprs(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(f"{KEY} {KEY}\n")  # two words: refused without echoing either
    agent = dataclasses.replace(default_config("a").agent, api_key_file=key)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(agent, {})
    with pytest.raises(ConfigError) as env_info:
        resolve_api_key(default_config("a").agent, {"ELEVENLABS_API_KEY": f"{KEY}\n{KEY}"})
    key.write_text(KEY)
    secret = resolve_api_key(agent, {})
    assert secret is not None and secret.reveal() == KEY
    cfg = load_config(_write(tmp_path, "agent:\n  agent_id: a\n  api_key_file: key\n"))
    with pytest.raises(ConfigError) as load_info:  # another problem in a config that names the key
        load_config(_write(tmp_path, "agent:\n  agent_id: a\n  api_key_file: key\n  source: 1\n"))
    texts = [str(info.value), repr(info.value), str(env_info.value), str(load_info.value)]
    texts += [repr(secret), str(secret), f"{secret}", repr(cfg), repr([secret, agent])]
    assert all(KEY not in text for text in texts)
    assert "whitespace or control characters inside the key (not shown)" in texts[0]


def test_secret_redacts_compares_and_refuses_pickling() -> None:
    secret = Secret(KEY)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert secret == Secret(KEY) and secret != Secret("other") and secret != KEY
    for leak in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            leak(secret)


# ---------------------------------------------------------------- check-config and helpers


def _write(folder: Path, text: str) -> Path:
    path = folder / "pi-agent.yaml"
    path.write_text(text)
    return path


def test_check_config_ok(tmp_path: Path) -> None:
    path = _write(tmp_path, "agent:\n  agent_id: agent_9\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out, err) == 0
    assert (
        out.getvalue()
        == f"OK: {path}\n  agent agent_9 at wss://api.elevenlabs.io, audio backend pyaudio\n"
    )
    assert err.getvalue() == ""


def test_check_config_writes_to_the_current_std_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config_main(str(_write(tmp_path, "agent: {agent_id: a}\n"))) == 0
    assert check_config_main(str(tmp_path)) == 78
    captured = capsys.readouterr()
    assert captured.out.startswith("OK: ")
    assert captured.err.startswith(f"{tmp_path}: invalid configuration (1 problem)")


def test_check_config_invalid_prints_every_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "agent:\n  agent_id: a\naudio:\n  chunk_ms: 5\n  volume: x\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out, err) == EX_CONFIG == 78
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        f"{path}: invalid configuration (2 problems)",
        "  line 4: audio.chunk_ms: 5 is out of range; expected an integer from 10 to 100",
        "  line 5: audio.volume: 'x' is a string; expected a number from 0 to 2",
    ]


def test_check_config_defaults_to_etc_and_reports_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "pi-agent.yaml"
    monkeypatch.setattr("pi_agent.commands.check_config.DEFAULT_CONFIG_PATH", missing)
    err = io.StringIO()
    assert check_config_main(None, io.StringIO(), err) == 78
    assert err.getvalue().splitlines() == [
        f"{missing}: invalid configuration (1 problem)",
        "  cannot read the file: No such file or directory; expected a readable YAML file",
    ]


def test_default_config_and_for_agent_validate_like_a_file(tmp_path: Path) -> None:
    wav = tmp_path / "in.wav"
    wav.write_bytes(b"RIFF")
    cfg = Config.for_agent("a", "ws://127.0.0.1:8765", backend="file", input_file=wav, file_speed=0)
    assert (cfg.audio.backend, cfg.audio.input_file, cfg.audio.file_speed) == ("file", wav, 0.0)
    cfg = default_config("a", logging={"transcripts": True}, agent={"dynamic_variables": {"x": 1}})
    assert cfg.logging.transcripts and cfg.agent.dynamic_variables == {"x": 1}
    assert isinstance(cfg.agent, AgentConfig)
    with pytest.raises(ConfigError, match=r"audio\.chunk_ms: 1 is out of range"):
        Config.for_agent("a", chunk_ms=1)


def test_led_patterns_override_defaults_and_report_bad_entries() -> None:
    from pi_agent.core.patterns import COLORS, DEFAULT_PATTERNS, Pattern
    from pi_agent.core.states import State

    cfg = parse_config(
        "agent:\n  agent_id: a\nleds:\n  patterns:\n    listening: '#ff8800 blink'\n"
    )
    assert cfg.leds.patterns[State.LISTENING] == Pattern("blink", (1.0, 0x88 / 255, 0.0))
    assert cfg.leds.patterns[State.IDLE] == DEFAULT_PATTERNS[State.IDLE]
    assert str(Pattern("pulse", COLORS["green"])) == "green pulse"
    text = (
        "agent:\n  agent_id: a\nleds:\n  patterns:\n    listenin: 'blue on'\n"
        "    thinking: 'plaid pulse'\n    error: 5\n"
    )
    assert problems(text) == [
        "line 5: leds.patterns.listenin: unknown state; did you mean 'listening'?",
        "line 6: leds.patterns.thinking: 'plaid' in 'plaid pulse' is neither a pattern "
        "(off, on, blink, fast-blink, pulse, spin) nor a colour (white, red, green, blue, yellow, "
        "orange, purple, cyan, magenta or #rrggbb); expected text like 'blue pulse'",
        "line 7: leds.patterns.error: 5 is not a pattern; expected text like 'blue pulse' or 'off'",
    ]


def test_led_drivers_need_their_pins() -> None:
    base = "agent:\n  agent_id: a\nleds:\n"
    assert problems(base + "  driver: rgb\n") == [
        "line 3: leds.pins: required when leds.driver is 'rgb'; expected [red, green, blue] pins"
    ]
    assert problems(base + "  driver: pwm\n") == [
        "line 3: leds.pin: required when leds.driver is 'pwm'; expected a pin like 27"
    ]
    assert problems(base + "  driver: rgb\n  pins: [5, 5, 6]\n") == [
        "line 5: leds.pins: [5, 5, 6] uses a pin twice; expected a list of three pins "
        "[red, green, blue], or null"
    ]
    cfg = parse_config(base + "  driver: rgb\n  pins: [GPIO5, 6, board33]\n")
    assert cfg.leds.pins == ("GPIO5", 6, "BOARD33")
