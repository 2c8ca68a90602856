"""Retry policy and backoff delays: which ends are retried, and the delay sequence's bounds."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from pi_agent.core import backoff
from pi_agent.core.backoff import (
    CONNECT_RETRY_CAP_S,
    CONNECT_RETRY_FIRST_S,
    Backoff,
    connect_backoff,
    http_status,
    should_retry,
)
from pi_agent.core.ending import EndKind, EndReason

K = EndKind
W = "ws://127.0.0.1:8765"

RETRIED = [
    EndReason(K.CONNECT_FAILED, f"could not connect to {W}: connection refused"),
    EndReason(
        K.CONNECT_FAILED,
        "could not connect to wss://x.invalid:443: the server name could not be resolved (DNS)",
    ),
    EndReason(K.CONNECT_FAILED, f"could not connect to {W}: timed out"),
    EndReason(
        K.CONNECT_FAILED,
        f"could not connect to {W}: TLS certificate not trusted (certificate is not yet valid)",
    ),  # a Pi before NTP sync: the clock is wrong for a while
    EndReason(K.CONNECT_FAILED, f"{W} refused the WebSocket handshake with HTTP 429"),
    EndReason(K.CONNECT_FAILED, f"{W} refused the WebSocket handshake with HTTP 500"),
    EndReason(K.CONNECT_FAILED, f"{W} refused the WebSocket handshake with HTTP 503"),
    EndReason(K.CONNECT_FAILED, "the signed-URL call failed with HTTP 502"),
    EndReason(K.CONNECT_FAILED, "the signed-URL call failed: connection refused"),
    EndReason(
        K.CONNECT_FAILED,
        "the signed-URL call answered without a 'signed_url' string in its JSON body",
    ),
    EndReason(K.CONNECT_FAILED, f"WebSocket handshake with {W} failed: InvalidMessage"),
    EndReason(K.CONNECTION_LOST, "the connection dropped without a close handshake", 1006),
    EndReason(K.CONNECTION_LOST, "the server is going away (restart)", 1001),
    EndReason(K.PROTOCOL, "the server sent no conversation_initiation_metadata within 10 s"),
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 1011: oops", 1011),
    EndReason(
        K.SERVER_ERROR,
        "the server ended the conversation with llm_timeout (code 1002): x",
        1002,
        "llm_timeout",
    ),
    EndReason(
        K.SERVER_ERROR, "... transport_receive_timeout ...", 1002, "transport_receive_timeout"
    ),
    EndReason(K.SERVER_ERROR, "... asyncio_timeout ...", 1002, "asyncio_timeout"),
    EndReason(K.SERVER_ERROR, "... tts_cascade_error ...", 1002, "tts_cascade_error"),
    EndReason(K.SERVER_ERROR, "... unknown_websocket_crash ...", 1011, "unknown_websocket_crash"),
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 1002: timeout", 1002),
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 1013: later", 1013),
]

NOT_RETRIED = [
    EndReason(K.COMPLETED, "the input was sent and the reply finished"),
    EndReason(K.AGENT_ENDED, "the agent ended the call", 1000),
    EndReason(K.SERVER_CLOSED, "the server closed normally", 1000),
    EndReason(
        K.SERVER_CLOSED,
        "the conversation reached the agent's maximum duration",
        1000,
        "max_duration_exceeded",
    ),
    EndReason(K.LOCAL, "ended on request"),
    EndReason(K.TIME_LIMIT, "the conversation reached its 600 s limit"),
    EndReason(K.NO_REPLY, "the agent did not answer within 20 s of the input ending"),
    EndReason(K.DEVICE, "the microphone stream stopped (device unplugged?)"),
    EndReason(K.INTERNAL, "unexpected RuntimeError: boom"),
    EndReason(K.AUTH_FAILED, f"{W} refused the conversation (HTTP 401): not authorised"),
    EndReason(
        K.AUTH_FAILED,
        "the service refused the API key when asked for a signed URL (HTTP "
        "403); check the key file or ELEVENLABS_API_KEY",
    ),
    EndReason(
        K.SERVER_ERROR,
        "the server ended the conversation with invalid_message (code "
        "1008): The AI agent you are trying to reach does not exist.",
        1008,
        "invalid_message",
    ),
    EndReason(K.SERVER_ERROR, "... override_error ...", 1008, "override_error"),
    EndReason(K.SERVER_ERROR, "... missing_dynamic_variable ...", 1008, "missing_dynamic_variable"),
    EndReason(K.SERVER_ERROR, "... Could not authorize the conversation", 1008, "invalid_message"),
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 1008: policy", 1008),
    EndReason(K.SERVER_ERROR, "... safety_violation ...", 1002, "safety_violation"),
    EndReason(K.SERVER_ERROR, "does not exist", None, None),  # no code, but a permanent text
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 1003: no", 1003),
    EndReason(K.SERVER_ERROR, "the server closed the connection with code 4000: app", 4000),
    EndReason(K.CONNECT_FAILED, f"{W} refused the WebSocket handshake with HTTP 400"),
    EndReason(K.CONNECT_FAILED, f"{W} refused the WebSocket handshake with HTTP 404"),
    EndReason(
        K.CONNECT_FAILED,
        "the service does not know this agent id (HTTP 404 from the signed-URL call)",
    ),
    EndReason(K.CONNECT_FAILED, "invalid server URL 'ws://[::1'"),
    EndReason(K.CONNECT_FAILED, "the signed-URL call returned a http URL; expected wss://"),
]


@pytest.mark.parametrize("reason", RETRIED, ids=str)
def test_transient_ends_are_retried(reason: EndReason) -> None:
    assert should_retry(reason)


@pytest.mark.parametrize("reason", NOT_RETRIED, ids=str)
def test_permanent_and_normal_ends_are_not_retried(reason: EndReason) -> None:
    assert not should_retry(reason)


def test_every_end_kind_has_a_decision() -> None:
    kinds = {r.kind for r in RETRIED} | {r.kind for r in NOT_RETRIED}
    assert kinds == set(EndKind)


def test_http_status_is_read_from_link_errors() -> None:
    assert http_status(f"{W} refused the WebSocket handshake with HTTP 429") == 429
    assert http_status("could not connect: timed out") is None
    assert http_status("HTTP 4290") is None


def test_delays_grow_exponentially_within_jitter_bounds_and_cap() -> None:
    b = Backoff(first_s=1, factor=2, cap_s=60, jitter=0.5, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    bases = [min(60.0, 2.0**n) for n in range(12)]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= delay <= base
    assert max(delays) <= 60.0
    assert delays[-1] >= 30.0  # capped at 60 with half of it random
    assert b.attempts == 12


def test_seeded_rng_replays_the_same_sequence() -> None:
    def sequence(seed: int) -> list[float]:
        b = Backoff(rng=random.Random(seed))
        return [b.next_delay() for _ in range(8)]

    assert sequence(42) == sequence(42)
    assert sequence(42) != sequence(43)


def test_no_jitter_is_exact_and_full_jitter_spans_zero_to_base() -> None:
    exact = Backoff(first_s=0.5, factor=3, cap_s=10, jitter=0)
    assert [exact.next_delay() for _ in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    full = Backoff(first_s=8, factor=1, cap_s=8, jitter=1, rng=random.Random(1))
    samples = [full.next_delay() for _ in range(2000)]
    assert 0 <= min(samples) < 0.5
    assert 7.5 < max(samples) <= 8
    assert 3.6 < sum(samples) / len(samples) < 4.4  # uniform on [0, 8]


def test_reset_starts_again_and_clears_the_wait() -> None:
    b = Backoff(jitter=0)
    assert b.wait_s(now=100.0) == 0.0
    assert b.failed(now=100.0) == 1.0
    assert b.failed(now=101.0) == 2.0
    assert b.wait_s(now=101.5) == 1.5
    assert b.wait_s(now=104.0) == 0.0
    b.reset()
    assert b.attempts == 0
    assert b.wait_s(now=101.5) == 0.0
    assert b.next_delay() == 1.0


def test_very_many_failures_do_not_overflow() -> None:
    b = Backoff(jitter=0)
    b.attempts = 10_000
    assert b.next_delay() == 60.0


def test_connect_backoff_is_short() -> None:
    b = connect_backoff(random.Random(3))
    delays = [b.next_delay() for _ in range(6)]
    assert CONNECT_RETRY_FIRST_S / 2 <= delays[0] <= CONNECT_RETRY_FIRST_S
    assert all(d <= CONNECT_RETRY_CAP_S for d in delays)
    assert sum(delays[: backoff.CONNECT_RETRIES]) < 2.0  # the user waits at most ~1.5 s more


@pytest.mark.parametrize(
    "kwargs",
    [{"first_s": 0}, {"first_s": 5, "cap_s": 1}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_backoff_is_pure() -> None:
    tree = ast.parse(Path(backoff.__file__).read_text())
    roots = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert roots & {"asyncio", "time", "socket", "websockets", "threading"} == set()
