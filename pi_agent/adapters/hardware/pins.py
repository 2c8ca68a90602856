"""gpiozero pin factory injection: a config name -> a factory; errors say what to install.

How gpiozero picks a pin library when it is not told (``pin_factory: null``): it reads the
``GPIOZERO_PIN_FACTORY`` environment variable (lgpio, rpigpio, pigpio, native, mock) and, if that is
unset, tries lgpio, then RPi.GPIO, then pigpio, then its pure-Python "native" driver, in that order,
warning about each one it falls back from. ``make_pin_factory(None)`` keeps exactly that behaviour.

Why the Raspberry Pi 5 needs lgpio: its GPIO lines sit behind the RP1 I/O chip rather than in the
BCM283x/BCM2711 register block that RPi.GPIO, pigpio and gpiozero's native driver poke through
/dev/gpiomem. lgpio talks to the kernel's GPIO character devices (/dev/gpiochip*), which work on
every model, the Pi 5 included.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pi_agent.errors import (
    ConfigError,
    GpioError,
    GpioLibraryMissing,
    PiAgentError,
)

log = logging.getLogger(__name__)

PI5_NOTE = "on a Raspberry Pi 5 only lgpio works"


@dataclass(frozen=True, slots=True)
class _Library:
    """Where gpiozero keeps one pin factory, and what to tell a user who lacks its library."""

    module: str
    cls: str
    library: str
    install: str
    start_hint: str


_LIBRARIES: dict[str, _Library] = {
    "lgpio": _Library(
        "gpiozero.pins.lgpio",
        "LGPIOFactory",
        "lgpio",
        "Debian: python3-lgpio; pip: lgpio",
        "is this a Raspberry Pi, and may this user open /dev/gpiochip* (group gpio)?",
    ),
    "rpigpio": _Library(
        "gpiozero.pins.rpigpio",
        "RPiGPIOFactory",
        "RPi.GPIO",
        "Debian: python3-rpi.gpio; pip: RPi.GPIO",
        f"RPi.GPIO cannot drive a Raspberry Pi 5 ({PI5_NOTE})",
    ),
    "pigpio": _Library(
        "gpiozero.pins.pigpio",
        "PiGPIOFactory",
        "pigpio",
        "Debian: python3-pigpio plus the pigpiod daemon; pip: pigpio",
        f"is the pigpiod daemon running? ({PI5_NOTE})",
    ),
    "native": _Library(
        "gpiozero.pins.native",
        "NativeFactory",
        "gpiozero",
        "it ships with gpiozero",
        f"it needs /dev/gpiomem on a Raspberry Pi ({PI5_NOTE})",
    ),
}
FACTORY_NAMES = ("mock", *_LIBRARIES)


def make_pin_factory(name: str | None) -> Any | None:
    """Build the gpiozero pin factory called `name`; None leaves the choice to gpiozero."""
    if name is None:
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        # MockPWMPin, not the default MockPin: PWMLED and RGBLED refuse pins without PWM.
        return MockFactory(pin_class=MockPWMPin)
    lib = _LIBRARIES.get(name)
    if lib is None:
        raise ConfigError(
            [
                f"button.pin_factory: {name!r} is not a pin library; expected one of "
                f"{', '.join(FACTORY_NAMES)} or null"
            ]
        )
    try:
        module = importlib.import_module(lib.module)
    except ImportError as exc:
        raise GpioLibraryMissing(
            f"pin_factory {name!r} needs the {lib.library} library ({lib.install}); "
            f"{PI5_NOTE} ({exc})"
        ) from exc
    try:
        return getattr(module, lib.cls)()
    except Exception as exc:
        raise GpioError(f"pin_factory {name!r} could not start: {exc}; {lib.start_hint}") from exc


@contextlib.contextmanager
def gpio_errors(what: str) -> Iterator[None]:
    """Turn a pin library's exception (busy or bad pin, no chip) into a GpioError about `what`."""
    try:
        yield
    except PiAgentError:
        raise
    except Exception as exc:
        raise GpioError(f"{what}: {type(exc).__name__}: {exc}") from exc


def open_spi(pin_factory: Any | None, port: int, device: int) -> Any:
    """Open SPI `port`.`device` through `pin_factory` (None: gpiozero's default factory)."""
    from gpiozero import Device

    with gpio_errors(f"SPI port {port} device {device}"):
        if pin_factory is None:
            Device.ensure_pin_factory()
            pin_factory = Device.pin_factory
        # gpiozero 2.0.1's bit-banged SPI bus (pins/spi.py, SPISoftwareBus) calls Device.__init__()
        # without its pin_factory, so it looks up gpiozero's global default factory, which does not
        # exist off a Pi (BadPinFactory even with an explicit MockFactory). Lend ours for the call.
        borrowed = Device.pin_factory is None
        if borrowed:
            Device.pin_factory = pin_factory
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                spi = pin_factory.spi(port=port, device=device)
        finally:
            if borrowed:
                Device.pin_factory = None
        for warning in caught:
            log.warning(
                "SPI %d.%d: %s (enable SPI: dtparam=spi=on in config.txt; bit-banging costs CPU)",
                port,
                device,
                warning.message,
            )
        return spi
