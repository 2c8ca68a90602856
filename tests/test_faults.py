"""Faults end a conversation with a clear typed reason, and the next conversation still works.

Every fault of `tests.beds.faultnet.FAULTS` runs as a `talk` conversation (file microphone and
speaker) in this process, then a conversation with a healthy simulator must complete. The daemon
part: a failure shows the error state and the next wake works; a stuck event loop or dispatcher
stops the systemd watchdog pings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.adapters.audio.wavfile import read_wav
from pi_agent.adapters.control import request
from pi_agent.app import TICK_S, Daemon
from pi_agent.core import protocol as p
from pi_agent.core.ending import EndKind
from pi_agent.errors import ScenarioError
from pi_agent.simulator import Scenario, SendAudio, Simulator, SimulatorOptions
from pi_agent.simulator.faults import ERROR_TYPE_CODES, big_frame, error_close
from pi_agent.simulator.scenario import (
    MAX_FRAME_BYTES,
    Drop,
    PingFlood,
    SendBig,
    SendError,
    Stall,
)
from pi_agent.testing import ScriptedMic
from tests import helpers
from tests.beds import faultnet
from tests.beds.daemon import BLUE, GREEN, RED, bed_daemon, make_config
from tests.beds.faultnet import (
    API_KEY,
    FAULTS,
    FAULTS_BY_NAME,
    HEALTHY,
    Fault,
    Outcome,
    converse,
    quick_timeouts,
)

T = TypeVar("T")
TEST_TIMEOUT_S = 60.0
MAX_DETAIL_CHARS = 300  # "one line": a journal entry, with room for an override hint


def run(coro: Coroutine[Any, Any, T]) -> T:
    """helpers.run with the test-sized client timeouts."""
    with quick_timeouts():
        return helpers.run(coro, TEST_TIMEOUT_S)


Check = Callable[[Outcome, Path], None]


async def fault_then_healthy(
    tmp_path: Path, fault: Fault, check: Check | None = None
) -> tuple[Outcome, Outcome]:
    """The faulty conversation (then `check`), then a healthy one, which must complete."""
    faulty = await converse(tmp_path, fault.target)
    if check is not None:
        check(faulty, tmp_path)
    healthy = await converse(tmp_path, HEALTHY)
    assert healthy.reason.kind is EndKind.COMPLETED, f"after {fault.name}: {healthy.reason}"
    assert "agent: You said something" in healthy.transcript
    return faulty, healthy


def assert_one_clear_line(fault: Fault, outcome: Outcome) -> None:
    reason = outcome.reason
    assert reason.kind is fault.kind, f"{fault.name}: {reason}"
    assert fault.text in reason.detail, f"{fault.name}: {reason}"
    assert "\n" not in reason.detail
    assert 10 < len(reason.detail) <= MAX_DETAIL_CHARS
    assert API_KEY not in reason.detail
    assert "conversation_signature=" not in reason.detail


# ---------------------------------------------------------------------------------- details


def drop_mid_reply(outcome: Outcome, work: Path) -> None:
    assert outcome.conv.session.counters.audio_events > 0  # the reply had started
    assert outcome.conv.session.agent_turns == 1
    (record,) = outcome.records
    assert record.closed_by == "abnormal"  # no close frame either way


def dead_peer(outcome: Outcome, work: Path) -> None:
    (record,) = outcome.records
    assert record.pings == []  # the stall held the periodic pings too
    assert outcome.reason.close_code == 1011  # our keepalive gave up, not a timer of the talk


def ping_flood(outcome: Outcome, work: Path) -> None:
    (record,) = outcome.records
    flood = record.pings[: faultnet.PING_FLOOD_COUNT]
    assert [ping.event_id for ping in flood] == list(range(1, faultnet.PING_FLOOD_COUNT + 1))
    assert all(ping.pong_at is not None for ping in flood)
    pongs = [m.event_id for m in record.messages("pong")][: faultnet.PING_FLOOD_COUNT]
    assert pongs == [ping.event_id for ping in flood]  # each answered, in order


def wrong_format(outcome: Outcome, work: Path) -> None:
    """Raw PCM carries no rate: 44.1 kHz bytes announced as 16 kHz play 2.76x slower."""
    played, rate = read_wav(work / "out.wav")
    assert rate == 16_000
    wrong = played[: int(0.5 * 44_100)]  # 0.5 s sent at 44.1 kHz = 1.38 s played at 16 kHz
    spectrum = np.abs(np.fft.rfft(wrong.astype(np.float64) * np.hanning(len(wrong))))
    peak = float(np.argmax(spectrum) * rate / len(wrong))
    assert abs(peak - 440.0 * 16_000 / 44_100) < 5  # the 440 Hz tone came out at 160 Hz


def garbage(outcome: Outcome, work: Path) -> None:
    counters = outcome.conv.session.counters
    assert counters.protocol_errors == len(faultnet.GARBAGE) - 1  # all but the unknown type
    assert counters.unknown_types == 1


def frame_16mib(outcome: Outcome, work: Path) -> None:
    frame_overhead = 100  # bytes of JSON around the base64 audio, rounded up
    samples = (MAX_FRAME_BYTES - frame_overhead) * 3 // 4 // 2  # base64 -> bytes -> int16
    assert outcome.conv.session.counters.audio_samples >= samples


def slow_link(outcome: Outcome, work: Path) -> None:
    (record,) = outcome.records
    floor_ms = 2 * (faultnet.SLOW_LINK_DELAY_S - faultnet.SLOW_LINK_JITTER_S) * 1000
    assert record.rtts_ms
    assert min(record.rtts_ms) >= floor_ms  # the pings measured the added delay
    assert outcome.conv.session.counters.pings >= 1  # and were answered through it


def never_opened(outcome: Outcome, work: Path) -> None:
    assert outcome.records == []  # refused before any conversation existed
    assert outcome.conv.session.conversation_id is None


CHECKS: dict[str, Check] = {
    "drop_mid_reply": drop_mid_reply,
    "dead_peer": dead_peer,
    "ping_flood": ping_flood,
    "wrong_format": wrong_format,
    "garbage": garbage,
    "frame_16mib": frame_16mib,
    "slow_link": slow_link,
    **{name: never_opened for name in FAULTS_BY_NAME if name.startswith(("http_", "signed_url_"))},
}


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_fault_ends_clearly_and_the_next_conversation_succeeds(
    tmp_path: Path, fault: Fault
) -> None:
    faulty, _ = run(fault_then_healthy(tmp_path, fault, CHECKS.get(fault.name)))
    assert_one_clear_line(fault, faulty)


def test_tls_with_the_private_ca_configured_works(tmp_path: Path) -> None:
    async def main() -> None:
        trusted = await converse(tmp_path, faultnet.tls(trust_ca=True))
        assert trusted.reason.kind is EndKind.COMPLETED, trusted.reason
        untrusted = await converse(tmp_path, faultnet.tls(trust_ca=False))
        assert untrusted.reason.kind is EndKind.CONNECT_FAILED
        assert "TLS certificate not trusted" in untrusted.reason.detail
        assert untrusted.reason.detail.startswith("could not connect to wss://127.0.0.1:")

    run(main())


def test_loopback_resolver_fails_names_without_a_query() -> None:
    real = socket.getaddrinfo
    with faultnet.loopback_resolver():
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(faultnet.INVALID_HOST, 443)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("example.com", 443)  # any name: no query leaves the process
        assert socket.getaddrinfo("127.0.0.1", 80)
        with faultnet.loopback_resolver():  # nested (concurrent runs): still guarded after
            pass
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(faultnet.INVALID_HOST, 443)
    assert socket.getaddrinfo is real


def test_handshake_refusal_carries_status_body_and_retry_after() -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(refuse_status=429)) as sim:
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(
                b"GET /v1/convai/conversation?agent_id=a HTTP/1.1\r\nHost: x\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
        assert head.startswith(b"HTTP/1.1 429")
        assert b"Retry-After: 1" in head

    run(main())


# ---------------------------------------------------------------------------------- building blocks


def test_fault_steps_parse_from_scenario_data() -> None:
    scenario = Scenario.from_data(
        [
            {"stall": 2},
            {"stall": {"seconds": 1, "reading": False}},
            {"send_big": {"size_bytes": 1000, "type": "agent_response_metadata"}},
            {"ping_flood": 10},
            {"send_audio": {"format": "pcm_44100", "duration_s": 0.1}},
            {"error": "llm_timeout"},
        ]
    )
    assert scenario.steps[:4] == (
        Stall(2.0),
        Stall(1.0, reading=False),
        SendBig(1000, "agent_response_metadata"),
        PingFlood(10),
    )
    audio = scenario.steps[4]
    assert isinstance(audio, SendAudio)
    assert audio.wire_format == "pcm_44100"
    assert scenario.steps[5] == SendError("llm_timeout")
    assert Scenario.from_data(["drop"]).steps == (Drop(),)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (["drop", {"wait": 1}], "ends the scenario"),
        ([{"error": "llm_timeout"}, "echo"], "ends the scenario"),
        ([{"error": {"type": "x", "code": 1006}}], "reserved"),
        ([{"error": {"message": "no type"}}], "needs an error type"),
        ([{"send_audio": {"format": "mp3_44100"}}], "is not one of"),
        ([{"send_big": {"size_bytes": 0}}], "between"),
        ([{"ping_flood": 10**6}], "between"),
        ([{"stall": {"seconds": 1, "writing": True}}], "unknown field"),
    ],
)
def test_invalid_fault_steps_are_refused(data: object, error: str) -> None:
    with pytest.raises(ScenarioError, match=error):
        Scenario.from_data(data)


@pytest.mark.parametrize("size", [120, 121, 122, 123, 4096, MAX_FRAME_BYTES])
def test_big_frame_has_the_exact_size_and_parses(size: int) -> None:
    frame = big_frame(size)
    assert len(frame.encode()) == size
    event = p.parse_server_message(frame)
    assert isinstance(event, p.Audio)
    raw = event.decode_audio()
    assert isinstance(raw, bytes)
    assert not any(raw[:1024])
    other = big_frame(size, "agent_response_metadata")
    assert len(other.encode()) == size
    assert json.loads(other)["type"] == "agent_response_metadata"


def test_big_frame_below_its_minimum_fails_the_scenario_step(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        big_frame(10)

    async def main() -> None:
        scenario = Scenario((SendBig(10),))
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            outcome = await converse(tmp_path, faultnet_target(sim))
        assert outcome.reason.kind is EndKind.SERVER_ERROR
        assert outcome.reason.close_code == 1011
        assert "scenario step 1" in outcome.reason.detail

    run(main())


def faultnet_target(sim: Simulator) -> faultnet.TargetFactory:
    """A target factory for an already running simulator."""

    @contextlib.asynccontextmanager
    async def factory(work: Path) -> AsyncIterator[faultnet.Target]:
        yield faultnet.Target(sim.url, sim)

    return factory


@pytest.mark.parametrize("error_type", sorted(ERROR_TYPE_CODES))
def test_error_close_uses_the_reference_code(error_type: str) -> None:
    event, code, reason = error_close(error_type)
    assert event.error_type == error_type
    assert event.code == ERROR_TYPE_CODES[error_type]
    assert code == (ERROR_TYPE_CODES[error_type] or 1011)
    assert reason and event.message == reason


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"refuse_status": 200}, "refuse_status"),
        ({"refuse_status": True}, "refuse_status"),
        ({"signed_url_status": 600}, "signed_url_status"),
        ({"signed_url_scheme": "ws:"}, "signed_url_scheme"),
    ],
)
def test_invalid_fault_options_are_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SimulatorOptions(**options)


# ---------------------------------------------------------------------------------- daemon


class TimedNotifySink:
    """A NOTIFY_SOCKET read by a thread that stamps each datagram with time.monotonic()."""

    POLL_S = 0.01

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(self.POLL_S)
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-sink", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def watchdog_times(self) -> list[float]:
        return [t for t, m in list(self.messages) if "WATCHDOG=1" in m.splitlines()]

    def statuses(self) -> list[str]:
        return [
            line[len("STATUS=") :]
            for _, m in list(self.messages)
            for line in m.splitlines()
            if line.startswith("STATUS=")
        ]

    async def wait_for(self, test: Any, timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not test():  # noqa: ASYNC110 - filled by the reader thread
                await asyncio.sleep(self.POLL_S)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[TimedNotifySink]:
    s = TimedNotifySink(tmp_path / "notify.sock")
    yield s
    s.close()


@dataclass
class DaemonBed:
    """A running daemon (mock pins, scripted microphone) and its control socket."""

    daemon: Daemon
    task: asyncio.Task[int]
    pins: MockFactory
    control: Path

    def rgb(self) -> tuple[float, ...]:
        return tuple(round(float(self.pins.pin(n).state), 2) for n in (RED, GREEN, BLUE))

    async def stop(self) -> None:
        self.daemon.stop()
        await asyncio.wait_for(self.task, 20)


async def start_daemon(tmp_path: Path, sim: Simulator, sink: TimedNotifySink) -> DaemonBed:
    cfg, path = make_config(tmp_path, sim.url)
    mic = ScriptedMic()
    pins = MockFactory(pin_class=MockPWMPin)
    daemon = bed_daemon(cfg, path, mic, pins, sink.path)
    task = asyncio.create_task(daemon.run())
    await sink.wait_for(lambda: any("READY=1" in m for _, m in list(sink.messages)))
    return DaemonBed(daemon, task, pins, tmp_path / "control.sock")


BLOCK_S = 3 * TICK_S  # longer than two watchdog ticks
SLACK_S = 0.1  # a datagram sent just before the block may be stamped a little after it


def test_blocked_event_loop_sends_no_watchdog_ping(tmp_path: Path, sink: TimedNotifySink) -> None:
    async def main() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            bed = await start_daemon(tmp_path, sim, sink)
            try:
                await sink.wait_for(lambda: len(sink.watchdog_times()) >= 2)
                blocked: list[float] = []

                def block() -> None:
                    blocked.append(time.monotonic())
                    time.sleep(BLOCK_S)  # a callback that hogs the loop
                    blocked.append(time.monotonic())

                asyncio.get_running_loop().call_soon(block)
                await asyncio.sleep(0)
                start, end = blocked
                await sink.wait_for(lambda: any(t > end for t in sink.watchdog_times()))
            finally:
                await bed.stop()
        times = sink.watchdog_times()
        assert not [t for t in times if start + SLACK_S < t < end], "pinged while blocked"
        before = max(t for t in times if t <= start + SLACK_S)
        after = min(t for t in times if t >= end)
        assert after - before >= BLOCK_S  # systemd sees a gap longer than two ticks
        assert after - end < 2 * TICK_S + SLACK_S  # and pings again once the loop runs
        healthy_gaps = np.diff([t for t in times if t < start])
        assert healthy_gaps.max() < 2 * TICK_S + SLACK_S

    run(main())


def test_stuck_dispatcher_stops_the_watchdog_while_the_loop_runs(
    tmp_path: Path, sink: TimedNotifySink
) -> None:
    """The tick keeps running, but a dispatcher stuck in a command stops WATCHDOG=1."""

    async def main() -> None:
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            bed = await start_daemon(tmp_path, sim, sink)
            daemon = bed.daemon
            release = asyncio.Event()
            original = daemon._execute

            async def stuck(command: Any) -> None:
                await release.wait()
                await original(command)

            try:
                await sink.wait_for(lambda: len(sink.watchdog_times()) >= 2)
                daemon._execute = stuck  # type: ignore[method-assign]
                await request(bed.control, "wake")
                await sink.wait_for(
                    lambda: any(s.startswith("unhealthy: the dispatcher") for s in sink.statuses())
                )
                at = len(sink.messages)
                checks = daemon.health_checks
                await sink.wait_for(lambda: daemon.health_checks >= checks + 3)  # three ticks
                pings_while_stuck = [m for _, m in sink.messages[at:] if "WATCHDOG=1" in m]
                daemon._execute = original  # type: ignore[method-assign]
                release.set()
                released_at = time.monotonic()
                await sink.wait_for(lambda: any(t > released_at for t in sink.watchdog_times()))
            finally:
                release.set()
                await bed.stop()
        assert pings_while_stuck == []

    run(main())


def test_daemon_shows_error_then_the_next_wake_works(tmp_path: Path, sink: TimedNotifySink) -> None:
    """A refused handshake: error state (red LED) for error_display_s, idle, then a good wake."""

    async def main() -> None:
        options = SimulatorOptions(ping_interval_s=0, refuse_status=503)
        async with Simulator(options) as sim:
            bed = await start_daemon(tmp_path, sim, sink)
            try:
                await request(bed.control, "wake")
                await sink.wait_for(
                    lambda: any(s.startswith("error: connect_failed") for s in sink.statuses())
                )
                assert bed.rgb() in ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # red, blinking
                await sink.wait_for(lambda: "idle: error shown" in sink.statuses())
                sim.options = SimulatorOptions(ping_interval_s=0)  # the service is back
                await request(bed.control, "wake")
                await sink.wait_for(lambda: any(s.startswith("listening") for s in sink.statuses()))
                status = await request(bed.control, "status")
                assert status["failures"] == 1
                assert "HTTP 503" in status["last_conversation"]["end"]
                await request(bed.control, "end")
                await sink.wait_for(lambda: "idle: local: pi-agent end" in sink.statuses())
            finally:
                await bed.stop()

    run(main())
