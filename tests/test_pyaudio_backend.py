"""The pyaudio backend and device listing against real PortAudio over the ALSA file bed."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyaudio
import pytest

from pi_agent.adapters.audio.devicelist import (
    CANDIDATE_RATES,
    DeviceInfo,
    list_devices,
    probe_rates,
    rate_preference,
)
from pi_agent.adapters.audio.devices import ChunkQueue, Samples
from pi_agent.adapters.audio.pyaudio_backend import (
    REOPEN_FIRST_S,
    STREAM_CHECK_S,
    PyAudioMicrophone,
    PyAudioSpeaker,
    SampleFifo,
    find_device,
    open_pyaudio_devices,
    pick_rate,
)
from pi_agent.commands.devices import devices_main, format_device_table
from pi_agent.config import default_config
from pi_agent.errors import EX_IOERR, EX_OK, AudioError
from tests.beds.alsa import AlsaBed, alsa_bed
from tests.helpers import run

T = TypeVar("T")
# Bound on every test's awaits. The bed is unpaced (a second of audio in about a millisecond),
# so this only matters on a hang; generous for a loaded shared 2-core machine.
TEST_TIMEOUT_S = 10.0
RATE = 16000
CHUNK_MS = 20
CHUNK = RATE * CHUNK_MS // 1000  # 320 samples
# Larger than anything the unpaced bed can deliver before a test cancels capture, so the
# ChunkQueue never drops the chunks under comparison.
FLOOD_QUEUE_CHUNKS = 10_000_000
ALL_KHZ = "8 11.025 16 22.05 24 32 44.1 48"


def signal(n: int, seed: int = 1) -> Samples:
    """Random int16 audio with no zero sample, so silence padding can never be mistaken for it."""
    rng = np.random.default_rng(seed)
    magnitude = rng.integers(2, 30000, n, dtype=np.int16)
    sign = rng.choice(np.array([-1, 1], dtype=np.int16), n)
    out: Samples = magnitude * sign
    return out


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[AlsaBed]:
    with alsa_bed(tmp_path / "alsa") as b:
        yield b


class CountingQueue(ChunkQueue):
    """A ChunkQueue that signals once it has received `want` chunks."""

    def __init__(self, want: int) -> None:
        super().__init__(FLOOD_QUEUE_CHUNKS)
        self.want = want
        self.received = 0
        self.enough = asyncio.Event()

    def put_nowait(self, chunk: Samples) -> None:
        super().put_nowait(chunk)
        self.received += 1
        if self.received >= self.want:
            self.enough.set()


async def capture(mic: PyAudioMicrophone, chunks: int) -> list[Samples]:
    """Run `mic` until `chunks` chunks arrived, stop it, return the first `chunks` in order."""
    queue = CountingQueue(chunks)
    task = asyncio.create_task(mic.run(queue))
    try:
        await queue.enough.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert queue.dropped == 0
    return [await queue.get() for _ in range(chunks)]


class RecordingPyAudio(pyaudio.PyAudio):  # type: ignore[misc]  # untyped library class
    """The real PyAudio, counting terminate() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.terminations = 0

    def terminate(self) -> None:
        self.terminations += 1
        super().terminate()


# ---------------------------------------------------------------- device listing


def test_list_devices_reads_bed_devices_and_rates(bed: AlsaBed) -> None:
    devices = {d.name: d for d in list_devices(bed.pa)}
    assert {"mic", "speaker", "default"} <= set(devices)
    for d in devices.values():
        # The file plugin over `null` accepts every candidate rate in both directions.
        assert d.input_rates == CANDIDATE_RATES
        assert d.output_rates == CANDIDATE_RATES
        assert d.index == bed.index(d.name)
    assert devices["default"].default_input
    assert devices["default"].default_output
    assert not devices["mic"].default_input


def test_rates_come_from_portaudio_not_a_list(bed: AlsaBed) -> None:
    # PortAudio refuses 400 kHz on this device: the probe reports what it was told.
    accepted, problem = probe_rates(bed.pa, bed.index("mic"), input=True, rates=(16000, 400000))
    assert accepted == (16000,)
    assert problem == ""


def test_device_table(bed: AlsaBed) -> None:
    table = format_device_table(list_devices(bed.pa))
    lines = table.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "#", "name", "in", "out", "default Hz", "capture kHz", "playback kHz",
    ]  # fmt: skip
    row = {line.split()[1]: line for line in lines[1:-1]}
    assert set(row) == {"mic", "speaker", "default"}
    assert row["default"].split()[2:4] == ["128*", "128*"]
    assert row["mic"].count(ALL_KHZ) == 2
    assert lines[-1].startswith("* default device")


