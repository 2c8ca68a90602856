#!/usr/bin/env python3
"""CPU of `pi-agent run` at rest (no conversation, no wake word) on the real-time PulseAudio bed.

Runs the daemon in this process on PortAudio (the bed's default devices) for `--seconds`, after a
warm-up, and prints its CPU time per minute of rest, with idle capture batched as shipped and, for
comparison, with every 20 ms chunk posted to the event loop. Prints JSON and a table; asserts
nothing.

    .venv/bin/python scripts/bench_rest.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout: pi_agent and tests/beds

from pi_agent.adapters.audio import capture  # noqa: E402
from pi_agent.adapters.systemd import Notifier  # noqa: E402
from pi_agent.app import Daemon  # noqa: E402
from pi_agent.config import default_config  # noqa: E402
from tests.beds.pulse import PulseBed  # noqa: E402

RATE = 16000
WARM_UP_S = 3.0
SECONDS_PER_MINUTE = 60.0


async def at_rest(seconds: float, socket_dir: Path) -> float:
    """CPU seconds per minute of this process while the daemon waits for a trigger."""
    cfg = default_config(
        "agent_1",
        "ws://127.0.0.1:9",
        audio={"backend": "pyaudio", "earcons": {"wake": False, "end": False, "error": False}},
        control={"socket": str(socket_dir / "control.sock")},
    )
    daemon = Daemon(cfg, notifier=Notifier({}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.sleep(WARM_UP_S)
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = time.process_time(), time.monotonic()
    finally:
        daemon.stop()
        await task
    return (cpu1 - cpu0) / (t1 - t0) * SECONDS_PER_MINUTE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    shipped = capture.IDLE_BATCH_CHUNKS
    rows = []
    with tempfile.TemporaryDirectory() as tmp, PulseBed(Path(tmp) / "pulse", RATE):
        for batch in (shipped, 1):
            capture.IDLE_BATCH_CHUNKS = batch
            cpu = asyncio.run(at_rest(args.seconds, Path(tmp)))
            row = {"idle_batch_chunks": batch, "cpu_s_per_min": round(cpu, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    capture.IDLE_BATCH_CHUNKS = shipped
    print("\n| idle capture posted | CPU at rest (s/min) |\n|---|---|")
    for r in rows:
        print(f"| every {r['idle_batch_chunks'] * 20} ms | {r['cpu_s_per_min']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
