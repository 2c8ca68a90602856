"""`pi-agent devices`: every audio device, and the sample rates PortAudio says it accepts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TextIO

from pi_agent.adapters.audio.devicelist import (
    CANDIDATE_RATES,
    DeviceInfo,
    PyAudioFactory,
    describe_portaudio_error,
    list_devices,
    load_pyaudio,
)
from pi_agent.adapters.systemd import configure_logging
from pi_agent.errors import EX_IOERR, EX_OK


def _khz(rates: tuple[int, ...], channels: int) -> str:
    if not channels:
        return "-"
    if not rates:
        return "none of " + " ".join(f"{r / 1000:g}" for r in CANDIDATE_RATES)
    return " ".join(f"{r / 1000:g}" for r in rates)


def format_device_table(devices: Iterable[DeviceInfo]) -> str:
    """A plain-text table: index, name, in/out channels (* = default), capture/playback kHz."""
    header = ("#", "name", "in", "out", "default Hz", "capture kHz", "playback kHz")
    rows: list[tuple[str, ...]] = []
    notes: list[
        str
    ] = []  # problems are long sentences: numbered notes under the table keep it narrow

    def rates(d: DeviceInfo, direction: str, rates: tuple[int, ...], ch: int, problem: str) -> str:
        if not problem:
            return _khz(rates, ch)
        notes.append(f"[{len(notes) + 1}] {d.name} {direction}: {problem}")
        return f"unusable [{len(notes)}]"

    for d in devices:
        ins, outs = d.max_input_channels, d.max_output_channels
        rows.append(
            (
                str(d.index),
                d.name,
                f"{ins}{'*' if d.default_input else ''}",
                f"{outs}{'*' if d.default_output else ''}",
                str(d.default_rate),
                rates(d, "capture", d.input_rates, ins, d.input_problem),
                rates(d, "playback", d.output_rates, outs, d.output_problem),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {0, 2, 3, 4}  # numbers line up on the right

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    lines = [line(header), *(line(r) for r in rows), *notes]
    lines.append("* default device. Rates are those PortAudio accepted for mono 16-bit audio.")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    """Print the table on stdout (0), or one error line on stderr (74)."""
    configure_logging(args.log_level or "warning")
    return devices_main(sys.stdout, sys.stderr)


def devices_main(out: TextIO, err: TextIO, factory: PyAudioFactory | None = None) -> int:
    """`pi-agent devices`: print the device table (0), or one error line on `err` (74)."""
    try:
        pa = (factory or load_pyaudio().PyAudio)()
    except OSError as exc:  # AudioError (no PyAudio) is an OSError too
        print(f"pi-agent: cannot start PortAudio: {describe_portaudio_error(exc)}", file=err)
        return EX_IOERR
    try:
        devices = list_devices(pa)
    except OSError as exc:
        print(f"pi-agent: cannot list audio devices: {describe_portaudio_error(exc)}", file=err)
        return EX_IOERR
    finally:
        pa.terminate()
    if not devices:
        print("pi-agent: PortAudio found no audio devices (is a sound card attached?)", file=err)
        return EX_IOERR
    out.write(format_device_table(devices))
    return EX_OK
