"""Built-in client tools (time, volume, LED, end, device facts) and the registry of a config.

Built-ins act on the device through `DeviceHooks`, so the daemon, `talk` and tests each plug in
what they have; a hook left out makes its tool answer with an error. Tools that touch the event
loop's objects are coroutines (they run on the loop); file reads run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from pi_agent import __version__
from pi_agent.adapters.tools import Tool, ToolRegistry, command_tool
from pi_agent.config import ParamSpec, ToolsConfig
from pi_agent.core.patterns import Pattern, parse_pattern
from pi_agent.errors import ToolError

log = logging.getLogger(__name__)

# Where Linux tells the SoC temperature (millidegrees Celsius), uptime and the board model.
THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
UPTIME_PATH = Path("/proc/uptime")
MODEL_PATH = Path("/proc/device-tree/model")
MILLIDEGREES_PER_DEGREE = 1000.0
# Output gain the volume tools offer, in percent (audio.volume allows 0 to 2).
MAX_VOLUME_PERCENT = 200
# What set_led accepts to give the LEDs back to the status patterns.
LED_DEFAULT_WORDS = frozenset({"default", "status", "auto", "reset"})
# After end_conversation the agent usually says goodbye; its audio starts within this long.
END_GRACE_S = 3.0

_PERCENT = ParamSpec("integer", None, 0, MAX_VOLUME_PERCENT, "output volume in percent")
_PATTERN = ParamSpec("string", None, None, None, "'red', 'blue pulse', '#ff8800 blink', 'default'")
NO_PARAMETERS: Mapping[str, ParamSpec] = MappingProxyType({})


class Volume(Protocol):
    """An output gain that can be read and set (1.0 = unchanged)."""

    def get(self) -> float:
        """Return the gain."""

    def set(self, gain: float) -> None:
        """Set the gain."""


class SpeakerVolume:
    """The software gain of a speaker with a `volume` attribute (the PyAudio speaker)."""

    def __init__(self, speaker: Any) -> None:
        self.speaker = speaker

    @classmethod
    def of(cls, speaker: object) -> SpeakerVolume | None:
        """A Volume for `speaker`, or None when it has no software gain."""
        return cls(speaker) if isinstance(getattr(speaker, "volume", None), int | float) else None

    def get(self) -> float:
        """Return the speaker's gain."""
        return float(self.speaker.volume)

    def set(self, gain: float) -> None:
        """Set the speaker's gain; it applies from the next audio frame."""
        self.speaker.volume = gain


@dataclass(slots=True)
class DeviceHooks:
    """What built-in tools act on; None = this device lacks it (the tool answers an error)."""

    volume: Volume | None = None
    set_led: Callable[[Pattern | None], None] | None = None
    end_conversation: Callable[[], None] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    hostname: Callable[[], str] = socket.gethostname
    thermal_path: Path = THERMAL_PATH
    uptime_path: Path = UPTIME_PATH
    model_path: Path = MODEL_PATH


def time_facts(now: datetime) -> dict[str, str]:
    """Local time and date of `now` (timezone-aware) in plain, unambiguous forms."""
    return {
        "local_time": now.strftime("%H:%M"),
        "local_date": now.strftime("%Y-%m-%d"),
        "weekday": now.strftime("%A"),
        "timezone": now.strftime("%Z") or now.strftime("%z"),
        "utc_offset": now.strftime("%z"),
        "iso": now.isoformat(timespec="seconds"),
    }


def _read_text(path: Path) -> str | None:
    """A small sysfs/procfs file's text, or None where it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\0\n ")
    except OSError:
        return None


def device_facts(hooks: DeviceHooks) -> dict[str, Any]:
    """Hostname, uptime, SoC temperature and board model (each where readable)."""
    facts: dict[str, Any] = {"hostname": hooks.hostname(), "pi_agent_version": __version__}
    uptime = (_read_text(hooks.uptime_path) or "").split()
    with contextlib.suppress(ValueError, IndexError):
        facts["uptime_s"] = round(float(uptime[0]))
    temp = _read_text(hooks.thermal_path)
    with contextlib.suppress(ValueError):
        if temp is not None:
            facts["soc_temperature_c"] = round(int(temp) / MILLIDEGREES_PER_DEGREE, 1)
    model = _read_text(hooks.model_path)
    if model:
        facts["model"] = model
    return facts


def builtin_tools(hooks: DeviceHooks) -> dict[str, Tool]:
    """Every built-in tool by name, acting through `hooks`."""

    async def get_time(_: Mapping[str, Any]) -> dict[str, str]:
        return time_facts(hooks.now())

    def volume() -> Volume:
        if hooks.volume is None:
            raise ToolError("this device's speaker has no volume control")
        return hooks.volume

    async def get_volume(_: Mapping[str, Any]) -> dict[str, int]:
        return {"percent": round(volume().get() * 100)}

    async def set_volume(params: Mapping[str, Any]) -> dict[str, int]:
        volume().set(params["percent"] / 100)
        log.info("volume set to %d%% by the agent", params["percent"])
        return {"percent": params["percent"]}

    async def set_led(params: Mapping[str, Any]) -> str:
        if hooks.set_led is None:
            raise ToolError("this device has no LEDs")
        text = str(params["pattern"]).strip().lower()
        if text in LED_DEFAULT_WORDS:
            hooks.set_led(None)
            return "the LEDs show the device's status again"
        try:
            pattern = parse_pattern(text)
        except ValueError as exc:
            raise ToolError(f"parameter 'pattern': {exc}") from None
        hooks.set_led(pattern)
        return f"the LEDs show {pattern} until the conversation ends"

    async def end_conversation(_: Mapping[str, Any]) -> str:
        if hooks.end_conversation is None:
            raise ToolError("this device cannot end the conversation")
        hooks.end_conversation()
        return "the conversation ends once you have finished speaking"

    def device_info(_: Mapping[str, Any]) -> dict[str, Any]:
        return device_facts(hooks)

    return {
        "get_time": Tool(get_time, NO_PARAMETERS),
        "get_volume": Tool(get_volume, NO_PARAMETERS),
        "set_volume": Tool(set_volume, MappingProxyType({"percent": _PERCENT})),
        "set_led": Tool(set_led, MappingProxyType({"pattern": _PATTERN})),
        "end_conversation": Tool(end_conversation, NO_PARAMETERS),
        "device_info": Tool(device_info, NO_PARAMETERS),
    }


def build_registry(cfg: ToolsConfig, hooks: DeviceHooks) -> ToolRegistry:
    """The enabled built-ins and every command tool of `cfg`, with its MCP allow list."""
    available = builtin_tools(hooks)
    tools = {name: available[name] for name in cfg.builtins}
    tools.update((command.name, command_tool(command)) for command in cfg.commands)
    return ToolRegistry(tools, mcp_allow=cfg.mcp_allow)


async def end_when_asked(
    asked: asyncio.Event, playback_idle: asyncio.Event, end: Callable[[], None]
) -> None:
    """Once `asked` (the end_conversation tool), let the agent's goodbye play, then `end()`."""
    await asked.wait()
    await asyncio.sleep(END_GRACE_S)
    await playback_idle.wait()
    end()
