"""Client tools the agent may call on the device (`client_tool_call`, reference 2.4).

A tool is a function of its parameters returning a string (or JSON-able data, sent as JSON).
Synchronous tools run in a worker thread so that a slow tool never blocks pongs or audio.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

ToolFunc = Callable[[Mapping[str, Any]], Any] | Callable[[Mapping[str, Any]], Awaitable[Any]]
# The agent waits for the result; past this the call answers with an error instead.
TOOL_TIMEOUT_S = 10.0
# Result strings are capped so a chatty tool cannot flood the conversation.
RESULT_LIMIT_CHARS = 16_000


class ToolRegistry:
    """Named client tools; unknown names and failures become `is_error` results."""

    def __init__(self, tools: Mapping[str, ToolFunc] | None = None) -> None:
        self._tools: dict[str, ToolFunc] = dict(tools or {})

    def register(self, name: str, func: ToolFunc) -> None:
        self._tools[name] = func

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    async def call(self, name: str, parameters: Mapping[str, Any]) -> tuple[str, bool]:
        """Run tool `name`; returns (result text, is_error)."""
        func = self._tools.get(name)
        if func is None:
            offered = ", ".join(self.names) or "none"
            return f"unknown client tool {name!r}; this device offers: {offered}", True
        try:
            async with asyncio.timeout(TOOL_TIMEOUT_S):
                if inspect.iscoroutinefunction(func):
                    value = await func(parameters)
                else:
                    value = await asyncio.to_thread(func, parameters)
                    if inspect.isawaitable(value):
                        value = await value
        except TimeoutError:
            return f"client tool {name!r} timed out after {TOOL_TIMEOUT_S:g} s", True
        except Exception as exc:  # a tool's failure is an answer to the agent, not a crash
            log.warning("client tool %r failed: %s", name, exc)
            return f"client tool {name!r} failed: {exc}", True
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if not text:
            text = f"client tool {name!r} completed"
        return text[:RESULT_LIMIT_CHARS], False
