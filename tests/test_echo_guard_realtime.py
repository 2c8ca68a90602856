"""Echo guard on the real-time bed: the sink's monitor is the microphone, so the speaker's sound
reaches the microphone as it would on a bare Pi with a speaker next to the mic."""

from __future__ import annotations

import numpy as np
import pytest

from pi_agent.core.audio import formats
from pi_agent.simulator import Close, Scenario, SendAudio, Simulator, SimulatorOptions, Wait
from tests.beds.pulse import PulseBed
from tests.beds.realtime import conversation, rt_config
from tests.helpers import run

TONE_HZ = 1000.0
TONE_S = 2.0
HEARD_DBFS = -40.0  # the echo agent's own speech threshold: louder than this is "heard"


@pytest.mark.parametrize("mode", ["open", "mute", "duck"])
def test_echo_guard_keeps_the_agent_from_hearing_itself(pulse_bed: PulseBed, mode: str) -> None:
    scenario = Scenario(
        (SendAudio(duration_s=TONE_S, tone_hz=TONE_HZ, event_id=1), Wait(TONE_S + 1.0), Close())
    )

    async def main() -> np.ndarray:
        async with Simulator(SimulatorOptions(ping_interval_s=0, scenario=scenario)) as sim:
            conv = conversation(rt_config(sim, mic_while_speaking=mode, duck_db=-30.0))
            await conv.run()
            record = sim.conversations[0]
            await record.wait_ended(10)
            return record.user_audio()

    heard = run(main())
    frame = 320
    levels = [formats.rms_dbfs(heard[i : i + frame]) for i in range(0, len(heard) - frame, frame)]
    loudest = max(levels)
    if mode == "open":
        assert loudest > HEARD_DBFS  # without the guard the agent hears its own voice
    elif mode == "mute":
        assert np.count_nonzero(heard) == 0  # silence was sent the whole time
    else:
        assert loudest < HEARD_DBFS  # ducked below what counts as speech
        assert np.count_nonzero(heard) > 0  # but not muted
