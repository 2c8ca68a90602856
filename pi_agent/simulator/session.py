"""One simulated conversation: init, metadata, pings, then the echo agent or a scenario."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import secrets
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pi_agent.core import protocol
from pi_agent.core.audio import formats
from pi_agent.simulator import faults
from pi_agent.simulator.agent import EchoAgent, EchoConfig, due_offsets, split_chunks
from pi_agent.simulator.records import (
    ClientEvent,
    ConversationRecord,
    Int16Array,
    PingRecord,
    SentEvent,
    client_type_name,
)
from pi_agent.simulator.scenario import (
    MAX_CLOSE_REASON_BYTES,
    Close,
    Drop,
    Echo,
    PingFlood,
    Scenario,
    Send,
    Sendable,
    SendAudio,
    SendBig,
    SendError,
    SendMetadata,
    SendPing,
    SendRaw,
    Stall,
    ToolCallFlood,
    Wait,
    WaitFor,
)

if TYPE_CHECKING:
    from pi_agent.simulator.server import SimulatorOptions

log = logging.getLogger(__name__)

ECHO_IDLE_S = 1.0  # the echo loop re-checks its agent at least this often even with nothing due
CONVERSATION_ID_BYTES = 12  # conv_ + 24 hex digits, about as long as the service's ids
ABNORMAL_CLOSE = 1006  # RFC 6455: no close frame was exchanged


def truncate_reason(reason: str) -> str:
    """Cut a close reason to the 123 bytes a close frame can carry, on a character boundary."""
    data = reason.encode()
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return data[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def override_paths(override: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every field an init's conversation_config_override sets (nulls unset)."""
    for key, value in override.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from override_paths(value, f"{path}.")
        elif value is not None:
            yield path


def _allowed(path: str, allowed: frozenset[str]) -> bool:
    return any(path == a or path.startswith(f"{a}.") for a in allowed)


