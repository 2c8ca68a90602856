"""Status LEDs: drivers behind `set_level(level, color)`, and a controller that shows each state.

The controller writes from the asyncio loop: a gpiozero pin write takes microseconds, and an
APA102 frame goes out through the kernel's SPI driver (or, without it, gpiozero's bit-banged SPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from pi_agent.adapters.hardware.pins import gpio_errors, open_spi
from pi_agent.config import LedsConfig
from pi_agent.core.patterns import SPIN_PERIOD_S, Color, Pattern
from pi_agent.core.states import State
from pi_agent.errors import ConfigError

log = logging.getLogger(__name__)

FRAME_RATE_HZ = 25.0  # smooth enough for a 2 s breathing pulse, cheap on a Pi Zero 2 W
FRAME_INTERVAL_S = 1.0 / FRAME_RATE_HZ
STATIC_REFRESH_S = 5.0  # rewrite a static pattern this often, so one failed write heals itself
SINGLE_ON_LEVEL = 0.5  # a plain on/off LED is lit from half brightness up
OFF: Color = (0.0, 0.0, 0.0)
OFF_PATTERN = Pattern("off")

# APA102 wire format (datasheet): a 32-bit start frame of zeros, then per LED 0b111 + 5 bits of
# global brightness and one byte each of blue, green, red; then at least count/2 more clock edges
# (count/16 bytes) to push the data through the chain. We send at least 4 such bytes.
APA102_START_FRAME = bytes(4)
APA102_LED_HEADER = 0xE0
APA102_MAX_BRIGHTNESS = 31
APA102_END_BYTE = 0xFF
APA102_MIN_END_BYTES = 4
APA102_LEDS_PER_END_BYTE = 16


class LedDriver(Protocol):
    """What the controller needs from LEDs: one brightness and colour at a time, and off."""

    def set_level(self, level: float, color: Color) -> None:
        """Show `color` at brightness `level` (0..1); single-colour LEDs ignore the colour."""

    def close(self) -> None:
        """Turn the LEDs off and release their pins; safe to call twice."""


@runtime_checkable
class SpinningLeds(Protocol):
    """LEDs that can show the 'spin' pattern: one lit LED going round."""

    def set_spin(self, phase: float, color: Color) -> None:
        """Light the LED at `phase` (0..1 of a turn) in `color`, the others off."""


def _unit(value: float) -> float:
    """Clamp to 0..1, which gpiozero's value setters insist on."""
    return min(1.0, max(0.0, value))


class NoLeds:
    """No LEDs configured: every call does nothing."""

    def set_level(self, level: float, color: Color) -> None:
        """Nothing to light."""

    def close(self) -> None:
        """Nothing to release."""


class _GpioLed:
    """Shared by the gpiozero-backed drivers: `_led` is an LED, PWMLED or RGBLED."""

    _led: Any

    def close(self) -> None:
        """Turn off and release the pins; safe to call twice."""
        if not self._led.closed:
            self._led.off()
            self._led.close()


class SingleLed(_GpioLed):
    """One plain LED on a GPIO pin: on from SINGLE_ON_LEVEL up, colour ignored."""

    def __init__(self, pin: int | str, *, active_high: bool, pin_factory: Any | None) -> None:
        from gpiozero import LED

        with gpio_errors(f"LED on pin {pin}"):
            self._led = LED(
                pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )

    def set_level(self, level: float, color: Color) -> None:
        """Light the LED if `level` >= SINGLE_ON_LEVEL."""
        self._led.value = level >= SINGLE_ON_LEVEL


class PwmLed(_GpioLed):
    """One LED dimmed by PWM: brightness = level, colour ignored."""

    def __init__(self, pin: int | str, *, active_high: bool, pin_factory: Any | None) -> None:
        from gpiozero import PWMLED

        with gpio_errors(f"PWM LED on pin {pin}"):
            self._led = PWMLED(
                pin, active_high=active_high, initial_value=0.0, pin_factory=pin_factory
            )

    def set_level(self, level: float, color: Color) -> None:
        """Set the duty cycle to `level`."""
        self._led.value = _unit(level)


