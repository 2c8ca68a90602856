"""The one-shot orchestrator of `pi-agent talk` and `pi-agent demo`: one conversation, to its end.

It ends when the input is done and the agent's reply has finished (or a time limit), printing the
transcript as it arrives.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import ClassVar, TextIO

from websockets.asyncio.client import connect

from pi_agent.adapters.audio.devices import Microphone, Speaker
from pi_agent.adapters.builtins import end_when_asked
from pi_agent.adapters.client import Conversation
from pi_agent.adapters.context import explain_end
from pi_agent.adapters.link import Connector
from pi_agent.config import Config
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.core.session import Action, Line, MetadataReceived
from pi_agent.wiring import build_conversation, device_hooks, open_devices

# How often the end-of-reply watch looks at the conversation.
WATCH_POLL_S = 0.05
# The reply counts as finished once playback is idle and no agent audio came for this long:
# the service streams speech faster than real time, so a gap this long means the turn is over.
REPLY_SETTLE_S = 1.0


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
        if isinstance(action, MetadataReceived):
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
    end_asked = asyncio.Event()  # set by the end_conversation tool
    conv = build_conversation(
        cfg,
        mic,
        speaker,
        hooks=device_hooks(speaker, end_conversation=end_asked.set),
        listener=TranscriptPrinter(out, loop.time),
        connector=connector,
        max_duration_s=max_s,
    )
    reply_timeout = cfg.conversation.reply_timeout_s

    def agent_ended() -> None:
        conv.end(EndReason(EndKind.AGENT_ENDED, "the agent ended the conversation (tool)"))

    async def watch(c: Conversation) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(until_reply_finished(c, reply_timeout), name="reply-finished")
            group.create_task(
                end_when_asked(end_asked, c.playback_idle, agent_ended), name="end-when-asked"
            )

    reason = explain_end(await conv.run(watch))
    return reason, conv
