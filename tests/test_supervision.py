"""Every task the daemon creates, failed on purpose: a known state, or exit 70 for systemd.

An unexpected RuntimeError is thrown into each task at the await it is suspended on, as a failing
library call would raise it. Daemon-lifetime tasks stop the daemon in order with exit 70 (the LED
animation is restarted in place a few times first); a failure inside a conversation ends it as
`internal`, shows the error, counts it, and the next trigger works. A wedged state stops the
watchdog on a real NOTIFY_SOCKET. docs/reliability.md has the table these tests measure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from pi_agent import app
from pi_agent.adapters.control import request
from pi_agent.app import LED_RESTARTS, Daemon
from pi_agent.core.machine import StateBounds
from pi_agent.errors import EX_SOFTWARE
from pi_agent.testing import inject_failure
from tests.beds.daemon import Bed, daemon_bed
from tests.helpers import run

INJECT_TRIES = 200  # loop turns to wait for a task to be suspended on a plain future
POLL_S = 0.01
WAIT_S = 15.0


class Injected(RuntimeError):
    """The unexpected exception the tests throw in."""


def tasks_named(name: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]


async def inject(name: str) -> asyncio.Task[Any]:
    """Throw Injected into the live task called `name`; returns the task."""
    async with asyncio.timeout(WAIT_S):
        while True:
            for task in tasks_named(name):
                if inject_failure(task, Injected(f"injected into {name}")):
                    return task
            await asyncio.sleep(POLL_S)


async def until(condition: Any, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - state of another component, polled
            await asyncio.sleep(POLL_S)


def failure_logged(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """ERROR records naming the task, with the injected exception's traceback."""
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR
        and name in r.getMessage()
        and r.exc_info is not None
        and any(isinstance(e, Injected) for e in _chain(r.exc_info[1]))
    ]


def _chain(exc: BaseException | None) -> list[BaseException]:
    """`exc`, the exceptions of a group, and their causes."""
    out: list[BaseException] = []
    while exc is not None:
        out.append(exc)
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                out.extend(_chain(inner))
        exc = exc.__cause__ or exc.__context__
    return out


# ------------------------------------------------------------------ daemon-lifetime tasks


DAEMON_TASKS: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("capture", {}),
    ("dispatch", {}),
    ("tick", {}),
    ("wakeword", {"wakeword": {"enabled": True}}),  # only there when the wake word is on
]


@pytest.mark.parametrize(("name", "sections"), DAEMON_TASKS, ids=[n for n, _ in DAEMON_TASKS])
def test_a_failing_daemon_task_stops_the_daemon_in_order_with_exit_70(
    tmp_path: Path, name: str, sections: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path, None, **sections) as bed:
            await bed.notify.wait_message("WATCHDOG=1")
            await inject(name)
            assert await asyncio.wait_for(bed.task, WAIT_S) == EX_SOFTWARE
            messages = bed.notify.drain()
            assert any("STOPPING=1" in m for m in messages)
            assert bed.rgb() == (0.0, 0.0, 0.0)  # LEDs off
            assert not bed.control.exists()  # socket removed

    with caplog.at_level(logging.ERROR, logger="pi_agent"):
        run(main())
    assert len(failure_logged(caplog, f"task {name} failed")) == 1  # logged once


def test_the_led_animation_is_restarted_in_place_then_is_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            first = await inject("leds")
            await until(lambda: any(t is not first for t in tasks_named("leds")), "a new task")
            # Still in service: a trigger changes the LEDs, the daemon counts as healthy.
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            assert bed.rgb() == (0.0, 0.0, 1.0)  # blue: listening
            status = await request(bed.control, "status")
            assert status["healthy"] is True
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")
            for _ in range(LED_RESTARTS):  # the rest of the restarts, then one too many
                before = tasks_named("leds")
                await inject("leds")
                if not bed.task.done():
                    await until(
                        lambda b=before: (
                            bed.task.done() or any(t not in b for t in tasks_named("leds"))
                        ),
                        "a restart",
                    )
            assert await asyncio.wait_for(bed.task, WAIT_S) == EX_SOFTWARE

    with caplog.at_level(logging.ERROR, logger="pi_agent"):
        run(main())
    assert len(failure_logged(caplog, "task leds failed; restarting")) == LED_RESTARTS
    assert len(failure_logged(caplog, "task leds failed; stopping")) == 1


# ------------------------------------------------------------------ inside a conversation

CONVERSATION_TASKS = [
    "conversation",  # the daemon's task holding the conversation
    "receive",
    "uplink",
    "playback",
    "microphone",
    "watch-playback",
    "time-limit",
    "end-request",
]


