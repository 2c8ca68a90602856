"""Local Agents-compatible server: the conversation WebSocket and the signed-URL call on one port.

Behaviour follows the protocol reference (shared protocol notes); where the service's behaviour is
unknown the choice is documented here. A missing `agent_id` query parameter is reported like every
other contract error the service reports over an open socket (reference 6.1): the socket is
accepted, an `error` event (`missing_fields`) is sent, then close 1008.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pi_agent.core.audio import formats
from pi_agent.simulator import faults
from pi_agent.simulator.agent import SPEECH_THRESHOLD_DBFS
from pi_agent.simulator.records import ConversationRecord
from pi_agent.simulator.scenario import Scenario
from pi_agent.simulator.session import ServerSession

log = logging.getLogger(__name__)

WS_PATH = "/v1/convai/conversation"
SIGNED_URL_PATHS = frozenset(
    {f"{WS_PATH}/get-signed-url", f"{WS_PATH}/get_signed_url"}  # the latter is deprecated (1.3)
)
TOKEN_PARAMS = ("conversation_signature", "token")  # newer and older signed-URL spellings (1.2)
TOKEN_TTL_S = 15 * 60.0  # reference 1.3: a signed URL must be used within 15 minutes
TOKEN_BYTES = 24  # 192 random bits per single-use token
MAX_FRAME_BYTES = 16 * 1024 * 1024  # reference 1.4: the service's stated maximum frame size
CLOSE_TIMEOUT_S = 2.0  # a peer that never answers our close frame must not hold shutdown 10 s
SHUTDOWN_TIMEOUT_S = 5.0  # bound on waiting for every connection handler at close()
# Unknown upstream (reference 10.3): long enough for a slow client, then start without an init.
FIRST_MESSAGE_TIMEOUT_S = 10.0
PING_INTERVAL_S = 2.0  # upstream interval undocumented (5); several RTT samples per short test
AUDIO_CHUNK_MS = 250  # agent audio event size; upstream sizes are undocumented (4.2)
SPEAK_RATE = 2.0  # TTS streams faster than real time; 2x keeps barge-in windows realistic
UNKNOWN_AGENT = "The AI agent you are trying to reach does not exist."
NOT_AUTHORIZED = "Could not authorize the conversation"
HTTP_ERROR_STATUSES = (400, 599)  # the range a refuse_status / signed_url_status fault may use


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """How the simulator behaves; invalid values raise ValueError naming the option."""

    agent_ids: frozenset[str] | None = None  # None accepts any agent id
    api_keys: frozenset[str] = frozenset()  # non-empty: conversations need a signed-URL token
    input_format: str = "pcm_16000"
    output_format: str = "pcm_16000"
    ping_interval_s: float = PING_INTERVAL_S  # 0 disables pings
    audio_chunk_ms: int = AUDIO_CHUNK_MS  # size of each agent `audio` event
    speak_rate: float = (
        SPEAK_RATE  # audio goes out this many times faster than real time; 0 = burst
    )
    metadata_delay_s: float = 0.0
    scenario: Scenario | None = None  # None: the echo agent runs the whole conversation
    first_message: str | None = None  # greeting spoken when the echo agent starts
    allowed_overrides: frozenset[str] | None = None  # dotted paths; None allows every override
    strict: bool = False  # invalid client messages close 1008 invalid_message, as the service does
    tentative_transcripts: bool = True
    vad_threshold_dbfs: float = SPEECH_THRESHOLD_DBFS
    first_message_timeout_s: float = FIRST_MESSAGE_TIMEOUT_S
    token_ttl_s: float = TOKEN_TTL_S
    # Faults (pi_agent.simulator.faults): refuse the WebSocket handshake with this HTTP status;
    # answer the signed-URL call with this error status, or with this raw body (HTTP 200), or
    # with a URL of this scheme.
    refuse_status: int | None = None
    signed_url_status: int | None = None
    signed_url_body: str | None = None
    signed_url_scheme: str | None = None

    def __post_init__(self) -> None:
        for name in ("input_format", "output_format"):
            value = getattr(self, name)
            if value not in formats.FORMATS:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(formats.FORMATS)}")
        ranges = {
            "ping_interval_s": (0.0, 3600.0),
            "audio_chunk_ms": (1, 60_000),
            "speak_rate": (0.0, 1000.0),
            "metadata_delay_s": (0.0, 600.0),
            "first_message_timeout_s": (0.0, 600.0),
            "token_ttl_s": (0.0, 86_400.0),
            "vad_threshold_dbfs": (-120.0, 0.0),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not low <= value <= high
            ):
                raise ValueError(f"{name} must be a number from {low} to {high}, got {value!r}")
        if 0 < self.speak_rate < 0.1:
            raise ValueError(f"speak_rate must be 0 (burst) or at least 0.1, got {self.speak_rate}")
        if self.agent_ids is not None and not all(self.agent_ids):
            raise ValueError("agent_ids must not contain an empty id")
        if not all(self.api_keys):
            raise ValueError("api_keys must not contain an empty key")
        low, high = HTTP_ERROR_STATUSES
        for name in ("refuse_status", "signed_url_status"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise ValueError(f"{name} must be an HTTP status {low}-{high}, got {value!r}")
        scheme = self.signed_url_scheme
        if scheme is not None and not (scheme.isascii() and scheme.isalpha()):
            raise ValueError(f"signed_url_scheme must be letters like 'wss', got {scheme!r}")


@dataclass(slots=True)
class _Token:
    agent_id: str
    expires_at: float


class _QuietLogger(logging.LoggerAdapter[logging.Logger]):
    """Hides websockets' DEBUG frame and header dumps: request lines carry signed-URL tokens."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query parameters with token values replaced by ***, safe to log and record."""
    return {k: ("***" if k in TOKEN_PARAMS else v) for k, v in query.items()}


