"""PortAudio devices: what each one is, which sample rates it accepts, and choosing one.

Rates are asked of PortAudio (`is_format_supported`, mono 16-bit, the format pi-agent opens),
never guessed from the default rate: USB microphones commonly refuse 16 kHz, and HDMI outputs
often take only 44.1/48 kHz. On ALSA each question briefly opens the device, so a device that
another program holds shows up as unavailable rather than as accepting nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pi_agent.errors import AudioError

# The agent's default input format is pcm_16000: capturing at 16 kHz needs no resampling.
CAPTURE_RATE_HZ = 16000
# The rates the Agents API and common sound cards use, ascending.
CANDIDATE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
# PortAudio error codes (portaudio.h) that only say "not this combination": the device works,
# it just does not take this rate, channel count or sample format.
PA_INVALID_CHANNEL_COUNT = -9998
PA_INVALID_SAMPLE_RATE = -9997
PA_SAMPLE_FORMAT_NOT_SUPPORTED = -9994
UNSUPPORTED_CODES = frozenset(
    {PA_INVALID_CHANNEL_COUNT, PA_INVALID_SAMPLE_RATE, PA_SAMPLE_FORMAT_NOT_SUPPORTED}
)
# Codes that say the device itself cannot be used now: asking about other rates will not help.
# PortAudio's ALSA layer reports every failed open other than EBUSY as -9993.
PA_INVALID_DEVICE = -9996
PA_BAD_IO_DEVICE_COMBINATION = -9993
PA_DEVICE_UNAVAILABLE = -9985
FATAL_CODES = frozenset({PA_INVALID_DEVICE, PA_BAD_IO_DEVICE_COMBINATION, PA_DEVICE_UNAVAILABLE})
_HINTS = {
    PA_DEVICE_UNAVAILABLE: " (in use by another program?)",
    PA_BAD_IO_DEVICE_COMBINATION: " (ALSA could not open it: unplugged or misconfigured?)",
    PA_INVALID_DEVICE: " (the device list changed? see `pi-agent devices`)",
}

PyAudioFactory = Callable[[], Any]
log = logging.getLogger(__name__)


def load_pyaudio() -> ModuleType:
    """The `pyaudio` module, or an AudioError that says how to install it."""
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - a dependency, but say what to do
        raise AudioError(
            "the pyaudio backend needs PyAudio (pip install pyaudio; Debian: python3-pyaudio)"
        ) from exc
    module: ModuleType = pyaudio
    return module


def portaudio_error_code(exc: BaseException) -> int | None:
    """The PortAudio error code PyAudio put in `exc.args`, if any."""
    for arg in exc.args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            return arg
    return None


def describe_portaudio_error(exc: BaseException) -> str:
    """One line such as 'PortAudio error -9997: Invalid sample rate' for a PyAudio exception."""
    # PyAudio raises OSError(code, text) from open() and ValueError(text, code) from
    # is_format_supported(); either way the text is the one string argument.
    code = portaudio_error_code(exc)
    texts = [a for a in exc.args if isinstance(a, str)]
    text = texts[0] if texts else str(exc)
    if code is None:
        return text
    return f"PortAudio error {code}: {text}{_HINTS.get(code, '')}"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device; rates are those it accepted for mono int16 (empty: none or n/a)."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int
    input_rates: tuple[int, ...] = ()
    output_rates: tuple[int, ...] = ()
    default_input: bool = False
    default_output: bool = False
    input_problem: str = ""  # why no rate could be checked (device busy), if that was the case
    output_problem: str = ""


def _supports(pa: Any, index: int, rate: int, *, input: bool) -> tuple[bool, int | None, str]:
    """Whether the device takes `rate` for mono int16; if not, PortAudio's code and message."""
    direction = "input" if input else "output"
    kwargs = {
        f"{direction}_device": index,
        f"{direction}_channels": 1,
        f"{direction}_format": load_pyaudio().paInt16,
    }
    try:
        return bool(pa.is_format_supported(rate, **kwargs)), None, ""
    except ValueError as exc:
        return False, portaudio_error_code(exc), describe_portaudio_error(exc)


def probe_rates(
    pa: Any, index: int, *, input: bool, rates: Iterable[int] = CANDIDATE_RATES
) -> tuple[tuple[int, ...], str]:
    """The `rates` device `index` accepts for mono int16; if none, why (busy, failed) or ""."""
    accepted: list[int] = []
    problem = ""
    for rate in rates:
        ok, code, text = _supports(pa, index, rate, input=input)
        if ok:
            accepted.append(int(rate))
        elif code in FATAL_CODES:  # busy or gone: other rates will not help
            return (), text
        elif code not in UNSUPPORTED_CODES:
            problem = text
    return tuple(accepted), "" if accepted else problem


