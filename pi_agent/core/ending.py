"""Why a conversation ended, and the one table that says what each kind of end means.

Every decision that depends on how a conversation ended reads `policy(kind)`: whether it was a
success, whether the LEDs show the error pattern, whether it counts as a failure in `status`,
whether trying again can help (`pi_agent.core.backoff.should_retry` looks at the details), and
the exit status of `pi-agent talk`. Adding an end kind is one row here; a test fails without it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pi_agent.errors import (
    EX_IOERR,
    EX_NOPERM,
    EX_OK,
    EX_PROTOCOL,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
)


class EndKind(enum.StrEnum):
    """Why a conversation ended; each kind has one row in `END_POLICIES`."""

    COMPLETED = "completed"
    AGENT_ENDED = "agent_ended"
    SERVER_CLOSED = "server_closed"
    LOCAL = "local"
    TIME_LIMIT = "time_limit"
    NO_REPLY = "no_reply"
    SERVER_ERROR = "server_error"
    CONNECTION_LOST = "connection_lost"
    CONNECT_FAILED = "connect_failed"
    AUTH_FAILED = "auth_failed"
    PROTOCOL = "protocol"
    DEVICE = "device"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class EndPolicy:
    """What one kind of end means to the daemon, the LEDs and `pi-agent talk`."""

    success: bool  # the conversation did what it was for
    shows_error: bool  # the error LED pattern and earcon, for conversation.error_display_s
    failure: bool  # counted in `status` failures and logged at ERROR
    retry: bool  # trying again unchanged may help (the details may still say no)
    exit_code: int  # the exit status of `pi-agent talk`
    explanation: str  # one line for the docs


_Y, _N = True, False
# fmt: off
_TABLE: tuple[tuple[EndKind, bool, bool, bool, bool, int, str], ...] = (
    # kind                   success error failure retry exit code
    (EndKind.COMPLETED,       _Y, _N, _N, _N, EX_OK,
     "our side finished: the input was sent and the reply played"),
    (EndKind.AGENT_ENDED,     _Y, _N, _N, _N, EX_OK, "the agent ended the call"),
    (EndKind.SERVER_CLOSED,   _Y, _N, _N, _N, EX_OK, "the server closed normally (1000)"),
    (EndKind.LOCAL,           _N, _N, _N, _N, EX_TEMPFAIL,
     "ended on request: button, `pi-agent end`, shutdown"),
    (EndKind.TIME_LIMIT,      _N, _N, _N, _N, EX_TEMPFAIL,
     "conversation.max_duration_s or --max-s was reached"),
    (EndKind.NO_REPLY,        _N, _Y, _Y, _N, EX_TEMPFAIL, "the agent did not answer in time"),
    (EndKind.SERVER_ERROR,    _N, _Y, _Y, _Y, EX_UNAVAILABLE,
     "an error event and/or an error close code from the server"),
    (EndKind.CONNECTION_LOST, _N, _Y, _Y, _Y, EX_TEMPFAIL,
     "the link dropped in the middle of the conversation"),
    (EndKind.CONNECT_FAILED,  _N, _Y, _Y, _Y, EX_UNAVAILABLE,
     "DNS, TCP, TLS, the HTTP handshake or the signed URL failed"),
    (EndKind.AUTH_FAILED,     _N, _Y, _Y, _N, EX_NOPERM,
     "the service refused the API key or the signed URL"),
    (EndKind.PROTOCOL,        _N, _Y, _Y, _Y, EX_PROTOCOL,
     "the server broke the protocol (e.g. no metadata)"),
    (EndKind.DEVICE,          _N, _Y, _Y, _N, EX_IOERR,
     "the microphone or speaker failed (unplugged, busy)"),
    (EndKind.INTERNAL,        _N, _Y, _Y, _N, EX_SOFTWARE,
     "an unexpected exception inside pi-agent (a bug; the journal has the traceback)"),
)
# fmt: on
END_POLICIES: Mapping[EndKind, EndPolicy] = MappingProxyType(
    {row[0]: EndPolicy(*row[1:]) for row in _TABLE}
)


def policy(kind: EndKind) -> EndPolicy:
    """The row of `kind` in `END_POLICIES`."""
    return END_POLICIES[kind]


@dataclass(frozen=True, slots=True)
class EndReason:
    """A typed end of a conversation with a one-line human explanation."""

    kind: EndKind
    detail: str
    close_code: int | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the conversation ended successfully."""
        return END_POLICIES[self.kind].success

    @property
    def policy(self) -> EndPolicy:
        """This end's row in `END_POLICIES`."""
        return END_POLICIES[self.kind]

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"
