"""Pure LED patterns: what each state looks like, and the brightness of a pattern over time."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pi_agent.core.states import State

Color = tuple[float, float, float]

COLORS: dict[str, Color] = {
    "white": (1.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 0.8, 0.0),
    "orange": (1.0, 0.4, 0.0),
    "purple": (0.6, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}
KINDS = ("off", "on", "blink", "fast-blink", "pulse", "spin")
BLINK_PERIOD_S = 1.0  # slow blink: "working on it"
FAST_BLINK_PERIOD_S = 0.25  # fast blink: "attention" (errors)
PULSE_PERIOD_S = 2.0  # breathing: calm activity (thinking, speaking)
SPIN_PERIOD_S = 1.2  # one turn of a light around a ring
_HEX = re.compile(r"#([0-9a-fA-F]{6})")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A kind of animation and a colour (single LEDs ignore the colour)."""

    kind: str
    color: Color = COLORS["white"]

    def level(self, t: float) -> float:
        """Brightness 0..1 at `t` seconds into the pattern."""
        if self.kind == "off":
            return 0.0
        if self.kind in ("on", "spin"):
            return 1.0
        if self.kind == "blink":
            return 1.0 if (t % BLINK_PERIOD_S) < BLINK_PERIOD_S / 2 else 0.0
        if self.kind == "fast-blink":
            return 1.0 if (t % FAST_BLINK_PERIOD_S) < FAST_BLINK_PERIOD_S / 2 else 0.0
        # pulse: a raised cosine between 5% and 100%, never fully dark so it reads as "on".
        phase = (t % PULSE_PERIOD_S) / PULSE_PERIOD_S
        return 0.05 + 0.95 * (0.5 - 0.5 * math.cos(2 * math.pi * phase))

    @property
    def animated(self) -> bool:
        return self.kind not in ("off", "on")

    def __str__(self) -> str:
        if self.kind == "off":
            return "off"
        name = next((n for n, c in COLORS.items() if c == self.color), None)
        color = name or "#" + "".join(f"{round(v * 255):02x}" for v in self.color)
        return f"{color} {self.kind}"


def parse_pattern(text: str) -> Pattern:
    """'blue pulse', 'on', '#ff8800 blink', 'off' -> Pattern; ValueError says what is allowed."""
    words = text.lower().split()
    kind = "on"
    color = COLORS["white"]
    seen_kind = False
    for word in words:
        if word in KINDS:
            if seen_kind:
                raise ValueError(f"{text!r} names two patterns")
            kind, seen_kind = word, True
        elif word in COLORS:
            color = COLORS[word]
        elif m := _HEX.fullmatch(word):
            value = int(m.group(1), 16)
            color = ((value >> 16) / 255, ((value >> 8) & 0xFF) / 255, (value & 0xFF) / 255)
        else:
            raise ValueError(
                f"{word!r} in {text!r} is neither a pattern ({', '.join(KINDS)}) "
                f"nor a colour ({', '.join(COLORS)} or #rrggbb)"
            )
    if not words:
        raise ValueError("the pattern is empty")
    return Pattern(kind, color)


DEFAULT_PATTERNS: dict[State, Pattern] = {
    State.IDLE: Pattern("off"),
    State.CONNECTING: Pattern("blink", COLORS["white"]),
    State.LISTENING: Pattern("on", COLORS["blue"]),
    State.USER_SPEAKING: Pattern("on", COLORS["cyan"]),
    State.THINKING: Pattern("pulse", COLORS["purple"]),
    State.AGENT_SPEAKING: Pattern("pulse", COLORS["green"]),
    State.ENDING: Pattern("fast-blink", COLORS["blue"]),
    State.ERROR: Pattern("fast-blink", COLORS["red"]),
    State.MUTED: Pattern("on", COLORS["orange"]),
}
