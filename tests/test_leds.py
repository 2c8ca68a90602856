"""LED drivers and controller on gpiozero's MockFactory; APA102 frames decoded off mock SPI."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin, MockSPIDevice

from pi_agent.adapters.hardware.leds import (
    FRAME_INTERVAL_S,
    STATIC_REFRESH_S,
    Apa102Ring,
    LedController,
    LedDriver,
    NoLeds,
    PwmLed,
    RgbLed,
    SingleLed,
    make_leds,
)
from pi_agent.config import Apa102Config, LedsConfig
from pi_agent.core.patterns import COLORS, DEFAULT_PATTERNS, Color, Pattern
from pi_agent.core.states import State
from pi_agent.errors import ConfigError, GpioError
from pi_agent.testing import FakeClock
from tests.helpers import run

T = TypeVar("T")
TEST_TIMEOUT_S = 10.0
LED_PIN = 27
RGB_PINS = (5, 6, 13)
SPI_PINS = (11, 10, 9, 8)  # clock, MOSI, MISO, CE0 of SPI port 0
RING = 3
BRIGHTNESS = 0.3
HEADER = 0xE0 | 9  # round(0.3 * 31) == 9
SAMPLE_TIMES_S = (0.0, 0.1, 0.2, 0.3, 0.6, 0.9, 1.3, 1.7)
BASE = LedsConfig(
    driver="none",
    pin=None,
    pins=None,
    active_high=True,
    apa102=Apa102Config(count=RING, brightness=BRIGHTNESS, spi_port=0, spi_device=0),
    patterns=DEFAULT_PATTERNS,
)


@pytest.fixture
def factory() -> Iterator[Any]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


class RingSpy(MockSPIDevice):  # type: ignore[misc]
    """The far end of the SPI bus: decodes each transfer (select low .. high) into bytes."""

    rx_buf: list[bool]

    def __init__(self, pin_factory: Any) -> None:
        super().__init__(*SPI_PINS, pin_factory=pin_factory)
        self.frames: list[bytes] = []

    def on_select(self) -> None:
        if self.select_pin.state == self.select_high:
            self.on_start()
        elif self.rx_buf:
            bits = "".join("1" if b else "0" for b in self.rx_buf)
            assert len(bits) % 8 == 0
            self.frames.append(int(bits, 2).to_bytes(len(bits) // 8, "big"))
            self.rx_buf = []


@pytest.fixture
def plain_factory() -> Iterator[Any]:
    # MockSPIDevice makes its own plain (non-PWM) pins, so this factory uses MockPin; so does the
    # close() test, because a closing MockPWMPin drops to 0 whatever was written before.
    f = MockFactory(pin_class=MockPin)
    yield f
    f.close()


def leds_config(**changes: Any) -> LedsConfig:
    return dataclasses.replace(BASE, **changes)


def scaled(color: Color, level: float) -> tuple[float, ...]:
    return tuple(c * level for c in color)


def decode(frame: bytes, count: int = RING) -> list[tuple[int, int, int, int]]:
    """Check the framing and return (header, blue, green, red) per LED."""
    assert frame[:4] == bytes(4)
    body = frame[4 : 4 + 4 * count]
    end = frame[4 + 4 * count :]
    assert len(end) >= max(4, -(-count // 16))
    assert set(end) == {0xFF}
    return [(body[i], body[i + 1], body[i + 2], body[i + 3]) for i in range(0, len(body), 4)]


def expected_leds(color: Color, level: float) -> tuple[int, int, int, int]:
    r, g, b = (round(c * level * 255) for c in color)
    return (HEADER, b, g, r)


# --- drivers -------------------------------------------------------------------------------------


def test_no_leds_accepts_everything() -> None:
    leds = make_leds(leds_config(), None)
    assert isinstance(leds, NoLeds)
    leds.set_level(1.0, COLORS["red"])
    leds.close()


@pytest.mark.parametrize("active_high", [True, False])
@pytest.mark.parametrize("state", list(State))
def test_single_led_shows_each_default_pattern(
    factory: Any, state: State, active_high: bool
) -> None:
    pattern = DEFAULT_PATTERNS[state]
    leds = make_leds(leds_config(driver="single", pin=LED_PIN, active_high=active_high), factory)
    assert isinstance(leds, SingleLed)
    pin = factory.pin(LED_PIN)
    try:
        for t in SAMPLE_TIMES_S:
            leds.set_level(pattern.level(t), pattern.color)
            lit = pattern.level(t) >= 0.5
            assert bool(pin.state) == (lit if active_high else not lit), t
    finally:
        leds.close()


@pytest.mark.parametrize("active_high", [True, False])
@pytest.mark.parametrize("state", list(State))
def test_pwm_led_shows_each_default_pattern(factory: Any, state: State, active_high: bool) -> None:
    pattern = DEFAULT_PATTERNS[state]
    leds = make_leds(leds_config(driver="pwm", pin=LED_PIN, active_high=active_high), factory)
    assert isinstance(leds, PwmLed)
    pin = factory.pin(LED_PIN)
    try:
        for t in SAMPLE_TIMES_S:
            leds.set_level(pattern.level(t), pattern.color)
            duty = pattern.level(t) if active_high else 1 - pattern.level(t)
            assert pin.state == pytest.approx(duty), t
    finally:
        leds.close()


@pytest.mark.parametrize("state", list(State))
def test_rgb_led_shows_each_default_pattern(factory: Any, state: State) -> None:
    pattern = DEFAULT_PATTERNS[state]
    leds = make_leds(leds_config(driver="rgb", pins=RGB_PINS), factory)
    assert isinstance(leds, RgbLed)
    pins = [factory.pin(p) for p in RGB_PINS]
    try:
        for t in SAMPLE_TIMES_S:
            leds.set_level(pattern.level(t), pattern.color)
            shown = tuple(p.state for p in pins)
            assert shown == pytest.approx(scaled(pattern.color, pattern.level(t))), t
    finally:
        leds.close()


@pytest.mark.parametrize("state", list(State))
def test_apa102_frames_on_the_wire_for_each_default_pattern(
    plain_factory: Any, state: State
) -> None:
    pattern = DEFAULT_PATTERNS[state]
    spy = RingSpy(plain_factory)
    leds = make_leds(leds_config(driver="apa102"), plain_factory)
    assert isinstance(leds, Apa102Ring)
    try:
        for t in SAMPLE_TIMES_S:
            level = pattern.level(t)
            leds.set_level(level, pattern.color)
            assert decode(spy.frames[-1]) == [expected_leds(pattern.color, level)] * RING, t
    finally:
        leds.close()
    assert decode(spy.frames[-1]) == [(HEADER, 0, 0, 0)] * RING  # close() sends "all off"


def test_apa102_byte_order_is_blue_green_red(plain_factory: Any) -> None:
    spy = RingSpy(plain_factory)
    ring = Apa102Ring(RING, brightness=1.0, port=0, device=0, pin_factory=plain_factory)
    try:
        ring.set_level(1.0, (1.0, 0.5, 0.0))
        assert spy.frames[-1].hex() == "00000000" + "ff0080ff" * RING + "ffffffff"
    finally:
        ring.close()


def test_apa102_spin_lights_one_led_going_round(plain_factory: Any) -> None:
    spy = RingSpy(plain_factory)
    ring = Apa102Ring(RING, brightness=BRIGHTNESS, port=0, device=0, pin_factory=plain_factory)
    blue = COLORS["blue"]
    try:
        for phase, lit in [(0.0, 0), (0.34, 1), (0.67, 2), (0.99, 2), (1.0, 0)]:
            ring.set_spin(phase, blue)
            leds = decode(spy.frames[-1])
            assert [i for i, led in enumerate(leds) if led != (HEADER, 0, 0, 0)] == [lit], phase
            assert leds[lit] == expected_leds(blue, 1.0)
    finally:
        ring.close()


def test_apa102_unchanged_frames_are_not_resent(plain_factory: Any) -> None:
    spy = RingSpy(plain_factory)
    ring = Apa102Ring(RING, brightness=BRIGHTNESS, port=0, device=0, pin_factory=plain_factory)
    try:
        for _ in range(5):
            ring.set_level(1.0, COLORS["green"])
        ring.set_level(0.5, COLORS["green"])
        assert len(spy.frames) == 2
    finally:
        ring.close()


@pytest.mark.parametrize(("count", "end_bytes"), [(1, 4), (64, 4), (65, 5), (255, 16)])
def test_apa102_end_frame_covers_the_chain(plain_factory: Any, count: int, end_bytes: int) -> None:
    ring = Apa102Ring(count, brightness=1.0, port=0, device=0, pin_factory=plain_factory)
    try:
        frame = ring.frame([COLORS["white"]] * count)
        assert len(frame) == 4 + 4 * count + end_bytes
        assert decode(frame, count) == [(0xFF, 0xFF, 0xFF, 0xFF)] * count
    finally:
        ring.close()


def test_apa102_works_on_a_pwm_mock_factory_and_leaves_gpiozero_global_alone(
    factory: Any,
) -> None:
    before = Device.pin_factory
    ring = make_leds(leds_config(driver="apa102"), factory)
    try:
        assert Device.pin_factory is before
        ring.set_level(1.0, COLORS["red"])
        assert len(factory.pin(10).states) > 1  # bits went out on MOSI
    finally:
        ring.close()


def test_make_leds_errors(factory: Any) -> None:
    with pytest.raises(ConfigError, match=r"leds\.pin"):
        make_leds(leds_config(driver="pwm"), factory)
    with pytest.raises(ConfigError, match=r"leds\.pins"):
        make_leds(leds_config(driver="rgb"), factory)
    with pytest.raises(ConfigError, match=r"\[red, green, blue\]"):
        make_leds(leds_config(driver="rgb", pins=(5, 6)), factory)
    with pytest.raises(ConfigError, match=r"leds\.driver"):
        make_leds(leds_config(driver="neopixel"), factory)
    first = make_leds(leds_config(driver="single", pin=LED_PIN), factory)
    try:
        with pytest.raises(GpioError, match="pin 27"):
            make_leds(leds_config(driver="pwm", pin=LED_PIN), factory)
    finally:
        first.close()


# --- controller ----------------------------------------------------------------------------------


def rgb(factory: Any) -> tuple[RgbLed, list[Any]]:
    leds = RgbLed(RGB_PINS, active_high=True, pin_factory=factory)
    return leds, [factory.pin(p) for p in RGB_PINS]


async def stop(controller: LedController, task: asyncio.Task[None]) -> None:
    controller.close()
    async with asyncio.timeout(1.0):
        await task


def test_static_pattern_is_shown_at_once_without_the_animator(factory: Any) -> None:
    leds, pins = rgb(factory)
    controller = LedController(leds, DEFAULT_PATTERNS)
    controller.show(State.LISTENING)
    assert tuple(p.state for p in pins) == (0.0, 0.0, 1.0)
    controller.show(State.IDLE)
    assert tuple(p.state for p in pins) == (0.0, 0.0, 0.0)
    controller.close()


def test_pulse_changes_the_pwm_value_over_time(factory: Any) -> None:
    leds = PwmLed(LED_PIN, active_high=True, pin_factory=factory)
    pin = factory.pin(LED_PIN)
    clock = FakeClock()
    controller = LedController(leds, DEFAULT_PATTERNS, clock=clock)
    controller.show(State.THINKING)
    pin.clear_states()
    for _ in range(10):  # 0.35 s of frames
        clock.advance(FRAME_INTERVAL_S)
        controller.render()
    values = [s.state for s in pin.states]
    controller.close()
    assert all(0.05 - 1e-9 <= v <= 1.0 for v in values), values
    assert len(set(values)) >= 5
    assert max(values) - min(values) > 0.15


@pytest.mark.parametrize("final", [State.MUTED, State.ERROR, State.IDLE])
def test_rapid_state_changes_end_showing_the_last_state(factory: Any, final: State) -> None:
    leds, pins = rgb(factory)
    clock = FakeClock()
    controller = LedController(leds, DEFAULT_PATTERNS, clock=clock)
    for i in range(60):
        controller.show(list(State)[i % len(State)])
        if i % 7 == 0:
            controller.render()
        if i % 11 == 0:
            clock.advance(FRAME_INTERVAL_S / 3)
    controller.show(final)
    for p in pins:
        p.clear_states()
    pattern = DEFAULT_PATTERNS[final]
    for _ in range(5):  # the animator's next frames, if the pattern has any
        clock.advance(FRAME_INTERVAL_S)
        if pattern.animated:
            controller.render()
    shown = [[s.state for s in p.states] for p in pins]
    controller.close()
    assert controller.pattern == pattern
    for channel, history in zip(pattern.color, shown, strict=True):
        if pattern.animated:  # only this pattern's levels: the colour on, or off
            assert set(history) <= {0.0, channel}, history
        else:  # nothing written over it since (a mock pin's history starts with its state)
            assert history == [channel * pattern.level(0.0)], history


def test_re_sending_the_same_state_does_not_freeze_a_blink(factory: Any) -> None:
    leds, pins = rgb(factory)
    clock = FakeClock()
    controller = LedController(leds, DEFAULT_PATTERNS, clock=clock)
    controller.show(State.ERROR)  # red fast-blink: 0.125 s on, 0.125 s off
    pins[0].clear_states()
    for _ in range(8):
        clock.advance(0.04)
        controller.show(State.ERROR)  # must not restart the blink's phase
        controller.render()
    red = {s.state for s in pins[0].states}
    controller.close()
    assert red == {0.0, 1.0}


def test_static_patterns_cost_no_frames() -> None:
    calls: list[float] = []

    class Counting(NoLeds):
        def set_level(self, level: float, color: Color) -> None:
            calls.append(level)

    controller = LedController(Counting(), DEFAULT_PATTERNS)
    controller.show(State.LISTENING)
    assert calls == [1.0]  # its one frame, written at once
    assert controller.frame_wait_s == STATIC_REFRESH_S  # the animator sleeps until a refresh
    controller.show(State.CONNECTING)
    assert controller.frame_wait_s == FRAME_INTERVAL_S
    controller.override(Pattern("on", COLORS["red"]))  # what is shown decides, not the state
    assert controller.frame_wait_s == STATIC_REFRESH_S
    controller.close()


def test_the_animator_renders_frames_until_closed() -> None:
    frames: list[float] = []
    rendered = asyncio.Event()

    class Counting(NoLeds):
        def set_level(self, level: float, color: Color) -> None:
            frames.append(level)
            if len(frames) >= 4:
                rendered.set()

    async def main() -> None:
        controller = LedController(Counting(), DEFAULT_PATTERNS)
        task = asyncio.create_task(controller.run())
        controller.show(State.CONNECTING)  # animated: the animator draws the frames after this
        await rendered.wait()
        await stop(controller, task)

    run(main())
    assert frames[-1] == 0.0  # close() turned it off


def test_spin_goes_round_the_ring_in_time(plain_factory: Any) -> None:
    spy = RingSpy(plain_factory)
    ring = Apa102Ring(RING, brightness=BRIGHTNESS, port=0, device=0, pin_factory=plain_factory)
    spin = {State.CONNECTING: Pattern("spin", COLORS["blue"])}
    clock = FakeClock(100.0)
    controller = LedController(ring, spin, clock=clock)
    lit_at: list[int] = []
    controller.show(State.CONNECTING)
    for step in (0.0, 0.5, 0.4):
        clock.advance(step)
        controller.render()
        leds = decode(spy.frames[-1])
        lit_at += [i for i, led in enumerate(leds) if led != (HEADER, 0, 0, 0)]
    controller.close()
    assert lit_at == [0, 1, 2]  # SPIN_PERIOD_S = 1.2: a third of a turn per 0.4 s
    assert decode(spy.frames[-1]) == [(HEADER, 0, 0, 0)] * RING


def test_close_turns_everything_off_and_stops_the_animator(plain_factory: Any) -> None:
    async def main() -> None:
        leds = SingleLed(LED_PIN, active_high=False, pin_factory=plain_factory)
        pin = plain_factory.pin(LED_PIN)
        controller = LedController(leds, DEFAULT_PATTERNS)
        task = asyncio.create_task(controller.run())
        controller.show(State.ERROR)
        assert pin.state == 0  # active low: lit
        await stop(controller, task)  # run() returns by itself
        assert pin.state == 1  # dark
        controller.close()
        controller.show(State.LISTENING)  # ignored after close
        assert pin.state == 1

    run(main())


def test_failing_writes_are_logged_once_and_recover(caplog: pytest.LogCaptureFixture) -> None:
    healthy = False
    levels: list[float] = []

    class Flaky(NoLeds):
        def set_level(self, level: float, color: Color) -> None:
            if not healthy:
                raise OSError("SPI transfer failed")
            levels.append(level)

    driver: LedDriver = Flaky()
    clock = FakeClock()
    controller = LedController(driver, DEFAULT_PATTERNS, clock=clock)
    with caplog.at_level(logging.INFO, logger="pi_agent.adapters.hardware.leds"):
        controller.show(State.ERROR)  # does not raise
        for _ in range(6):
            clock.advance(FRAME_INTERVAL_S)
            controller.render()
        healthy = True
        clock.advance(FRAME_INTERVAL_S)
        controller.render()
        controller.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "work again" in caplog.text
    assert levels[-1] == 0.0  # close() turned it off