class ServerSession:
    """Runs one accepted conversation and records it, with the echo agent or a scenario."""

    def __init__(
        self, options: SimulatorOptions, ws: ServerConnection, record: ConversationRecord
    ) -> None:
        self.options = options
        self.ws = ws
        self.record = record
        self.input_format = formats.parse_format(options.input_format)
        self.output_format = formats.parse_format(options.output_format)
        self.audio_chunk_ms = options.audio_chunk_ms
        self.speak_rate = options.speak_rate
        self._loop = asyncio.get_running_loop()
        self._agent: EchoAgent | None = None
        self._wake = asyncio.Event()
        self._ping_ids = itertools.count(1)
        self._pings: dict[int, PingRecord] = {}
        self._last_rtt_ms: float | None = None
        self._match_from = 0  # scenario wait_for looks at received messages from here on
        self._closing = False
        self._sending_stalled = False  # a Stall step holds back everything, periodic pings too

    # ------------------------------------------------------------------ lifecycle

    async def refuse(self, error_type: str, message: str) -> None:
        """Send an `error` event, then close 1008 with the message as reason (reference 6.1)."""
        code = protocol.CloseCode.POLICY
        await self.send(protocol.ErrorEvent(code, message, error_type, reason=message))
        await self.close(code, message)

    async def run(self) -> None:
        """The conversation from the first client message to the close."""
        first = await self._first_message()
        if self._closing or self.ws.state is not State.OPEN:
            return
        scenario = self.options.scenario
        if scenario is None or scenario.send_metadata:
            if self.options.metadata_delay_s:
                await asyncio.sleep(self.options.metadata_delay_s)
            await self.send_metadata(SendMetadata())
        if scenario is None:
            await self.start_echo()
        if first is not None:
            await self._dispatch(*first)
        tasks = [asyncio.create_task(self._guard(self._drive()), name="simulator-driver")]
        if self.options.ping_interval_s > 0:
            tasks.append(asyncio.create_task(self._guard(self._ping_loop()), name="simulator-ping"))
        try:
            await self._guard(self._receive_loop())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def finish(self) -> None:
        """Make sure the socket is closed and record how the conversation ended."""
        if self.ws.state is not State.CLOSED:
            await self.ws.close()
        p = self.ws.protocol
        if p.close_rcvd_then_sent is None or p.close_rcvd is None or p.close_sent is None:
            self.record.closed_by, self.record.close_code, self.record.close_reason = (
                "abnormal",
                ABNORMAL_CLOSE,
                "",
            )
        else:
            frame = p.close_rcvd if p.close_rcvd_then_sent else p.close_sent
            self.record.closed_by = "client" if p.close_rcvd_then_sent else "server"
            self.record.close_code, self.record.close_reason = frame.code, frame.reason
        log.info(
            "conversation %s ended: %s closed %s %s",
            self.record.conversation_id,
            self.record.closed_by,
            self.record.close_code,
            self.record.close_reason,
        )
        self.record.end()

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a conversation task; a closed socket ends it, a bug closes 1011."""
        try:
            await coro
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulator conversation task failed")
            await self.close(protocol.CloseCode.INTERNAL, "simulator internal error")

    async def _first_message(self) -> tuple[ClientEvent, Int16Array | None] | None:
        """Wait for the init; returns a non-init first message for later dispatch."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), self.options.first_message_timeout_s)
        except TimeoutError:
            log.info(
                "no client message within %.1f s; starting anyway",
                self.options.first_message_timeout_s,
            )
            return None
        except ConnectionClosed:
            return None
        event, samples = self._receive(frame)
        message = event.message
        if not isinstance(message, protocol.ConversationInitiationClientData):
            self.record.implicit_init = True  # the Python SDK streams audio without waiting
            return event, samples
        self.record.init = message
        allowed = self.options.allowed_overrides
        for path in override_paths(message.conversation_config_override or {}):
            if allowed is not None and not _allowed(path, allowed):
                await self.refuse(
                    "override_error", f"Override for field '{path}' is not allowed by config."
                )
                break
        return None

    # ------------------------------------------------------------------ receiving

    def _receive(self, frame: str | bytes) -> tuple[ClientEvent, Int16Array | None]:
        message = protocol.parse_client_message(frame)
        samples = None
        if isinstance(message, protocol.UserAudioChunk):
            samples = formats.decode(message.audio, self.input_format)
            self.record.add_audio(samples)
        event = ClientEvent(self._loop.time(), client_type_name(message), message)
        self.record.add_received(event)
        return event, samples

    async def _receive_loop(self) -> None:
        async for frame in self.ws:
            await self._dispatch(*self._receive(frame))

    async def _dispatch(self, event: ClientEvent, samples: Int16Array | None) -> None:
        message = event.message
        agent = self._agent
        if isinstance(message, protocol.MalformedFrame | protocol.UnknownMessage):
            what = (
                str(message)
                if isinstance(message, protocol.MalformedFrame)
                else f"unknown type {event.type!r}"
            )
            log.warning(
                "conversation %s: invalid client message: %s", self.record.conversation_id, what
            )
            if self.options.strict:
                await self.refuse("invalid_message", f"Invalid message received: {what}")
        elif isinstance(message, protocol.UserAudioChunk) and agent is not None:
            assert samples is not None
            agent.receive_audio(samples, event.at)
            self._wake.set()
        elif isinstance(message, protocol.Pong):
            self._pong(message, event.at)
        elif isinstance(message, protocol.UserMessage) and agent is not None and message.text:
            agent.receive_text(message.text, event.at)
            self._wake.set()
        elif isinstance(message, protocol.ConversationInitiationClientData):
            self.record.violations.append("conversation_initiation_client_data after the start")

    def _pong(self, pong: protocol.Pong, now: float) -> None:
        ping = self._pings.pop(pong.event_id, None)
        if ping is None:
            self.record.violations.append(f"pong for unknown ping event_id {pong.event_id}")
            return
        ping.pong_at = now
        ping.rtt_ms = (now - ping.sent_at) * 1000.0
        self._last_rtt_ms = ping.rtt_ms
        self.record.changed()

    # ------------------------------------------------------------------ driving

    async def _drive(self) -> None:
        scenario = self.options.scenario
        if scenario is not None:
            await self._run_scenario(scenario)
        if self._agent is not None and not self._closing:
            await self._echo_loop(self._agent)

    async def _run_scenario(self, scenario: Scenario) -> None:
        for index, step in enumerate(scenario.steps, 1):
            match step:
                case Send(message=message):
                    await self.send(message)
                case SendRaw(data=data):
                    await self.send_raw(data)
                case SendAudio():
                    await self._send_audio(step)
                case SendMetadata():
                    await self.send_metadata(step)
                case Wait(seconds=seconds):
                    await asyncio.sleep(seconds)
                case WaitFor(message_type=kind, timeout_s=timeout_s, required=required):
                    if not await self.wait_for(kind, timeout_s) and required:
                        await self.fail(f"scenario step {index}: no {kind} within {timeout_s:g} s")
                        return
                case SendPing():
                    await self.ping()
                case Close(code=code, reason=reason):
                    await self.close(code, reason)
                case Echo():
                    await self.start_echo()
                case Drop():
                    self._closing = True
                    faults.abort(self.ws)
                case Stall():
                    await self.stall(step)
                case SendBig(size_bytes=size, message_type=kind, event_id=event_id):
                    try:
                        frame = faults.big_frame(size, kind, event_id)
                    except ValueError as exc:
                        await self.fail(f"scenario step {index}: {exc}")
                        return
                    self.record.sent.append(SentEvent(self._loop.time(), kind, event_id))
                    await self.ws.send(frame)
                case PingFlood(count=count):
                    for _ in range(count):
                        await self.ping()
                case ToolCallFlood():
                    await self.tool_call_flood(step)
                case SendError(error_type=error_type, message=message, code=code):
                    event, close_code, reason = faults.error_close(error_type, message, code)
                    await self.send(event)
                    await self.close(close_code, reason)

    async def _send_audio(self, step: SendAudio) -> None:
        """Chunks of the step's audio as `audio` events, paced at speak_rate unless told not to."""
        fmt = self.output_format
        if step.wire_format is not None:  # a fault: bytes of a format nobody announced
            fmt = formats.parse_format(step.wire_format)
        chunks = split_chunks(
            formats.encode(step.audio(fmt), fmt), fmt, step.chunk_ms or self.audio_chunk_ms
        )
        rate = self.speak_rate if step.paced else 0.0
        offsets = due_offsets([fmt.duration_s(len(c)) for c in chunks], rate)
        start = self._loop.time()
        for chunk, offset in zip(chunks, offsets, strict=True):
            delay = start + offset - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            encoded = base64.b64encode(chunk).decode("ascii")
            await self.send(protocol.Audio(audio_base_64=encoded, event_id=step.event_id))

    async def _echo_loop(self, agent: EchoAgent) -> None:
        while True:
            for message in agent.poll(self._loop.time()):
                await self.send(message)
            deadline = agent.next_deadline()
            self._wake.clear()
            delay = (
                ECHO_IDLE_S if deadline is None else min(ECHO_IDLE_S, deadline - self._loop.time())
            )
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.ping_interval_s)
            if not self._sending_stalled:
                await self.ping()

    # ------------------------------------------------------------------ sending, scenario actions

    async def send(self, message: Sendable) -> None:
        """Encode with the protocol module, send, and record type and event id."""
        wire = message if isinstance(message, dict) else message.to_wire()
        kind = wire.get("type")
        self.record.sent.append(SentEvent(self._loop.time(), str(kind), _event_id(wire)))
        await self.ws.send(protocol.encode(wire))

    async def send_raw(self, data: str | bytes) -> None:
        """Send one frame exactly as given."""
        self.record.sent.append(SentEvent(self._loop.time(), "raw"))
        await self.ws.send(data)

    async def send_metadata(self, step: SendMetadata) -> None:
        """Send conversation_initiation_metadata; the first id sent becomes the record's."""
        cid = step.conversation_id or self.record.conversation_id
        if cid is None:
            cid = f"conv_{secrets.token_hex(CONVERSATION_ID_BYTES)}"
        if self.record.conversation_id is None:
            self.record.conversation_id = cid
        out = step.output_format or self.output_format.name
        inp = step.input_format or self.input_format.name
        await self.send(protocol.ConversationInitiationMetadata(cid, out, inp))

    async def ping(self) -> None:
        """Send a ping carrying the last measured round trip in ms (null until one was measured)."""
        event_id = next(self._ping_ids)
        ping_ms = None if self._last_rtt_ms is None else round(self._last_rtt_ms)
        record = PingRecord(event_id, self._loop.time(), ping_ms)
        self._pings[event_id] = record
        self.record.pings.append(record)
        # ping_ms is sent even when null (protocol.Ping.KEEP_NONE): the SDK needs the key.
        await self.send(protocol.Ping(event_id, ping_ms).to_wire())

    async def wait_for(self, message_type: str, timeout_s: float) -> bool:
        """Whether a client message of that type arrived since the previous match, in time."""
        try:
            index = await self.record.wait_for_message(message_type, timeout_s, self._match_from)
        except TimeoutError:
            return False
        self._match_from = index + 1
        return True

    async def stall(self, step: Stall) -> None:
        """Stop reading the client's frames and/or sending anything for step.seconds."""
        transport = self.ws.transport
        if step.reading:
            transport.pause_reading()
        self._sending_stalled = step.sending
        try:
            await asyncio.sleep(step.seconds)
        finally:
            self._sending_stalled = False
            if step.reading and not transport.is_closing():
                transport.resume_reading()

    async def tool_call_flood(self, step: ToolCallFlood) -> None:
        """Send step.count tool calls at once; with read=False, stop reading the client first."""
        if not step.read:
            self.ws.transport.pause_reading()  # for the rest of the conversation
        for i in range(step.count):
            call_id = "flood-0" if step.same_id else f"flood-{i}"
            await self.send(protocol.ClientToolCall(step.tool_name, call_id, {}, i + 1))

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with code and (truncated) reason."""
        self._closing = True
        await self.ws.close(code, truncate_reason(reason))

    async def fail(self, why: str) -> None:
        """Record the scenario's failure, then close 1011 with it as the reason."""
        log.warning("conversation %s: %s", self.record.conversation_id, why)
        self.record.scenario_error = why
        await self.close(protocol.CloseCode.INTERNAL, why)

    async def start_echo(self) -> None:
        """Hand the conversation to a new echo agent, greeting first if there is a first message."""
        if self._agent is not None:
            return
        config = EchoConfig(
            self.input_format,
            self.output_format,
            self.audio_chunk_ms,
            self.speak_rate,
            self.options.vad_threshold_dbfs,
            self.options.tentative_transcripts,
        )
        self._agent = EchoAgent(config)
        self.record.agent_turns = self._agent.turns
        greeting = self._greeting()
        if greeting:
            self._agent.greet(greeting, self._loop.time())
        self._wake.set()

    def _greeting(self) -> str | None:
        """The init's agent.first_message override if a string ('' = none), else the option."""
        override = self.record.init.conversation_config_override if self.record.init else None
        agent = (override or {}).get("agent")
        if isinstance(agent, dict) and isinstance(agent.get("first_message"), str):
            return str(agent["first_message"]) or None
        return self.options.first_message


def _event_id(wire: dict[str, Any]) -> int | str | None:
    """The event id of a wire message, top level or inside its payload object."""
    for value in (wire, *(v for v in wire.values() if isinstance(v, dict))):
        event_id = value.get("event_id")
        if isinstance(event_id, int | str) and not isinstance(event_id, bool):
            return event_id
    return None
