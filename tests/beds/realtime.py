"""The real-time PulseAudio bed as the audio tests use it: the fixture and a conversation on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pi_agent.adapters.audio.pyaudio_backend import open_pyaudio_devices
from pi_agent.adapters.client import Conversation
from pi_agent.config import Config, default_config
from pi_agent.simulator import Simulator
from pi_agent.wiring import build_conversation
from tests.beds.pulse import PulseBed, missing_tools

RATE = 16_000
# Bound on the waits of one real-time step; conversations get three of them.
WAIT_S = 10.0

# The microphone is never gated (these tests feed it while the agent may talk) and earcons are
# off (they would sound on the monitor like agent audio).
RT_AUDIO: dict[str, object] = {
    "backend": "pyaudio",
    "mic_while_speaking": "open",
    "earcons": {"wake": False, "end": False, "error": False},
}
PULSE_DEBS = "pulseaudio pulseaudio-utils libasound2-plugins"


@pytest.fixture
def pulse_bed(tmp_path: Path) -> Iterator[PulseBed]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: apt-get install {PULSE_DEBS}")
    with PulseBed(tmp_path / "pulse", RATE) as b:
        yield b


def rt_config(sim: Simulator, **audio: Any) -> Config:
    """pyaudio backend on the bed's default devices, RT_AUDIO plus `audio`."""
    return default_config("agent_rt", sim.url, audio={**RT_AUDIO, **audio})


def conversation(cfg: Config) -> Conversation:
    """A Conversation on real PortAudio devices, created inside the bed."""
    mic, speaker = open_pyaudio_devices(cfg.audio)
    return build_conversation(cfg, mic, speaker, max_duration_s=WAIT_S * 3)
