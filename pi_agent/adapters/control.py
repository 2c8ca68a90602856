"""Local control socket: `pi-agent wake|end|status|say|context|mute` talk to the daemon here.

One JSON object per line each way over a Unix stream socket. The socket file is mode 0660 in a
0750 runtime directory, and every peer's credentials (SO_PEERCRED) are checked again: root, the
daemon's own user, or a member of the control group. Malformed or oversized requests get an
error reply and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pi_agent.errors import ControlError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
DEFAULT_RUNTIME_DIR = Path("/run/pi-agent")
MAX_REQUEST_BYTES = 4096  # a command plus up to a few KB of text for `say`/`context`
REPLY_LIMIT_BYTES = 64 * 1024  # a status reply is well under 4 KB: server strings are clipped
REQUEST_TIMEOUT_S = 2.0  # a client that connects and says nothing is dropped after this
# Requests served at once; more are answered "busy" and closed at once, so a flood of idle
# connections cannot use up the daemon's file descriptors.
MAX_CONNECTIONS = 16
# How long start() waits for a daemon already on the socket to answer a connect.
LIVE_CHECK_TIMEOUT_S = 1.0
CLIENT_TIMEOUT_S = 10.0  # the CLI gives up on a daemon that does not answer
COMMANDS = ("wake", "end", "status", "say", "context", "mute")
TEXT_COMMANDS = ("say", "context")
REQUEST_SHAPE = '{"cmd": ..., "text": ...}'

# Linux's SO_PEERGROUPS (asm-generic/socket.h; Python's socket module does not name it), and the
# buffer for the answer: 4 bytes a group, 1024 bytes (the most getsockopt takes) is 256 groups.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
GID_BYTES = 4
PEERGROUPS_BUFFER_BYTES = 1024

Handler = Callable[[str, str], Awaitable[dict[str, Any]]]


def socket_path(configured: Path | None, environ: dict[str, str] | None = None) -> Path:
    """Where the socket is: the config's path, else $RUNTIME_DIRECTORY, else /run/pi-agent."""
    if configured is not None:
        return configured
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY")
    # systemd may list several directories separated by ':'; ours is the first.
    base = Path(runtime.split(":")[0]) if runtime else DEFAULT_RUNTIME_DIR
    return base / SOCKET_NAME


def peer_ids(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def peer_groups(sock: socket.socket) -> set[int]:
    """Supplementary groups of the process at the other end, from the kernel (SO_PEERGROUPS).

    Not from /proc/<pid>/status: the unit's ProtectProc=invisible hides other users' processes.
    Empty when the kernel cannot say (before Linux 4.13, or more groups than the buffer holds).
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEERGROUPS_BUFFER_BYTES)
    except OSError:
        return set()
    count = len(raw) // GID_BYTES
    return set(struct.unpack(f"{count}I", raw[: count * GID_BYTES]))


def parse_request(data: bytes) -> tuple[str, str]:
    """(command, text) from one request line; ValueError names what is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ValueError('request is not JSON; expected {"cmd": ..., "text": ...}') from None
    except RecursionError:
        raise ValueError(
            'request is nested too deeply; expected {"cmd": ..., "text": ...}'
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("cmd"), str):
        raise ValueError("request has no string 'cmd'")
    cmd, text = obj["cmd"], obj.get("text", "")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r}; expected one of {', '.join(COMMANDS)}")
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    if cmd in TEXT_COMMANDS and not text.strip():
        raise ValueError(f"{cmd} needs a text")
    return cmd, text


class ControlServer:
    """Serves control requests to `handler(cmd, text) -> reply dict`."""

    def __init__(self, path: Path, handler: Handler, group: str | None = None) -> None:
        self.path = path
        self.handler = handler
        self.group = group
        self._server: asyncio.Server | None = None
        self._allowed_gid: int | None = None
        self._created: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound
        self._active = 0
        self.refused = 0
        self.rejected = 0
        self.busy = 0

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) with mode 0660 and the control group.

        Raises ControlError when a live daemon answers on the socket already: taking its socket
        would leave that daemon running but unreachable.
        """
        if self.path.is_socket():
            if await _answers(self.path):
                raise ControlError(
                    f"another pi-agent is already running and answering on {self.path}; stop "
                    "it first (sudo systemctl stop pi-agent) or give this one another "
                    "control.socket"
                )
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # stale: left by a daemon that was killed
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
            os.chmod(self.path, 0o660)
            gid = os.getegid()
            if self.group is not None:
                gid = grp.getgrnam(self.group).gr_gid
                if gid != os.getegid():  # the hardened unit forbids chown; skip when needless
                    os.chown(self.path, -1, gid)
        except (OSError, KeyError) as exc:
            raise ControlError(f"cannot create the control socket {self.path}: {exc}") from exc
        self._allowed_gid = gid
        info = self.path.stat()
        self._created = (info.st_dev, info.st_ino)
        log.debug("control socket at %s", self.path)

    async def close(self) -> None:
        """Stop serving; remove the socket only if it is still the one this server created."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            info = self.path.stat()
            if (info.st_dev, info.st_ino) == self._created:
                self.path.unlink()

    def _allowed(self, sock: socket.socket) -> bool:
        _, uid, gid = peer_ids(sock)
        if uid in (0, os.geteuid()):
            return True
        allowed = self._allowed_gid
        return allowed is not None and (gid == allowed or allowed in peer_groups(sock))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._active += 1
        try:
            if self._active > MAX_CONNECTIONS:
                self.busy += 1
                await self._reply(writer, {"ok": False, "error": "busy: too many requests"})
                return
            sock = writer.get_extra_info("socket")
            if sock is None or not self._allowed(sock):
                self.refused += 1
                await self._reply(writer, {"ok": False, "error": "permission denied"})
                return
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    line = await reader.readuntil(b"\n")
                cmd, text = parse_request(line.strip())
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                self.rejected += 1
                await self._reply(writer, {"ok": False, "error": "incomplete or oversized request"})
                return
            except ValueError as exc:
                self.rejected += 1
                await self._reply(writer, {"ok": False, "error": str(exc)})
                return
            try:
                reply = await self.handler(cmd, text)
            except Exception as exc:  # a bug in one request must not go unanswered or spread
                log.error("control request %r failed", cmd, exc_info=exc)
                reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            await self._reply(writer, reply)
        except ConnectionError:
            pass
        finally:
            self._active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()


async def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket `path` (a live daemon)."""
    try:
        async with asyncio.timeout(LIVE_CHECK_TIMEOUT_S):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        return False  # refused: nobody listens, the socket file is stale
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return True


async def request(path: Path, cmd: str, text: str = "") -> dict[str, Any]:
    """Send one command to the daemon and return its reply."""
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=REPLY_LIMIT_BYTES)
            writer.write(json.dumps({"cmd": cmd, "text": text}).encode() + b"\n")
            await writer.drain()
            try:
                line = await reader.readline()
            except ValueError:  # over the reader's limit
                raise ControlError(
                    f"the daemon's reply is longer than {REPLY_LIMIT_BYTES} bytes"
                ) from None
            finally:
                writer.close()
    except ControlError:
        raise
    except FileNotFoundError:
        raise ControlError(f"no daemon is listening at {path} (is pi-agent running?)") from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}: run as root or as a member of the pi-agent group"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"cannot talk to the daemon at {path}: {exc}") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError("the daemon's reply was not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError("the daemon's reply was not a JSON object")
    return reply
