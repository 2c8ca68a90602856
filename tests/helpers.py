"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

TEST_BOUND_S = 90.0  # a hang fails the test instead of blocking the run; not a speed limit


def run(coro: Coroutine[Any, Any, T], timeout_s: float = TEST_BOUND_S) -> T:
    """Run a test coroutine with a time bound (the autouse fixture checks for leftover tasks)."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())