def _default_index(pa: Any, *, input: bool) -> int | None:
    with contextlib.suppress(OSError):  # -9996 "no default device" on a board with none
        info = pa.get_default_input_device_info() if input else pa.get_default_output_device_info()
        return int(info["index"])
    return None


def list_devices(pa: Any) -> list[DeviceInfo]:
    """Every device PortAudio knows, with the candidate rates it accepts in each direction."""
    default_in = _default_index(pa, input=True)
    default_out = _default_index(pa, input=False)
    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        ins, outs = int(info["maxInputChannels"]), int(info["maxOutputChannels"])
        in_rates, in_problem = probe_rates(pa, index, input=True) if ins else ((), "")
        out_rates, out_problem = probe_rates(pa, index, input=False) if outs else ((), "")
        devices.append(
            DeviceInfo(
                index=index,
                name=str(info["name"]),
                max_input_channels=ins,
                max_output_channels=outs,
                default_rate=round(float(info["defaultSampleRate"])),
                input_rates=in_rates,
                output_rates=out_rates,
                default_input=index == default_in,
                default_output=index == default_out,
                input_problem=in_problem,
                output_problem=out_problem,
            )
        )
    return devices


def device_label(pa: Any, index: int) -> str:
    """A device's name and index for messages, or just its index if PortAudio cannot say."""
    with contextlib.suppress(OSError):
        return f"{pa.get_device_info_by_index(index)['name']!r} (device {index})"
    return f"device {index}"


def find_device(pa: Any, wanted: str | int | None, *, input: bool) -> int:
    """PortAudio index of the device named by substring or index; default device when None."""
    key = "maxInputChannels" if input else "maxOutputChannels"
    kind = "input" if input else "output"
    devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    usable = [d for d in devices if int(d.get(key, 0)) > 0]
    names = ", ".join(f"{int(d['index'])} {d['name']!r}" for d in usable) or "none"
    if wanted is None:
        try:
            info = (
                pa.get_default_input_device_info() if input else pa.get_default_output_device_info()
            )
        except OSError:  # no default device: the first usable one will do
            info = usable[0] if usable else None
        if info is None:
            raise AudioError(
                f"no {kind} audio device found; PortAudio lists {len(devices)} devices"
            )
        return int(info["index"])
    if isinstance(wanted, int):
        # Only indexes PortAudio listed: opening an unknown index crashes PyAudio 0.2.14.
        match = [d for d in usable if int(d["index"]) == wanted]
        if not match and 0 <= wanted < len(devices):
            raise AudioError(
                f"device {wanted} {devices[wanted]['name']!r} has no {kind} channels; "
                f"{kind} devices: {names}"
            )
    else:
        exact = [d for d in usable if str(d["name"]).lower() == wanted.lower()]
        match = exact or [d for d in usable if wanted.lower() in str(d["name"]).lower()]
        if len(match) > 1:
            log.warning(
                "%s device %r matches %s; using the first",
                kind,
                wanted,
                ", ".join(repr(d["name"]) for d in match),
            )
    if not match:
        raise AudioError(f"no {kind} device matches {wanted!r}; {kind} devices: {names}")
    return int(match[0]["index"])


def rate_preference(want: int, rates: Iterable[int]) -> list[int]:
    """`rates` best first for a stream wanted at `want` Hz: exact, then higher, then lower."""

    def cost(rate: int) -> tuple[int, int]:
        if rate == want:
            return (0, 0)
        if rate > want:  # no band lost; the simplest ratio (48000 for 16000) resamples cheapest
            g = math.gcd(rate, want)
            return (1, rate // g + want // g)
        return (2, -rate)  # band lost: the closest lower rate loses least

    return sorted(dict.fromkeys(int(r) for r in rates), key=cost)


def pick_rate(pa: Any, index: int, *, input: bool, want: int | None = None) -> int:
    """The best rate for `want` (default 16 kHz) that PortAudio says the device accepts."""
    kind = "microphone" if input else "speaker"
    want = want or CAPTURE_RATE_HZ
    try:
        info = pa.get_device_info_by_index(index)
    except OSError as exc:
        raise AudioError(f"{kind} device {index}: {describe_portaudio_error(exc)}") from exc
    default = round(float(info["defaultSampleRate"]))
    candidates = rate_preference(want, (want, *CANDIDATE_RATES, default))
    problem = ""
    for rate in candidates:  # one question at a time: on ALSA each one opens the device
        ok, code, text = _supports(pa, index, rate, input=input)
        if ok:
            return rate
        if code in FATAL_CODES:
            raise AudioError(f"{kind} {device_label(pa, index)}: {text}")
        if code not in UNSUPPORTED_CODES:
            problem = f" (last error: {text})"
    raise AudioError(
        f"{kind} {device_label(pa, index)} accepts none of the rates {sorted(candidates)} Hz "
        f"for mono 16-bit audio{problem}"
    )
