"""systemd adapter: sd_notify(3) state messages and journal logging; both inert without systemd."""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType, TracebackType
from typing import Final

log = logging.getLogger(__name__)


def _optional_module(name: str) -> ModuleType | None:
    """Import systemd-python's `name`, or None when it is not installed (fallbacks take over)."""
    # importlib rather than `from systemd import ...`: the repo's own systemd/ folder (unit files)
    # would otherwise pass for that package in type checks run from the repo root.
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the installation
        return None


_sd_daemon = _optional_module("systemd.daemon")
_sd_journal = _optional_module("systemd.journal")

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"
JOURNAL_STREAM_ENV: Final = "JOURNAL_STREAM"

USEC_PER_S: Final = 1_000_000
NS_PER_USEC: Final = 1_000
# sd_watchdog_enabled(3): send WATCHDOG=1 at half the timeout so one late ping is not fatal.
WATCHDOG_PING_FRACTION: Final = 0.5

SYSLOG_IDENTIFIER: Final = "pi-agent"
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"  # journald adds its own timestamps

CONVERSATION_ID_FIELD: Final = "CONVERSATION_ID"
STATE_FIELD: Final = "STATE"


def _send_datagram(address: str, message: str) -> None:
    """Send one notification datagram to `address` ('@' starts an abstract name); never blocks."""
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        # Non-blocking: a stalled service manager must not stall the event loop that pings it.
        sock.setblocking(False)
        sock.sendto(message.encode("utf-8"), target)


def _one_line(text: str) -> str:
    """Status text as one line: a newline would start a new assignment (e.g. STOPPING=1)."""
    return " ".join(text.replace("\0", " ").splitlines()).strip()


class Notifier:
    """sd_notify(3) sender: no-op without NOTIFY_SOCKET; never raises (a failure is False)."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """Read NOTIFY_SOCKET and the watchdog variables from `environ` (default os.environ)."""
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._address = self._environ.get(NOTIFY_SOCKET_ENV, "")
        self._monotonic_ns = monotonic_ns
        # libsystemd reads the process environment itself, so it is used only when that is ours.
        self._use_libsystemd = _sd_daemon is not None and self._environ is os.environ
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (NOTIFY_SOCKET is set)."""
        return bool(self._address)

    @property
    def watchdog_timeout_s(self) -> float | None:
        """The watchdog timeout (WatchdogSec=) in seconds; None when no watchdog watches us."""
        value = self._environ.get(WATCHDOG_USEC_ENV, "")
        pid = self._environ.get(WATCHDOG_PID_ENV, "")
        try:
            usec = int(value)
            if pid and int(pid) != os.getpid():
                return None  # the watchdog belongs to another process (e.g. our parent)
        except ValueError:
            return None
        return usec / USEC_PER_S if usec > 0 else None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call watchdog(): half the timeout (sd_watchdog_enabled(3)); None if off."""
        timeout = self.watchdog_timeout_s
        return None if timeout is None else timeout * WATCHDOG_PING_FRACTION

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished (READY=1): config, devices and triggers are up."""
        return self._notify("READY=1", status)

    def status(self, text: str) -> bool:
        """Show `text` as the service status (STATUS=, one line) in `systemctl status`."""
        return self._notify(None, text)

    def reloading(self, status: str | None = None) -> bool:
        """A configuration reload began (RELOADING=1 with MONOTONIC_USEC); call ready() after it."""
        now_usec = self._monotonic_ns() // NS_PER_USEC
        return self._notify(f"RELOADING=1\nMONOTONIC_USEC={now_usec}", status)

    def stopping(self, status: str | None = None) -> bool:
        """An orderly shutdown began (STOPPING=1)."""
        return self._notify("STOPPING=1", status)

    def watchdog(self) -> bool:
        """Keep-alive ping (WATCHDOG=1); send it only while the event loop is healthy."""
        return self._notify("WATCHDOG=1", None)

    def _notify(self, assignments: str | None, status: str | None) -> bool:
        """Send one datagram; True if it was sent, False if disabled or it failed."""
        if not self.enabled:
            return False
        lines = [] if assignments is None else [assignments]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        message = "\n".join(lines)
        try:
            if self._use_libsystemd:
                assert _sd_daemon is not None
                return bool(_sd_daemon.notify(message))
            _send_datagram(self._address, message)
        except Exception as exc:  # a notification must never take the daemon down
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("sd_notify to %s failed (reported once): %s", self._address, exc)
            return False
        return True


class _Fields:
    """One set of structured log fields, shared by every task that inherited it."""

    __slots__ = ("values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values: Mapping[str, str] = values  # replaced whole, so readers on threads are safe


# The daemon has one state at a time, so by default every task and thread shares one field set;
# log_scope() gives a context (and the tasks it creates) a private copy.
_ROOT_FIELDS = _Fields({})
_current_fields: contextvars.ContextVar[_Fields] = contextvars.ContextVar(
    "pi_agent_log_fields", default=_ROOT_FIELDS
)


class _Unset:
    """Marker for 'leave this field as it is'."""


_UNSET: Final = _Unset()
FieldValue = str | None | _Unset


class log_context:
    """Set CONVERSATION_ID / STATE for later records (None clears); `with` restores them after."""

    def __init__(self, *, conversation_id: FieldValue = _UNSET, state: FieldValue = _UNSET) -> None:
        """Apply the given fields to the current field set at once."""
        self._fields = _current_fields.get()
        before = self._fields.values
        given = {CONVERSATION_ID_FIELD: conversation_id, STATE_FIELD: state}
        self._previous = {
            name: before.get(name) for name, value in given.items() if not isinstance(value, _Unset)
        }
        values = dict(before)
        for name in self._previous:
            _put(values, name, given[name])
        self._fields.values = values

    def __enter__(self) -> None:
        """The fields are already set; nothing more to do."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the fields this call set their previous values (others keep later changes)."""
        values = dict(self._fields.values)
        for name, value in self._previous.items():
            _put(values, name, value)
        self._fields.values = values


def _put(values: dict[str, str], name: str, value: FieldValue) -> None:
    """Set `name` to `value` in `values`; None removes it."""
    if value is None:
        values.pop(name, None)
    elif not isinstance(value, _Unset):
        values[name] = str(value)


@contextmanager
def log_scope() -> Iterator[None]:
    """Inside the block this context, and tasks created in it, get a private copy of the fields."""
    token = _current_fields.set(_Fields(dict(_current_fields.get().values)))
    try:
        yield
    finally:
        _current_fields.reset(token)


def current_log_fields() -> dict[str, str]:
    """The journal fields log records get here and now (CONVERSATION_ID, STATE when set)."""
    return dict(_current_fields.get().values)


class LogContextFilter(logging.Filter):
    """Add the current CONVERSATION_ID and STATE (when set) to each record as attributes."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate `record`; never drops it."""
        for name, value in _current_fields.get().values.items():
            setattr(record, name, value)
        return True


def journal_stream_matches(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """True when `fd` (stderr) is the journal stream systemd set up (JOURNAL_STREAM=dev:inode)."""
    value = environ.get(JOURNAL_STREAM_ENV, "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def configure_logging(level: str, *, environ: Mapping[str, str] = os.environ) -> logging.Handler:
    """Log to the journal (with fields) if stderr is the journal, else to stderr; return handler."""
    handler: logging.Handler
    on_journal = journal_stream_matches(environ)
    if on_journal and _sd_journal is not None:
        handler = _sd_journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT if on_journal else LOG_FORMAT))
    handler.addFilter(LogContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler
