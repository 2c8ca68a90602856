"""`pi-agent demo`: the daemon's main job end to end, against the built-in simulator.

Starts the simulator in-process on a free loopback port, then holds one conversation through the
same code path as `pi-agent talk` with the `file` backend: a bundled speech recording is the
microphone, a WAV file is the speaker. Prints the transcript with timings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import resources
from pathlib import Path
from typing import TextIO

from pi_agent.adapters.audio.wavfile import read_wav
from pi_agent.adapters.systemd import configure_logging
from pi_agent.config import default_config
from pi_agent.core.audio import formats
from pi_agent.once import run_talk
from pi_agent.simulator import Simulator, SimulatorOptions

DEMO_AGENT_ID = "pi-agent-demo"
# The simulator pings often so the demo shows a measured round trip within a few seconds.
DEMO_PING_INTERVAL_S = 0.5
# Frames louder than this count as speech when timing the reply (the simulator uses -40 too).
SPEECH_DBFS = -40.0


def demo_recording() -> Path:
    """Path of the bundled 16 kHz speech recording used as the microphone."""
    return Path(str(resources.files("pi_agent") / "data" / "hello.wav"))


def speech_end_s(path: Path) -> float:
    """Where the last 20 ms frame louder than SPEECH_DBFS ends in a recording, in seconds."""
    samples, rate = read_wav(path)
    frame = rate // 50
    loud = [
        i
        for i in range(0, len(samples) - frame + 1, frame)
        if formats.rms_dbfs(samples[i : i + frame]) > SPEECH_DBFS
    ]
    return (loud[-1] + frame) / rate if loud else 0.0


def _ms(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "n/a"
    return f"{(end - start) * 1000:.0f} ms"


async def run_demo(
    output: Path, output_format: str, *, fast: bool = False, out: TextIO = sys.stdout
) -> int:
    """Run the demo conversation; returns the exit status."""
    options = SimulatorOptions(
        agent_ids=frozenset({DEMO_AGENT_ID}),
        output_format=output_format,
        ping_interval_s=DEMO_PING_INTERVAL_S,
    )
    async with Simulator(options) as sim:
        print(f"simulator listening on {sim.url}", file=out)
        cfg = default_config(
            DEMO_AGENT_ID,
            sim.url,
            audio={
                "backend": "file",
                "input_file": str(demo_recording()),
                "output_file": str(output),
                "file_speed": 0.0 if fast else 1.0,
            },
        )
        print(f"streaming {demo_recording().name} as the microphone ...", file=out)
        reason, conv = await run_talk(cfg, out=out)
        record = sim.conversations[-1] if sim.conversations else None
    t = conv.timeline
    print("", file=out)
    print(f"result:              {reason}", file=out)
    print(f"connect:             {_ms(t.start, t.connected)}", file=out)
    print(f"metadata:            {_ms(t.connected, t.started)} after connecting", file=out)
    if fast:
        print(f"first agent audio:   {_ms(t.started, t.first_audio)} after metadata", file=out)
    else:
        # The recording plays in real time from t.start, so its speech ends at a known moment.
        speech_end = t.start + speech_end_s(demo_recording())
        print(
            f"first agent audio:   {_ms(speech_end, t.first_audio)} after the speech ended "
            "(includes the simulator's end-of-turn wait of about 0.5 s)",
            file=out,
        )
    rtt = conv.session.rtt_ms
    measured = record.rtts_ms if record is not None else []
    rtt_text = f"{rtt:.1f} ms (server's ping_ms)" if rtt is not None else "n/a"
    if measured:
        rtt_text += f"; simulator measured median {sorted(measured)[len(measured) // 2]:.1f} ms"
    print(f"round trip:          {rtt_text}", file=out)
    print(f"microphone chunks:   {conv.chunks_sent} sent", file=out)
    played = conv.session.counters.audio_samples
    print(f"agent audio:         {played} samples written to {output}", file=out)
    return reason.policy.exit_code


def main(args: argparse.Namespace) -> int:
    """`pi-agent demo [--output FILE] [--output-format F] [--fast]`."""
    configure_logging(args.log_level or "warning")
    return demo_main(args.output, args.output_format, fast=args.fast)


def demo_main(output: Path, output_format: str, *, fast: bool = False) -> int:
    """Entry point of `pi-agent demo`."""
    return asyncio.run(run_demo(output.absolute(), output_format, fast=fast))