@pytest.mark.parametrize("name", CONVERSATION_TASKS)
def test_a_failure_inside_a_conversation_ends_it_as_internal_and_the_next_works(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path, button={"mode": "toggle"}) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            await inject(name)
            await bed.notify.wait_for("error: internal")
            assert bed.rgb() in ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # red, blinking
            await bed.notify.wait_for("idle: error shown")
            status = await request(bed.control, "status")
            assert status["failures"] == 1
            assert status["last_conversation"]["end"].startswith("internal")
            assert "Injected" in status["last_conversation"]["end"]
            assert status["healthy"] is True
            # The next trigger works.
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")
            assert not bed.task.done()
            assert bed.daemon.machine.violations == []

    with caplog.at_level(logging.ERROR, logger="pi_agent"):
        run(main())
    assert failure_logged(caplog, "")  # the journal has the traceback


def test_a_control_request_that_raises_is_answered_and_the_daemon_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            control = bed.daemon.control
            assert control is not None
            handler = control.handler

            async def raising(cmd: str, text: str) -> dict[str, Any]:
                raise Injected("injected into a control request")

            control.handler = raising
            reply = await request(bed.control, "wake")
            assert reply == {"ok": False, "error": "internal error: Injected"}
            control.handler = handler
            assert (await request(bed.control, "status"))["state"] == "idle"
            assert not bed.task.done()

    with caplog.at_level(logging.ERROR, logger="pi_agent"):
        run(main())
    assert len(failure_logged(caplog, "control request 'wake' failed")) == 1


# ------------------------------------------------------------------ the watchdog tells the truth


def short_bounds(daemon: Daemon, **bounds: float) -> None:
    daemon.bounds = dataclasses.replace(daemon.bounds, **bounds)


class WedgedConnect:
    """A connector that ignores cancellation until released: a library that swallows it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, url: str, **kwargs: Any) -> Any:
        self.calls += 1
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # swallowed: the wedge
        raise OSError("released")


async def wedge_connecting(bed: Bed) -> WedgedConnect:
    """Put the daemon in `connecting` with a connect that cannot be timed out."""
    wedge = WedgedConnect()
    bed.daemon.connector = wedge
    short_bounds(bed.daemon, connecting_s=0.5)
    await bed.notify.wait_message("WATCHDOG=1")
    await request(bed.control, "wake")
    await bed.notify.wait_for("connecting")
    return wedge


def test_a_wedged_state_stops_the_watchdog_until_it_clears(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            wedge = await wedge_connecting(bed)
            await bed.notify.wait_for("unhealthy: connecting for")
            at = len(bed.notify.drain())
            checks = bed.daemon.health_checks
            await until(lambda: bed.daemon.health_checks >= checks + 4, "four more ticks")
            after = bed.notify.drain()[at:]
            assert not any("WATCHDOG=1" in m for m in after), after
            status = await request(bed.control, "status")
            assert status["healthy"] is False
            assert "connecting for" in status["unhealthy"]
            # The wedge clears: the conversation fails, the error shows, the watchdog is fed.
            wedge.release.set()
            await bed.notify.wait_for("error: connect_failed")
            mark = len(bed.notify.drain())
            await until(lambda: any("WATCHDOG=1" in m for m in bed.notify.drain()[mark:]), "a ping")
            assert (await request(bed.control, "status"))["healthy"] is True

    run(main())


def test_a_daemon_unhealthy_for_too_long_stops_itself_with_exit_70(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a daemon no watchdog watches (run by hand, or WatchdogSec= removed)."""
    monkeypatch.setattr(app, "UNHEALTHY_EXIT_S", 1.0)

    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            wedge = await wedge_connecting(bed)
            await bed.notify.wait_for("unhealthy: connecting for")
            await until(bed.daemon._stop.is_set, "the daemon to stop itself")
            wedge.release.set()  # lets the shutdown end the conversation
            assert await asyncio.wait_for(bed.task, WAIT_S) == EX_SOFTWARE

    run(main())


def test_state_bounds_follow_the_configuration() -> None:
    from pi_agent.config import default_config
    from pi_agent.wiring import state_bounds

    quick = state_bounds(default_config("a", agent={"connect_timeout_s": 2}))
    slow = state_bounds(default_config("a", agent={"connect_timeout_s": 20}))
    assert quick.connecting_s < slow.connecting_s
    assert quick.ending_s < slow.ending_s
    long_talks = default_config("a", conversation={"max_duration_s": 3000})
    assert state_bounds(long_talks).conversation_s - quick.conversation_s > 2000
    bounds = state_bounds(default_config("a"))
    assert isinstance(bounds, StateBounds)
    assert bounds.conversation_s > bounds.connecting_s + bounds.ending_s
