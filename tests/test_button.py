"""ButtonInput on gpiozero's MockFactory: events reach the loop thread in order, with sane times."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gpiozero.pins.native
import pytest
from gpiozero import PWMLED, Device
from gpiozero.exc import PinUnknownPi
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.adapters.hardware.button import (
    ButtonEvent,
    ButtonInput,
    ButtonLongPress,
    ButtonPressed,
    ButtonReleased,
)
from pi_agent.adapters.hardware.pins import make_pin_factory, open_spi
from pi_agent.config import ButtonConfig
from pi_agent.errors import (
    EX_CONFIG,
    EX_IOERR,
    ConfigError,
    GpioError,
    GpioLibraryMissing,
    PiAgentError,
)
from tests.helpers import run

T = TypeVar("T")
PIN = 17
LED_PIN_FOR_PWM = 18
TEST_TIMEOUT_S = 10.0
EVENT_TIMEOUT_S = 2.0
QUIET_S = 0.15  # how long "nothing else arrives" is watched for
BASE = ButtonConfig(
    pin=PIN, pull_up=True, bounce_ms=30, mode="hold", long_press_s=2.0, pin_factory="mock"
)


@pytest.fixture
def factory() -> Iterator[Any]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


class Recorder:
    """Collects events and the threads they were delivered on."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        self.threads: set[int] = set()

    def __call__(self, event: ButtonEvent) -> None:
        self.threads.add(threading.get_ident())
        self.queue.put_nowait(event)

    async def next(self) -> ButtonEvent:
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            return await self.queue.get()

    async def assert_quiet(self) -> None:
        await asyncio.sleep(QUIET_S)
        assert self.queue.empty(), self.queue.get_nowait()


async def in_thread(action: Callable[[], None]) -> None:
    """Drive a pin from a foreign thread, as the pin library does on a Pi."""
    await asyncio.to_thread(action)


def make(factory: Any, rec: Recorder, **changes: Any) -> ButtonInput:
    cfg = dataclasses.replace(BASE, **changes)
    return ButtonInput(cfg, pin_factory=factory, loop=asyncio.get_running_loop(), on_event=rec)


def test_press_and_release_arrive_on_the_loop_thread(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec)
        pin = factory.pin(PIN)
        try:
            before = time.monotonic()
            await in_thread(pin.drive_low)
            pressed = await rec.next()
            assert isinstance(pressed, ButtonPressed)
            assert button.is_pressed
            await asyncio.sleep(0.05)
            await in_thread(pin.drive_high)
            released = await rec.next()
            after = asyncio.get_running_loop().time()
            assert isinstance(released, ButtonReleased)
            assert before <= pressed.at <= released.at <= after  # the loop's clock
            assert released.held_s == pytest.approx(released.at - pressed.at)
            assert 0.04 <= released.held_s < EVENT_TIMEOUT_S
            assert rec.threads == {threading.get_ident()}
            assert not button.is_pressed
            await rec.assert_quiet()
        finally:
            button.close()

    run(main())


def test_long_press_after_long_press_s_then_release(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, long_press_s=0.1)
        pin = factory.pin(PIN)
        try:
            await in_thread(pin.drive_low)
            pressed = await rec.next()
            held = await rec.next()  # from gpiozero's hold thread
            assert isinstance(held, ButtonLongPress)
            assert held.at - pressed.at >= 0.1 - 1e-3
            await in_thread(pin.drive_high)
            released = await rec.next()
            assert isinstance(released, ButtonReleased)
            assert released.held_s >= 0.1 - 1e-3
            assert rec.threads == {threading.get_ident()}
            await rec.assert_quiet()  # hold_repeat is off: one long press per press
        finally:
            button.close()

    run(main())


def test_short_press_gives_no_long_press(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, long_press_s=0.2)
        pin = factory.pin(PIN)
        try:
            pin.drive_low()
            pin.drive_high()
            assert isinstance(await rec.next(), ButtonPressed)
            assert isinstance(await rec.next(), ButtonReleased)
            await rec.assert_quiet()
        finally:
            button.close()

    run(main())


def test_long_press_disabled_at_zero(factory: Any) -> None:
    # The adapter passes hold_time=0 through: were when_held attached, it would fire at once.
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, long_press_s=0)
        pin = factory.pin(PIN)
        try:
            await in_thread(pin.drive_low)
            assert isinstance(await rec.next(), ButtonPressed)
            await rec.assert_quiet()
            await in_thread(pin.drive_high)
            released = await rec.next()
            assert isinstance(released, ButtonReleased)
            assert released.held_s >= QUIET_S - 1e-3
            await rec.assert_quiet()
        finally:
            button.close()

    run(main())


@pytest.mark.parametrize(("bounce_ms", "expected_s"), [(30, 0.03), (1, 0.001), (0, None)])
def test_bounce_ms_becomes_the_pins_bounce_time(
    factory: Any, bounce_ms: int, expected_s: float | None
) -> None:
    async def main() -> None:
        button = make(factory, Recorder(), bounce_ms=bounce_ms)
        try:
            assert factory.pin(PIN).bounce == expected_s
        finally:
            button.close()

    run(main())


