"""Config sections of the daemon's hardware and control: button, LEDs, control socket."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, SequenceNode

from pi_agent.config.schema import (
    BAD,
    Choice,
    Context,
    Field,
    FilePath,
    Flag,
    Kind,
    Nullable,
    Number,
    Section,
    Text,
    is_null,
    line_of,
    show,
    wrong_type,
)
from pi_agent.core.patterns import DEFAULT_PATTERNS, Pattern, parse_pattern
from pi_agent.core.states import STATE_NAMES, State
from pi_agent.errors import Invalid


@dataclass(frozen=True, slots=True)
class ButtonConfig:
    """The push-to-talk button (gpiozero); pin null = no button."""

    pin: int | str | None
    pull_up: bool
    bounce_ms: int
    mode: str
    long_press_s: float
    pin_factory: str | None


@dataclass(frozen=True, slots=True)
class Apa102Config:
    """An APA102 LED ring on SPI (ReSpeaker 2-mic: 3 LEDs, 4-mic: 12, Voice Bonnet: 3)."""

    count: int
    brightness: float
    spi_port: int
    spi_device: int


@dataclass(frozen=True, slots=True)
class LedsConfig:
    """Status LEDs: driver, pins and a pattern per state."""

    driver: str
    pin: int | str | None
    pins: tuple[int | str, ...] | None
    active_high: bool
    apa102: Apa102Config
    patterns: Mapping[State, Pattern]


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The local control socket (`pi-agent wake|end|status|say|context`)."""

    socket: Path | None
    group: str | None


class _Pin(Kind):
    """A GPIO pin: a BCM number, or a gpiozero name such as 'GPIO17' or 'BOARD11'."""

    expected = "a BCM pin number (0-27) or a name like 'GPIO17' or 'BOARD11'"
    NAME = re.compile(r"(GPIO|BCM)\d{1,2}|BOARD\d{1,2}|J8:\d{1,2}", re.IGNORECASE)

    def check(self, value: object, ctx: Context) -> object:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise wrong_type(value)
        if isinstance(value, int):
            if not 0 <= value <= 27:
                raise Invalid(f"{show(value)} is not a BCM pin of the 40-pin header")
            return value
        if not self.NAME.fullmatch(value):
            raise Invalid(f"{show(value)} is not a pin name")
        return value.upper()


class _Pins(Kind):
    """Three pins for an RGB LED: red, green, blue."""

    expected = "a list of three pins [red, green, blue]"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        if not isinstance(node, SequenceNode):
            raise wrong_type(ctx.construct(node))
        if len(node.value) != 3:
            raise Invalid(f"a list of {len(node.value)} pins")
        pins = [ctx.parse(_PIN, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if BAD in pins:
            return BAD
        if len(set(pins)) != 3:
            raise Invalid(f"{show(pins)} uses a pin twice")
        return tuple(pins)


class _Patterns(Kind):
    """State name -> LED pattern text such as 'blue pulse'; unset states keep their defaults."""

    expected = "a mapping of states to patterns like 'blue pulse'"

    def parse(self, node: Node, ctx: Context, path: str) -> object:
        patterns = dict(DEFAULT_PATTERNS)
        if is_null(node):
            return MappingProxyType(patterns)
        if not isinstance(node, MappingNode):
            raise wrong_type(ctx.construct(node))
        for key, key_node, value_node, key_path in ctx.pairs(node, path):
            if key not in STATE_NAMES:
                close = difflib.get_close_matches(key, STATE_NAMES, n=1)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"states: {', '.join(STATE_NAMES)}"
                )
                ctx.problem(line_of(key_node), key_path, f"unknown state; {hint}")
                continue
            value = ctx.construct(value_node)
            if not isinstance(value, str):
                ctx.problem(
                    line_of(value_node),
                    key_path,
                    f"{show(value)} is not a pattern; expected text like 'blue pulse' or 'off'",
                )
                continue
            try:
                patterns[State(key)] = parse_pattern(value)
            except ValueError as exc:
                ctx.problem(
                    line_of(value_node), key_path, f"{exc}; expected text like 'blue pulse'"
                )
        return MappingProxyType(patterns)


_PIN = _Pin()

BUTTON_SECTION = Section(
    "button",
    ButtonConfig,
    [
        Field("pin", Nullable(_PIN), None, "button pin; null = no button"),
        Field("pull_up", Flag(), True, "button wired to ground (true) or to 3.3 V (false)"),
        Field("bounce_ms", Number(0, 1000, integer=True), 30, "contact bounce to ignore"),
        Field("mode", Choice("hold", "toggle"), "hold", "push-to-talk or press to start/stop"),
        Field("long_press_s", Number(0, 30), 2.0, "holding this long ends it; 0 = off"),
        Field(
            "pin_factory",
            Nullable(Choice("lgpio", "rpigpio", "pigpio", "native", "mock")),
            None,
            "gpiozero pin library; null = gpiozero's own choice",
        ),
    ],
)

_APA102 = Section(
    "leds.apa102",
    Apa102Config,
    [
        Field("count", Number(1, 255, integer=True), 3, "LEDs on the ring"),
        Field("brightness", Number(0, 1), 0.3, "global brightness"),
        Field("spi_port", Number(0, 1, integer=True), 0, "SPI bus"),
        Field("spi_device", Number(0, 1, integer=True), 0, "SPI chip select"),
    ],
)


def _leds_cross(values: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Each driver needs its pins."""
    driver = values.get("driver")
    if driver in ("single", "pwm") and values.get("pin") is None:
        yield "pin", f"required when leds.driver is {driver!r}; expected a pin like 27"
    if driver == "rgb" and values.get("pins") is None:
        yield "pins", "required when leds.driver is 'rgb'; expected [red, green, blue] pins"


LEDS_SECTION = Section(
    "leds",
    LedsConfig,
    [
        Field("driver", Choice("none", "single", "pwm", "rgb", "apa102"), "none", "LED type"),
        Field("pin", Nullable(_PIN), None, "pin of a single or PWM LED"),
        Field("pins", Nullable(_Pins()), None, "[red, green, blue] pins of an RGB LED"),
        Field("active_high", Flag(), True, "LED lit by a high pin (false: wired to 3.3 V)"),
        Field("apa102", _APA102, _APA102.defaults(), "APA102 ring settings"),
        Field("patterns", _Patterns(), MappingProxyType(dict(DEFAULT_PATTERNS)), "per state"),
    ],
    cross=_leds_cross,
)

CONTROL_SECTION = Section(
    "control",
    ControlConfig,
    [
        Field("socket", Nullable(FilePath("parent")), None, "null = $RUNTIME_DIRECTORY or /run"),
        Field(
            "group", Nullable(Text()), None, "group allowed to connect; null = the service's group"
        ),
    ],
)
