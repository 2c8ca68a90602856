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


class ControlError(PiAgentError, ConnectionError):
    """The control socket could not be used (no daemon, no permission, no answer)."""

    exit_code = EX_UNAVAILABLE


class GpioError(PiAgentError, OSError):
    """A GPIO pin, SPI bus or pin library could not be used."""

    exit_code = EX_IOERR


class GpioLibraryMissing(GpioError):
    """The configured pin library is not installed; restarting will not help, installing will."""

    exit_code = EX_CONFIG


class WakewordUnavailable(ConfigError):
    """`wakeword.enabled` is set, but the detector cannot run here (extra missing, no runtime)."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


class ToolError(PiAgentError, ValueError):
    """A tool refuses its call; the message is sent to the agent as the error result."""


class ScenarioError(PiAgentError, ValueError):
    """A simulator scenario is invalid; the message names the step and the field."""


class Invalid(Exception):
    """A config value the schema engine rejects: `what` goes before '; expected', `expected`
    overrides the kind's. Caught inside `pi_agent.config`, where it becomes a ConfigError."""

    def __init__(self, what: str, expected: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.expected = expected


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
