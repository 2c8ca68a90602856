"""One exception tree for the project; leaves also inherit the matching built-in."""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64  # sysexits.h: command line usage error
EX_UNAVAILABLE = 69  # sysexits.h: service unavailable (server refused, closed with an error)
EX_SOFTWARE = 70  # sysexits.h: internal software error
EX_IOERR = 74  # sysexits.h: input/output error (audio device, files)
EX_TEMPFAIL = 75  # sysexits.h: temporary failure (network), retrying may help
EX_PROTOCOL = 76  # sysexits.h: remote error in protocol
EX_NOPERM = 77  # sysexits.h: permission denied (the service refused our key)
EX_CONFIG = 78  # sysexits.h: configuration error; systemd must not restart-loop on it


class PiAgentError(Exception):
    """Root of every error raised by pi-agent on purpose."""

    exit_code = EX_FAILURE


class ConfigError(PiAgentError, ValueError):
    """The configuration is invalid; carries every problem found, not just the first."""

    exit_code = EX_CONFIG

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}{self.problems[0]}"
        else:
            text = f"{where}{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class AudioError(PiAgentError, OSError):
    """An audio device or audio file could not be used."""

    exit_code = EX_IOERR


class AudioFormatError(PiAgentError, ValueError):
    """An audio format name or buffer is not what the protocol allows."""

    exit_code = EX_SOFTWARE


class LinkError(PiAgentError, ConnectionError):
    """The conversation link could not be set up (DNS, TCP, TLS, HTTP, signed URL)."""

    exit_code = EX_TEMPFAIL


class AuthError(LinkError):
    """The service refused our credentials; retrying with the same key will not help."""

    exit_code = EX_NOPERM


# An unexpected exception's text in an end reason, a status line or `status` is cut to this.
MAX_UNEXPECTED_TEXT = 200


def describe_unexpected(exc: BaseException) -> str:
    """`Type: message` of an unexpected exception (the first one inside a group), bounded."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if len(text) > MAX_UNEXPECTED_TEXT:
        text = text[: MAX_UNEXPECTED_TEXT - 3] + "..."
    return text
