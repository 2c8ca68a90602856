"""`pi-agent talk`: one conversation from the configuration, no daemon.

Builds the link, the init message and the audio devices from a `Config`, runs one
`Conversation`, prints the transcript to stdout as it arrives, and ends when the input is done and
the agent's reply has finished (or a time limit). Exit 0 only for a completed conversation.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TextIO

from websockets.asyncio.client import connect

from pi_agent import __version__
from pi_agent import protocol as p
from pi_agent.audio.devices import Microphone, Speaker
from pi_agent.builtins import DeviceHooks, SpeakerVolume, build_registry, end_when_asked
from pi_agent.client import AudioOptions, Conversation
from pi_agent.config import Config, resolve_api_key
from pi_agent.context import expand_variables, explain_end, template_values
from pi_agent.errors import EX_IOERR, EX_OK, EX_UNAVAILABLE, PiAgentError
from pi_agent.link import Connector, LinkSettings
from pi_agent.session import Action, EndKind, EndReason, Line, Started

log = logging.getLogger(__name__)

# How often the end-of-reply watch looks at the conversation.
WATCH_POLL_S = 0.05
# The reply counts as finished once playback is idle and no agent audio came for this long:
# the service streams speech faster than real time, so a gap this long means the turn is over.
REPLY_SETTLE_S = 1.0

EX_NOPERM = 77  # sysexits.h: permission denied (the service refused our key)
EX_PROTOCOL = 76  # sysexits.h: remote error in protocol
EX_TEMPFAIL = 75  # sysexits.h: temporary failure; trying again later may work

EXIT_CODES: dict[EndKind, int] = {
    EndKind.COMPLETED: EX_OK,
    EndKind.AGENT_ENDED: EX_OK,
    EndKind.SERVER_CLOSED: EX_OK,
    EndKind.AUTH_FAILED: EX_NOPERM,
    EndKind.PROTOCOL: EX_PROTOCOL,
    EndKind.TIME_LIMIT: EX_TEMPFAIL,
    EndKind.NO_REPLY: EX_TEMPFAIL,
    EndKind.CONNECTION_LOST: EX_TEMPFAIL,
    EndKind.CONNECT_FAILED: EX_UNAVAILABLE,
    EndKind.SERVER_ERROR: EX_UNAVAILABLE,
    EndKind.LOCAL: EX_TEMPFAIL,
    EndKind.DEVICE: EX_IOERR,
}


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
    """Link settings, with the API key from the first source that has one."""
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
    """Audio path settings; earcons only on sound cards (a file records just the agent)."""
    a = cfg.audio
    e = a.earcons
    enabled = {kind for kind, on in (("wake", e.wake), ("end", e.end), ("error", e.error)) if on}
    return AudioOptions(
        jitter_ms=a.jitter_ms,
        mic_while_speaking=a.mic_while_speaking,
        echo_tail_ms=a.echo_tail_ms,
        duck_db=a.duck_db,
        earcons=frozenset(enabled) if a.backend != "file" else frozenset(),
        earcon_volume=e.volume,
    )


def open_devices(cfg: Config) -> tuple[Microphone, Speaker]:
    """The microphone and speaker of the configured backend."""
    audio = cfg.audio
    if audio.backend == "file":
        from pi_agent.audio.devices import FileMicrophone, FileSpeaker

        assert audio.input_file is not None  # enforced by config validation
        return (
            FileMicrophone(audio.input_file, audio.chunk_ms, audio.file_speed),
            FileSpeaker(audio.output_file, audio.file_speed),
        )
    from pi_agent.audio.pyaudio_backend import open_pyaudio_devices

    return open_pyaudio_devices(audio)


async def until_reply_finished(conv: Conversation, reply_timeout_s: float) -> None:
    """End the conversation once the input is done and the agent's reply has been heard."""
    loop = asyncio.get_running_loop()
    while not conv.mic.finished:  # noqa: ASYNC110 - a property of any Microphone, no event
        await asyncio.sleep(WATCH_POLL_S)
    input_done = loop.time()
    session = conv.session
    while True:
        await asyncio.sleep(WATCH_POLL_S)
        now = loop.time()
        replied = conv.timeline.first_audio_after_input is not None or (
            session.user_turns > 0 and not session.awaiting_reply and session.agent_turns > 0
        )
        last_audio = session.last_audio_at
        quiet = not conv.audio_playing and (
            last_audio is None or now - last_audio >= REPLY_SETTLE_S
        )
        if replied and quiet:
            conv.end(EndReason(EndKind.COMPLETED, "the input was sent and the reply finished"))
            return
        if not replied and now - input_done >= reply_timeout_s:
            conv.end(
                EndReason(
                    EndKind.NO_REPLY,
                    f"the agent did not answer within {reply_timeout_s:g} s of the input ending",
                )
            )
            return


