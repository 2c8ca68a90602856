"""The asyncio conversation client: one conversation over one WebSocket.

It carries out what the pure `Session` decides. Pongs go out on the receive path before anything
else is done with a frame; microphone audio flows capture -> bounded queue -> sender task, so
capture never waits on the network; agent audio flows receive -> `PlaybackQueue` -> player task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pi_agent.adapters.audio.aec import EchoCanceller, processor_class
from pi_agent.adapters.audio.devices import ChunkQueue, Microphone, Samples, Speaker
from pi_agent.adapters.link import MAX_FRAME_BYTES, Connector, LinkSettings, open_link
from pi_agent.adapters.tools import McpApprovals, ToolRegistry
from pi_agent.config import DEFAULT_AUDIO, AudioConfig
from pi_agent.core import protocol as p
from pi_agent.core.audio import formats
from pi_agent.core.audio.earcons import earcon
from pi_agent.core.audio.echo import EchoGuard
from pi_agent.core.audio.playback import PlaybackQueue
from pi_agent.core.audio.resample import Resampler
from pi_agent.core.bounds import RecentIds, printable, quote
from pi_agent.core.ending import EndKind, EndReason
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
from pi_agent.errors import AudioError, AuthError, LinkError, describe_unexpected

log = logging.getLogger(__name__)

# The service sends metadata right after the init message; 10 s covers a slow mobile link.
METADATA_TIMEOUT_S = 10.0
# Microphone audio kept while connecting (pre-roll) and when the sender falls behind.
CAPTURE_BACKLOG_S = 5.0
# The jitter buffer grows after underruns up to this much agent audio, no further.
MAX_JITTER_MS = 300
# Playback frames: short, so an interruption silences the speaker within one frame.
PLAYBACK_FRAME_MS = 20
# Audio handed to a speaker is heard a little later (device buffer and DAC); the echo guard
# counts this much on top of each frame's own duration.
SPEAKER_LATENCY_S = 0.1
# Upper bound on letting queued agent audio finish at an orderly end.
DRAIN_LIMIT_S = 30.0
# After the agent hangs up (end_call), audio still in flight may follow; wait this long
# for the server to close before closing ourselves.
HANGUP_GRACE_S = 3.0
# Tasks whose OSError is the sound card's: the conversation ends as `device`, not `internal`.
DEVICE_TASKS = frozenset({"microphone", "playback"})
# Tool calls held at once: running, or answered with the answer waiting to be sent. A server
# that floods calls and never reads gets the rest dropped (counted), not a task each.
MAX_PENDING_TOOL_CALLS = 32
# Tool call ids remembered to run each call once (a replayed call must not run twice).
TOOL_CALL_IDS_REMEMBERED = 1000
# Repeated protocol problems are logged this many times, then counted quietly.
PROBLEM_LOG_LIMIT = 5
# Close reason the vendor JS client uses when the user ends the conversation (reference 1.7).
USER_CLOSE_REASON = "User ended conversation"

Listener = Callable[[Action], None]
Watch = Callable[["Conversation"], Coroutine[Any, Any, None]]


def make_canceller(audio: AudioOptions, rate: int) -> EchoCanceller | None:
    """The microphone's echo canceller (and denoiser, leveller) these options ask for, or None:
    none asked for, or the binding is missing (logged once; `aec` then mutes instead)."""
    echo = audio.mic_while_speaking == "aec"
    if not (echo or audio.noise_suppression or audio.auto_gain) or processor_class() is None:
        return None
    return EchoCanceller(
        rate, echo=echo, noise_suppression=audio.noise_suppression, auto_gain=audio.auto_gain
    )


class GatedQueue(ChunkQueue):
    """The capture queue; push-to-talk gating and the echo guard apply as chunks arrive.

    Deciding on arrival (a few ms after capture), not when sending, keeps what was said while
    the button was held or before the agent spoke, even if it is sent later from the backlog.
    """

    def __init__(
        self,
        maxlen: int,
        guard: EchoGuard | None = None,
        canceller: EchoCanceller | None = None,
    ) -> None:
        super().__init__(maxlen)
        self.live = True
        self.guard = guard
        self.canceller = canceller

    def _gate(self, chunk: Samples) -> Samples:
        if not self.live:
            if self.canceller is not None:
                self.canceller.skip(len(chunk))
            return np.zeros_like(chunk)
        if self.canceller is not None:
            chunk = self.canceller.near(chunk)
        if self.guard is not None:
            return self.guard.process(chunk, asyncio.get_running_loop().time())
        return chunk

    def put_nowait(self, chunk: Samples) -> None:
        super().put_nowait(self._gate(chunk))

    async def put(self, chunk: Samples) -> None:
        await super().put(self._gate(chunk))


@dataclass(frozen=True, slots=True)
class AudioOptions:
    """How the audio path behaves: jitter buffer, echo guard, earcons (from `audio.*`)."""

    jitter_ms: int
    mic_while_speaking: str  # aec, mute, duck or open
    echo_tail_ms: int
    duck_db: float
    earcons: frozenset[str]
    earcon_volume: float
    noise_suppression: bool = False
    auto_gain: bool = False
    max_jitter_ms: int = MAX_JITTER_MS

    @classmethod
    def from_config(cls, audio: AudioConfig) -> AudioOptions:
        """The options of an `audio` section; earcons only on sound cards (a file records just
        the agent)."""
        e = audio.earcons
        wanted = {kind for kind, on in (("wake", e.wake), ("end", e.end), ("error", e.error)) if on}
        mode = audio.mic_while_speaking
        if mode == "aec" and audio.backend == "file":
            mode = "mute"  # no room between two WAV files: nothing to cancel, keep the guard
        return cls(
            jitter_ms=audio.jitter_ms,
            mic_while_speaking=mode,
            noise_suppression=audio.noise_suppression,
            auto_gain=audio.auto_gain,
            echo_tail_ms=audio.echo_tail_ms,
            duck_db=audio.duck_db,
            earcons=frozenset(wanted) if audio.backend != "file" else frozenset(),
            earcon_volume=e.volume,
        )


@dataclass(slots=True)
class Timeline:
    """Loop-clock timestamps of one conversation, for the transcript and benchmarks."""

    start: float = 0.0
    connected: float | None = None
    started: float | None = None
    first_audio: float | None = None
    input_finished: float | None = None
    first_audio_after_input: float | None = None
    ended: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


class Conversation:
    """One conversation: connect, stream both ways, end with a typed `EndReason`."""

    def __init__(
        self,
        link: LinkSettings,
        init: p.ConversationInitiationClientData,
        mic: Microphone,
        speaker: Speaker,
        *,
        max_duration_s: float = 600.0,
        tools: ToolRegistry | None = None,
        listener: Listener | None = None,
        connector: Connector = connect,
        audio: AudioOptions | None = None,
        canceller: EchoCanceller | None = None,
    ) -> None:
        self.link = link
        self.init = init
        self.mic = mic
        self.speaker = speaker
        self.max_duration_s = max_duration_s
        self.tools = tools or ToolRegistry()
        self._mcp = McpApprovals(self.tools.mcp_allow)
        self.listener = listener
        self.connector = connector
        self.audio = audio or AudioOptions.from_config(DEFAULT_AUDIO)
        # The daemon lends one canceller to every conversation, so it stays adapted to the room.
        self.canceller = canceller or make_canceller(self.audio, mic.sample_rate)
        if self.canceller is not None:
            self.canceller.new_stream()
        guard_mode = self.audio.mic_while_speaking
        if guard_mode == "aec":  # the canceller removes the echo; without it, mute instead
            guard_mode = "open" if self.canceller is not None else "mute"
        self.guard = EchoGuard(guard_mode, self.audio.echo_tail_ms / 1000, self.audio.duck_db)
        self.session = Session()
        self.timeline = Timeline()
        backlog = max(1, int(CAPTURE_BACKLOG_S * mic.sample_rate / mic.chunk_samples))
        self.capture = GatedQueue(backlog, self.guard, self.canceller)
        self.playback: PlaybackQueue | None = None
        self.playback_idle = asyncio.Event()
        self.playback_idle.set()
        self.chunks_sent = 0
        self.problems = 0
        self._ws: ClientConnection | None = None
        self._end: EndReason | None = None
        self._end_requested = asyncio.Event()
        self._started = asyncio.Event()
        self._audio_ready = asyncio.Event()
        self._out_resampler: Resampler | None = None
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._tool_call_ids = RecentIds(TOOL_CALL_IDS_REMEMBERED)
        self.tool_calls_dropped = 0  # refused: MAX_PENDING_TOOL_CALLS were pending
        self.tool_calls_repeated = 0  # ignored: a call id already run
        self._failure: tuple[str, BaseException] | None = None  # the first task that raised
        self._last_audio_id: int | None = None
        self._earcon_samples = 0  # samples of an earcon still to play (not agent speech)

    # ------------------------------------------------------------------ public API

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def audio_playing(self) -> bool:
        """Whether agent audio is queued or being played right now."""
        return not self.playback_idle.is_set()

    def end(self, reason: EndReason) -> None:
        """Ask for an orderly end: stop the microphone, let queued audio finish, close 1000."""
        if self._end is None:
            self._end = reason
        self._end_requested.set()

    def set_mic_live(self, live: bool) -> None:
        """Open the microphone, or send silence in its place (push-to-talk released)."""
        self.capture.live = live

    async def barge_in(self) -> None:
        """Local barge-in: silence the agent now and drop the rest of its current reply.

        The server keeps sending the interrupted reply until it hears the user, so the gate moves
        past its event id, as a server `interruption` would; the next reply has a higher id.
        """
        if self.playback is not None and self._last_audio_id is not None:
            self.playback.interrupt(self._last_audio_id + 1)
        self._earcon_samples = 0
        if self._out_resampler is not None:
            self._out_resampler.reset()
        await self.speaker.flush()
        self.guard.silence_now()

    async def send_contextual_update(self, text: str, context_id: str | None = None) -> None:
        """Background information for the agent; never interrupts it (reference 2.5)."""
        await self._send(p.encode(p.ContextualUpdate(text, context_id)))

    async def send_user_message(self, text: str) -> None:
        """Text handled as if the user had said it (reference 2.6)."""
        await self._send(p.encode(p.UserMessage(text)))

    async def send_user_activity(self) -> None:
        """Reset the agent's turn timeout without adding content (reference 2.7)."""
        await self._send(p.encode(p.UserActivity()))

    async def run(self, watch: Watch | None = None) -> EndReason:
        """Hold the whole conversation; `watch` runs beside it and may call `end()`."""
        loop = asyncio.get_running_loop()
        self.timeline.start = loop.time()
        capture_task = asyncio.create_task(self.mic.run(self.capture), name="microphone")
        capture_task.add_done_callback(self._task_done)
        try:
            try:
                self._ws = await open_link(self.link, connector=self.connector)
            except AuthError as exc:
                return self._finish(EndReason(EndKind.AUTH_FAILED, str(exc)))
            except LinkError as exc:
                return self._finish(EndReason(EndKind.CONNECT_FAILED, str(exc)))
            self.timeline.connected = loop.time()
            return self._finish(await self._converse(self._ws, watch))
        finally:
            capture_task.cancel()
            await asyncio.gather(capture_task, return_exceptions=True)
            for task in self._tool_tasks:
                task.cancel()
            await asyncio.gather(*self._tool_tasks, return_exceptions=True)
            if self._ws is not None:
                await self._ws.close()
            await self.speaker.close()

    # ------------------------------------------------------------------ internals

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A task of this conversation that raises ends it; the first failure gives the reason."""
        exc = None if task.cancelled() else task.exception()
        if exc is None or isinstance(exc, ConnectionClosed):
            return  # the link ended: its close code tells why, read by the receiver
        if self._failure is None:
            self._failure = (task.get_name(), exc)
            if isinstance(exc, OSError) and task.get_name() in DEVICE_TASKS:
                log.error("%s failed: %s", task.get_name(), exc)
            else:
                log.error("task %s of the conversation failed", task.get_name(), exc_info=exc)
        self._end_requested.set()

    def _failure_reason(self) -> EndReason | None:
        """The end a failed task gives: `device` for a sound card's error, else `internal`."""
        if self._failure is None:
            return None
        name, exc = self._failure
        if isinstance(exc, OSError) and name in DEVICE_TASKS:
            return EndReason(EndKind.DEVICE, str(exc))
        return EndReason(EndKind.INTERNAL, f"task {name} failed: {describe_unexpected(exc)}")

    def _finish(self, reason: EndReason) -> EndReason:
        self.timeline.ended = asyncio.get_running_loop().time()
        return reason

    async def _converse(self, ws: ClientConnection, watch: Watch | None) -> EndReason:
        # A server that refuses the conversation (unknown agent, bad token) may close before the
        # init is out; the error event it sent first is still read by the receiver below.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(p.encode(self.init))
        tasks: list[asyncio.Task[None]] = []
        waits: list[asyncio.Task[Any]] = []  # what the waits below wait on, stopped in the end

        def start(coro: Coroutine[Any, Any, Any], name: str, into: list[Any]) -> asyncio.Task[Any]:
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            into.append(task)
            return task

        receiver = start(self._receive(ws), "receive", waits)
        started = start(self._started.wait(), "wait-metadata", waits)
        try:
            try:
                async with asyncio.timeout(METADATA_TIMEOUT_S):
                    await asyncio.wait([receiver, started], return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                return EndReason(
                    EndKind.PROTOCOL,
                    "the server sent no conversation_initiation_metadata within "
                    f"{METADATA_TIMEOUT_S:.0f} s",
                )
            if self._failure is not None or receiver.done():
                return self._failure_reason() or self._closed_reason(ws)
            uplink = start(self._send_audio(ws), "uplink", tasks)
            start(self._play(), "playback", tasks)
            if watch is not None:
                start(watch(self), "watch", tasks)
            limit = start(asyncio.sleep(self.max_duration_s), "time-limit", waits)
            ender = start(self._end_requested.wait(), "end-request", waits)
            done, _ = await asyncio.wait(
                [receiver, limit, ender], return_when=asyncio.FIRST_COMPLETED
            )
            limit.cancel()
            ender.cancel()
            failed = self._failure_reason()
            if failed is not None:
                await self._earcon("error")
                return failed
            if receiver in done:
                # The server closed. After a normal close or a hang-up, let the reply finish.
                reason = self._closed_reason(ws)
                if reason.ok:
                    await self._drain_playback()
                await self._earcon("end" if reason.ok else "error")
                return reason
            if limit in done:
                return EndReason(
                    EndKind.TIME_LIMIT,
                    f"the conversation reached its {self.max_duration_s:g} s limit",
                )
            reason = self._end or EndReason(EndKind.LOCAL, "ended on request")
            await self._stop_task(uplink)  # the user's turn is over
            await self._drain_playback()
            await ws.close(p.CloseCode.NORMAL, USER_CLOSE_REASON)
            await self._earcon("end" if reason.ok else "error")
            return reason
        finally:
            for task in [*tasks, *waits]:
                await self._stop_task(task)

    async def _stop_task(self, task: asyncio.Task[Any]) -> None:
        """Cancel a helper task and wait for it; our own cancellation still propagates."""
        task.cancel()
        await asyncio.wait([task])
        exc = None if task.cancelled() else task.exception()
        already = self._failure is not None and self._failure[1] is exc
        if exc is not None and not already and not isinstance(exc, ConnectionClosed):
            log.error("task %s failed: %r", task.get_name(), exc)

    def _closed_reason(self, ws: ClientConnection) -> EndReason:
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            return self.session.end_reason(rcvd.code, rcvd.reason)
        sent = ws.protocol.close_sent
        if sent is not None and sent.code == p.CloseCode.TOO_BIG:
            return EndReason(
                EndKind.CONNECTION_LOST,
                f"the server sent a frame over the {MAX_FRAME_BYTES // 2**20} MiB limit; "
                "we closed the connection",
                sent.code,
            )
        if sent is not None and sent.code == p.CloseCode.INTERNAL:
            return EndReason(
                EndKind.CONNECTION_LOST,
                "the server stopped answering keepalive pings; the link is dead",
                sent.code,
            )
        return self.session.end_reason(None, "")

    async def _drain_playback(self) -> None:
        try:
            async with asyncio.timeout(DRAIN_LIMIT_S):
                await self.playback_idle.wait()
                await self.speaker.drain()
        except TimeoutError:
            log.warning("playback did not finish within %.0f s; cutting it off", DRAIN_LIMIT_S)
        except AudioError as exc:  # the conversation is ending anyway: its reason stands
            log.warning("the speaker failed while the last audio played: %s", exc)

    async def _earcon(self, kind: str) -> None:
        """Play an earcon now (after the agent's audio), if enabled and the speaker is open."""
        queue = self.playback
        if kind not in self.audio.earcons or queue is None:
            return
        queue.clear()
        now = asyncio.get_running_loop().time()
        sound = earcon(kind, queue.sample_rate, self.audio.earcon_volume)
        queue.push(queue.gate, sound, now)
        self._earcon_samples = len(sound)
        self.playback_idle.clear()
        self._audio_ready.set()
        await self._drain_playback()

    async def _send(self, text: str) -> None:
        if self._ws is None or not self._started.is_set():
            raise LinkError("no conversation is running")
        await self._ws.send(text)

    async def _receive(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for frame in ws:
                for action in self.session.on_frame(frame, loop.time()):
                    if isinstance(action, SendFrame):
                        await ws.send(action.text)  # the pong, before anything else
                    else:
                        await self._act(action)
                if self.session.agent_hung_up and self._end is None:
                    self._hang_up_later()
        except ConnectionClosed:
            pass

    def _hang_up_later(self) -> None:
        """After end_call, close ourselves if the server does not within a grace period."""
        self._end = EndReason(EndKind.AGENT_ENDED, "the agent ended the call")

        async def close_after_grace() -> None:
            await asyncio.sleep(HANGUP_GRACE_S)
            await self.playback_idle.wait()
            self._end_requested.set()

        task = asyncio.create_task(close_after_grace(), name="hangup-grace")
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)
        task.add_done_callback(self._task_done)

    async def _act(self, action: Action) -> None:
        loop = asyncio.get_running_loop()
        match action:
            case Play(event_id=event_id, samples=samples):
                self._queue_audio(event_id, samples, loop.time())
            case Interrupt(event_id=event_id):
                await self._interrupt(event_id)
            case MetadataReceived():
                await self._start_audio(action)
                self.timeline.started = loop.time()
                self._started.set()
            case ToolCall(call=call):
                self._start_tool(call)
            case Notice(event=p.McpToolCall() as mcp):
                answer = self._mcp.answer(mcp)  # MCP approval: fails closed, once per id (2.9)
                if answer is not None:
                    with contextlib.suppress(ConnectionClosed, LinkError):
                        await self._send(p.encode(answer))
            case Problem(text=text):
                self.problems += 1
                level = logging.WARNING if self.problems <= PROBLEM_LOG_LIMIT else logging.DEBUG
                log.log(level, "%s", printable(text))
            case Line() | Notice():
                pass
        if self.listener is not None:
            self.listener(action)

    def _start_tool(self, call: p.ClientToolCall) -> None:
        """Run a tool call once per id, and only while few are pending."""
        if not self._tool_call_ids.first_time(call.tool_call_id):
            self.tool_calls_repeated += 1
            self._note_refused_call(f"call id {call.tool_call_id!r} was already run")
            return
        if len(self._tool_tasks) >= MAX_PENDING_TOOL_CALLS:
            self.tool_calls_dropped += 1
            self._note_refused_call(f"{MAX_PENDING_TOOL_CALLS} calls are pending")
            return
        task = asyncio.create_task(self._run_tool(call), name=f"tool-{quote(call.tool_name)}")
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)
        task.add_done_callback(self._task_done)

    def _note_refused_call(self, why: str) -> None:
        refused = self.tool_calls_repeated + self.tool_calls_dropped
        level = logging.WARNING if refused == 1 else logging.DEBUG  # once per conversation
        log.log(level, "ignored a client tool call: %s (%d ignored so far)", why, refused)

    async def _start_audio(self, started: MetadataReceived) -> None:
        rate = await self.speaker.device_rate(started.output_format.sample_rate)
        await self.speaker.open(rate)
        self.playback = PlaybackQueue(
            max(1, rate * PLAYBACK_FRAME_MS // 1000),
            sample_rate=rate,
            target_ms=self.audio.jitter_ms,
            max_target_ms=self.audio.max_jitter_ms,
        )
        if rate != started.output_format.sample_rate:
            self._out_resampler = Resampler(started.output_format.sample_rate, rate)
        if "wake" in self.audio.earcons:
            now = asyncio.get_running_loop().time()
            sound = earcon("wake", rate, self.audio.earcon_volume)
            self.playback.push(0, sound, now)
            self._earcon_samples = len(sound)
            self.playback_idle.clear()
        self._audio_ready.set()

    def _queue_audio(self, event_id: int, samples: Samples, now: float) -> None:
        assert self.playback is not None
        self._last_audio_id = event_id
        if event_id < self.playback.gate:
            self.playback.push(event_id, samples)  # counted as stale, not resampled
            return
        queue = self.playback
        overflow = queue.overflow_samples
        if self._out_resampler is not None:
            # Cut what cannot be queued before resampling: a 16 MiB frame of 8 kHz audio would
            # be 150 MB at 48 kHz.
            ratio = queue.sample_rate / self._out_resampler.src_rate
            fits = math.ceil(queue.room / ratio) + 1
            if len(samples) > fits:
                queue.overflowed(int((len(samples) - fits) * ratio))
                samples = samples[:fits]
            samples = self._out_resampler.process(samples)
        accepted = queue.push(event_id, samples, now)
        if queue.overflow_samples and not overflow:  # once per conversation
            log.warning(
                "dropping agent audio beyond %.0f s queued for the speaker",
                queue.max_queued / queue.sample_rate,
            )
        if accepted:
            if self.timeline.first_audio is None:
                self.timeline.first_audio = now
            if self.mic.finished and self.timeline.first_audio_after_input is None:
                self.timeline.first_audio_after_input = now
            self.playback_idle.clear()
            self._audio_ready.set()

    async def _interrupt(self, event_id: int) -> None:
        if self.playback is None:
            return
        dropped = self.playback.interrupt(event_id)
        self._earcon_samples = 0
        if self._out_resampler is not None:
            self._out_resampler.reset()
        await self.speaker.flush()
        self.guard.silence_now()
        log.debug("interruption %d: dropped %d queued samples", event_id, dropped)

    async def _play(self) -> None:
        await self._audio_ready.wait()
        queue = self.playback
        assert queue is not None
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            frame = queue.pop(now)
            if frame is None:
                self._audio_ready.clear()
                if queue.queued_samples:  # filling the jitter buffer: wait for data or time
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(queue.target / queue.sample_rate):
                            await self._audio_ready.wait()
                    continue
                self.playback_idle.set()
                await self._audio_ready.wait()
                continue
            if self.canceller is not None:  # what the microphone is about to hear
                self.canceller.far(frame, queue.sample_rate)
            await self.speaker.play(frame)
            if self._earcon_samples > 0:
                # An earcon is ours, not the agent's: the user may talk over the chime.
                self._earcon_samples -= len(frame)
            else:
                heard_until = loop.time() + len(frame) / queue.sample_rate + SPEAKER_LATENCY_S
                self.guard.agent_audible(heard_until)

    async def _send_audio(self, ws: ClientConnection) -> None:
        fmt = self.session.input_format
        assert fmt is not None
        resampler = Resampler(self.mic.sample_rate, fmt.sample_rate)
        loop = asyncio.get_running_loop()
        while True:
            chunk = await self.capture.get()
            if self.mic.finished and self.timeline.input_finished is None:
                self.timeline.input_finished = loop.time()
            data = formats.encode(resampler.process(chunk), fmt)
            if data:
                await ws.send(p.encode_audio_chunk(data))
                self.chunks_sent += 1

    async def _run_tool(self, call: p.ClientToolCall) -> None:
        result, is_error = await self.tools.call(call.tool_name, call.parameters)
        with contextlib.suppress(ConnectionClosed, LinkError):
            await self._send(p.encode(p.ClientToolResult(call.tool_call_id, result, is_error)))
