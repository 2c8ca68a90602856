"""The conversation link: URL building, the signed-URL call and the WebSocket connect.

Adapter layer: it turns network failures into `LinkError`/`AuthError` with one clear line each and
decides nothing else. API keys and signed-URL tokens never enter a message or a log record.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from pi_agent import __version__
from pi_agent.config import Secret
from pi_agent.errors import AuthError, LinkError

log = logging.getLogger(__name__)

CONVERSATION_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
# Server frames can exceed 1 MiB; 16 MiB is the service's stated maximum (reference 1.4).
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Frames buffered before the receive loop reads them; small, since each may be 16 MiB and a Pi
# Zero 2 W has 512 MiB of memory. The receive loop reads continuously, so this rarely fills.
MAX_QUEUED_FRAMES = 4
# How long closing waits for the server's close frame before dropping the TCP connection.
CLOSE_TIMEOUT_S = 2.0
# Protocol-level keepalive (RFC 6455 ping frames): notices a dead TCP link within about 40 s
# even when the service sends nothing; independent of the JSON ping/pong of reference 5.
KEEPALIVE_INTERVAL_S = 20.0
KEEPALIVE_TIMEOUT_S = 20.0
USER_AGENT = f"pi-agent/{__version__}"
# The websockets library logs handshake lines (with the token in the URL) at debug level; keep
# its records at WARNING so no level setting of ours can leak a token through them.
_ws_log = logging.getLogger("pi_agent.adapters.link.websocket")
_ws_log.setLevel(logging.WARNING)

Connector = Callable[..., Any]


def is_loopback_host(host: str | None) -> bool:
    """Whether a URL host names this machine (localhost, 127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with every query value except agent_id replaced, safe to log."""
    parts = urllib.parse.urlsplit(url)
    query = [
        (k, v if k == "agent_id" else "***")
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    safe_query = urllib.parse.urlencode(query, safe="*")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, safe_query, ""))


def conversation_url(server_url: str, agent_id: str, environment: str | None = None) -> str:
    """The public-agent WebSocket URL for `agent_id` under `server_url` (reference 1.1, 1.2)."""
    query = {"agent_id": agent_id}
    if environment:
        query["environment"] = environment
    return f"{server_url.rstrip('/')}{CONVERSATION_PATH}?{urllib.parse.urlencode(query)}"


def rest_base(server_url: str) -> str:
    """`ws` -> `http`, `wss` -> `https`: the REST base for the same host (CONTRACT)."""
    parts = urllib.parse.urlsplit(server_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, "", "", ""))


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context: the system store, or only `ca_file` when given.

    A CA file that is not a PEM certificate raises LinkError naming the setting; check-config
    refuses such a file too, so this only happens when it changed after the daemon started.
    """
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        why = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else type(exc).__name__
        raise LinkError(
            f"agent.tls_ca_file {ca_file} cannot be used: {why}; expected PEM certificates"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the xi-api-key header to the new location."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fetch_signed_url_blocking(
    url: str, api_key: Secret, timeout_s: float, ctx: ssl.SSLContext | None, direct: bool
) -> str:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    if direct:
        handlers.append(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 - scheme is http(s), checked by config
        url, headers={"xi-api-key": api_key.reveal(), "User-Agent": USER_AGENT}
    )
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
        if status in (401, 403):
            raise AuthError(
                f"the service refused the API key when asked for a signed URL (HTTP {status}); "
                "check the key file or ELEVENLABS_API_KEY"
            ) from None
        if status == 404:
            raise LinkError(
                "the service does not know this agent id (HTTP 404 from the signed-URL call)"
            ) from None
        raise LinkError(f"the signed-URL call failed with HTTP {status}") from None
    except urllib.error.URLError as exc:
        raise LinkError(f"the signed-URL call failed: {_reason(exc.reason)}") from None
    except http.client.HTTPException as exc:  # a status line or header that is not HTTP
        raise LinkError(
            f"the signed-URL call got an answer that is not valid HTTP ({type(exc).__name__})"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise LinkError(f"the signed-URL call failed: {_reason(exc)}") from None
    try:
        data = json.loads(body)
        signed = data["signed_url"]
        if not isinstance(signed, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise LinkError(
            "the signed-URL call answered without a 'signed_url' string in its JSON body"
        ) from None
    return signed


def _reason(exc: object) -> str:
    """A one-line, secret-free description of a network error."""
    if isinstance(exc, socket.gaierror):
        return "the server name could not be resolved (DNS)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__ if not str(exc) else str(exc)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What the link needs from the configuration."""

    server_url: str
    agent_id: str
    api_key: Secret | None = None
    environment: str | None = None
    connect_timeout_s: float = 10.0
    tls_ca_file: str | None = None


async def resolve_url(settings: LinkSettings) -> str:
    """The URL to open: public agents directly, private ones through a fresh signed URL."""
    if settings.api_key is None:
        return conversation_url(settings.server_url, settings.agent_id, settings.environment)
    query = {"agent_id": settings.agent_id}
    if settings.environment:
        query["environment"] = settings.environment
    base = rest_base(settings.server_url)
    url = f"{base}{SIGNED_URL_PATH}?{urllib.parse.urlencode(query)}"
    https = base.startswith("https:")
    ctx = make_ssl_context(settings.tls_ca_file) if https else None
    host = urllib.parse.urlsplit(base).hostname
    signed = await asyncio.to_thread(
        _fetch_signed_url_blocking,
        url,
        settings.api_key,
        settings.connect_timeout_s,
        ctx,
        is_loopback_host(host),
    )
    scheme = urllib.parse.urlsplit(signed).scheme
    if scheme not in ("ws", "wss") or (https and scheme != "wss"):
        raise LinkError(
            f"the signed-URL call returned a {scheme or 'scheme-less'} URL; expected "
            + ("wss://" if https else "ws:// or wss://")
        )
    log.debug("signed URL obtained: %s", redact_url(signed))
    return signed


async def open_link(settings: LinkSettings, *, connector: Connector = connect) -> ClientConnection:
    """Open the conversation WebSocket or raise LinkError/AuthError with a clear reason."""
    url = await resolve_url(settings)
    parts = urllib.parse.urlsplit(url)
    kwargs: dict[str, Any] = {
        "max_size": MAX_FRAME_BYTES,
        "max_queue": MAX_QUEUED_FRAMES,
        "compression": None,  # deflate costs ~5x CPU on audio (TESTBED 5)
        "open_timeout": settings.connect_timeout_s,
        "close_timeout": CLOSE_TIMEOUT_S,
        "ping_interval": KEEPALIVE_INTERVAL_S,
        "ping_timeout": KEEPALIVE_TIMEOUT_S,
        "user_agent_header": USER_AGENT,
        "logger": _ws_log,
    }
    if parts.scheme == "wss":
        kwargs["ssl"] = make_ssl_context(settings.tls_ca_file)
    if is_loopback_host(parts.hostname):
        kwargs["proxy"] = None
    where = f"{parts.scheme}://{parts.netloc}"
    log.debug("connecting to %s", redact_url(url))
    try:
        conn: ClientConnection = await connector(url, **kwargs)
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError(
                f"{where} refused the conversation (HTTP {status}): not authorised"
            ) from None
        raise LinkError(f"{where} refused the WebSocket handshake with HTTP {status}") from None
    except InvalidURI:
        raise LinkError(f"invalid server URL {redact_url(url)!r}") from None
    except InvalidHandshake as exc:
        raise LinkError(f"WebSocket handshake with {where} failed: {type(exc).__name__}") from None
    except (OSError, TimeoutError) as exc:
        raise LinkError(f"could not connect to {where}: {_reason(exc)}") from None
    return conn