class TranscriptPrinter:
    """Prints transcript lines with times since the conversation started."""

    LABELS: ClassVar[dict[str, str]] = {
        "user": "you",
        "agent": "agent",
        "agent-correction": "agent (cut to)",
    }

    def __init__(self, out: TextIO, clock: Callable[[], float]) -> None:
        self.out = out
        self.clock = clock
        self.t0 = clock()

    def __call__(self, action: Action) -> None:
        if isinstance(action, Started):
            self._print(
                f"conversation {action.conversation_id} started "
                f"(agent audio {action.output_format.name}, "
                f"microphone {action.input_format.name})"
            )
        elif isinstance(action, Line):
            self._print(f"{self.LABELS.get(action.role, action.role)}: {action.text}")

    def _print(self, text: str) -> None:
        print(f"[{self.clock() - self.t0:6.2f}s] {text}", file=self.out, flush=True)


async def run_talk(
    cfg: Config,
    *,
    max_s: float | None = None,
    out: TextIO = sys.stdout,
    connector: Connector = connect,
    devices: tuple[Microphone, Speaker] | None = None,
) -> tuple[EndReason, Conversation]:
    """Run one conversation to its end; returns the end reason and the finished Conversation."""
    mic, speaker = devices if devices is not None else open_devices(cfg)
    loop = asyncio.get_running_loop()
    limit = cfg.conversation.max_duration_s if max_s is None else max_s
    end_asked = asyncio.Event()  # set by the end_conversation tool
    hooks = DeviceHooks(SpeakerVolume.of(speaker), None, end_asked.set)
    conv = Conversation(
        build_link(cfg),
        build_init(cfg),
        mic,
        speaker,
        max_duration_s=limit,
        tools=build_registry(cfg.tools, hooks),
        listener=TranscriptPrinter(out, loop.time),
        connector=connector,
        audio=audio_options(cfg),
    )
    reply_timeout = cfg.conversation.reply_timeout_s

    def agent_ended() -> None:
        conv.end(EndReason(EndKind.AGENT_ENDED, "the agent ended the conversation (tool)"))

    async def watch(c: Conversation) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(until_reply_finished(c, reply_timeout))
            group.create_task(end_when_asked(end_asked, c.playback_idle, agent_ended))

    reason = explain_end(await conv.run(watch))
    return reason, conv


def exit_code(reason: EndReason) -> int:
    """The process exit status for an end reason (0 only for successful ends)."""
    return EXIT_CODES.get(reason.kind, EX_UNAVAILABLE)


def talk_main(cfg: Config, max_s: float | None, out: TextIO, err: TextIO) -> int:
    """Entry point of `pi-agent talk`: one line of reason on stderr when it fails."""
    try:
        reason, _ = asyncio.run(run_talk(cfg, max_s=max_s, out=out))
    except PiAgentError as exc:
        print(f"pi-agent: {exc}", file=err)
        return exc.exit_code
    if reason.ok:
        print(f"conversation ended: {reason.detail}", file=err)
    else:
        print(f"pi-agent: conversation failed: {reason}", file=err)
    return exit_code(reason)