class Simulator:
    """The server; `async with Simulator(options) as sim:` listens on `sim.url` until closed."""

    def __init__(
        self, options: SimulatorOptions | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.options = options or SimulatorOptions()
        self.host = host
        self._port = port
        self.conversations: list[ConversationRecord] = []
        self._server: Server | None = None
        self._tokens: dict[str, _Token] = {}
        self._handed_out = 0
        self._new_conversation = asyncio.Event()

    async def __aenter__(self) -> Simulator:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self, host: str | None = None, port: int | None = None) -> Simulator:
        """Listen on host:port (port 0 picks a free one); returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self.host = self.host if host is None else host
        requested = self._port if port is None else port
        self._server = await serve(
            self._handle,
            self.host,
            requested,
            process_request=self._process_request,
            compression=None,  # audio frames: deflate costs ~5x time for nothing (testbed 5)
            max_size=MAX_FRAME_BYTES,
            # The Agents protocol measures latency with JSON pings (reference 5); whether the
            # service also sends RFC 6455 pings is unknown, so this server does not.
            ping_interval=None,
            close_timeout=CLOSE_TIMEOUT_S,
            logger=_QuietLogger(logging.getLogger(f"{__name__}.websockets")),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("simulator listening on %s", self.url)
        return self

    async def close(self) -> None:
        """Close every conversation (1001 going away) and stop listening; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        try:
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.warning("simulator: connections still open %.1f s after close", SHUTDOWN_TIMEOUT_S)

    @property
    def port(self) -> int:
        """The TCP port (the real one once started)."""
        return self._port

    @property
    def _url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host  # noqa: S104
        return f"[{host}]" if ":" in host else host

    @property
    def url(self) -> str:
        """ws://HOST:PORT, the base a client appends the conversation path to."""
        return f"ws://{self._url_host}:{self.port}"

    @property
    def http_url(self) -> str:
        """http://HOST:PORT, the REST base (e.g. the SDK's base_url)."""
        return f"http://{self._url_host}:{self.port}"

    def conversation_url(self, agent_id: str = "agent", **params: str) -> str:
        """Full conversation URL for an agent, with extra query parameters."""
        query = "".join(f"&{quote(k)}={quote(v, safe='')}" for k, v in params.items())
        return f"{self.url}{WS_PATH}?agent_id={quote(agent_id, safe='')}{query}"

    async def next_conversation(self, timeout_s: float = 5.0) -> ConversationRecord:
        """The oldest conversation not yet returned by this method, waiting up to timeout_s."""
        async with asyncio.timeout(timeout_s):
            while self._handed_out >= len(self.conversations):
                self._new_conversation.clear()
                await self._new_conversation.wait()
        self._handed_out += 1
        return self.conversations[self._handed_out - 1]

    def issue_token(self, agent_id: str) -> str:
        """A fresh single-use conversation token for agent_id, valid token_ttl_s."""
        now = time.monotonic()
        self._tokens = {t: v for t, v in self._tokens.items() if v.expires_at > now}
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._tokens[token] = _Token(agent_id, now + self.options.token_ttl_s)
        return token

    def _consume_token(self, token: str | None, agent_id: str) -> bool:
        entry = self._tokens.pop(token, None) if token else None
        return (
            entry is not None and entry.agent_id == agent_id and entry.expires_at > time.monotonic()
        )

    # ------------------------------------------------------------------------- HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            if self.options.refuse_status is not None:
                log.info("handshake refused with HTTP %d (fault)", self.options.refuse_status)
                return _json(connection, *_refusal(self.options.refuse_status))
            return None
        if url.path in SIGNED_URL_PATHS:
            return self._signed_url(connection, request, dict(parse_qsl(url.query)))
        return _json(connection, 404, {"detail": "Not Found"})

    def _signed_url(
        self, connection: ServerConnection, request: Request, query: dict[str, str]
    ) -> Response:
        key = request.headers.get("xi-api-key")
        # With no api_keys configured any key is accepted, but one must be sent, as upstream.
        if not key or (self.options.api_keys and key not in self.options.api_keys):
            log.info("signed URL refused: invalid API key")
            body = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
            return _json(connection, 401, body)
        if self.options.signed_url_status is not None:
            return _json(connection, *_refusal(self.options.signed_url_status))
        agent_id = query.get("agent_id")
        if not agent_id:
            missing = {"type": "missing", "loc": ["query", "agent_id"], "msg": "Field required"}
            return _json(connection, 422, {"detail": [missing]})
        if self.options.agent_ids is not None and agent_id not in self.options.agent_ids:
            body = {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
            return _json(connection, 404, body)
        if self.options.signed_url_body is not None:
            return _json(connection, 200, raw=self.options.signed_url_body.encode())
        token = self.issue_token(agent_id)
        host = request.headers.get("Host") or f"{self._url_host}:{self.port}"
        log.info("signed URL issued for agent %s (token=***)", agent_id)
        scheme = self.options.signed_url_scheme or "ws"
        url = f"{scheme}://{host}{WS_PATH}?agent_id={quote(agent_id, safe='')}&"
        url += f"{TOKEN_PARAMS[0]}={token}"
        return _json(connection, 200, {"signed_url": url})

    # ------------------------------------------------------------------------- WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = dict(parse_qsl(urlsplit(ws.request.path).query))
        agent_id = query.get("agent_id") or None
        record = ConversationRecord(agent_id=agent_id, query=redact_query(query))
        self.conversations.append(record)
        self._new_conversation.set()
        session = ServerSession(self.options, ws, record)
        try:
            refusal = self._refusal(agent_id, query)
            if refusal is not None:
                await session.refuse(*refusal)
            else:
                await session.run()
        except ConnectionClosed:
            pass  # the client left while we were sending; finish() records how
        finally:
            await session.finish()

    def _refusal(self, agent_id: str | None, query: dict[str, str]) -> tuple[str, str] | None:
        """(error_type, message) when the conversation must be refused, else None."""
        token = next((query[p] for p in TOKEN_PARAMS if p in query), None)
        if agent_id is None:
            return "missing_fields", "Missing required query parameter: agent_id"
        if self.options.agent_ids is not None and agent_id not in self.options.agent_ids:
            log.info("conversation refused: unknown agent %s", agent_id)
            return "invalid_message", UNKNOWN_AGENT
        valid = self._consume_token(token, agent_id)
        if self.options.api_keys and not valid:
            log.info("conversation refused for agent %s: token=*** missing or invalid", agent_id)
            return "invalid_message", NOT_AUTHORIZED
        return None


def _json(
    connection: ServerConnection,
    status: int,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    *,
    raw: bytes | None = None,
) -> Response:
    """An HTTP response with a JSON body (or `raw` bytes), shaped like websockets' rejections."""
    data = raw if raw is not None else json.dumps(body).encode()
    response = connection.respond(status, "")
    del response.headers["Content-Length"]
    del response.headers["Content-Type"]
    response.headers["Content-Length"] = str(len(data))
    response.headers["Content-Type"] = "application/json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return dataclasses.replace(response, body=data)


def _refusal(status: int) -> tuple[int, object, Mapping[str, str]]:
    """(status, body, headers) of an HTTP refusal fault."""
    body, headers = faults.refusal(status)
    return status, body, headers


async def serve_forever(
    host: str, port: int, options: SimulatorOptions, *, stop: asyncio.Event | None = None
) -> None:
    """Serve until `stop` is set or SIGINT/SIGTERM; prints the listening line to stdout first."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us through `stop`
    try:
        async with Simulator(options, host=host, port=port) as sim:
            print(f"simulator listening on {sim.url}", flush=True)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
