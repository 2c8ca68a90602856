#!/usr/bin/env python3
"""Echo handling on the real-time PulseAudio bed, by mode: echo removed, voice barge-in, and
false barge-in. Prints JSON lines and a table; asserts nothing.

On the bed the speaker's sink monitor is the microphone: the agent's echo arrives at full level,
a harsher room than a real one. "User" speech is fed into the same sink, so it mixes with the
echo. Signals are broadband and syllable-modulated (a pure tone defeats any delay estimator).

- echo left: the agent speaks 3 s with nobody talking; the level of what reached the server in
  its last 2 s, against the same played with `open` (the difference is the ERLE);
- voice barge-in: the echo agent answers a 3 s turn; a second into the answer the user talks
  over it at an echo-to-speech ratio (0 dB, -10 dB); counted when the server interrupted;
- false barge-in: the same answer with nobody talking over it; counted when the agent was
  interrupted anyway (by its own echo).

    .venv/bin/python scripts/bench_aec.py [--trials 20] [--modes aec mute duck open] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout: pi_agent and tests/beds

from pi_agent.adapters.client import Conversation  # noqa: E402
from pi_agent.core.audio import formats  # noqa: E402
from pi_agent.core.ending import EndKind, EndReason  # noqa: E402
from pi_agent.simulator import Close, Scenario, SendAudio, Simulator, SimulatorOptions, Wait  # noqa: E402
from tests.beds.pulse import PulseBed  # noqa: E402
from tests.beds.realtime import conversation, rt_config  # noqa: E402

RATE = 16000
ECHO_LEVEL = 4000.0  # the agent's voice (and so its echo) at about -21 dBFS
WAIT_S = 15.0
HEARD_FIRST_S = 1.0  # the user talks over the answer this far into it
RATIOS_DB = (0.0, -10.0)  # echo-to-speech ratios of the barge-in runs


def babble(seconds: float, seed: int, level: float = ECHO_LEVEL) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    return (rng.standard_normal(t.size) * level * envelope).astype(np.int16)


async def echo_left(mode: str, seed: int) -> float:
    """dBFS of what reached the server in the last 2 s of 3 s of agent speech."""
    scenario = Scenario((SendAudio(samples=babble(3.0, seed), event_id=1), Wait(3.5), Close()))
    async with Simulator(SimulatorOptions(ping_interval_s=0, scenario=scenario)) as sim:
        conv = conversation(rt_config(sim, mic_while_speaking=mode))
        await conv.run()
        record = sim.conversations[0]
        await record.wait_ended(WAIT_S)
        heard = record.user_audio()
    part = heard[RATE : 3 * RATE]
    return round(formats.rms_dbfs(part) if np.any(part) else -120.0, 1)


async def answer(mode: str, seed: int, barge_level: float | None) -> bool:
    """One question and answer; True when the agent was interrupted."""
    async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
        conv = conversation(rt_config(sim, mic_while_speaking=mode))

        def played_s() -> float:
            queue = conv.playback
            return 0.0 if queue is None else (queue.queued_total - queue.queued_samples) / RATE

        async def watch(c: Conversation) -> None:
            record = await sim.next_conversation(WAIT_S)
            BED.feed_samples(babble(3.0, seed))
            async with asyncio.timeout(WAIT_S):
                while played_s() < HEARD_FIRST_S:  # noqa: ASYNC110 - the player's progress
                    await asyncio.sleep(0.01)
            if barge_level is not None:
                BED.feed_samples(babble(1.0, seed + 1000, barge_level))
            turn = record.agent_turns[0]
            await record.wait_until(
                lambda: turn.interrupted or turn.chunks_sent == turn.chunks_total, WAIT_S
            )
            async with asyncio.timeout(WAIT_S):
                while c.audio_playing and not c.session.counters.interruptions:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            c.end(EndReason(EndKind.LOCAL, "trial over"))

        await conv.run(watch)
        return conv.session.counters.interruptions > 0


BED: Any = None


def main(argv: list[str] | None = None) -> int:
    global BED  # noqa: PLW0603 - one bed for the whole run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["aec", "mute", "duck", "open"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, PulseBed(Path(tmp) / "pulse", RATE) as bed:
        BED = bed
        for mode in args.modes:
            row: dict[str, Any] = {"mode": mode}
            levels = [asyncio.run(echo_left(mode, seed)) for seed in range(args.trials)]
            row["echo_left_dbfs"] = round(float(np.median(levels)), 1)
            for ratio in RATIOS_DB:
                level = ECHO_LEVEL * 10 ** (-ratio / 20)
                hits = sum(asyncio.run(answer(mode, 10 + s, level)) for s in range(args.trials))
                row[f"barge_in_{ratio:+.0f}dB"] = f"{hits}/{args.trials}"
            false = sum(asyncio.run(answer(mode, 500 + s, None)) for s in range(args.trials))
            row["false_barge_in"] = f"{false}/{args.trials}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    reference = next((r["echo_left_dbfs"] for r in rows if r["mode"] == "open"), None)
    print("\n| mode | echo left (dBFS) | ERLE vs open (dB) | barge-in, echo 0 dB | barge-in, echo "
          "-10 dB | false barge-in |\n|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        erle = "-" if reference is None else f"{reference - r['echo_left_dbfs']:.1f}"
        print(
            f"| {r['mode']} | {r['echo_left_dbfs']} | {erle} | {r['barge_in_+0dB']} | "
            f"{r['barge_in_-10dB']} | {r['false_barge_in']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
