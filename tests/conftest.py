"""Shared test hygiene: log levels restored, and no async test may leave a task running."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.beds.realtime import pulse_bed

__all__ = ["pulse_bed"]  # the real-time audio fixture, for every test module

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """A daemon under test may change log levels on reload; later tests must not see that."""
    names = ["", "pi_agent"]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def _no_lingering_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `asyncio.run` of a test (its own, or one in the code it runs) fails if the coroutine
    returns while other tasks still run: a task nobody waits for is a leak or a hidden wedge."""
    real_run = asyncio.run

    def checked_run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
        async def checked() -> T:
            result = await main
            await asyncio.sleep(0)  # let tasks finishing right now finish
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not leftover, f"tasks left running: {leftover}"
            return result

        return real_run(checked(), debug=debug)

    monkeypatch.setattr(asyncio, "run", checked_run)
