"""A private PulseAudio daemon with one null sink: a real-time, paced sound card (TESTBED.md 2).

The sink `fake` is the speaker; its monitor `fake.monitor` (the default source) is the microphone,
so whatever is played into the sink, by `feed()` or by a client under test, is heard by capture.
A reference recorder (`pacat --record` with a 5 ms latency, read by a thread) timestamps the
monitor with `time.monotonic()`: the clock asyncio's loop uses, in this process and in children.

Everything lives in one temporary directory: the daemon's unix socket, its runtime files, a HOME,
and an ALSA config that sends the ALSA `default` device to this daemon. Create `pyaudio.PyAudio()`
only inside the bed: PortAudio reads the ALSA configuration when it is initialised.
"""

from __future__ import annotations

import bisect
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

Int16 = npt.NDArray[np.int16]

SINK = "fake"
MONITOR = f"{SINK}.monitor"
BYTES_PER_SAMPLE = 2  # s16le mono
# The daemon starts in ~35 ms here; a loaded 2-core CI machine gets far more before we give up.
START_TIMEOUT_S = 10.0
# Polling period of the bounded start-up and stop loops: fine against the ~35 ms start.
POLL_S = 0.02
# `pulseaudio --kill` exits at once; the daemon then unloads its modules in a few milliseconds.
STOP_TIMEOUT_S = 5.0
# Playback buffer of feeds. When fed audio enters is read off the monitor, so this costs nothing
# in accuracy; it must only ride out pacat being starved of CPU, which would insert silence into
# the sink (a 10 ms buffer did so with two busy loops on this 2-core machine).
FEED_LATENCY_MS = 100
# The reference recorder's fragment: small, so each block's arrival time is close to the moment
# the monitor handed its samples out (the sink itself works in ~10 ms blocks).
RECORD_LATENCY_MS = 5
# Bytes asked for per read: a few fragments, so a late thread catches up in one read.
RECORD_READ_BYTES = 4096
# The monitor produces audio (silence when idle) continuously; the first block comes within a few
# milliseconds of the recorder starting.
RECORD_START_TIMEOUT_S = 5.0
# Unix socket paths are limited to 108 bytes; a longer runtime directory moves to /tmp.
MAX_SOCKET_PATH = 100
# What the bed sets in this process (and restores); children get all of `env`.
ENV_KEYS = ("XDG_RUNTIME_DIR", "HOME", "PULSE_SERVER", "ALSA_CONFIG_PATH", "JACK_NO_START_SERVER")
ASOUND_CONF = "pcm.!default { type pulse }\nctl.!default { type pulse }\n"


class PulseUnavailable(RuntimeError):
    """`pulseaudio` or `pacat` is not installed: tests using the bed must skip."""


def missing_tools() -> list[str]:
    """The PulseAudio programs the bed needs that are not on PATH."""
    return [tool for tool in ("pulseaudio", "pacat") if shutil.which(tool) is None]


@dataclass(frozen=True, slots=True)
class Recording:
    """Samples read from the monitor, with the monotonic time each block of them arrived."""

    samples: Int16
    rate: int
    block_ends: tuple[int, ...]  # cumulative sample count at the end of each block
    block_times: tuple[float, ...]  # time.monotonic() when that block was read

    @property
    def t_start(self) -> float:
        """Estimated monotonic time of sample 0: the earliest arrival, paced back at the rate."""
        if not self.block_ends:
            return 0.0
        return min(
            t - end / self.rate for t, end in zip(self.block_times, self.block_ends, strict=True)
        )

    def seen_at(self, index: int) -> float:
        """When the reference recorder received sample `index` (the arrival of its block)."""
        block = bisect.bisect_right(self.block_ends, index)
        if block >= len(self.block_times):
            raise IndexError(f"sample {index} is beyond the recording ({self.samples.size})")
        return self.block_times[block]

    def index_at(self, t: float) -> int:
        """The index of the first sample received at or after monotonic time `t`."""
        block = bisect.bisect_left(self.block_times, t)
        return 0 if block == 0 else self.block_ends[block - 1]


