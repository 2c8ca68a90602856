"""The configuration sections: YAML file -> validated frozen dataclasses."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode

from pi_agent.config.hardware import (
    BUTTON_SECTION,
    CONTROL_SECTION,
    LEDS_SECTION,
    ButtonConfig,
    ControlConfig,
    LedsConfig,
)
from pi_agent.config.schema import (
    BAD,
    Choice,
    Context,
    Field,
    FilePath,
    Flag,
    JsonObject,
    Kind,
    NameOrIndex,
    Nullable,
    Number,
    Section,
    Text,
    line_of,
    show,
    thaw,
    wrong_type,
)
from pi_agent.config.secrets import KeyFile
from pi_agent.config.tools import (
    CONTEXT_SECTION,
    TOOLS_SECTION,
    ContextConfig,
    TemplateVariables,
    ToolsConfig,
)
from pi_agent.config.wakeword import WAKEWORD_SECTION, WakewordConfig
from pi_agent.errors import ConfigError, Invalid

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/pi-agent.yaml")
DEFAULT_SERVER_URL = "wss://api.elevenlabs.io"
_ROOT_EXPECTED = "a mapping with an 'agent' section"
ScalarValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class OverridesConfig:
    """Per-conversation overrides; None means the field is not sent and the agent's own applies."""

    first_message: str | None
    language: str | None
    prompt: str | None
    llm: str | None
    voice_id: str | None
    tts_speed: float | None
    tts_stability: float | None
    tts_similarity_boost: float | None
    text_only: bool | None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Which agent to talk to and how; holds the key file's path, never the key."""

    agent_id: str
    server_url: str
    api_key_file: Path | None
    tls_ca_file: Path | None
    user_id: str | None
    source: str
    environment: str | None
    connect_timeout_s: float
    dynamic_variables: Mapping[str, ScalarValue]
    overrides: OverridesConfig
    custom_llm_extra_body: Mapping[str, Any] | None

    def dynamic_variables_dict(self) -> dict[str, ScalarValue]:
        """Return a mutable copy of dynamic_variables."""
        return dict(self.dynamic_variables)

    def custom_llm_extra_body_dict(self) -> dict[str, Any] | None:
        """Return custom_llm_extra_body as plain dicts and lists (json.dumps-ready), or None."""
        return None if self.custom_llm_extra_body is None else thaw(self.custom_llm_extra_body)


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Audio backend and devices; paths are absolute once loaded."""

    backend: str
    input_file: Path | None
    output_file: Path | None
    file_speed: float
    input_device: str | int | None
    output_device: str | int | None
    chunk_ms: int
    volume: float
    input_channel: int | None
    preroll_ms: int
    mic_while_speaking: str
    noise_suppression: bool
    auto_gain: bool
    echo_tail_ms: int
    duck_db: float
    jitter_ms: int
    earcons: EarconsConfig


@dataclass(frozen=True, slots=True)
class EarconsConfig:
    """Short synthesized sounds for state changes; each can be switched off."""

    wake: bool
    end: bool
    error: bool
    volume: float


@dataclass(frozen=True, slots=True)
class ConversationConfig:
    """Limits for one conversation."""

    max_duration_s: float
    reply_timeout_s: float
    idle_timeout_s: float
    error_display_s: float


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log verbosity and whether transcripts are logged (off by default for privacy)."""

    level: str
    transcripts: bool


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `source` is the file it came from, if any."""

    agent: AgentConfig
    audio: AudioConfig
    conversation: ConversationConfig
    logging: LoggingConfig
    button: ButtonConfig
    leds: LedsConfig
    control: ControlConfig
    wakeword: WakewordConfig
    tools: ToolsConfig
    context: ContextConfig
    source: Path | None = None

    @classmethod
    def for_agent(
        cls, agent_id: str, server_url: str = DEFAULT_SERVER_URL, **audio: object
    ) -> Config:
        """Return a validated default Config for `agent_id` with `audio` keys set."""
        return default_config(agent_id, server_url, audio=audio)


class _WsUrl(Kind):
    """wss:// to any host, ws:// to loopback only; no path, query or fragment."""

    expected = "a URL like 'wss://api.elevenlabs.io' (ws:// only for loopback hosts)"

    def check(self, value: object, ctx: Context) -> object:
        if not isinstance(value, str):
            raise wrong_type(value, text=True)
        if any(ch.isspace() for ch in value):
            raise Invalid(f"{show(value)} contains whitespace")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError as exc:
            raise Invalid(f"{show(value)} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if parts.username is not None or parts.password is not None:
            # Never echo the value: the user info may hold a password.
            raise Invalid("the URL contains a user name or password (not shown)")
        if scheme in ("http", "https"):
            better = show(f"wss://{parts.netloc}")
            raise Invalid(f"{show(value)} is not a WebSocket URL (did you mean {better}?)")
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise Invalid(f"{show(value)} is not a wss://host URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # The client appends /v1/convai/conversation?agent_id=... itself.
            raise Invalid(f"{show(value)} has a path, query or fragment")
        if scheme == "ws" and not _is_loopback(parts.hostname):
            raise Invalid(
                f"{show(value)} is refused (ws:// is only allowed for loopback hosts; use wss://)"
            )
        return f"{scheme}://{parts.netloc}"


class _CaFile(FilePath):
    """A readable file of PEM CA certificates, loaded the way the link will load it."""

    expected = "a PEM file of CA certificates"

    def check(self, value: object, ctx: Context) -> object:
        path = cast(Path, super().check(value, ctx))
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError) as exc:
            why = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else "no certificate"
            raise Invalid(f"{show(value)} holds no usable certificate ({why})") from None
        except OSError as exc:
            raise Invalid(f"{show(value)} cannot be read ({exc.strerror or exc})") from None
        return path


def _is_loopback(host: str) -> bool:
    """Tell whether `host` is localhost, 127.0.0.0/8 or ::1 (unencrypted is safe only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _audio_cross(values: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """The file backend cannot run without an input WAV."""
    if values.get("backend") == "file" and values.get("input_file") is None:
        yield "input_file", "required when audio.backend is 'file'; expected the path of a WAV file"


# Kinds too long for a one-line table row; the tables below are the whole schema.
_ID = Text("a non-empty string without whitespace", no_space=True)
_OPT_TEXT = Nullable(Text())
_FIRST_MESSAGE = Nullable(Text("a string", allow_empty=True))
_LANGUAGE = Nullable(
    Text("a language code like 'en' or 'pt-br'", lower=True, pattern=r"[a-z]{2,3}(-[a-z0-9]{2,4})?")
)
_LEVEL = Choice("debug", "info", "warning", "error", fold_case=True)

_OVERRIDES = Section(
    "override",
    OverridesConfig,
    [
        Field("first_message", _FIRST_MESSAGE, None, "agent's first words; '' = wait for the user"),
        Field("language", _LANGUAGE, None, "conversation language code, stored lower-case"),
        Field("prompt", _OPT_TEXT, None, "system prompt replacing the agent's"),
        Field("llm", _OPT_TEXT, None, "LLM name replacing the agent's"),
        Field("voice_id", _OPT_TEXT, None, "TTS voice replacing the agent's"),
        Field("tts_speed", Nullable(Number(0.7, 1.2)), None, "speech speed (service range)"),
        Field("tts_stability", Nullable(Number(0, 1)), None, "voice stability"),
        Field("tts_similarity_boost", Nullable(Number(0, 1)), None, "voice similarity boost"),
        Field("text_only", Nullable(Flag()), None, "text-only conversation (no audio)"),
    ],
)

_AGENT = Section(
    "agent",
    AgentConfig,
    [
        Field("agent_id", _ID, None, "the ElevenLabs agent id", required=True),
        Field("server_url", _WsUrl(), DEFAULT_SERVER_URL, "service base URL, stored without '/'"),
        Field("api_key_file", Nullable(KeyFile()), None, "file holding the API key"),
        Field("tls_ca_file", Nullable(_CaFile()), None, "CA bundle to trust instead of the OS's"),
        Field("user_id", _OPT_TEXT, None, "sent as user_id"),
        Field("source", Text(), "unknown", "sent as source_info.source"),
        Field("environment", _OPT_TEXT, None, "agent environment to use"),
        Field("connect_timeout_s", Number(1, 120), 10.0, "connect + handshake limit"),
        Field("dynamic_variables", TemplateVariables(), MappingProxyType({}), "{hostname} etc."),
        Field("overrides", _OVERRIDES, _OVERRIDES.defaults(), "per-conversation overrides"),
        Field("custom_llm_extra_body", Nullable(JsonObject()), None, "passed to a custom LLM"),
    ],
    expected="a mapping with at least 'agent_id'",
)

_EARCONS = Section(
    "audio.earcons",
    EarconsConfig,
    [
        Field("wake", Flag(), True, "chime when a conversation starts"),
        Field("end", Flag(), True, "chime when it ends"),
        Field("error", Flag(), True, "low tone when it fails"),
        Field("volume", Number(0, 1), 0.3, "earcon loudness relative to full scale"),
    ],
)

_AUDIO = Section(
    "audio",
    AudioConfig,
    [
        Field("backend", Choice("pyaudio", "file"), "pyaudio", "sound card or WAV files"),
        Field("input_file", Nullable(FilePath()), None, "WAV played as the user (file backend)"),
        Field("output_file", Nullable(FilePath("output")), None, "agent audio WAV; null = discard"),
        Field("file_speed", Number(0, 100), 1.0, "input pacing; 1 = real time, 0 = no waiting"),
        Field("input_device", Nullable(NameOrIndex()), None, "microphone; null = default"),
        Field("output_device", Nullable(NameOrIndex()), None, "speaker; null = default"),
        Field("chunk_ms", Number(10, 100, integer=True), 20, "audio chunk length"),
        Field("volume", Number(0, 2), 1.0, "software output gain"),
        Field("input_channel", Nullable(Number(0, 31, integer=True)), None, "null = mix all"),
        Field("preroll_ms", Number(0, 2000, integer=True), 300, "audio kept from before a trigger"),
        Field("mic_while_speaking", Choice("mute", "duck", "open", "aec"), "mute", "echo handling"),
        Field("noise_suppression", Flag(), False, "WebRTC noise suppression on the microphone"),
        Field("auto_gain", Flag(), False, "WebRTC automatic gain on the microphone"),
        Field("echo_tail_ms", Number(0, 2000, integer=True), 250, "guard kept after agent audio"),
        Field("duck_db", Number(-60, 0), -20.0, "gain on the microphone in duck mode"),
        Field(
            "jitter_ms", Number(0, 1000, integer=True), 40, "agent audio buffered before playing"
        ),
        Field("earcons", _EARCONS, _EARCONS.defaults(), "state sounds"),
    ],
    cross=_audio_cross,
)

DEFAULT_AUDIO: AudioConfig = _AUDIO.defaults()  # the `audio` section of an empty file

_CONVERSATION = Section(
    "conversation",
    ConversationConfig,
    [
        Field("max_duration_s", Number(1, 86400), 600.0, "hard limit for one conversation"),
        Field("reply_timeout_s", Number(1, 600), 20.0, "wait for a reply after the input ended"),
        Field("idle_timeout_s", Number(1, 3600), 30.0, "end after nobody spoke this long"),
        Field("error_display_s", Number(0, 60), 4.0, "error LED pattern shown this long"),
    ],
)


_LOGGING = Section(
    "logging",
    LoggingConfig,
    [
        Field("level", _LEVEL, "info", "log level, stored lower-case"),
        Field("transcripts", Flag(), False, "log user/agent lines (privacy: off by default)"),
    ],
)

SCHEMA = Section(
    "pi-agent",
    Config,
    [
        Field("agent", _AGENT, None, "the agent", required=True),
        Field("audio", _AUDIO, _AUDIO.defaults(), "audio"),
        Field("conversation", _CONVERSATION, _CONVERSATION.defaults(), "limits"),
        Field("logging", _LOGGING, _LOGGING.defaults(), "logging"),
        Field("button", BUTTON_SECTION, BUTTON_SECTION.defaults(), "push-to-talk button"),
        Field("leds", LEDS_SECTION, LEDS_SECTION.defaults(), "status LEDs"),
        Field("control", CONTROL_SECTION, CONTROL_SECTION.defaults(), "control socket"),
        Field("wakeword", WAKEWORD_SECTION, WAKEWORD_SECTION.defaults(), "offline wake word"),
        Field("tools", TOOLS_SECTION, TOOLS_SECTION.defaults(), "client tools, MCP approvals"),
        Field("context", CONTEXT_SECTION, CONTEXT_SECTION.defaults(), "device context"),
    ],
    expected=_ROOT_EXPECTED,
)


def parse_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Validate YAML `text`; relative paths resolve against `base_dir` (default: cwd).

    Raises ConfigError listing every problem found, each naming its line.
    """
    ctx = Context(Path.cwd() if base_dir is None else Path(base_dir).expanduser())
    try:
        config = _parse(text, ctx)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text)], source) from None
    except RecursionError:
        # PyYAML composes and constructs recursively; a hostile file must not crash us.
        problem = f"line 1: the document is nested too deeply; expected {_ROOT_EXPECTED}"
        raise ConfigError([problem], source) from None
    if config is None:
        raise ConfigError(ctx.problems, source)
    return config


