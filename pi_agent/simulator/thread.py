"""Run a Simulator on its own event loop in a background thread, for threaded clients (the SDK)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pi_agent.simulator.records import ConversationRecord
from pi_agent.simulator.server import Simulator, SimulatorOptions

T = TypeVar("T")

START_TIMEOUT_S = 5.0  # binding a loopback port takes milliseconds; longer means it is stuck
STOP_TIMEOUT_S = 10.0  # Simulator.close() bounds itself at 5 s; this covers loop teardown too


class SimulatorThread:
    """`with SimulatorThread(options) as st:` serves on `st.url` from a daemon thread.

    Records live on the simulator's loop; read them after waiting through `run()`, e.g.
    `st.run(st.sim.next_conversation())`, or once the conversation has ended.
    """

    def __init__(
        self, options: SimulatorOptions | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.sim = Simulator(options, host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"simulator did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT_S)
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the simulator and join its thread; idempotent."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise TimeoutError(f"simulator thread still running {STOP_TIMEOUT_S} s after stop")

    @property
    def url(self) -> str:
        """ws://HOST:PORT of the running simulator."""
        return self.sim.url

    @property
    def http_url(self) -> str:
        """http://HOST:PORT of the running simulator."""
        return self.sim.http_url

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.sim.port

    @property
    def conversations(self) -> list[ConversationRecord]:
        """The simulator's conversation records (mutated on its thread)."""
        return self.sim.conversations

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the simulator loop and return its result (TimeoutError if late)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("SimulatorThread is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to __enter__ when start-up failed
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.sim:
            self._ready.set()
            await self._stop.wait()
