"""The one place that turns a `Config` into adapters and a conversation.

The daemon, `talk`, `demo`, `bench` and the scripts build through here, so every default lives
once, in the configuration schema, and every conversation is assembled the same way.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import connect

from pi_agent import __version__
from pi_agent.adapters.audio.aec import EchoCanceller
from pi_agent.adapters.audio.devices import Microphone, Speaker
from pi_agent.adapters.builtins import DeviceHooks, SpeakerVolume, build_registry
from pi_agent.adapters.client import (
    DRAIN_LIMIT_S,
    HANGUP_GRACE_S,
    METADATA_TIMEOUT_S,
    AudioOptions,
    Conversation,
    Listener,
)
from pi_agent.adapters.context import expand_variables, template_values
from pi_agent.adapters.link import CLOSE_TIMEOUT_S, Connector, LinkSettings
from pi_agent.config import Config, resolve_api_key
from pi_agent.core import protocol as p
from pi_agent.core.backoff import (
    CONNECT_RETRIES,
    CONNECT_RETRY_CAP_S,
    DEFAULT_CAP_S,
    Backoff,
    connect_backoff,
)
from pi_agent.core.machine import StateBounds

# Added to every state bound: scheduling, a slow Pi, the tick's own resolution.
BOUND_MARGIN_S = 10.0


def build_init(
    cfg: Config, values: Mapping[str, str] | None = None
) -> p.ConversationInitiationClientData:
    """The `conversation_initiation_client_data` message for this configuration (2.2).

    Placeholders in dynamic variables ({hostname}, {local_time}, ...) take `values`, by default
    the device's own right now.
    """
    agent = cfg.agent
    if values is None:
        values = template_values(cfg.context.location)
    o = agent.overrides
    agent_part: dict[str, Any] = {}
    if o.first_message is not None:
        agent_part["first_message"] = o.first_message
    if o.language is not None:
        agent_part["language"] = o.language
    prompt: dict[str, Any] = {}
    if o.prompt is not None:
        prompt["prompt"] = o.prompt
    if o.llm is not None:
        prompt["llm"] = o.llm
    if prompt:
        agent_part["prompt"] = prompt
    tts: dict[str, Any] = {}
    for key, value in (
        ("voice_id", o.voice_id),
        ("speed", o.tts_speed),
        ("stability", o.tts_stability),
        ("similarity_boost", o.tts_similarity_boost),
    ):
        if value is not None:
            tts[key] = value
    override: dict[str, Any] = {}
    if agent_part:
        override["agent"] = agent_part
    if tts:
        override["tts"] = tts
    if o.text_only is not None:
        override["conversation"] = {"text_only": o.text_only}
    return p.ConversationInitiationClientData(
        conversation_config_override=override,
        custom_llm_extra_body=agent.custom_llm_extra_body_dict() or {},
        dynamic_variables=expand_variables(agent.dynamic_variables, values),
        user_id=agent.user_id,
        source_info={"source": agent.source, "version": f"pi-agent/{__version__}"},
    )


def build_link(cfg: Config) -> LinkSettings:
    """Link settings, with the API key read now from the first source that has one."""
    agent = cfg.agent
    return LinkSettings(
        server_url=agent.server_url,
        agent_id=agent.agent_id,
        api_key=resolve_api_key(agent),
        environment=agent.environment,
        connect_timeout_s=agent.connect_timeout_s,
        tls_ca_file=str(agent.tls_ca_file) if agent.tls_ca_file else None,
    )


def audio_options(cfg: Config) -> AudioOptions:
    """The audio path settings of this configuration."""
    return AudioOptions.from_config(cfg.audio)


def open_devices(cfg: Config) -> tuple[Microphone, Speaker]:
    """The microphone and speaker of the configured backend."""
    audio = cfg.audio
    if audio.backend == "file":
        from pi_agent.adapters.audio.devices import FileMicrophone, FileSpeaker

        assert audio.input_file is not None  # enforced by config validation
        return (
            FileMicrophone(audio.input_file, audio.chunk_ms, audio.file_speed),
            FileSpeaker(audio.output_file, audio.file_speed),
        )
    from pi_agent.adapters.audio.pyaudio_backend import open_pyaudio_devices

    return open_pyaudio_devices(audio)


def device_hooks(speaker: Speaker, **hooks: Any) -> DeviceHooks:
    """What the built-in tools act on: the speaker's volume, plus the given hooks."""
    return DeviceHooks(SpeakerVolume.of(speaker), **hooks)


def build_conversation(
    cfg: Config,
    mic: Microphone,
    speaker: Speaker,
    *,
    hooks: DeviceHooks | None = None,
    listener: Listener | None = None,
    connector: Connector = connect,
    link: LinkSettings | None = None,
    max_duration_s: float | None = None,
    canceller: EchoCanceller | None = None,
) -> Conversation:
    """One `Conversation` of this configuration on these devices.

    `link` defaults to `build_link(cfg)` (which reads the key file); `max_duration_s` to
    `conversation.max_duration_s`.
    """
    limit = cfg.conversation.max_duration_s if max_duration_s is None else max_duration_s
    return Conversation(
        build_link(cfg) if link is None else link,
        build_init(cfg),
        mic,
        speaker,
        max_duration_s=limit,
        tools=build_registry(cfg.tools, hooks or device_hooks(speaker)),
        listener=listener,
        connector=connector,
        audio=audio_options(cfg),
        canceller=canceller,
    )


def retry_spacing() -> tuple[Backoff, Backoff]:
    """The daemon's back-off between failed conversations, and a connect's quick retries."""
    return Backoff(rng=random.Random()), connect_backoff(random.Random())


def state_bounds(cfg: Config) -> StateBounds:
    """How long each state may last with this configuration before the daemon is wedged.

    Each bound is the sum of the timeouts that end the state, so only a timeout that failed to
    fire can exceed it: connecting waits out the back-off spacing, then up to 1 + CONNECT_RETRIES
    attempts (signed-URL call and WebSocket handshake, each `agent.connect_timeout_s`, then the
    metadata wait) with their retry delays; ending lets queued audio and the end earcon drain,
    waits out a hang-up grace and closes; a conversation adds `conversation.max_duration_s`.
    """
    attempt_s = 2 * cfg.agent.connect_timeout_s + METADATA_TIMEOUT_S
    connecting = (
        DEFAULT_CAP_S
        + (1 + CONNECT_RETRIES) * attempt_s
        + CONNECT_RETRIES * CONNECT_RETRY_CAP_S
        + BOUND_MARGIN_S
    )
    ending = attempt_s + 2 * DRAIN_LIMIT_S + HANGUP_GRACE_S + CLOSE_TIMEOUT_S + BOUND_MARGIN_S
    return StateBounds(
        connecting_s=connecting,
        ending_s=ending,
        error_s=cfg.conversation.error_display_s + BOUND_MARGIN_S,
        conversation_s=connecting + cfg.conversation.max_duration_s + ending,
    )
