"""The push-to-talk button: gpiozero edges in, small events out on the asyncio loop; no decisions.

gpiozero calls back from its own threads (the pin library's edge thread, its hold thread), and with
the mock pins from whichever thread drives the pin, so every event is stamped there and handed to
the loop with `loop.call_soon_threadsafe`. Whether a press means "talk while held" or "toggle" is
the state machine's business, not this module's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pi_agent.adapters.hardware.pins import gpio_errors
from pi_agent.config import ButtonConfig
from pi_agent.errors import ConfigError

log = logging.getLogger(__name__)

MS_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class ButtonPressed:
    """The button went down at `at` (time.monotonic() seconds, the loop's clock)."""

    at: float


@dataclass(frozen=True, slots=True)
class ButtonReleased:
    """The button came up at `at`, after being down for `held_s` seconds."""

    at: float
    held_s: float


@dataclass(frozen=True, slots=True)
class ButtonLongPress:
    """The button has been down for long_press_s seconds and is still down."""

    at: float


ButtonEvent = ButtonPressed | ButtonReleased | ButtonLongPress


class ButtonInput:
    """A gpiozero Button whose press, release and long press arrive as events on `loop`."""

    def __init__(
        self,
        cfg: ButtonConfig,
        pin_factory: Any | None,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ButtonEvent], None],
    ) -> None:
        if cfg.pin is None:
            raise ConfigError(["button.pin is null: there is no button to watch"])
        from gpiozero import Button

        self._loop = loop
        self._on_event = on_event
        # Press, release and hold come from different threads; the lock orders them, so a long
        # press can never be posted after the release that ended it.
        self._lock = threading.Lock()
        self._pressed_at: float | None = None
        self._closed = False
        with gpio_errors(f"button on pin {cfg.pin}"):
            self._button: Any = Button(
                cfg.pin,
                pull_up=cfg.pull_up,
                bounce_time=cfg.bounce_ms / MS_PER_S if cfg.bounce_ms > 0 else None,
                # With long_press_s == 0 no when_held is attached, so a hold time of 0 is inert.
                hold_time=cfg.long_press_s,
                pin_factory=pin_factory,
            )
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released
        if cfg.long_press_s > 0:
            self._button.when_held = self._held

    @property
    def is_pressed(self) -> bool:
        """Whether the button is down right now (False once closed)."""
        return not self._closed and bool(self._button.is_pressed)

    def close(self) -> None:
        """Stop reporting and release the pin; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # gpiozero's hold thread waits on the button's "inactive" event for up to hold_time, and
        # Button.close() joins it: closing a held button would block the caller for long_press_s.
        # Waking that wait first makes close() return within the thread's 0.1 s poll.
        inactive = getattr(self._button, "_inactive_event", None)
        if isinstance(inactive, threading.Event):
            inactive.set()
        self._button.close()

    def _pressed(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._pressed_at = now
            self._post(ButtonPressed(now))

    def _released(self) -> None:
        now = time.monotonic()
        with self._lock:
            pressed_at, self._pressed_at = self._pressed_at, None
            held_s = 0.0 if pressed_at is None else now - pressed_at
            self._post(ButtonReleased(now, held_s))

    def _held(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._pressed_at is not None:  # not already released on the edge thread
                self._post(ButtonLongPress(now))

    def _post(self, event: ButtonEvent) -> None:
        """Hand `event` to the loop thread; called with the lock held, from any thread."""
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._on_event, event)
        except RuntimeError:  # the loop is closed: shutting down, nobody is listening
            log.debug("button event %s after the loop closed; dropped", event)
