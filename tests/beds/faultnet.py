"""Network faults on loopback, and the catalogue of faults the reliability tests and script run.

Everything listens on 127.0.0.1 and connects only there. The DNS fault never reaches a resolver:
`loopback_resolver()` answers names itself (a `.invalid` name fails at once, as RFC 6761 asks;
glibc would otherwise send the query to the configured name server).

- `loopback_resolver()`: name lookups fail for every name but numeric loopback addresses;
- `closed_port()`: a loopback port that refuses connections (bound, never listening);
- `make_tls_files()`: a private CA and a server certificate for 127.0.0.1 (openssl);
- `TcpProxy`: a loopback relay with optional TLS termination and per-chunk delay and jitter
  (a slow link, or a TLS server in front of the simulator);
- `Blackhole`: accepts TCP connections and never answers (a handshake that times out);
- `FAULTS`: every fault with its injection and the end a `talk` conversation must report.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import random
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pi_agent import once
from pi_agent.adapters import client, link
from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.client import Conversation
from pi_agent.config import Config, default_config
from pi_agent.core import protocol as p
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.simulator import (
    Close,
    ConversationRecord,
    Echo,
    Scenario,
    Send,
    SendAudio,
    SendRaw,
    Simulator,
    SimulatorOptions,
    Wait,
)
from pi_agent.simulator.scenario import (
    MAX_FRAME_BYTES,
    Drop,
    PingFlood,
    SendBig,
    SendError,
    Stall,
)

LOOPBACK = "127.0.0.1"
INVALID_HOST = "pi-agent-fault.invalid"  # RFC 6761 6.4: never resolves
AGENT_ID = "agent_1"
API_KEY = "sk_fault_test_key"  # accepted by any simulator without api_keys

# The microphone of every fault conversation: a short "utterance", then a quiet room.
SPEECH_RATE = 16_000
SPEECH_S = 0.4
SPEECH_SILENCE_S = 0.7
SPEECH_HZ = 440.0
SPEECH_LEVEL = 0.3  # of full scale: -13.5 dBFS, well above the simulator's speech threshold

# Timeouts shortened for tests (the device's values in brackets): metadata 1 s [10 s],
# keepalive ping every 1 s, answer within 1.5 s [20 s and 20 s], reply settled after 0.3 s [1 s].
QUICK_METADATA_TIMEOUT_S = 1.0
QUICK_KEEPALIVE_INTERVAL_S = 1.0
QUICK_KEEPALIVE_TIMEOUT_S = 1.5
QUICK_REPLY_SETTLE_S = 0.3
REPLY_TIMEOUT_S = 10.0  # conversation.reply_timeout_s of fault conversations
SHORT_REPLY_TIMEOUT_S = 1.0  # the smallest the configuration allows
SHORT_CONNECT_TIMEOUT_S = 1.0  # agent.connect_timeout_s: the smallest the configuration allows
FAULT_PING_INTERVAL_S = 0.5  # the simulator pings this often during fault conversations
STALL_S = 0.5  # a brief stall, shorter than the quick keepalive timeout: must be survived
LONG_STALL_S = 30.0  # a stall that outlasts every timeout of a conversation
PING_FLOOD_COUNT = 1000
SLOW_LINK_DELAY_S = 0.15  # one way, each direction
SLOW_LINK_JITTER_S = 0.05

# Proxy and blackhole bounds.
RELAY_CHUNK_BYTES = 64 * 1024
RELAY_QUEUE_CHUNKS = 256  # per direction: at most 16 MiB held back by a slow link
MAX_RELAY_CONNECTIONS = 16
RELAY_CONNECT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0
OPENSSL_TIMEOUT_S = 30.0
CERT_DAYS = 2

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy")


# ---------------------------------------------------------------------------------- resolver


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_resolver_depth = 0  # loopback_resolver() nests (concurrent runs): only the outermost patches


@contextlib.contextmanager
def loopback_resolver() -> Iterator[None]:
    """Within: names fail to resolve (EAI_NONAME) without a query; loopback literals still work.

    Proxy variables are hidden too, so a client cannot reach out through a proxy either.
    """
    global _resolver_depth  # noqa: PLW0603 - one patch of a process-wide function
    if _resolver_depth:
        _resolver_depth += 1
        try:
            yield
        finally:
            _resolver_depth -= 1
        return
    real = socket.getaddrinfo

    def guarded(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or (isinstance(name, str) and _is_loopback_literal(name)):
            return real(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    saved = {k: v for k, v in os.environ.items() if k.lower() in PROXY_ENV}
    for key in saved:
        del os.environ[key]
    socket.getaddrinfo = guarded
    _resolver_depth = 1
    try:
        yield
    finally:
        _resolver_depth = 0
        socket.getaddrinfo = real
        os.environ.update(saved)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A private CA and a server certificate signed by it, as PEM files."""

    ca_cert: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)],
        check=True,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_S,
    )


