"""The orchestrator of `pi-agent run`: owns every long-lived task, dispatches, shuts down.

Events from the button, signals, the control socket, the wake word and the running conversation
go through one queue into the pure state machine (`pi_agent.core.machine`); its commands come
back here and are carried out on the adapters, which `pi_agent.wiring` builds.

Failures are designed outcomes: a long-lived task that raises stops the daemon in its normal
order with exit 70, so systemd restarts it (the LED animation is restarted in place a few times
first); an unexpected exception inside a conversation ends that conversation as `internal` and
the daemon goes on. The watchdog is fed only while the dispatcher makes progress, every task is
alive and no state has outlived its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from pi_agent.adapters.audio.aec import EchoCanceller
from pi_agent.adapters.audio.capture import CaptureHub
from pi_agent.adapters.audio.devices import Microphone, Speaker
from pi_agent.adapters.builtins import end_when_asked
from pi_agent.adapters.client import Conversation, Watch, make_canceller
from pi_agent.adapters.context import TranscriptLog, explain_end, send_periodic_context
from pi_agent.adapters.control import ControlServer, socket_path
from pi_agent.adapters.hardware.button import (
    ButtonInput,
    ButtonLongPress,
    ButtonPressed,
    ButtonReleased,
)
from pi_agent.adapters.hardware.leds import LedController, make_leds
from pi_agent.adapters.hardware.pins import make_pin_factory
from pi_agent.adapters.link import Connector
from pi_agent.adapters.systemd import Notifier, log_context
from pi_agent.adapters.wakeword import Detection, WakeWordListener
from pi_agent.config import Config, load_config
from pi_agent.core import machine as sm
from pi_agent.core import protocol as p
from pi_agent.core.backoff import CONNECT_RETRIES, should_retry
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.core.session import Action, Interrupt, Line, MetadataReceived, Notice, Play
from pi_agent.core.states import State
from pi_agent.errors import EX_OK, EX_SOFTWARE, ConfigError, describe_unexpected
from pi_agent.wiring import (
    audio_options,
    build_conversation,
    build_link,
    device_hooks,
    open_devices,
    retry_spacing,
    state_bounds,
)

log = logging.getLogger(__name__)

TICK_S = 0.5  # idle timeout and error display resolution; also the watchdog's heartbeat
SHUTDOWN_STEP_S = 3.0  # each shutdown step (conversation end, tasks, devices) gets this long
# The server's vad_score above which the user counts as speaking (LED and state).
VAD_SPEECH = 0.5
# The LED animation holds no state worth keeping: it is restarted in place this many times.
LED_RESTARTS = 3
# A daemon that stays unhealthy this long stops itself (exit 70), in case no watchdog watches.
UNHEALTHY_EXIT_S = 30.0
DevicesFactory = Callable[[Config], tuple[Microphone, Speaker]]
TaskFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Stats:
    """Counters for `pi-agent status`."""

    conversations: int = 0
    failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Supervised:
    name: str
    start: TaskFactory
    restarts_left: int
    task: asyncio.Task[None] | None = None


class Supervisor:
    """The daemon's long-lived tasks, by name: a task that raises is restarted or is fatal.

    A task restarted in place must hold no state worth keeping (an LED animation); any other
    failure calls `on_fatal(name, exc)` once, and the daemon stops with exit 70.
    """

    def __init__(self, on_fatal: Callable[[str, BaseException], None]) -> None:
        self._on_fatal = on_fatal
        self._tasks: dict[str, _Supervised] = {}
        self._stopping = False

    def spawn(self, name: str, start: TaskFactory, *, restarts: int = 0) -> None:
        """Run `start()` as the task `name`; restart it up to `restarts` times if it raises."""
        entry = _Supervised(name, start, restarts)
        self._tasks[name] = entry
        self._start(entry)

    def _start(self, entry: _Supervised) -> None:
        entry.task = asyncio.create_task(entry.start(), name=entry.name)
        entry.task.add_done_callback(lambda task: self._done(entry, task))

    def _done(self, entry: _Supervised, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            log.info("task %s finished", entry.name)  # e.g. a file microphone ran out
            return
        if entry.restarts_left > 0:
            entry.restarts_left -= 1
            log.error(
                "task %s failed; restarting it (%d restart(s) left)",
                entry.name,
                entry.restarts_left,
                exc_info=exc,
            )
            self._start(entry)
            return
        self._on_fatal(entry.name, exc)

    def failed(self) -> list[str]:
        """Names of tasks that ended with an exception (none while healthy)."""
        return [
            e.name
            for e in self._tasks.values()
            if e.task is not None
            and e.task.done()
            and not e.task.cancelled()
            and e.task.exception() is not None
        ]

    async def stop(self) -> None:
        """Cancel every task, newest first, each step bounded."""
        self._stopping = True
        for entry in reversed(list(self._tasks.values())):
            if entry.task is not None:
                entry.task.cancel()
                await bounded(entry.task, entry.name)


async def bounded(task: asyncio.Task[Any], name: str) -> None:
    """Wait for `task` up to SHUTDOWN_STEP_S, then cancel it and go on."""
    done, _ = await asyncio.wait([task], timeout=SHUTDOWN_STEP_S)
    if not done:
        log.warning("%s did not stop within %.0f s; abandoning it", name, SHUTDOWN_STEP_S)
        task.cancel()


class Daemon:
    """`pi-agent run`: wait for triggers, hold conversations, show state; until SIGTERM."""

    def __init__(
        self,
        cfg: Config,
        config_path: Path | None = None,
        *,
        devices: DevicesFactory = open_devices,
        pin_factory: Any = None,
        connector: Connector = connect,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.devices = devices
        self.pin_factory = (
            pin_factory if pin_factory is not None else make_pin_factory(cfg.button.pin_factory)
        )
        self.connector = connector
        self.notifier = notifier or Notifier()
        self.machine = sm.Machine(self._machine_config(cfg))
        self.bounds = state_bounds(cfg)
        self.events: asyncio.Queue[sm.Event] = asyncio.Queue()
        self.stats = Stats()
        self.supervisor = Supervisor(self._fatal)
        self.exit_code = EX_OK
        self.unhealthy: str | None = None  # why the watchdog is not fed, while it is not
        self.conv: Conversation | None = None
        self._conv_task: asyncio.Task[None] | None = None
        self._conv_started_at = 0.0
        self._audio_started = asyncio.Event()
        self._stop = asyncio.Event()
        self._give_up = asyncio.Event()  # the user ended the attempt: no more retries
        # Spaces out connects while the service is unreachable; the quick retries of one connect.
        self.backoff, self._connect_retry = retry_spacing()
        self._reload_pending = False
        self._handled = 0  # events the dispatcher finished: its progress, for the watchdog
        self._unhealthy_since: float | None = None
        self.health_checks = 0  # ticks that checked health (tests wait on it, not on time)
        self.leds: LedController | None = None
        self.button: ButtonInput | None = None
        self.control: ControlServer | None = None
        self.hub: CaptureHub | None = None
        self.speaker: Speaker | None = None
        self.wakeword: WakeWordListener | None = None
        self.canceller: EchoCanceller | None = None
        self.transcript = TranscriptLog(None, enabled=False)

    @staticmethod
    def _machine_config(cfg: Config) -> sm.MachineConfig:
        return sm.MachineConfig(
            mode=cfg.button.mode,
            idle_timeout_s=cfg.conversation.idle_timeout_s,
            error_display_s=cfg.conversation.error_display_s,
        )

    # ---------------------------------------------------------------- life cycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal failure; returns the exit status (0 or 70)."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            await self._build(loop)
            self.notifier.ready()
            self._status("idle: waiting for a trigger")
            log.info("pi-agent ready (agent %s)", self.cfg.agent.agent_id)
            await self._stop.wait()
            self.notifier.stopping()
            log.info("stopping")
        finally:
            await self._shutdown()
            self._remove_signals(loop)
        return self.exit_code

    def stop(self, exit_code: int = EX_OK) -> None:
        """Ask the daemon to shut down (SIGTERM does this); a non-zero code is kept."""
        self.exit_code = self.exit_code or exit_code
        self._stop.set()

    def post(self, event: sm.Event) -> None:
        """Queue an event for the state machine (call on the loop thread)."""
        self.events.put_nowait(event)

    async def _build(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.cfg
        # Opening and probing sound cards blocks; the loop stays free for signals meanwhile.
        mic, self.speaker = await asyncio.to_thread(self.devices, cfg)
        self.hub = CaptureHub(mic, cfg.audio.preroll_ms)
        # One echo canceller for the daemon's life: it keeps what it learnt of the room.
        self.canceller = make_canceller(audio_options(cfg), self.hub.sample_rate)
        if cfg.wakeword.enabled:  # loads the model first: a missing extra fails before anything
            self.wakeword = WakeWordListener.from_config(
                cfg.wakeword, self.hub.sample_rate, self._on_wake_word
            )
            self.hub.add_idle_listener(self.wakeword.feed)
        self.leds = LedController(make_leds(cfg.leds, self.pin_factory), cfg.leds.patterns)
        if cfg.button.pin is not None:
            self.button = ButtonInput(cfg.button, self.pin_factory, loop, self._on_button)
        self.control = ControlServer(
            socket_path(cfg.control.socket), self._on_control, cfg.control.group
        )
        await self.control.start()
        self.leds.show(State.IDLE)
        spawn = self.supervisor.spawn
        spawn("capture", self.hub.run_device)
        if self.wakeword is not None:
            spawn("wakeword", self.wakeword.run)
        spawn("leds", self.leds.run, restarts=LED_RESTARTS)
        spawn("dispatch", self._dispatch)
        spawn("tick", self._tick)

    def _fatal(self, name: str, exc: BaseException) -> None:
        """A long-lived task failed: log it once with its traceback and stop with exit 70."""
        if self.exit_code == EX_OK:
            log.error(
                "task %s failed; stopping with exit %d so that systemd restarts pi-agent",
                name,
                EX_SOFTWARE,
                exc_info=exc,
            )
            self._status(f"failed: task {name}: {describe_unexpected(exc)}")
        self.stop(EX_SOFTWARE)

    async def _shutdown(self) -> None:
        """Reverse order, each step bounded: conversation, tasks, control, button, LEDs."""
        if self.conv is not None:
            self.conv.end(EndReason(EndKind.LOCAL, "shutting down"))
        if self._conv_task is not None:
            await bounded(self._conv_task, "conversation")
        await self.supervisor.stop()
        for name, close in (
            ("control socket", self.control.close if self.control else None),
            ("speaker", self.speaker.close if self.speaker else None),
        ):
            if close is not None:
                try:
                    async with asyncio.timeout(SHUTDOWN_STEP_S):
                        await close()
                except Exception:  # shutting down: say what failed and go on
                    log.warning("could not close the %s", name, exc_info=True)
        if self.button is not None:
            self.button.close()
        if self.leds is not None:
            self.leds.close()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGUSR1, self.post, sm.Wake("SIGUSR1"))
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)

    @staticmethod
    def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # ---------------------------------------------------------------- health and time

    async def _tick(self) -> None:
        """Time for the machine, and the watchdog: fed only while the daemon is healthy."""
        loop = asyncio.get_running_loop()
        handled_before = self._handled - 1  # the first tick counts as progress
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self._check_health(now, progressed=self._handled != handled_before)
            handled_before = self._handled
            self.post(sm.Tick())

    def health(self, now: float, *, progressed: bool) -> str | None:
        """Why the daemon is not healthy at `now`, or None when it is."""
        if not progressed:
            return "the dispatcher has not handled an event since the last tick"
        failed = self.supervisor.failed()
        if failed:
            return f"task {', '.join(failed)} failed"
        return self.machine.overdue(now, self.bounds)

    def _check_health(self, now: float, *, progressed: bool) -> None:
        self.health_checks += 1
        why = self.health(now, progressed=progressed)
        if why is None:
            if self.unhealthy is not None:
                log.warning("healthy again; feeding the watchdog")
            self.unhealthy, self._unhealthy_since = None, None
            self.notifier.watchdog()
            return
        if self.unhealthy is None:
            log.error("not healthy: %s; the watchdog is no longer fed", why)
            self._status(f"unhealthy: {why}")
            self._unhealthy_since = now
        self.unhealthy = why
        assert self._unhealthy_since is not None
        if now - self._unhealthy_since >= UNHEALTHY_EXIT_S:
            self._fatal("health", RuntimeError(f"unhealthy for {UNHEALTHY_EXIT_S:g} s: {why}"))

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            event = await self.events.get()
            for command in self.machine.handle(event, loop.time()):
                await self._execute(command)
            self._handled += 1
            for violation in self.machine.violations:
                log.error("state machine: unhandled %s", violation)
            self.machine.violations.clear()

    async def _execute(self, command: sm.Command) -> None:
        match command:
            case sm.StateChanged(new=new, why=why):
                self._state_changed(new, why)
            case sm.StartConversation():
                self._start_conversation()
            case sm.EndConversation(why=why):
                self._give_up.set()  # also stops a connect retry or back-off wait
                if self.conv is not None:
                    self.conv.end(EndReason(EndKind.LOCAL, why))
            case sm.SetMic(live=live):
                if self.conv is not None:
                    self.conv.set_mic_live(live)
            case sm.FlushPlayback():
                if self.conv is not None:
                    await self.conv.barge_in()

    def _state_changed(self, new: State, why: str) -> None:
        if self.leds is not None:
            self.leds.show(new)
        log_context(state=new.value, conversation_id=self.machine.conversation_id)
        self._status(f"{new.value}: {why}")
        log.info("state %s (%s)", new.value, why)
        if new in (State.IDLE, State.MUTED) and self._reload_pending:
            self._reload_pending = False
            self._reload()

    def _status(self, text: str) -> None:
        self.notifier.status(text)

    # ---------------------------------------------------------------- conversations

    def _start_conversation(self) -> None:
        self.stats.conversations += 1
        self._conv_started_at = time.monotonic()
        self._give_up.clear()
        self._conv_task = asyncio.create_task(self._conversation(), name="conversation")

    async def _conversation(self) -> None:
        """One conversation, whatever happens inside it: it always ends with a typed reason."""
        try:
            reason = await self._hold()
        except Exception as exc:
            log.error("the conversation failed inside pi-agent", exc_info=exc)
            reason = EndReason(EndKind.INTERNAL, describe_unexpected(exc))
        conv, self.conv = self.conv, None
        if self.leds is not None:
            self.leds.override(None)  # a set_led pattern lasts one conversation
        if reason.policy.failure:
            self.stats.failures += 1
            log.error("conversation failed: %s", reason)
        else:
            log.info("conversation ended: %s", reason)
        self.stats.last = {
            "conversation_id": conv.session.conversation_id if conv is not None else None,
            "duration_s": round(time.monotonic() - self._conv_started_at, 1),
            "end": str(reason),
        }
        self.post(sm.Ended(reason))

    def _make(self, end_asked: asyncio.Event) -> Callable[[], Conversation]:
        """A maker of this trigger's Conversation (each connect retry gets a fresh one)."""
        assert self.hub is not None
        assert self.speaker is not None
        cfg, hub, speaker = self.cfg, self.hub, self.speaker
        link = build_link(cfg)  # reads the key file now: a fixed key needs no restart
        set_led = self.leds.override if self.leds is not None else None
        hooks = device_hooks(speaker, set_led=set_led, end_conversation=end_asked.set)

        def make() -> Conversation:
            conv = build_conversation(
                cfg,
                hub.borrow(),
                speaker,
                hooks=hooks,
                listener=self._on_action,
                connector=self.connector,
                link=link,
                canceller=self.canceller,
            )
            conv.set_mic_live(self.machine.mic_live)
            return conv

        return make

    def _watch(self, end_asked: asyncio.Event) -> Watch:
        """What runs beside a conversation: playback, periodic context, end_conversation."""
        periodic = self.cfg.context.periodic

        async def watch(conv: Conversation) -> None:
            def ended() -> None:
                self.post(sm.EndRequest("the agent ended the conversation"))

            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_playback(conv), name="watch-playback")
                group.create_task(send_periodic_context(conv, periodic), name="periodic-context")
                group.create_task(
                    end_when_asked(end_asked, conv.playback_idle, ended), name="end-when-asked"
                )

        return watch

    async def _hold(self) -> EndReason:
        """Hold one conversation; a failed connect is retried a few times before it counts."""
        loop = asyncio.get_running_loop()
        end_asked = asyncio.Event()  # set by the end_conversation tool
        try:
            make = self._make(end_asked)
        except ConfigError as exc:  # the key file went missing or bad since start-up
            return EndReason(EndKind.AUTH_FAILED, str(exc))
        watch = self._watch(end_asked)
        # After repeated failures (the Wi-Fi is down), presses do not hammer the service.
        spacing = self.backoff.wait_s(loop.time())
        if spacing > 0:
            log.info("waiting %.1f s before connecting again", spacing)
            if await self._wait_or_give_up(spacing):
                return EndReason(EndKind.LOCAL, "ended before connecting")
        retry = self._connect_retry
        retry.reset()
        while True:
            conv = self.conv = make()
            reason = explain_end(await conv.run(watch))
            if (
                conv.started  # never retry behind the user's back once they could talk
                or self._give_up.is_set()
                or retry.attempts >= CONNECT_RETRIES
                or not should_retry(reason)
            ):
                break
            delay = retry.next_delay()
            log.warning("could not connect (%s); trying again in %.1f s", reason, delay)
            if await self._wait_or_give_up(delay):
                break
        if reason.ok or not should_retry(reason):
            self.backoff.reset()
        else:
            self.backoff.failed(loop.time())
        return reason

    async def _wait_or_give_up(self, seconds: float) -> bool:
        """Sleep, unless the user ends the attempt first; True when they did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._give_up.wait()
        return self._give_up.is_set()

    async def _watch_playback(self, conv: Conversation) -> None:
        """Tell the machine when the agent's audio has run out."""
        while True:
            await self._audio_started.wait()
            self._audio_started.clear()
            await conv.playback_idle.wait()
            self.post(sm.AgentDone())

    def _on_action(self, action: Action) -> None:
        match action:
            case MetadataReceived(conversation_id=cid):
                self.transcript = TranscriptLog(cid, self.cfg.logging.transcripts)
                self.post(sm.Started(cid))
            case Play():
                self._audio_started.set()
                self.post(sm.AgentAudio())
            case Interrupt():
                self.post(sm.Interrupted())
            case Line(role=role):
                if role == "user":
                    self.post(sm.UserTurn())
                self.transcript.add(action)
            case Notice(event=p.VadScore(vad_score=score)) if score >= VAD_SPEECH:
                self.post(sm.UserSpeech())
            case _:
                pass

    # ---------------------------------------------------------------- triggers

    def _on_wake_word(self, detection: Detection) -> None:
        """Wake on a detection made while idle; the wake word is cut from the pre-roll."""
        if self.hub is None or not self.hub.idle:
            return  # a conversation began while the detection was on its way
        assert self.wakeword is not None
        self.hub.drop_wake_word(detection.position, self.wakeword.min_tail, self.wakeword.max_tail)
        log.info("wake word detected (score %.2f)", detection.score)
        self.post(sm.Wake("wake word"))

    def _on_button(self, event: object) -> None:
        if isinstance(event, ButtonPressed):
            self.post(sm.Press())
        elif isinstance(event, ButtonReleased):
            self.post(sm.Release(event.held_s))
        elif isinstance(event, ButtonLongPress):
            self.post(sm.LongPress())

    async def _on_control(self, cmd: str, text: str) -> dict[str, Any]:
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "wake":
            self.post(sm.Wake("control"))
        elif cmd == "end":
            self.post(sm.EndRequest("pi-agent end"))
        elif cmd == "mute":
            self.post(sm.MuteToggle())
        else:
            conv = self.conv
            if conv is None or not conv.started:
                return {"ok": False, "error": "no conversation is running; `pi-agent wake` first"}
            if cmd == "say":
                await conv.send_user_message(text)
            else:
                await conv.send_contextual_update(text)
        return {"ok": True, "state": self.machine.state.value}

    def status(self) -> dict[str, Any]:
        """State, conversation id, RTT, uptime, health and counters (never secrets)."""
        conv = self.conv
        return {
            "state": self.machine.state.value,
            "conversation_id": self.machine.conversation_id,
            "rtt_ms": conv.session.rtt_ms if conv is not None else None,
            "uptime_s": round(time.monotonic() - self.stats.started_at, 1),
            "conversations": self.stats.conversations,
            "failures": self.stats.failures,
            "last_conversation": self.stats.last or None,
            "healthy": self.unhealthy is None,
            "unhealthy": self.unhealthy,
            "pid": os.getpid(),
        }

    # ---------------------------------------------------------------- reload

    def _request_reload(self) -> None:
        if self.machine.state in (State.IDLE, State.MUTED, State.ERROR):
            self._reload()
        else:
            log.info("SIGHUP: reloading once the conversation ends")
            self._reload_pending = True

    def _reload(self) -> None:
        """Re-read the config; conversation settings apply now, an invalid file changes nothing."""
        if self.config_path is None:
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
        else:
            hardware = ("audio", "button", "leds", "control", "wakeword")
            changed = [name for name in hardware if getattr(new, name) != getattr(self.cfg, name)]
            if changed:
                log.warning(
                    "reload: %s changed; restart the service to apply them", ", ".join(changed)
                )
            self.cfg = new
            self.machine.config = self._machine_config(new)
            self.bounds = state_bounds(new)
            logging.getLogger().setLevel(new.logging.level.upper())
            log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready()
        self._status(f"{self.machine.state.value}: configuration reloaded")