class RgbLed(_GpioLed):
    """A three-pin RGB LED with PWM on each channel: value = color * level."""

    def __init__(
        self, pins: tuple[int | str, ...], *, active_high: bool, pin_factory: Any | None
    ) -> None:
        from gpiozero import RGBLED

        if len(pins) != 3:
            raise ConfigError([f"leds.pins: {list(pins)} is not [red, green, blue]"])
        red, green, blue = pins
        with gpio_errors(f"RGB LED on pins {list(pins)}"):
            self._led = RGBLED(
                red,
                green,
                blue,
                active_high=active_high,
                initial_value=OFF,
                pwm=True,
                pin_factory=pin_factory,
            )

    def set_level(self, level: float, color: Color) -> None:
        """Show `color` scaled by `level`."""
        self._led.value = tuple(_unit(c * level) for c in color)


class Apa102Ring:
    """A chain of APA102 (DotStar) LEDs on SPI, e.g. the ReSpeaker HATs' ring."""

    def __init__(
        self, count: int, *, brightness: float, port: int, device: int, pin_factory: Any | None
    ) -> None:
        if count < 1:
            raise ConfigError([f"leds.apa102.count: {count} must be at least 1"])
        self.count = count
        self._header = APA102_LED_HEADER | round(_unit(brightness) * APA102_MAX_BRIGHTNESS)
        end_bytes = max(APA102_MIN_END_BYTES, math.ceil(count / APA102_LEDS_PER_END_BYTE))
        self._end_frame = bytes([APA102_END_BYTE] * end_bytes)
        self._last: bytes | None = None
        self._spi: Any = open_spi(pin_factory, port, device)

    def frame(self, colors: list[Color]) -> bytes:
        """The bytes that show `colors` (0..1 RGB, one per LED) on the ring."""
        body = bytearray()
        for red, green, blue in colors:
            body += bytes([self._header, *(round(_unit(c) * 255) for c in (blue, green, red))])
        return APA102_START_FRAME + bytes(body) + self._end_frame

    def set_level(self, level: float, color: Color) -> None:
        """Every LED shows `color` at `level`."""
        lit: Color = (color[0] * level, color[1] * level, color[2] * level)
        self._write([lit] * self.count)

    def set_spin(self, phase: float, color: Color) -> None:
        """One LED lit in `color`, at `phase` (0..1) of the way round."""
        index = math.floor(phase * self.count) % self.count
        self._write([color if i == index else OFF for i in range(self.count)])

    def close(self) -> None:
        """Turn every LED off and release the SPI bus."""
        if self._spi is None:
            return
        try:
            self._write([OFF] * self.count, force=True)
        finally:
            self._spi.close()
            self._spi = None

    def _write(self, colors: list[Color], *, force: bool = False) -> None:
        data = self.frame(colors)
        if data == self._last and not force:
            return  # an unchanged frame costs nothing (static patterns, blink half-periods)
        self._last = None  # if the write fails, the next one is sent even if identical
        self._spi.write(list(data))
        self._last = data


def make_leds(cfg: LedsConfig, pin_factory: Any | None) -> LedDriver:
    """The LED driver `cfg.driver` names, on `pin_factory` (None: gpiozero's default)."""
    if cfg.driver == "none":
        return NoLeds()
    if cfg.driver in ("single", "pwm"):
        if cfg.pin is None:
            raise ConfigError([f"leds.pin: required when leds.driver is {cfg.driver!r}"])
        cls = SingleLed if cfg.driver == "single" else PwmLed
        return cls(cfg.pin, active_high=cfg.active_high, pin_factory=pin_factory)
    if cfg.driver == "rgb":
        if cfg.pins is None:
            raise ConfigError(["leds.pins: required when leds.driver is 'rgb'"])
        return RgbLed(cfg.pins, active_high=cfg.active_high, pin_factory=pin_factory)
    if cfg.driver == "apa102":
        ring = cfg.apa102
        return Apa102Ring(
            ring.count,
            brightness=ring.brightness,
            port=ring.spi_port,
            device=ring.spi_device,
            pin_factory=pin_factory,
        )
    raise ConfigError([f"leds.driver: {cfg.driver!r} is not one of none, single, pwm, rgb, apa102"])


