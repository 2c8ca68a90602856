"""Bounds on what a server may make the device store or log: text length, ids remembered.

A hostile or broken server can send a 15 MB conversation id, megabytes of transcript with
newlines that would forge log lines, or the same tool call id thousands of times. Everything the
daemon keeps or logs from the server passes through here first.
"""

from __future__ import annotations

# Ids (conversation, tool call, event type names): real ones are tens of characters.
MAX_ID_CHARS = 128
# One transcript line: a long spoken answer is a few thousand characters.
MAX_LINE_CHARS = 4000
# Server text quoted in a log line or an end reason (error messages, unknown type names).
MAX_QUOTE_CHARS = 300


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def printable(text: str) -> str:
    """`text` with control characters (newlines included) escaped, so one log line stays one."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class RecentIds:
    """The last `limit` ids seen, to act on each id once; the oldest are forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}  # insertion-ordered

    def __len__(self) -> int:
        return len(self._ids)

    def first_time(self, ident: str) -> bool:
        """Record `ident`; True the first time it is seen (within the last `limit` ids)."""
        if ident in self._ids:
            return False
        self._ids[ident] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]
        return True


def quote(text: str) -> str:
    """Server text as it may appear in one log line or end reason: clipped and escaped."""
    return printable(clip(text, MAX_QUOTE_CHARS))