def make_tls_files(directory: Path, san: str = f"IP:{LOOPBACK}") -> TlsFiles:
    """Generate (once per directory and name) a CA and a certificate for `san` (EC P-256)."""
    tag = "".join(ch if ch.isalnum() else "_" for ch in san)
    files = TlsFiles(directory / "ca.pem", directory / f"{tag}.pem", directory / f"{tag}.key")
    if files.cert.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = directory / "ca.key"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    days = ("-days", str(CERT_DAYS))
    if not files.ca_cert.exists():
        subject = ("-subj", "/CN=pi-agent fault test CA")
        ca = (
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        )
        _openssl(
            "req", "-x509", *ec, *days, *subject, *ca, "-keyout", ca_key, "-out", files.ca_cert
        )
    csr = directory / f"{tag}.csr"
    ext = directory / f"{tag}.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-new", *ec, "-keyout", files.key, "-out", csr, "-subj", "/CN=pi-agent test")
    signer = ("-CA", files.ca_cert, "-CAkey", ca_key, "-CAcreateserial")
    _openssl("x509", "-req", "-in", csr, *signer, *days, "-extfile", ext, "-out", files.cert)
    return files


# ---------------------------------------------------------------------------------- relays


class _Listener:
    """A loopback TCP server whose connection handlers are tracked and cancelled at exit."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> _Listener:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # every relayed or held connection ends now
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=CLOSE_TIMEOUT_S)
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if len(self._handlers) <= MAX_RELAY_CONNECTIONS:
                await self.handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            pass  # the peer left, TLS failed, or the listener is closing: the relay just ends
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    def track(self, writer: asyncio.StreamWriter) -> None:
        """Abort this (upstream) connection too when the listener closes."""
        self._writers.add(writer)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (subclasses)."""
        raise NotImplementedError


