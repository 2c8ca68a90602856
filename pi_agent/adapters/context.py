"""What the agent learns about the device, and what the log learns about the conversation.

Templated dynamic variables, periodic context, transcript lines with the conversation id, and a
plain explanation of refused overrides.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from websockets.exceptions import ConnectionClosed

from pi_agent.adapters.tools import run_command
from pi_agent.config import PeriodicContext, expand_template
from pi_agent.core.bounds import printable
from pi_agent.core.ending import EndReason
from pi_agent.core.session import Line
from pi_agent.errors import LinkError

log = logging.getLogger(__name__)

# A periodic context command gets this long and this much output (it is background context).
PERIODIC_TIMEOUT_S = 5.0
PERIODIC_MAX_OUTPUT_BYTES = 2048
# context_id of each periodic entry: the service keeps only the latest update per id (2.5).
PERIODIC_CONTEXT_ID = "pi-agent-periodic-{index}"
# Failures of one periodic command are logged this many times per conversation, then counted.
PERIODIC_FAILURE_LOG_LIMIT = 3
# Transcript lines kept per conversation, enough to find the agent line a correction replaces.
TRANSCRIPT_LINES_KEPT = 50
OVERRIDE_HINT = (
    "an override in agent.overrides is not enabled for this agent: enable it in the agent's "
    "Security settings (Overrides) or remove it from agent.overrides"
)

Scalar = str | int | float | bool


def template_values(
    location: str | None,
    now: datetime | None = None,
    hostname: Callable[[], str] = socket.gethostname,
) -> dict[str, str]:
    """Values of the dynamic variable placeholders (configtools.TEMPLATE_NAMES) right now."""
    when = now or datetime.now().astimezone()
    return {
        "hostname": hostname(),
        "location": location or "",
        "local_time": when.strftime("%H:%M"),
        "local_date": when.strftime("%Y-%m-%d"),
        "weekday": when.strftime("%A"),
    }


def expand_variables(
    variables: Mapping[str, Scalar], values: Mapping[str, str]
) -> dict[str, Scalar]:
    """Dynamic variables with placeholders in string values expanded; others as they are."""
    return {
        name: expand_template(value, values) if isinstance(value, str) else value
        for name, value in variables.items()
    }


# ---------------------------------------------------------------------------- periodic context


class ContextSink(Protocol):
    """Where contextual updates go (a running Conversation)."""

    async def send_contextual_update(self, text: str, context_id: str | None = None) -> None:
        """Send background information to the agent without interrupting it."""


async def send_periodic_context(sink: ContextSink, entries: Sequence[PeriodicContext]) -> None:
    """For each entry: its command's output as a contextual_update now and every `every_s`.

    Runs until cancelled (the conversation ended) or the link is gone; failed commands are
    logged and skipped, never sent.
    """
    if not entries:
        return
    async with asyncio.TaskGroup() as group:
        for index, entry in enumerate(entries):
            group.create_task(_periodic(sink, index, entry), name=f"context-{index}")


async def _periodic(sink: ContextSink, index: int, entry: PeriodicContext) -> None:
    loop = asyncio.get_running_loop()
    context_id = PERIODIC_CONTEXT_ID.format(index=index)
    failures = 0
    due = loop.time()
    while True:
        outcome = await run_command(entry.argv, PERIODIC_TIMEOUT_S, PERIODIC_MAX_OUTPUT_BYTES)
        if outcome.error is not None or not outcome.output:
            failures += 1
            level = logging.WARNING if failures <= PERIODIC_FAILURE_LOG_LIMIT else logging.DEBUG
            why = outcome.error or "no output"
            log.log(level, "periodic context %s: %s; nothing sent", entry.argv[0], why)
        else:
            text = " ".join(part for part in (entry.prefix.strip(), outcome.output) if part)
            try:
                await sink.send_contextual_update(text, context_id)
            except (ConnectionClosed, LinkError):
                return  # the conversation is ending
        due += entry.every_s
        await asyncio.sleep(max(0.0, due - loop.time()))


# ---------------------------------------------------------------------------- transcripts


class TranscriptLog:
    """One conversation's transcript; a correction replaces the agent line it cuts short.

    When `enabled`, each line goes to the log with the conversation id; a correction is logged
    again, marked as one, since a log cannot be rewritten.
    """

    def __init__(self, conversation_id: str | None, enabled: bool) -> None:
        self.conversation_id = conversation_id or "-"
        self.enabled = enabled
        self.lines: deque[Line] = deque(maxlen=TRANSCRIPT_LINES_KEPT)

    def add(self, line: Line) -> None:
        """Record `line`: user and agent lines are appended, corrections replace."""
        if line.role != "agent-correction":
            self.lines.append(line)
            self._log("%s", line.role, line.text)
            return
        replaced = self._replace(line)
        marker = "agent (correction, replaces the interrupted reply)"
        self._log("%s", marker if replaced else "agent (correction)", line.text)

    def _replace(self, correction: Line) -> bool:
        """Replace the agent line of the correction's event id (else the last agent line)."""
        agent = [i for i, kept in enumerate(self.lines) if kept.role == "agent"]
        same = [i for i in agent if self.lines[i].event_id == correction.event_id]
        corrected = replace(correction, role="agent")
        if not (same or agent):
            self.lines.append(corrected)
            return False
        self.lines[(same or agent)[-1]] = corrected
        return True

    def _log(self, fmt: str, role: str, text: str) -> None:
        if self.enabled:  # the session clipped the line; a newline must not forge a log line
            log.info("conversation %s " + fmt + ": %s", self.conversation_id, role, printable(text))


# ---------------------------------------------------------------------------- end reasons


def explain_end(reason: EndReason) -> EndReason:
    """`reason`, with what to do added when the server refused an override (1008)."""
    if reason.error_type == "override_error" and OVERRIDE_HINT not in reason.detail:
        return replace(reason, detail=f"{reason.detail}; {OVERRIDE_HINT}")
    return reason