def test_device_table_shows_problems_and_missing_directions() -> None:
    devices = [
        DeviceInfo(0, "usb mic", 1, 0, 48000, input_rates=(44100, 48000)),
        DeviceInfo(1, "hdmi", 0, 8, 48000, output_problem="PortAudio error -9985: busy"),
    ]
    lines = format_device_table(devices).splitlines()
    rows = [re.split(r"\s{2,}", row.strip()) for row in lines]
    assert rows[1] == ["0", "usb mic", "1", "0", "48000", "44.1 48", "-"]
    assert rows[2] == ["1", "hdmi", "0", "8", "48000", "-", "unusable [1]"]
    assert lines[3] == "[1] hdmi playback: PortAudio error -9985: busy"


def test_devices_main_prints_the_table(bed: AlsaBed) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert devices_main(out, err) == EX_OK
    assert "speaker" in out.getvalue()
    assert err.getvalue() == ""


def test_devices_main_when_portaudio_fails() -> None:
    def broken() -> Any:
        raise OSError(-9999, "Unanticipated host error")

    out, err = io.StringIO(), io.StringIO()
    assert devices_main(out, err, factory=broken) == EX_IOERR
    assert err.getvalue() == (
        "pi-agent: cannot start PortAudio: PortAudio error -9999: Unanticipated host error\n"
    )


# ---------------------------------------------------------------- device and rate selection


def test_find_device_by_name_index_and_default(bed: AlsaBed) -> None:
    assert find_device(bed.pa, "mic", input=True) == bed.index("mic")
    assert find_device(bed.pa, "SPEA", input=False) == bed.index("speaker")  # substring, any case
    assert find_device(bed.pa, bed.index("speaker"), input=False) == bed.index("speaker")
    assert find_device(bed.pa, None, input=True) == bed.index("default")
    assert find_device(bed.pa, "default", input=False) == bed.index("default")


@pytest.mark.parametrize("wanted", ["usb", 17])
def test_find_device_error_lists_devices(bed: AlsaBed, wanted: str | int) -> None:
    with pytest.raises(AudioError) as caught:
        find_device(bed.pa, wanted, input=True)
    message = str(caught.value)
    assert message.startswith(f"no input device matches {wanted!r}; input devices: ")
    for name in ("mic", "speaker", "default"):
        assert f"{bed.index(name)} {name!r}" in message
    assert "\n" not in message


def test_rate_preference() -> None:
    assert rate_preference(16000, CANDIDATE_RATES) == [
        16000, 32000, 48000, 24000, 44100, 22050, 11025, 8000,
    ]  # fmt: skip
    assert rate_preference(24000, CANDIDATE_RATES) == [
        24000, 48000, 32000, 44100, 22050, 16000, 11025, 8000,
    ]  # fmt: skip


def test_pick_rate_asks_portaudio(bed: AlsaBed) -> None:
    mic = bed.index("mic")
    assert pick_rate(bed.pa, mic, input=True) == 16000
    assert pick_rate(bed.pa, bed.index("speaker"), input=False, want=24000) == 24000
    # 400 kHz is refused by PortAudio: the closest lower rate it accepts is chosen instead.
    assert pick_rate(bed.pa, mic, input=True, want=400000) == 48000


# ---------------------------------------------------------------- capture


VANISHED = (
    "PortAudio error -9993: Illegal combination of I/O devices "
    "(ALSA could not open it: unplugged or misconfigured?)"
)


def test_device_that_cannot_be_opened_is_reported_by_name(bed: AlsaBed) -> None:
    bed.mic_file.unlink()  # the ALSA device now fails to open, as an unplugged card does
    mic = bed.index("mic")
    listed = {d.name: d for d in list_devices(bed.pa)}["mic"]
    assert (listed.input_rates, listed.input_problem) == ((), VANISHED)
    assert listed.output_rates == CANDIDATE_RATES  # its playback side still opens
    with pytest.raises(AudioError) as caught:
        pick_rate(bed.pa, mic, input=True)
    assert str(caught.value) == f"microphone 'mic' (device {mic}): {VANISHED}"
    with pytest.raises(AudioError) as caught:
        run(
            PyAudioMicrophone(bed.pa, mic, RATE, CHUNK_MS)._capture(ChunkQueue(10), asyncio.Event())
        )
    assert (
        str(caught.value) == f"cannot open microphone 'mic' (device {mic}) at 16000 Hz: {VANISHED}"
    )


