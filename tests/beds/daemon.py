"""A running daemon on real parts: simulator, gpiozero mock pins, control socket, NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.adapters.audio.devices import FileSpeaker, Samples
from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.systemd import Notifier
from pi_agent.app import Daemon
from pi_agent.config import Config, load_config
from pi_agent.simulator import Simulator, SimulatorOptions
from pi_agent.testing import NotifySink, ScriptedMic

RATE = 16000
CHUNK = 320
BUTTON, RED, GREEN, BLUE = 17, 5, 6, 13
STATE_TIMEOUT_S = 15.0
POLL_S = 0.02


def tone(seconds: float, freq: float = 440.0) -> Samples:
    """A sine at `freq`, loud enough to be speech to the simulator."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 9000).astype(np.int16)


@dataclass
class Bed:
    """What a daemon test holds: the daemon and every part around it."""

    daemon: Daemon
    sim: Simulator
    mic: ScriptedMic
    notify: NotifySink
    pins: MockFactory
    control: Path
    config_path: Path
    task: asyncio.Task[int] = field(init=False)

    def press(self) -> None:
        self.pins.pin(BUTTON).drive_low()

    def release(self) -> None:
        self.pins.pin(BUTTON).drive_high()

    def rgb(self) -> tuple[float, float, float]:
        return tuple(round(float(self.pins.pin(p).state), 2) for p in (RED, GREEN, BLUE))  # type: ignore[return-value]


def make_config(tmp_path: Path, server_url: str, **sections: dict[str, Any]) -> tuple[Config, Path]:
    """A config file for the bed (file audio, button, RGB LEDs, socket), `sections` on top."""
    write_wav(tmp_path / "unused.wav", np.zeros(160, np.int16), RATE)
    base: dict[str, dict[str, Any]] = {
        "audio": {"backend": "file", "input_file": str(tmp_path / "unused.wav"), "jitter_ms": 0},
        "button": {"pin": BUTTON, "bounce_ms": 0, "long_press_s": 1.5},
        "leds": {"driver": "rgb", "pins": [RED, GREEN, BLUE]},
        "control": {"socket": str(tmp_path / "control.sock")},
        "conversation": {"error_display_s": 0.5},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = ["agent:", "  agent_id: agent_1", f"  server_url: {server_url}"]
    for name, values in base.items():
        lines.append(f"{name}:")
        lines.extend(f"  {k}: {json.dumps(v)}" for k, v in values.items())
    path = tmp_path / "pi-agent.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path), path


def bed_daemon(
    cfg: Config,
    path: Path,
    mic: ScriptedMic,
    pins: MockFactory,
    notify_path: Path,
    notify_env: dict[str, str] | None = None,
) -> Daemon:
    """A Daemon on the bed's parts: the scripted microphone, a paced speaker, mock pins."""
    return Daemon(
        cfg,
        path,
        devices=lambda c: (mic, FileSpeaker(None, 1.0)),
        pin_factory=pins,
        notifier=Notifier({"NOTIFY_SOCKET": str(notify_path), **(notify_env or {})}),
    )


@contextlib.asynccontextmanager
async def daemon_bed(
    tmp_path: Path,
    sim_options: SimulatorOptions | None = None,
    *,
    notify_env: dict[str, str] | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[Bed]:
    """A daemon on the bed until the block ends; `notify_env` adds to its NOTIFY_SOCKET env."""
    async with Simulator(sim_options or SimulatorOptions(ping_interval_s=0.3)) as sim:
        cfg, path = make_config(tmp_path, sim.url, **sections)
        mic = ScriptedMic()
        pins = MockFactory(pin_class=MockPWMPin)
        notify = NotifySink(tmp_path / "notify.sock")
        daemon = bed_daemon(cfg, path, mic, pins, notify.path, notify_env)
        bed = Bed(daemon, sim, mic, notify, pins, tmp_path / "control.sock", path)
        bed.task = asyncio.create_task(daemon.run())
        try:
            await notify.wait_message("READY=1")
            yield bed
        finally:
            daemon.stop()
            await asyncio.wait_for(bed.task, 20)
            notify.close()