def test_contact_chatter_keeps_events_paired_and_ends_in_the_true_state(factory: Any) -> None:
    # gpiozero's mock pins do not filter bounce (the pin library does on a Pi), so chatter arrives
    # as edges: the adapter must still alternate press/release and end in the pin's final state.
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, bounce_ms=30)
        pin = factory.pin(PIN)

        def chatter() -> None:
            for _ in range(3):
                pin.drive_low()
                pin.drive_high()
            pin.drive_low()

        try:
            await in_thread(chatter)
            events = [await rec.next() for _ in range(7)]
            kinds = [type(e) for e in events]
            assert kinds == [ButtonPressed, ButtonReleased] * 3 + [ButtonPressed]
            assert all(e.held_s >= 0 for e in events if isinstance(e, ButtonReleased))
            ats = [e.at for e in events]
            assert ats == sorted(ats)
            assert button.is_pressed
            await rec.assert_quiet()
        finally:
            button.close()

    run(main())


def test_pull_down_button_presses_on_high(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, pull_up=False)
        pin = factory.pin(PIN)
        try:
            pin.drive_high()
            assert isinstance(await rec.next(), ButtonPressed)
            pin.drive_low()
            assert isinstance(await rec.next(), ButtonReleased)
        finally:
            button.close()

    run(main())


def test_close_stops_events_and_frees_the_pin(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, long_press_s=0.05)
        button.close()
        button.close()
        assert not button.is_pressed
        pin = factory.pin(PIN)
        pin.drive_low()
        pin.drive_high()
        await rec.assert_quiet()
        again = make(factory, rec)  # the pin was released
        again.close()

    run(main())


def test_event_after_the_loop_closed_is_dropped_quietly(factory: Any) -> None:
    loop = asyncio.new_event_loop()
    seen: list[ButtonEvent] = []
    button = ButtonInput(BASE, pin_factory=factory, loop=loop, on_event=seen.append)
    loop.close()
    try:
        factory.pin(PIN).drive_low()  # must not raise into the pin library's thread
        factory.pin(PIN).drive_high()
    finally:
        button.close()
    assert seen == []


def test_no_pin_is_a_config_error(factory: Any) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match=r"button\.pin is null"):
            make(factory, Recorder(), pin=None)

    run(main())


def test_busy_pin_is_a_gpio_error_naming_the_pin(factory: Any) -> None:
    async def main() -> None:
        first = make(factory, Recorder())
        try:
            with pytest.raises(GpioError, match="button on pin 17"):
                make(factory, Recorder())
        finally:
            first.close()

    run(main())


def test_closing_a_held_button_does_not_wait_out_the_hold_time(factory: Any) -> None:
    async def main() -> None:
        rec = Recorder()
        button = make(factory, rec, long_press_s=5.0)
        factory.pin(PIN).drive_low()
        assert isinstance(await rec.next(), ButtonPressed)
        started = time.monotonic()
        button.close()
        assert time.monotonic() - started < 4.0  # gpiozero alone would block for the full 5 s

    run(main())


# --- pin factories (button.pin_factory; the LEDs share the same factory) --------------------------


def test_no_pin_factory_name_leaves_the_choice_to_gpiozero() -> None:
    assert make_pin_factory(None) is None


def test_mock_pin_factory_supports_pwm() -> None:
    f = make_pin_factory("mock")
    assert isinstance(f, MockFactory)
    assert f.pin_class is MockPWMPin
    led = PWMLED(LED_PIN_FOR_PWM, pin_factory=f)
    led.value = 0.25
    assert f.pin(LED_PIN_FOR_PWM).state == 0.25
    led.close()
    f.close()


@pytest.mark.parametrize(
    ("name", "blocked", "hint"),
    [
        ("lgpio", "lgpio", "python3-lgpio"),
        ("rpigpio", "RPi", "python3-rpi.gpio"),
        ("pigpio", "pigpio", "python3-pigpio"),
    ],
)
def test_missing_pin_library_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, name: str, blocked: str, hint: str
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` now raises ImportError
    monkeypatch.delitem(sys.modules, f"gpiozero.pins.{name}", raising=False)
    with pytest.raises(GpioLibraryMissing) as info:
        make_pin_factory(name)
    text = str(info.value)
    assert f"pin_factory {name!r} needs the" in text
    assert hint in text
    assert "on a Raspberry Pi 5 only lgpio works" in text
    assert isinstance(info.value, GpioError)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, PiAgentError)
    assert info.value.exit_code == EX_CONFIG  # restarting will not install it


def test_pin_library_that_cannot_start_is_a_gpio_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotAPi:
        def __init__(self) -> None:
            raise PinUnknownPi("unable to locate Pi revision")

    monkeypatch.setattr(gpiozero.pins.native, "NativeFactory", NotAPi)
    with pytest.raises(GpioError, match="'native' could not start: unable to locate") as info:
        make_pin_factory("native")
    assert not isinstance(info.value, GpioLibraryMissing)
    assert info.value.exit_code == EX_IOERR
    assert "/dev/gpiomem" in str(info.value)


def test_unknown_pin_factory_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError, match="'gpiod' is not a pin library") as info:
        make_pin_factory("gpiod")
    assert "mock, lgpio, rpigpio, pigpio, native" in str(info.value)


def test_open_spi_without_a_factory_uses_gpiozeros_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = MockFactory(pin_class=MockPWMPin)
    monkeypatch.setattr(Device, "pin_factory", f)
    spi = open_spi(None, 0, 0)
    try:
        spi.write([0x00])
        assert len(f.pin(11).states) > 1  # the clock ran on the default factory's pins
    finally:
        spi.close()
        f.close()


def test_open_spi_bad_port_is_a_gpio_error(factory: Any) -> None:
    with pytest.raises(GpioError, match="SPI port 7 device 0"):
        open_spi(factory, 7, 0)