def _parse(text: str, ctx: Context) -> Config | None:
    """Compose and validate `text`; return None after recording problems in `ctx`."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        ctx.problem(1, "", f"the file is empty; expected {_ROOT_EXPECTED}")
    elif not isinstance(root, MappingNode):
        try:
            what = wrong_type(ctx.construct(root)).what
        except Invalid as exc:
            what = exc.what
        ctx.problem(
            line_of(root), "", f"the document is not a mapping: {what}; expected {_ROOT_EXPECTED}"
        )
    else:
        config = ctx.parse(SCHEMA, root, "")
        if not ctx.problems and config is not BAD:
            return cast(Config, config)
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the YAML file at `path`; raise ConfigError (never OSError) on failure."""
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        problem = f"cannot read the file: {exc.strerror or exc}; expected a readable YAML file"
        raise ConfigError([problem], str(file)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex()
        problem = f"line {line}: byte 0x{byte} is not UTF-8; expected a UTF-8 encoded YAML file"
        raise ConfigError([problem], str(file)) from None
    config = parse_config(text, str(file), file.absolute().parent)
    return replace(config, source=file)


def default_config(
    agent_id: str, server_url: str = DEFAULT_SERVER_URL, **sections: Mapping[str, object]
) -> Config:
    """Return a Config validated like a file whose sections hold `sections` (e.g. audio={...}).

    Relative paths resolve against the current directory; raises ConfigError when invalid.
    """
    tree: dict[str, Any] = {name: thaw(dict(values)) for name, values in sections.items()}
    tree["agent"] = {**tree.get("agent", {}), "agent_id": agent_id, "server_url": server_url}
    return parse_config(yaml.safe_dump(tree, sort_keys=False), "<default_config>")


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """Say where and why YAML could not be parsed, in plain words."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        if text[mark.index : mark.index + 1] == "\t":
            return f"{where}: a tab character is not allowed here; expected spaces for indentation"
        what = exc.problem or "unknown problem"
        if exc.context:
            since = f" started on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what += f" ({exc.context}{since})"
        return f"{where}: invalid YAML: {what}; expected valid YAML (check indents, ':' and quotes)"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return f"line {line}: character {char!r} is not allowed; expected printable text"
    return f"line 1: invalid YAML: {exc}; expected valid YAML"