class LedController:
    """Shows the pattern of the latest state, or an override (the set_led tool) over it.

    `run()` is the one animation task: it renders blinking, pulsing and spinning frames of
    whichever pattern is shown; `render()` writes the frame for the clock's now.
    """

    def __init__(
        self,
        driver: LedDriver,
        patterns: Mapping[State, Pattern],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._driver = driver
        self._patterns = dict(patterns)
        self._clock = clock
        self._pattern = OFF_PATTERN
        self._started = clock()
        self._override: Pattern | None = None
        self._override_started = 0.0
        self._changed = asyncio.Event()
        self._closed = False
        self._failing = False

    @property
    def pattern(self) -> Pattern:
        """The pattern of the latest state (an override may be shown over it)."""
        return self._pattern

    @property
    def shown(self) -> Pattern:
        """The pattern on the LEDs: the override while one is set, else the state's."""
        return self._pattern if self._override is None else self._override

    def show(self, state: State) -> None:
        """Switch to `state`'s pattern, writing its first frame at once; call on the loop thread."""
        pattern = self._patterns.get(state, OFF_PATTERN)
        if self._closed or pattern == self._pattern:
            return  # a re-sent state keeps its phase: restarting it would freeze a blink
        self._pattern = pattern
        self._started = self._clock()
        if self._override is None:
            self.render()
        self._changed.set()

    @property
    def frame_wait_s(self) -> float:
        """How long run() waits for the next frame: a frame for an animated pattern, else only
        the occasional refresh (a static pattern costs no frames)."""
        return FRAME_INTERVAL_S if self.shown.animated else STATIC_REFRESH_S

    def override(self, pattern: Pattern | None) -> None:
        """Show `pattern` instead of the state's (set_led), or (None) the state's pattern again."""
        if self._closed or pattern == self._override:
            return
        self._override = pattern
        self._override_started = self._clock()
        self.render()
        self._changed.set()

    async def run(self) -> None:
        """Animate until close() or cancellation; static patterns sleep until the next show()."""
        while not self._closed:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.frame_wait_s):
                    await self._changed.wait()
            if not self._closed and not self._changed.is_set():
                self.render()  # show() already wrote the first frame of a new pattern

    def close(self) -> None:
        """Turn the LEDs off, release them and stop run(); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._override = None
        self._changed.set()
        try:
            self._driver.set_level(0.0, OFF)
        except Exception:
            log.warning("could not turn the LEDs off", exc_info=True)
        try:
            self._driver.close()
        except Exception:
            log.warning("could not release the LEDs", exc_info=True)

    def render(self) -> None:
        """Write the shown pattern's frame for now; a failing write is logged once, then retried."""
        if self._closed:
            return
        if self._override is None:
            pattern, t = self._pattern, self._clock() - self._started
        else:
            pattern, t = self._override, self._clock() - self._override_started
        try:
            if pattern.kind == "spin" and isinstance(self._driver, SpinningLeds):
                self._driver.set_spin((t % SPIN_PERIOD_S) / SPIN_PERIOD_S, pattern.color)
            else:
                self._driver.set_level(pattern.level(t), pattern.color)
        except Exception:
            if not self._failing:
                log.warning("LED write failed; will keep trying", exc_info=True)
            self._failing = True
        else:
            if self._failing:
                log.info("LED writes work again")
            self._failing = False
