"""Fakes that stand in for hardware and the service manager, shipped like gpiozero's mock pins.

They let the daemon, `talk` and the tools run on a machine with no sound card and no systemd:
a microphone that says what the test tells it in real time, a speaker that records what it was
given, a NOTIFY_SOCKET that collects sd_notify datagrams, a clock that only moves when told, and
a way to throw an unexpected exception into a running task.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np

from pi_agent.adapters.audio.devices import ChunkQueue, FileSpeaker, Pacer, Samples

SCRIPTED_RATE = 16000
SCRIPTED_CHUNK = 320  # 20 ms at 16 kHz
NOTIFY_DATAGRAM_BYTES = 4096
WAIT_POLL_S = 0.02  # how often waits on a socket look again
WAIT_BOUND_S = 15.0  # a wait that is never satisfied fails instead of hanging


class ScriptedMic:
    """A live microphone in real time: silence, or what the test makes the user say."""

    sample_rate = SCRIPTED_RATE
    chunk_samples = SCRIPTED_CHUNK
    finished = False

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)

    def say(self, samples: Samples) -> None:
        """Queue `samples` to be captured next, after what is already queued."""
        self._pending = np.concatenate((self._pending, samples))

    async def run(self, queue: ChunkQueue) -> None:
        """Capture a chunk every 20 ms until cancelled."""
        pacer = Pacer(1.0)
        while True:
            chunk = np.zeros(self.chunk_samples, dtype=np.int16)
            take = self._pending[: self.chunk_samples]
            chunk[: len(take)] = take
            self._pending = self._pending[len(take) :]
            queue.put_nowait(chunk)
            await pacer.wait(self.chunk_samples / self.sample_rate)


class RecordingSpeaker(FileSpeaker):
    """A speaker that keeps every frame it was asked to play, in real time."""

    def __init__(self) -> None:
        super().__init__(None, 1.0)
        self.frames: list[Samples] = []

    async def play(self, frame: Samples) -> None:
        """Record the frame, then play it (paced) like any speaker."""
        self.frames.append(np.array(frame, dtype=np.int16))
        await super().play(frame)


class NotifySink:
    """A NOTIFY_SOCKET: collects the sd_notify datagrams a daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.cursor = 0  # statuses before this index were already waited for

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()

    def drain(self) -> list[str]:
        """Every datagram received so far, in order."""
        while True:
            try:
                self.messages.append(self.sock.recv(NOTIFY_DATAGRAM_BYTES).decode())
            except BlockingIOError:
                return self.messages

    def statuses(self) -> list[str]:
        """The STATUS= texts received so far, in order."""
        return [
            line[len("STATUS=") :]
            for m in self.drain()
            for line in m.splitlines()
            if line.startswith("STATUS=")
        ]

    async def wait_for(self, prefix: str, timeout_s: float = WAIT_BOUND_S) -> None:
        """Wait for a STATUS= line starting with `prefix`, after the last one waited for."""
        async with asyncio.timeout(timeout_s):
            while True:
                statuses = self.statuses()
                for i in range(self.cursor, len(statuses)):
                    if statuses[i].startswith(prefix):
                        self.cursor = i + 1
                        return
                await asyncio.sleep(WAIT_POLL_S)

    async def wait_message(self, text: str, timeout_s: float = WAIT_BOUND_S) -> int:
        """Wait for a datagram containing `text`; returns its index in `messages`."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i, message in enumerate(self.drain()):
                    if text in message:
                        return i
                await asyncio.sleep(WAIT_POLL_S)


class FakeClock:
    """A monotonic clock that moves only when `advance()` is called."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def inject_failure(task: asyncio.Task[object], exc: BaseException) -> bool:
    """Throw `exc` into `task` at the await it is suspended on, as a failing library call would.

    Works when the task waits on a plain future (a sleep, an event, a queue, a socket read):
    the future fails with `exc`. Returns False when the task is not waiting on one right now
    (running, done, or awaiting another task); try again on the next loop turn.
    """
    waiter = getattr(task, "_fut_waiter", None)  # CPython's Task: the future it awaits
    if task.done() or waiter is None or isinstance(waiter, asyncio.Task) or waiter.done():
        return False
    waiter.set_exception(exc)
    return True
