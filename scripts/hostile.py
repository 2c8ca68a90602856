#!/usr/bin/env python3
"""Peak memory of `pi-agent talk` against a hostile simulator: floods, measured, not asserted.

Each case runs `pi-agent simulate` with a fault scenario and `pi-agent talk` against it, both as
processes of their own, and reads the talk process's peak RSS from the kernel (wait4), once
with glibc's defaults and once with the allocator setting the unit gives the daemon. Prints a
table and JSON.

    .venv/bin/python scripts/hostile.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pi_agent.adapters.audio.wavfile import write_wav

RATE = 16000
SPEECH_S = 1.0
TOOL_CALLS = 20_000  # as the report that found the leak
BIG_FRAMES = 28  # 16 MiB of pcm_16000 each: about 3 hours of audio at once
BIG_FRAME_BYTES = 16 * 1024 * 1024
PROCESS_TIMEOUT_S = 300
KIB_PER_MIB = 1024
UNIT_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}  # systemd/pi-agent.service sets it

CASES: dict[str, list[Any]] = {
    "normal conversation (baseline)": [{"wait": 0.5}, {"close": {"code": 1000}}],
    f"{TOOL_CALLS:,} tool calls, never reading": [
        {"wait": 0.2},
        {"tool_call_flood": {"count": TOOL_CALLS, "read": False}},
        {"wait": 5},
        {"close": {"code": 1000}},
    ],
    f"{BIG_FRAMES} x 16 MiB of audio (~3 h) at once": [
        {"wait": 0.2},
        *([{"send_big": {"size_bytes": BIG_FRAME_BYTES, "type": "audio"}}] * BIG_FRAMES),
        {"wait": 1},
        {"close": {"code": 1011, "reason": "flooded"}},
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pi_agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "pi_agent", *args]


def run_case(work: Path, name: str, steps: list[Any], env: dict[str, str]) -> dict[str, Any]:
    """One case: its simulator, one talk; the talk's peak RSS and how it ended."""
    scenario = work / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(steps))
    port = free_port()
    sim = subprocess.Popen(  # noqa: S603 - our own program, fixed arguments
        pi_agent(
            "simulate", "--host", "127.0.0.1", "--port", str(port), "--scenario", str(scenario)
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)
        config = work / "pi-agent.yaml"
        config.write_text(
            f"agent:\n  agent_id: agent_1\n  server_url: ws://127.0.0.1:{port}\n"
            f"audio:\n  backend: file\n  input_file: {work / 'in.wav'}\n"
        )
        started = time.monotonic()
        talk = subprocess.Popen(  # noqa: S603 - our own program, fixed arguments
            pi_agent("talk", "--config", str(config), "--max-s", "120"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        _, status, usage = os.wait4(talk.pid, 0)
        seconds = time.monotonic() - started
        stderr = talk.stderr.read() if talk.stderr else ""
    finally:
        sim.terminate()
        sim.wait(PROCESS_TIMEOUT_S)
    return {
        "case": name,
        "allocator": "as the unit runs it" if env else "glibc defaults",
        "peak_rss_mb": round(usage.ru_maxrss / KIB_PER_MIB, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": round(seconds, 1),
        "says": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = np.arange(int(SPEECH_S * RATE)) / RATE
        write_wav(work / "in.wav", (np.sin(2 * np.pi * 440 * t) * 9000).astype(np.int16), RATE)
        for name, steps in CASES.items():
            for env in ({}, UNIT_ENV):
                result = run_case(work, name, steps, env)
                results.append(result)
                print(json.dumps(result), flush=True)
    print("\n| case | allocator | peak RSS (MB) | exit | s | what talk says |")
    print("|---|---|---|---|---|---|")
    for r in results:
        cells = ("case", "allocator", "peak_rss_mb", "exit", "seconds", "says")
        print("| " + " | ".join(str(r[c]) for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