def test_unplugged_microphone_is_retried_and_reported_once(
    bed: AlsaBed, caplog: pytest.LogCaptureFixture
) -> None:
    audio = signal(10 * CHUNK)
    bed.write_mic(audio)
    bed.mic_file.unlink()  # unplugged before the conversation starts
    mic = PyAudioMicrophone(bed.pa, bed.index("mic"), RATE, CHUNK_MS)

    async def scenario() -> None:
        queue = CountingQueue(1)
        task = asyncio.create_task(mic.run(queue))
        await asyncio.sleep(REOPEN_FIRST_S * 3.5)  # at least two failed reopen attempts
        assert queue.received == 0
        bed.write_mic(audio)  # plugged back in
        await queue.enough.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.DEBUG, logger="pi_agent.adapters.audio.pyaudio_backend"):
        run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once when lost, once when back: not once per attempt
    assert "cannot open microphone 'mic'" in warnings[0].getMessage()
    assert "microphone back after" in warnings[1].getMessage()
    assert mic.losses == 1


def test_batched_capture_wakes_the_loop_less_and_loses_nothing(bed: AlsaBed) -> None:
    chunks = 50
    audio = signal(chunks * CHUNK)
    bed.write_mic(audio)
    mic = PyAudioMicrophone(bed.pa, bed.index("mic"), RATE, CHUNK_MS)
    mic.batch = 5  # as the capture hub sets it while idle
    got = run(capture(mic, chunks // 5))
    assert [len(c) for c in got] == [5 * CHUNK] * (chunks // 5)
    assert np.array_equal(np.concatenate(got), audio)


def test_capture_yields_the_file_samples_in_order(bed: AlsaBed) -> None:
    chunks = 50
    audio = signal(chunks * CHUNK)
    bed.write_mic(audio)
    mic = PyAudioMicrophone(bed.pa, bed.index("mic"), RATE, CHUNK_MS)
    assert mic.chunk_samples == CHUNK
    got = run(capture(mic, chunks))
    assert all(len(c) == CHUNK and c.dtype == np.int16 for c in got)
    assert np.array_equal(np.concatenate(got), audio)


def test_capture_open_error_is_one_line_naming_the_device(bed: AlsaBed) -> None:
    mic = PyAudioMicrophone(bed.pa, bed.index("mic"), 400000, CHUNK_MS)
    with pytest.raises(AudioError) as caught:
        run(mic._capture(ChunkQueue(10), asyncio.Event()))
    assert str(caught.value) == (
        f"cannot open microphone 'mic' (device {bed.index('mic')}) at 400000 Hz: "
        "PortAudio error -9997: Invalid sample rate"
    )


def test_dead_capture_stream_is_reported_once_and_reopened(
    bed: AlsaBed, caplog: pytest.LogCaptureFixture
) -> None:
    pa = bed.new_pyaudio()
    bed.write_mic(signal(10 * CHUNK))
    mic = PyAudioMicrophone(pa, bed.index("mic"), RATE, CHUNK_MS)

    async def scenario() -> None:
        queue = CountingQueue(1)
        task = asyncio.create_task(mic.run(queue))
        await queue.enough.wait()
        pa.terminate()  # closes every stream of that instance under the microphone
        bed.terminated(pa)
        await asyncio.sleep(STREAM_CHECK_S * 2)
        queue.enough.clear()
        queue.want = queue.received + 5
        await queue.enough.wait()  # chunks flow again after the reopen
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="pi_agent.adapters.audio.pyaudio_backend"):
        run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert re.match(r"^microphone 'mic' \(device \d\) failed: ", messages[0])
    assert "microphone back after" in messages[1]
    assert mic.losses == 1


# ---------------------------------------------------------------- playback


@pytest.mark.parametrize("volume", [1.0, 0.5])
def test_playback_writes_exactly_the_frame(bed: AlsaBed, volume: float) -> None:
    audio = signal(RATE // 2, seed=2)
    speaker = PyAudioSpeaker(bed.pa, bed.index("speaker"), volume=volume, chunk_ms=CHUNK_MS)

    async def scenario() -> None:
        assert await speaker.device_rate(RATE) == RATE
        await speaker.open(RATE)
        await speaker.play(audio)
        await speaker.drain()
        assert speaker.queued_samples == 0
        await speaker.close()

    run(scenario())
    expected = np.clip(audio.astype(np.float32) * volume, -32768, 32767).astype(np.int16)
    written = bed.speaker_samples()
    start = int(np.flatnonzero(written)[0])
    # One frame is pulled contiguously: callback zero padding only before and after it.
    assert np.array_equal(written[start : start + len(expected)], expected)
    assert not written[:start].any()
    assert not written[start + len(expected) :].any()


def test_playback_of_many_frames_keeps_order(bed: AlsaBed) -> None:
    frames = [signal(CHUNK, seed=10 + i) for i in range(40)]
    speaker = PyAudioSpeaker(bed.pa, bed.index("speaker"), chunk_ms=CHUNK_MS)

    async def scenario() -> None:
        await speaker.open(RATE)
        for frame in frames:
            await speaker.play(frame)
            assert speaker.queued_samples <= 2 * CHUNK  # the FIFO stays two periods short
        await speaker.drain()
        await speaker.close()

    run(scenario())
    written = bed.speaker_samples()
    # The unpaced bed outruns the loop, so silence may separate frames; none may be lost,
    # altered or reordered.
    assert np.array_equal(written[written != 0], np.concatenate(frames))


def test_flush_drops_queued_frames(bed: AlsaBed) -> None:
    dropped, kept = signal(CHUNK, seed=3), signal(CHUNK, seed=4)
    speaker = PyAudioSpeaker(bed.pa, bed.index("speaker"), chunk_ms=CHUNK_MS)

    async def scenario() -> None:
        await speaker.open(RATE)
        # The bed plays instantly: pause the real stream so that frames stay queued.
        speaker._stream.stop_stream()
        await speaker.play(dropped)
        assert speaker.queued_samples == CHUNK
        waiting = asyncio.create_task(speaker.play(signal(3 * CHUNK, seed=5)))  # over capacity
        await asyncio.sleep(0)
        assert not waiting.done()
        await speaker.flush()
        assert speaker.queued_samples == 0
        await waiting  # flush freed the room at once
        speaker._stream.start_stream()
        await speaker.play(kept)
        await speaker.drain()
        await speaker.close()

    run(scenario())
    written = bed.speaker_samples()
    assert np.array_equal(written[written != 0], kept)


def test_speaker_open_error_is_one_line_naming_the_device(bed: AlsaBed) -> None:
    speaker = PyAudioSpeaker(bed.pa, bed.index("speaker"))
    with pytest.raises(AudioError) as caught:
        run(speaker.open(400000))
    assert str(caught.value) == (
        f"cannot open speaker 'speaker' (device {bed.index('speaker')}) at 400000 Hz: "
        "PortAudio error -9997: Invalid sample rate"
    )
    run(speaker.close())


def test_dead_playback_stream_raises_and_close_is_idempotent(bed: AlsaBed) -> None:
    pa = bed.new_pyaudio()
    speaker = PyAudioSpeaker(pa, bed.index("speaker"), chunk_ms=CHUNK_MS)

    async def scenario() -> None:
        await speaker.open(RATE)
        pa.terminate()
        bed.terminated(pa)
        with pytest.raises(AudioError, match=r"^speaker 'speaker' \(device \d\) failed: "):
            await speaker.play(signal(2 * CHUNK))  # fills the FIFO, nothing drains it
        await speaker.close()
        await speaker.close()
        with pytest.raises(AudioError, match="is not open"):
            await speaker.play(signal(CHUNK))

    run(scenario())


def test_sample_fifo_pulls_across_frames_and_pads() -> None:
    fifo = SampleFifo()
    a, b = signal(5, seed=6), signal(3, seed=7)
    fifo.push(a)
    fifo.push(b)
    data, filled = fifo.pull(6)
    assert (filled, fifo.queued) == (6, 2)
    assert np.array_equal(np.frombuffer(data, np.int16), np.concatenate((a, b[:1])))
    data, filled = fifo.pull(4)
    assert filled == 2
    assert np.array_equal(np.frombuffer(data, np.int16), np.concatenate((b[1:], [0, 0])))
    fifo.push(a)
    assert fifo.clear() == 5
    assert fifo.pull(2)[1] == 0


# ---------------------------------------------------------------- the configured pair


def test_open_pyaudio_devices_end_to_end_terminates_once(bed: AlsaBed) -> None:
    audio = signal(10 * CHUNK, seed=8)
    bed.write_mic(audio)
    cfg = default_config(
        "agent_1", audio={"input_device": "mic", "output_device": "speaker", "chunk_ms": 20}
    ).audio
    created: list[RecordingPyAudio] = []

    def factory() -> RecordingPyAudio:
        created.append(RecordingPyAudio())
        return created[-1]

    try:
        mic, speaker = open_pyaudio_devices(cfg, factory=factory)
        assert (mic.device, mic.sample_rate, mic.chunk_samples) == (bed.index("mic"), RATE, CHUNK)
        assert speaker.device == bed.index("speaker")

        async def scenario() -> None:
            queue = CountingQueue(10)
            capture_task = asyncio.create_task(mic.run(queue))
            await speaker.open(await speaker.device_rate(RATE))
            await speaker.play(audio)
            await queue.enough.wait()
            capture_task.cancel()
            await asyncio.gather(capture_task, return_exceptions=True)
            assert created[0].terminations == 0  # the speaker still uses it
            await speaker.drain()
            await speaker.close()
            await speaker.close()
            got = [await queue.get() for _ in range(10)]
            assert np.array_equal(np.concatenate(got), audio)

        run(scenario())
        assert len(created) == 1
        assert created[0].terminations == 1
        written = bed.speaker_samples()  # read now: the next open truncates the file
        assert np.array_equal(written[written != 0], audio)

        async def next_conversation() -> None:
            await speaker.open(await speaker.device_rate(24000))
            await speaker.close()

        # Used again after closing: PortAudio starts afresh and is shut down again on close.
        run(next_conversation())
        assert [pa.terminations for pa in created] == [1, 1]
    finally:
        for pa in created:
            if not pa.terminations:
                pa.terminate()


def test_open_pyaudio_devices_unknown_device_terminates(bed: AlsaBed) -> None:
    cfg = default_config("agent_1", audio={"input_device": "usb"}).audio
    created: list[RecordingPyAudio] = []

    def factory() -> RecordingPyAudio:
        created.append(RecordingPyAudio())
        return created[-1]

    with pytest.raises(AudioError, match="no input device matches 'usb'"):
        open_pyaudio_devices(cfg, factory=factory)
    assert [pa.terminations for pa in created] == [1]


# ------------------------------------------------------------------ blocking calls off the loop


class SlowStream:
    """A stream whose close() blocks like an ALSA device being released."""

    def __init__(self, pa: SlowPortAudio) -> None:
        self.pa = pa

    def is_active(self) -> bool:
        return True

    def get_time(self) -> float:
        return 0.0

    def start_stream(self) -> None:
        pass

    def close(self) -> None:
        self.pa.blocking_call("close")


class SlowPortAudio:
    """A PyAudio stand-in whose opening, probing and closing block until the test lets them go.

    Each blocking call records that it began, then waits on `gate`: if it ran on the event loop,
    the loop could not record anything else until the gate opened.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.events: list[str] = []
        self.began = threading.Event()

    def blocking_call(self, what: str) -> None:
        self.events.append(f"{what} began")
        self.began.set()
        assert self.gate.wait(TEST_TIMEOUT_S)
        self.events.append(f"{what} ended")

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        return {"index": index, "name": "slow", "defaultSampleRate": 16000.0}

    def is_format_supported(self, rate: int, **kwargs: Any) -> bool:
        self.blocking_call("probe")
        return True

    def open(self, **kwargs: Any) -> SlowStream:
        self.blocking_call("open")
        return SlowStream(self)


@pytest.mark.parametrize("call", ["probe", "open", "close"])
def test_slow_portaudio_calls_never_hold_up_the_event_loop(call: str) -> None:
    pa = SlowPortAudio()
    speaker = PyAudioSpeaker(pa, 0, chunk_ms=CHUNK_MS)

    async def step() -> None:
        if call == "probe":
            await speaker.device_rate(RATE)
        elif call == "open":
            await speaker.open(RATE)
        else:
            await speaker.close()

    async def scenario() -> None:
        if call == "close":
            pa.gate.set()
            await speaker.open(RATE)
            pa.gate.clear()
            pa.began.clear()
            pa.events.clear()
        task = asyncio.create_task(step())
        await asyncio.to_thread(pa.began.wait, TEST_TIMEOUT_S)
        # The call is blocked in PortAudio; the loop still runs other work meanwhile.
        await asyncio.sleep(0)
        pa.events.append("loop ran")
        pa.gate.set()
        await task
        pa.events.append("call returned")

    run(scenario())
    assert pa.events == [f"{call} began", "loop ran", f"{call} ended", "call returned"]