class Blackhole(_Listener):
    """Accepts connections, reads and discards everything, never answers."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(RELAY_CHUNK_BYTES):
            pass


class TcpProxy(_Listener):
    """Relays loopback TCP to target_port: TLS on the listening side if given; delay, jitter."""

    def __init__(
        self,
        target_port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(ssl_context)
        if not 0 <= jitter_s <= delay_s:
            raise ValueError(f"need 0 <= jitter_s <= delay_s, got {jitter_s} and {delay_s}")
        self.target_port = target_port
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.rng = rng or random.Random()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, self.target_port), RELAY_CONNECT_TIMEOUT_S
        )
        self.track(up_writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()
            writer.transport.abort()  # one direction failed (or both ended): end the other
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    def _delay(self) -> float:
        return self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst, each chunk held back by the link delay; order is kept."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(RELAY_QUEUE_CHUNKS)

        async def pump() -> None:
            due = 0.0
            try:
                while chunk := await src.read(RELAY_CHUNK_BYTES):
                    due = max(due, loop.time() + self._delay())
                    await queue.put((due, chunk))
            finally:
                await queue.put((due, b""))

        reading = asyncio.create_task(pump())
        try:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


# ---------------------------------------------------------------------------------- conversations


@dataclass(slots=True)
class Target:
    """Where a fault conversation connects, and the configuration it needs there."""

    server_url: str
    sim: Simulator | None = None
    agent: dict[str, object] = field(default_factory=dict)
    conversation: dict[str, object] = field(default_factory=dict)


TargetFactory = Callable[[Path], AbstractAsyncContextManager[Target]]


def speech_file(work: Path) -> Path:
    """The microphone WAV: SPEECH_S of a tone, then SPEECH_SILENCE_S of silence."""
    path = work / "mic.wav"
    if not path.exists():
        t = np.arange(int(SPEECH_S * SPEECH_RATE)) / SPEECH_RATE
        tone = (np.sin(2 * np.pi * SPEECH_HZ * t) * SPEECH_LEVEL * 32767).astype(np.int16)
        silence = np.zeros(int(SPEECH_SILENCE_S * SPEECH_RATE), np.int16)
        write_wav(path, np.concatenate((tone, silence)), SPEECH_RATE)
    return path


def key_file(work: Path) -> Path:
    """An API key file readable by its owner only (the configuration refuses looser modes)."""
    path = work / "api-key"
    path.write_text(API_KEY + "\n")
    path.chmod(0o600)
    return path


def talk_config(work: Path, target: Target) -> Config:
    """A `talk` configuration: file microphone and speaker, no real-time pacing."""
    return default_config(
        AGENT_ID,
        target.server_url,
        audio={
            "backend": "file",
            "input_file": str(speech_file(work)),
            "output_file": str(work / "out.wav"),
            "file_speed": 0.0,
        },
        conversation={"reply_timeout_s": REPLY_TIMEOUT_S, **target.conversation},
        agent=target.agent,
    )


@contextlib.contextmanager
def quick_timeouts() -> Iterator[None]:
    """Within: the client's metadata, keepalive and reply-settle timeouts are test-sized."""
    patches: list[tuple[Any, str, float]] = [
        (client, "METADATA_TIMEOUT_S", QUICK_METADATA_TIMEOUT_S),
        (link, "KEEPALIVE_INTERVAL_S", QUICK_KEEPALIVE_INTERVAL_S),
        (link, "KEEPALIVE_TIMEOUT_S", QUICK_KEEPALIVE_TIMEOUT_S),
        (once, "REPLY_SETTLE_S", QUICK_REPLY_SETTLE_S),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


@dataclass(slots=True)
class Outcome:
    """How one conversation ended, how long it took, and what the simulator recorded."""

    reason: EndReason
    seconds: float
    conv: Conversation
    transcript: str
    records: list[ConversationRecord]


async def converse(work: Path, factory: TargetFactory) -> Outcome:
    """One `talk` conversation against the target the factory sets up."""
    loop = asyncio.get_running_loop()
    async with factory(work) as target:
        out = io.StringIO()
        started = loop.time()
        reason, conv = await once.run_talk(talk_config(work, target), out=out)
        seconds = loop.time() - started
        records = list(target.sim.conversations) if target.sim is not None else []
    return Outcome(reason, seconds, conv, out.getvalue(), records)


# ---------------------------------------------------------------------------------- targets


def simulator(
    scenario: Scenario | None = None,
    *,
    api_key: bool = False,
    conversation: dict[str, object] | None = None,
    **options: Any,
) -> TargetFactory:
    """A simulator with these options (and scenario); api_key: fetch a signed URL first."""

    @contextlib.asynccontextmanager
    async def factory(work: Path) -> AsyncIterator[Target]:
        opts = {"ping_interval_s": FAULT_PING_INTERVAL_S, **options}
        async with Simulator(SimulatorOptions(scenario=scenario, **opts)) as sim:
            agent: dict[str, object] = {"api_key_file": str(key_file(work))} if api_key else {}
            yield Target(sim.url, sim, agent, dict(conversation or {}))

    return factory


HEALTHY = simulator(speak_rate=0.0)  # the echo agent, replies in one burst


@contextlib.asynccontextmanager
async def unresolvable(work: Path) -> AsyncIterator[Target]:
    """A wss:// name under .invalid, with lookups answered locally."""
    with loopback_resolver():
        yield Target(f"wss://{INVALID_HOST}:443")


@contextlib.asynccontextmanager
async def refusing(work: Path) -> AsyncIterator[Target]:
    """A loopback port nobody listens on."""
    with closed_port() as port:
        yield Target(f"ws://{LOOPBACK}:{port}")


def tls(*, trust_ca: bool, san: str = f"IP:{LOOPBACK}") -> TargetFactory:
    """The simulator behind a TLS relay; trust_ca: agent.tls_ca_file names the private CA."""

    @contextlib.asynccontextmanager
    async def factory(work: Path) -> AsyncIterator[Target]:
        files = make_tls_files(work / "tls", san)
        options = SimulatorOptions(ping_interval_s=FAULT_PING_INTERVAL_S, speak_rate=0.0)
        async with (
            Simulator(options) as sim,
            TcpProxy(sim.port, ssl_context=files.server_context()) as relay,
        ):
            agent: dict[str, object] = {"tls_ca_file": str(files.ca_cert)} if trust_ca else {}
            yield Target(f"wss://{LOOPBACK}:{relay.port}", sim, agent)

    return factory


@contextlib.asynccontextmanager
async def blackhole(work: Path) -> AsyncIterator[Target]:
    """A server that accepts the TCP connection and never answers the handshake."""
    async with Blackhole() as hole:
        yield Target(f"ws://{LOOPBACK}:{hole.port}", agent={"connect_timeout_s": 1})


def slow_link(
    delay_s: float = SLOW_LINK_DELAY_S, jitter_s: float = SLOW_LINK_JITTER_S
) -> TargetFactory:
    """The echo simulator behind a relay that delays every chunk by delay_s +- jitter_s."""

    @contextlib.asynccontextmanager
    async def factory(work: Path) -> AsyncIterator[Target]:
        options = SimulatorOptions(ping_interval_s=FAULT_PING_INTERVAL_S, speak_rate=0.0)
        async with (
            Simulator(options) as sim,
            TcpProxy(sim.port, delay_s=delay_s, jitter_s=jitter_s) as relay,
        ):
            yield Target(f"ws://{LOOPBACK}:{relay.port}", sim)

    return factory


# ---------------------------------------------------------------------------------- catalogue


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: how it is injected, and the end (kind, text in the detail) it must cause."""

    name: str
    title: str
    injection: str
    kind: EndKind
    text: str
    target: TargetFactory
    note: str = ""  # what the table should add (e.g. a misleading detail)


GARBAGE = (
    SendRaw("{not json"),
    SendRaw(b"\x00\x01\x02"),
    SendRaw('{"type": "from_the_future", "x": 1}'),
    SendRaw('{"type": "ping", "ping_event": {"event_id": "nope"}}'),
    SendRaw('{"type": "audio", "audio_event": {"audio_base_64": "!!!", "event_id": 1}}'),
    SendRaw("[1, 2, 3]"),
)
REPLY_START = (
    Send(p.UserTranscript("(speech)", 1)),
    Send(p.AgentResponse("Here is a long answer", 1)),
    SendAudio(duration_s=2.0, event_id=1),
)


FAULTS: tuple[Fault, ...] = (
    # ------------------------------------------------------------ before the WebSocket opens
    Fault(
        "dns",
        "server name does not resolve",
        f"server_url wss://{INVALID_HOST}:443; lookups answered locally (loopback_resolver)",
        EndKind.CONNECT_FAILED,
        "could not be resolved (DNS)",
        unresolvable,
    ),
    Fault(
        "refused",
        "connection refused",
        "server_url names a bound, non-listening loopback port",
        EndKind.CONNECT_FAILED,
        "connection refused",
        refusing,
    ),
    Fault(
        "handshake_timeout",
        "server accepts TCP, never answers",
        "loopback listener that reads and never writes; connect_timeout_s 1",
        EndKind.CONNECT_FAILED,
        "timed out",
        blackhole,
    ),
    Fault(
        "tls_untrusted",
        "TLS certificate from an unknown CA",
        "TLS relay (private CA) in front of the simulator; no tls_ca_file",
        EndKind.CONNECT_FAILED,
        "TLS certificate not trusted",
        tls(trust_ca=False),
    ),
    Fault(
        "tls_wrong_host",
        "TLS certificate for another host",
        "TLS relay, certificate for DNS:elsewhere.test; tls_ca_file trusts its CA",
        EndKind.CONNECT_FAILED,
        "TLS certificate not trusted",
        tls(trust_ca=True, san="DNS:elsewhere.test"),
    ),
    Fault(
        "http_401",
        "handshake refused: HTTP 401",
        "SimulatorOptions(refuse_status=401)",
        EndKind.AUTH_FAILED,
        "(HTTP 401): not authorised",
        simulator(refuse_status=401),
    ),
    Fault(
        "http_403",
        "handshake refused: HTTP 403",
        "SimulatorOptions(refuse_status=403)",
        EndKind.AUTH_FAILED,
        "(HTTP 403): not authorised",
        simulator(refuse_status=403),
    ),
    Fault(
        "http_429",
        "handshake refused: HTTP 429",
        "SimulatorOptions(refuse_status=429), with Retry-After",
        EndKind.CONNECT_FAILED,
        "refused the WebSocket handshake with HTTP 429",
        simulator(refuse_status=429),
    ),
    Fault(
        "http_500",
        "handshake refused: HTTP 500",
        "SimulatorOptions(refuse_status=500)",
        EndKind.CONNECT_FAILED,
        "refused the WebSocket handshake with HTTP 500",
        simulator(refuse_status=500),
    ),
    Fault(
        "signed_url_401",
        "signed-URL call: HTTP 401",
        "API key configured; SimulatorOptions(signed_url_status=401)",
        EndKind.AUTH_FAILED,
        "refused the API key",
        simulator(api_key=True, signed_url_status=401),
    ),
    Fault(
        "signed_url_500",
        "signed-URL call: HTTP 500",
        "API key configured; SimulatorOptions(signed_url_status=500)",
        EndKind.CONNECT_FAILED,
        "signed-URL call failed with HTTP 500",
        simulator(api_key=True, signed_url_status=500),
    ),
    Fault(
        "signed_url_body",
        "signed-URL call: body is not the JSON",
        "API key configured; SimulatorOptions(signed_url_body='<html>...')",
        EndKind.CONNECT_FAILED,
        "without a 'signed_url' string",
        simulator(api_key=True, signed_url_body="<html><body>gateway</body></html>"),
    ),
    Fault(
        "signed_url_scheme",
        "signed URL with another scheme",
        "API key configured; SimulatorOptions(signed_url_scheme='http')",
        EndKind.CONNECT_FAILED,
        "returned a http URL",
        simulator(api_key=True, signed_url_scheme="http"),
    ),
    # ------------------------------------------------------------ during the conversation
    Fault(
        "no_metadata",
        "accepted, metadata never sent",
        "Scenario((Wait(30),), send_metadata=False)",
        EndKind.PROTOCOL,
        "no conversation_initiation_metadata",
        simulator(Scenario((Wait(LONG_STALL_S),), send_metadata=False)),
    ),
    Fault(
        "drop_mid_reply",
        "TCP connection dropped mid-reply",
        "scenario: transcript, agent_response, 2 s of audio, then Drop (transport.abort())",
        EndKind.CONNECTION_LOST,
        "dropped without a close handshake",
        simulator(Scenario((*REPLY_START, Drop()))),
    ),
    Fault(
        "dead_peer",
        "server stops reading and sending",
        "scenario: Stall(30 s, reading and sending), pings held too",
        EndKind.CONNECTION_LOST,
        "stopped answering keepalive pings",
        simulator(Scenario((Stall(LONG_STALL_S),))),
        "found by the keepalive (device: 20 s ping interval + 20 s timeout + 2 s close)",
    ),
    Fault(
        "silent_server",
        "server reads but never answers",
        "scenario: Stall(30 s, sending only); reply_timeout_s 1",
        EndKind.NO_REPLY,
        "did not answer within 1 s",
        simulator(
            Scenario((Stall(LONG_STALL_S, reading=False),)),
            conversation={"reply_timeout_s": SHORT_REPLY_TIMEOUT_S},
        ),
    ),
    Fault(
        "brief_stall",
        "server stalls 0.5 s, then answers",
        "scenario: Stall(0.5 s, reading and sending), then Echo",
        EndKind.COMPLETED,
        "the reply finished",
        simulator(Scenario((Stall(STALL_S), Echo()))),
    ),
    Fault(
        "slow_link",
        "slow link: 150 +- 50 ms each way",
        "TcpProxy(delay_s=0.15, jitter_s=0.05) between client and simulator",
        EndKind.COMPLETED,
        "the reply finished",
        slow_link(),
    ),
    Fault(
        "garbage",
        "malformed JSON, binary, unknown type, wrong shapes",
        "scenario: six SendRaw frames, then Echo",
        EndKind.COMPLETED,
        "the reply finished",
        simulator(Scenario((*GARBAGE, Echo()))),
    ),
    Fault(
        "frame_16mib",
        "one 16 MiB audio frame",
        "scenario: SendBig(16 MiB, audio of silence), then Echo",
        EndKind.COMPLETED,
        "the reply finished",
        simulator(Scenario((SendBig(MAX_FRAME_BYTES), Echo()))),
    ),
    Fault(
        "frame_over_16mib",
        "one frame of 16 MiB + 1 byte",
        "scenario: SendBig(16 MiB + 1), then Echo",
        EndKind.CONNECTION_LOST,
        "over the 16 MiB limit",
        simulator(Scenario((SendBig(MAX_FRAME_BYTES + 1), Echo()))),
        "the client itself closes 1009 (message too big) and says so",
    ),
    Fault(
        "wrong_format",
        "audio in another format than announced",
        "scenario: SendAudio(wire_format='pcm_44100') while pcm_16000 was announced, then Echo",
        EndKind.COMPLETED,
        "the reply finished",
        simulator(Scenario((SendAudio(duration_s=0.5, wire_format="pcm_44100"), Echo()))),
    ),
    Fault(
        "ping_flood",
        "1000 pings back to back",
        "scenario: PingFlood(1000), then Echo",
        EndKind.COMPLETED,
        "the reply finished",
        simulator(Scenario((PingFlood(PING_FLOOD_COUNT), Echo()))),
    ),
    Fault(
        "error_1002",
        "error llm_timeout, close 1002",
        "scenario: SendError('llm_timeout')",
        EndKind.SERVER_ERROR,
        "llm_timeout (code 1002)",
        simulator(Scenario((SendError("llm_timeout"),))),
    ),
    Fault(
        "error_1008",
        "error override_error, close 1008",
        "scenario: SendError('override_error')",
        EndKind.SERVER_ERROR,
        "override_error (code 1008)",
        simulator(Scenario((SendError("override_error"),))),
    ),
    Fault(
        "unknown_agent",
        "unknown agent id",
        "SimulatorOptions(agent_ids={'someone_else'}): error invalid_message, close 1008",
        EndKind.SERVER_ERROR,
        "does not exist",
        simulator(agent_ids=frozenset({"someone_else"})),
    ),
    Fault(
        "error_1011",
        "error unknown_websocket_crash, close 1011",
        "scenario: SendError('unknown_websocket_crash')",
        EndKind.SERVER_ERROR,
        "unknown_websocket_crash (code 1011)",
        simulator(Scenario((SendError("unknown_websocket_crash"),))),
    ),
    Fault(
        "close_1002",
        "close 1002 without an error event",
        "scenario: Close(1002, 'timeout')",
        EndKind.SERVER_ERROR,
        "closed the connection with code 1002",
        simulator(Scenario((Close(1002, "timeout"),))),
    ),
    Fault(
        "max_duration",
        "error max_duration_exceeded, close 1000",
        "scenario: SendError('max_duration_exceeded')",
        EndKind.SERVER_CLOSED,
        "maximum duration",
        simulator(Scenario((SendError("max_duration_exceeded"),))),
    ),
)
FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}
