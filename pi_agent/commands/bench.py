"""Acoustic round trip and CPU cost of pi-agent on the configured sound card (a benchmark).

A local simulator, on a thread of this process, sends short tone bursts as agent audio; pi-agent
plays them on the configured speaker, the configured microphone hears them through the air, and
the simulator receives them back. Round trip: arrival of the `user_audio_chunk` holding a burst's
onset minus the moment its `audio` event left the simulator. CPU: this process's CPU time minus
the simulator thread's, per minute of conversation. Prints a table and JSON; asserts nothing.

Run it with the speaker audible to the microphone, in a quiet room:
`pi-agent bench --config /etc/pi-agent.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from pi_agent.adapters.systemd import configure_logging
from pi_agent.config import Config, load_config
from pi_agent.core import protocol as p
from pi_agent.core.audio import formats
from pi_agent.core.figures import summary
from pi_agent.errors import EX_OK, EX_USAGE
from pi_agent.simulator.records import ConversationRecord

Int16 = npt.NDArray[np.int16]

DEFAULT_ROUNDS = 10
MAX_ROUNDS = 200  # 5 minutes of bursts
BURST_S = 0.1  # long enough to rise well above room noise, short enough to end before its echo
BURST_HZ = 1000.0  # where small speakers and MEMS microphones are both flat
BURST_DBFS = -12.0  # loud and clear of clipping; the speaker's own volume applies on top
LEAD_S = 2.0  # start-up, and quiet audio before the first burst to measure the noise floor
SPACING_S = 1.5  # room reverberation dies away before the next burst
WINDOW_MS = 5  # onset resolution: level measured over windows this long
ONSET_ABOVE_FLOOR_DB = 20.0  # a burst's onset is the first window this far above the floor
MIN_ONSET_DBFS = -60.0  # ... and at least this loud, so a digitally silent floor is no trigger
MAX_ROUND_TRIP_S = 1.0  # an onset later than this after the send belongs to no burst
CONVERSATION_MARGIN_S = 30.0  # time limit beyond the scripted length, for a slow start
SIM_CALL_TIMEOUT_S = 5.0  # a call onto the simulator's loop answers in microseconds
KB_PER_MB = 1024.0  # ru_maxrss is in kilobytes on Linux


def window_levels(samples: Int16, rate: int) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of consecutive WINDOW_MS windows (a partial last window is ignored)."""
    size = max(1, rate * WINDOW_MS // 1000)
    count = samples.size // size
    if count == 0:
        return np.zeros(0)
    frames = samples[: count * size].astype(np.float64).reshape(count, size) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    levels: npt.NDArray[np.float64] = 20.0 * np.log10(np.maximum(rms, 1e-9))
    return levels


def round_trips(
    audio: Int16, ends: Sequence[int], arrivals: Sequence[float], sent: Sequence[float], rate: int
) -> list[float | None]:
    """Per burst send time: the arrival of the chunk holding its onset minus the send time."""
    levels = window_levels(audio, rate)
    if not levels.size:
        return [None for _ in sent]
    size = max(1, rate * WINDOW_MS // 1000)
    floor = float(np.median(levels))
    threshold = max(floor + ONSET_ABOVE_FLOOR_DB, MIN_ONSET_DBFS)
    ends_array = np.asarray(ends)
    out: list[float | None] = []
    for at in sent:
        first = int(np.searchsorted(np.asarray(arrivals), at))  # chunks sent after the burst
        start = int(ends_array[first - 1]) if first > 0 else 0
        last = int(np.searchsorted(np.asarray(arrivals), at + MAX_ROUND_TRIP_S))
        stop = int(ends_array[min(last, len(ends_array) - 1)]) if len(ends_array) else 0
        loud = np.flatnonzero(levels[start // size : stop // size] >= threshold)
        if not loud.size:
            out.append(None)
            continue
        onset = (start // size + int(loud[0])) * size
        chunk = int(np.searchsorted(ends_array, onset, side="right"))
        out.append(arrivals[chunk] - at if chunk < len(arrivals) else None)
    return out


def bench_config(cfg: Config, server_url: str) -> Config:
    """The configuration pointed at the local simulator, microphone never gated, no earcons."""
    audio = cfg.audio
    earcons = dataclasses.replace(audio.earcons, wake=False, end=False, error=False)
    return dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, server_url=server_url, tls_ca_file=None),
        audio=dataclasses.replace(audio, mic_while_speaking="open", earcons=earcons),
    )


async def _thread_cpu() -> float:
    """CPU time of the thread this runs on (the simulator's, via SimulatorThread.run)."""
    return time.thread_time()


def bench_main(
    cfg: Config,
    *,
    rounds: int = DEFAULT_ROUNDS,
    out: TextIO = sys.stdout,
    json_path: Path | None = None,
) -> int:
    """Measure the round trip `rounds` times on the configured devices; print JSON and a summary."""
    from pi_agent.simulator import (
        Close,
        Scenario,
        SendAudio,
        SimulatorOptions,
        SimulatorThread,
        Step,
        Wait,
    )
    from pi_agent.simulator.agent import tone
    from pi_agent.wiring import (
        build_conversation,
        open_devices,
    )

    if cfg.audio.backend != "pyaudio":
        print("pi-agent bench: needs a sound card (audio.backend: pyaudio)", file=sys.stderr)
        return EX_USAGE
    options = SimulatorOptions()
    rate = formats.parse_format(options.output_format).sample_rate
    burst = tone(BURST_HZ, BURST_S, rate, BURST_DBFS)
    steps: list[Step] = [Wait(LEAD_S)]
    for i in range(rounds):
        steps += [SendAudio(burst, event_id=i + 1, paced=False), Wait(SPACING_S)]
    steps.append(Close())
    options = dataclasses.replace(options, scenario=Scenario(tuple(steps)))
    scripted_s = LEAD_S + rounds * SPACING_S
    with SimulatorThread(options) as st:
        run_cfg = bench_config(cfg, st.url)
        mic, speaker = open_devices(run_cfg)
        conv = build_conversation(
            run_cfg, mic, speaker, max_duration_s=scripted_s + CONVERSATION_MARGIN_S
        )
        cpu0, sim0, t0 = (
            time.process_time(),
            st.run(_thread_cpu(), SIM_CALL_TIMEOUT_S),
            time.monotonic(),
        )
        reason = asyncio.run(conv.run())
        cpu1, sim1, t1 = (
            time.process_time(),
            st.run(_thread_cpu(), SIM_CALL_TIMEOUT_S),
            time.monotonic(),
        )
        record = st.conversations[-1] if st.conversations else None
    if record is None:
        print(f"pi-agent bench: no conversation took place: {reason}", file=sys.stderr)
        return EX_USAGE
    audio, ends, arrivals = received_audio(record)
    sent = [s.at for s in record.sent if s.type == "audio"]
    trips = round_trips(audio, ends, arrivals, sent, rate)
    found = [t for t in trips if t is not None]
    report: dict[str, Any] = {
        "devices": {
            "input_device": cfg.audio.input_device,
            "output_device": cfg.audio.output_device,
            "chunk_ms": cfg.audio.chunk_ms,
            "jitter_ms": cfg.audio.jitter_ms,
            "volume": cfg.audio.volume,
        },
        "end": str(reason),
        "round_trip": summary(found),
        "bursts_missed": len(trips) - len(found),
        "cpu_s_per_min": round(((cpu1 - cpu0) - (sim1 - sim0)) / max(t1 - t0, 1e-9) * 60.0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB, 1),
    }
    text = json.dumps(report, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n")
    print(text, file=out)
    print(one_line(report), file=out)
    return EX_OK


def received_audio(record: ConversationRecord) -> tuple[Int16, list[int], list[float]]:
    """The user audio the simulator received, each chunk's end index and arrival time."""
    parts: list[Int16] = []
    arrivals: list[float] = []
    for event in record.received:
        if isinstance(event.message, p.UserAudioChunk):
            parts.append(np.frombuffer(event.message.audio, dtype="<i2").astype(np.int16))
            arrivals.append(event.at)
    audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    return audio, [int(end) for end in np.cumsum([part.size for part in parts])], arrivals


def one_line(report: dict[str, Any]) -> str:
    """The figures of a bench report in one line."""
    rt = report["round_trip"]
    heard = (
        f"median {rt['median_ms']:.0f} ms, p95 {rt['p95_ms']:.0f} ms, n={rt['n']}"
        if rt["n"]
        else "no burst heard"
    )
    return (
        f"round trip (speaker -> air -> microphone -> simulator): {heard}; "
        f"missed {report['bursts_missed']}; CPU {report['cpu_s_per_min']:.2f} s/min; "
        f"peak RSS {report['peak_rss_mb']:.0f} MB"
    )


def main(args: argparse.Namespace) -> int:
    """`pi-agent bench --config FILE [--rounds N] [--json FILE]`."""
    cfg = load_config(args.config)
    configure_logging(args.log_level or "warning")
    return bench_main(cfg, rounds=args.rounds, json_path=args.json)