class _Recorder:
    """`pacat --record` on the monitor, read by a thread that timestamps every block."""

    def __init__(self, env: dict[str, str], rate: int) -> None:
        self.rate = rate
        self._times: list[float] = []
        self._ends: list[int] = []
        self._data = bytearray()
        self._lock = threading.Lock()
        self._got_data = threading.Event()
        self._proc = subprocess.Popen(
            [
                "pacat",
                "--record",
                "--raw",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=1",
                f"--device={MONITOR}",
                f"--latency-msec={RECORD_LATENCY_MS}",
                "--client-name=pulse-bed-recorder",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._thread = threading.Thread(target=self._read, name="pulse-bed-recorder", daemon=True)
        self._thread.start()
        if not self._got_data.wait(RECORD_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the reference recorder got no audio in {RECORD_START_TIMEOUT_S} s")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while True:  # ends at EOF, when stop() terminates pacat
            block = os.read(fd, RECORD_READ_BYTES)
            now = time.monotonic()
            if not block:
                return
            with self._lock:
                self._data += block
                whole = len(self._data) // BYTES_PER_SAMPLE
                if not self._ends or whole > self._ends[-1]:
                    self._ends.append(whole)
                    self._times.append(now)
            self._got_data.set()

    def snapshot(self) -> Recording:
        """Everything recorded so far."""
        with self._lock:
            whole = len(self._ends) and self._ends[-1]
            raw = bytes(self._data[: whole * BYTES_PER_SAMPLE])
            ends, times = tuple(self._ends), tuple(self._times)
        return Recording(np.frombuffer(raw, dtype="<i2").astype(np.int16), self.rate, ends, times)

    def stop(self) -> Recording:
        """Stop pacat, collect the reader thread and return the whole recording."""
        self._proc.terminate()
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT_S)
        self._thread.join(STOP_TIMEOUT_S)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.snapshot()


class PulseBed:
    """`with PulseBed(tmp_dir) as bed:` runs a private daemon and points this process at it."""

    def __init__(self, tmp_dir: Path, rate: int = 16000) -> None:
        self.rate = rate
        self.directory = Path(tmp_dir)
        self._short_dir: str | None = None
        runtime = self.directory / "pulse"
        if len(str(runtime / "native")) > MAX_SOCKET_PATH:
            self._short_dir = tempfile.mkdtemp(prefix="pulse-bed-")
            runtime = Path(self._short_dir)
        self.runtime = runtime
        self.socket_path = runtime / "native"
        self.asound_conf = self.directory / "asound.conf"
        self.log_path = self.directory / "pulseaudio.log"
        home = self.directory / "home"
        self.env: dict[str, str] = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "HOME": str(home),
            "PULSE_SERVER": f"unix:{self.socket_path}",
            "ALSA_CONFIG_PATH": str(self.asound_conf),
            "JACK_NO_START_SERVER": "1",  # Debian's PortAudio probes JACK; keep it from starting
        }
        self._daemon: subprocess.Popen[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}
        self._feeds: list[subprocess.Popen[bytes]] = []
        self._feed_count = 0
        self._recorder: _Recorder | None = None
        self.recording: Recording | None = None  # the last finished recording

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> PulseBed:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def start(self) -> None:
        """Start the daemon, wait for its socket, and set this process's environment."""
        missing = missing_tools()
        if missing:
            raise PulseUnavailable(
                f"{' and '.join(missing)} not installed; the real-time audio bed needs "
                "the Debian packages pulseaudio and pulseaudio-utils"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.runtime.mkdir(parents=True, exist_ok=True)
        Path(self.env["HOME"]).mkdir(parents=True, exist_ok=True)
        self.asound_conf.write_text(ASOUND_CONF)
        args = [
            "pulseaudio",
            "-n",  # no default.pa: exactly the modules below
            "--daemonize=no",  # our child, so we can always wait for it
            "--exit-idle-time=-1",
            "--no-cpu-limit",  # a loaded CI machine must not get the daemon killed
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            "-L",
            f"module-native-protocol-unix auth-anonymous=1 socket={self.socket_path}",
            "-L",
            f"module-null-sink sink_name={SINK} rate={self.rate} channels=1 format=s16le "
            "norewinds=1",  # without it the monitor lags and clips (TESTBED.md 2)
            "-L",
            "module-always-sink",
        ]
        with open(self.log_path, "wb") as log:
            self._daemon = subprocess.Popen(
                args, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_for_socket()
        except BaseException:
            self.kill()
            raise
        self._saved_env = {key: os.environ.get(key) for key in ENV_KEYS}
        os.environ.update({key: self.env[key] for key in ENV_KEYS})

    def _wait_for_socket(self) -> None:
        assert self._daemon is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                raise RuntimeError(
                    f"pulseaudio exited with status {self._daemon.returncode} at start-up: "
                    f"{self._log_tail()}"
                )
            if self.socket_path.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    try:
                        probe.connect(str(self.socket_path))
                        return
                    except OSError:
                        pass  # bound but not listening yet
            time.sleep(POLL_S)
        raise RuntimeError(
            f"pulseaudio did not open {self.socket_path} within {START_TIMEOUT_S} s: "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def kill(self) -> None:
        """Stop feeds, the recorder and the daemon; restore the environment (idempotent)."""
        for proc in self._feeds:
            if proc.poll() is None:
                proc.kill()
            proc.wait(STOP_TIMEOUT_S)
        self._feeds.clear()
        if self._recorder is not None:
            recorder, self._recorder = self._recorder, None
            self.recording = recorder.stop()
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            subprocess.run(
                ["pulseaudio", "--kill"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=STOP_TIMEOUT_S,
                check=False,
            )
            try:
                daemon.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(STOP_TIMEOUT_S)
        for key, old in self._saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved_env = {}
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    # ------------------------------------------------------------------ audio

    def feed(self, raw_s16le: bytes) -> subprocess.Popen[bytes]:
        """Play raw s16le mono audio into the sink now (returns at once; pacat paces it)."""
        self._feed_count += 1
        path = self.directory / f"feed-{self._feed_count}.raw"
        path.write_bytes(raw_s16le)
        proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                "--raw",
                "--format=s16le",
                f"--rate={self.rate}",
                "--channels=1",
                f"--device={SINK}",
                f"--latency-msec={FEED_LATENCY_MS}",
                "--client-name=pulse-bed-feed",
                str(path),
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._feeds = [p for p in self._feeds if p.poll() is None]
        self._feeds.append(proc)
        return proc

    def feed_samples(self, samples: Int16) -> subprocess.Popen[bytes]:
        """`feed()` for int16 samples."""
        return self.feed(np.asarray(samples, dtype="<i2").tobytes())

    def wait_fed(self, timeout_s: float) -> None:
        """Wait until every feed has been played out; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for proc in self._feeds:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise TimeoutError(f"a feed was still playing after {timeout_s} s") from exc

    def start_recording(self) -> None:
        """Start the reference recorder on the monitor; returns once audio flows."""
        if self._recorder is not None:
            raise RuntimeError("already recording")
        self._recorder = _Recorder(self.env, self.rate)

    def snapshot(self) -> Recording:
        """What the running recorder has received so far."""
        if self._recorder is None:
            raise RuntimeError("not recording")
        return self._recorder.snapshot()

    def stop_recording(self) -> tuple[Int16, float]:
        """Stop the recorder: the samples and the monotonic time of sample 0 (see `recording`)."""
        if self._recorder is None:
            raise RuntimeError("not recording")
        recorder, self._recorder = self._recorder, None
        self.recording = recorder.stop()
        return self.recording.samples, self.recording.t_start
