"""What the simulator records about each conversation, and ways for tests to wait on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pi_agent.core import protocol
from pi_agent.simulator.agent import AgentTurn

Int16Array = npt.NDArray[np.int16]
ClientItem = protocol.ClientMessage | protocol.UnknownMessage | protocol.MalformedFrame

PROTOCOL_ERROR_TYPE = "protocol_error"  # type name recorded for frames that did not parse


def client_type_name(message: ClientItem) -> str:
    """Wire type of a parsed client frame: its `type`, `user_audio_chunk` or `protocol_error`."""
    if isinstance(message, protocol.MalformedFrame):
        return PROTOCOL_ERROR_TYPE
    if isinstance(message, protocol.UserAudioChunk):
        return "user_audio_chunk"
    if isinstance(message, protocol.UnknownMessage):
        return message.type
    return message.TYPE


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One frame received from the client, parsed; `at` is the loop's monotonic time."""

    at: float
    type: str
    message: ClientItem


@dataclass(frozen=True, slots=True)
class SentEvent:
    """One frame sent to the client: its type (`raw` for scenario raw frames) and event id."""

    at: float
    type: str
    event_id: int | str | None = None


@dataclass(slots=True)
class PingRecord:
    """A ping sent and, once answered, its pong and round-trip time."""

    event_id: int
    sent_at: float
    ping_ms: int | None  # the estimate the ping carried
    pong_at: float | None = None
    rtt_ms: float | None = None


@dataclass(eq=False)
class ConversationRecord:
    """Everything one conversation did; filled in by the server as it happens."""

    agent_id: str | None
    query: dict[str, str]  # the URL's query parameters, tokens redacted
    conversation_id: str | None = None
    init: protocol.ConversationInitiationClientData | None = None
    implicit_init: bool = False  # the client's first message was not the init (Python SDK style)
    received: list[ClientEvent] = field(default_factory=list)
    protocol_errors: list[protocol.MalformedFrame] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # e.g. pongs for pings never sent
    pings: list[PingRecord] = field(default_factory=list)
    sent: list[SentEvent] = field(default_factory=list)
    agent_turns: list[AgentTurn] = field(default_factory=list)
    scenario_error: str | None = None
    close_code: int | None = None  # the code of whoever closed first; 1006 when nobody did
    close_reason: str | None = None
    closed_by: str | None = None  # "client", "server" or "abnormal"
    _audio: list[Int16Array] = field(default_factory=list, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ended(self) -> bool:
        """Whether the conversation is over and the close recorded."""
        return self._ended.is_set()

    @property
    def rtts_ms(self) -> list[float]:
        """Measured ping round trips in order, in milliseconds."""
        return [p.rtt_ms for p in self.pings if p.rtt_ms is not None]

    def user_audio(self) -> Int16Array:
        """All user audio received so far, decoded at the input format and concatenated."""
        return np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.int16)

    def messages(self, type_name: str) -> list[Any]:
        """The parsed client messages of one wire type, in arrival order."""
        return [e.message for e in self.received if e.type == type_name]

    def sent_types(self) -> list[str]:
        """Types of every frame sent, in order."""
        return [s.type for s in self.sent]

    def add_received(self, event: ClientEvent) -> None:
        """Record a client frame and wake whoever waits on this record."""
        self.received.append(event)
        if isinstance(event.message, protocol.MalformedFrame):
            self.protocol_errors.append(event.message)
        elif isinstance(event.message, protocol.UnknownMessage):
            self.unknown_types.append(event.type)
        self.changed()

    def add_audio(self, samples: Int16Array) -> None:
        """Record decoded user audio."""
        self._audio.append(samples)

    def changed(self) -> None:
        """Wake every waiter (they re-check their condition)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def end(self) -> None:
        """Mark the conversation over."""
        self._ended.set()
        self.changed()

    async def wait_ended(self, timeout_s: float = 5.0) -> None:
        """Wait until the conversation is over; TimeoutError after timeout_s."""
        await asyncio.wait_for(self._ended.wait(), timeout_s)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `condition()` holds (checked on every change); TimeoutError if it does not."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                await self._changed.wait()

    async def wait_for_message(self, type_name: str, timeout_s: float = 5.0, start: int = 0) -> int:
        """Index in `received` of the first message of type_name at or after `start`."""
        found: list[int] = []
        position = start

        def check() -> bool:
            nonlocal position
            while position < len(self.received):
                if self.received[position].type == type_name:
                    found.append(position)
                    return True
                position += 1
            return False

        await self.wait_until(check, timeout_s)
        return found[0]
