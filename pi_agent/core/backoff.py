"""Retry policy and spacing for conversations that fail: which ends to retry and when.

Pure: no I/O, no clock and no randomness of its own. The caller passes `now` (seconds, any
monotonic origin) and the random source (`random.Random()` in the daemon, a seeded one in
tests). The daemon uses it in two places:

- a connect that fails with a retryable reason is tried again up to `CONNECT_RETRIES` times,
  `connect_backoff()` seconds apart, before the error is shown;
- after a failed conversation the next attempt (a button press, `pi-agent wake`) waits until
  `Backoff.wait_s(now)` is 0, so a device whose network is down does not hammer the service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from pi_agent.core.ending import EndKind, EndReason
from pi_agent.core.protocol import CloseCode

# Reconnect spacing defaults: 1 s, 2 s, 4 s, ... up to 60 s, each with half of it randomised.
DEFAULT_FIRST_S = 1.0
DEFAULT_FACTOR = 2.0
DEFAULT_CAP_S = 60.0
DEFAULT_JITTER = 0.5  # 0: none; 0.5: "equal jitter"; 1: "full jitter" (AWS architecture blog)
# A failed connect is tried this many more times before the error shows; a user waits for it.
CONNECT_RETRIES = 2
CONNECT_RETRY_FIRST_S = 0.5
CONNECT_RETRY_CAP_S = 4.0
# Exponent bound: factor ** attempts overflows a float near 2 ** 1024; the cap is hit long before.
MAX_EXPONENT = 64

# HTTP statuses that say "try again later" (RFC 9110 15.5.9, RFC 8470 5.2, RFC 6585 4).
RETRYABLE_HTTP = frozenset({408, 425, 429})
FIRST_SERVER_ERROR_HTTP = 500
_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")

# Close codes after which a new conversation may work (RFC 6455 7.4.1, IANA registry):
# 1002 is the service's operational class (timeouts, LLM/TTS/ASR failures; reference 6.1),
# 1011 an internal error, 1012 service restart, 1013 try again later, 1014 bad gateway.
RETRYABLE_CLOSE_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INTERNAL,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.BAD_GATEWAY,
    }
)
# Error types (reference 6.1) that a retry cannot fix, whatever code they came with.
PERMANENT_ERROR_TYPES = frozenset(
    {
        "invalid_message",
        "value_error",
        "missing_fields",
        "override_error",
        "missing_dynamic_variable",
        "missing_dynamic_variable_transfer",
        "telephony_agent_error",
        "mcp_tool_error",
        "mcp_https_error",
        "safety_violation",  # 1002, but retrying what was refused is not the device's call
    }
)
# Texts that name a permanent refusal whatever the code (reference 6.1, observed reasons).
PERMANENT_TEXTS = (
    "does not exist",
    "could not authorize",
    "misconfigured",
    "does not know this agent",
    "invalid server url",
    "url; expected",  # the signed-URL call returned the wrong scheme: a configuration problem
    "agent.tls_ca_file",  # the configured CA file cannot be used
)


def http_status(detail: str) -> int | None:
    """The HTTP status a link error names ("... HTTP 429 ..."), or None."""
    match = _HTTP_STATUS.search(detail)
    return int(match.group(1)) if match else None


def should_retry(reason: EndReason) -> bool:
    """Whether the same conversation may succeed if tried again later, unchanged."""
    if not reason.policy.retry:
        return False
    text = reason.detail.lower()
    if any(t in text for t in PERMANENT_TEXTS):
        return False
    if reason.kind is EndKind.CONNECT_FAILED:
        status = http_status(reason.detail)
        return status is None or status in RETRYABLE_HTTP or status >= FIRST_SERVER_ERROR_HTTP
    if reason.kind is EndKind.SERVER_ERROR:
        # 1008 is the service's input/contract class: the same request fails the same way again.
        if reason.error_type in PERMANENT_ERROR_TYPES or reason.close_code == CloseCode.POLICY:
            return False
        return reason.close_code in RETRYABLE_CLOSE_CODES
    return True  # the link dropped or the server broke the protocol: a new one may work


class RandomSource(Protocol):
    """Where jitter comes from: `random.Random` has this method."""

    def uniform(self, a: float, b: float, /) -> float:
        """A number from a to b."""


@dataclass(slots=True)
class Backoff:
    """Exponential delays with jitter: first_s * factor**n, capped, part of it random."""

    first_s: float = DEFAULT_FIRST_S
    factor: float = DEFAULT_FACTOR
    cap_s: float = DEFAULT_CAP_S
    jitter: float = DEFAULT_JITTER
    rng: RandomSource | None = field(default=None, repr=False)  # needed when jitter > 0
    attempts: int = 0  # delays handed out since the last reset
    not_before: float | None = None  # `now` before which the next attempt should not start

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.cap_s:
            raise ValueError(f"need 0 < first_s <= cap_s, got {self.first_s} and {self.cap_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, got {self.jitter}")
        if self.jitter > 0 and self.rng is None:
            raise ValueError("a jitter above 0 needs a random source (rng=random.Random())")

    def base_delay(self, attempt: int) -> float:
        """The delay before randomisation for the attempt-th retry (0-based), capped."""
        exponent = min(max(attempt, 0), MAX_EXPONENT)
        return float(min(self.cap_s, self.first_s * self.factor**exponent))

    def next_delay(self) -> float:
        """The next delay in seconds: in [base * (1 - jitter), base]; advances the sequence."""
        base = self.base_delay(self.attempts)
        self.attempts += 1
        if self.rng is None:  # jitter is 0
            return base
        return base * (1.0 - self.jitter) + self.rng.uniform(0.0, base * self.jitter)

    def reset(self) -> None:
        """Start again from first_s (after a success) and allow an attempt at once."""
        self.attempts = 0
        self.not_before = None

    def failed(self, now: float) -> float:
        """Record a failure at `now`; returns the delay until the next attempt may start."""
        delay = self.next_delay()
        self.not_before = now + delay
        return delay

    def wait_s(self, now: float) -> float:
        """Seconds to wait at `now` before the next attempt (0 when it may start)."""
        return 0.0 if self.not_before is None else max(0.0, self.not_before - now)


def connect_backoff(rng: RandomSource) -> Backoff:
    """The spacing of the few quick retries of a failed connect (0.5 s, 1 s, ... up to 4 s)."""
    return Backoff(
        CONNECT_RETRY_FIRST_S,
        DEFAULT_FACTOR,
        CONNECT_RETRY_CAP_S,
        DEFAULT_JITTER,
        rng,
    )
