"""Hostile servers and careless operators: every input path has a bound and a specific error.

Each test reproduces one case of docs/reliability.md, "Hostile input", against the real part: a
loopback server that answers garbage, a key file with curly quotes, a symbolic link where an
output file should be, a speaker that fails while draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_agent.adapters.audio.devices import FileMicrophone, FileSpeaker
from pi_agent.adapters.audio.wavfile import WavWriter, write_wav
from pi_agent.adapters.client import MAX_PENDING_TOOL_CALLS
from pi_agent.adapters.control import MAX_CONNECTIONS, REQUEST_SHAPE, ControlServer, request
from pi_agent.adapters.link import LinkSettings, make_ssl_context, open_link
from pi_agent.commands.check_config import check_config_main
from pi_agent.config import Secret, default_config, load_config
from pi_agent.core import protocol as p
from pi_agent.core.audio.playback import MAX_QUEUED_S
from pi_agent.core.backoff import should_retry
from pi_agent.core.bounds import MAX_ID_CHARS, MAX_LINE_CHARS
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.errors import (
    EX_CONFIG,
    EX_UNAVAILABLE,
    AudioError,
    ConfigError,
    ControlError,
    LinkError,
)
from pi_agent.once import run_talk
from pi_agent.simulator import (
    Close,
    ConversationRecord,
    Scenario,
    Send,
    SendAudio,
    SendMetadata,
    Simulator,
    SimulatorOptions,
    Step,
    Wait,
)
from pi_agent.simulator.scenario import MAX_FRAME_BYTES, SendBig, ToolCallFlood
from pi_agent.wiring import build_conversation
from tests.beds.daemon import daemon_bed
from tests.helpers import run

RATE = 16000
REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT_S = 60
WAIT_S = 15.0
PLAYED_MEANWHILE_S = 10  # an upper bound on the real-time playback during a flood test
CURLY_KEY = "\u2018sk_x\u2019"  # what a copy-paste from a rich-text page brings along


def speech(tmp_path: Path, seconds: float = 0.4) -> Path:
    path = tmp_path / "in.wav"
    t = np.arange(int(seconds * RATE)) / RATE
    write_wav(path, (np.sin(2 * np.pi * 440 * t) * 9000).astype(np.int16), RATE)
    return path


async def a_normal_conversation_works(tmp_path: Path) -> None:
    """A healthy simulator and a plain conversation: it completes."""
    async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
        cfg = default_config(
            "agent_1",
            sim.url,
            audio={"backend": "file", "input_file": str(speech(tmp_path)), "file_speed": 0},
        )
        reason, _ = await run_talk(cfg, out=io.StringIO())
        assert reason.ok, reason


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pi-agent.yaml"
    path.write_text(f"agent:\n  agent_id: agent_1\n  server_url: ws://127.0.0.1:9\n{body}")
    return path


def check(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    return check_config_main(str(path), out, err), err.getvalue()


# ------------------------------------------------------------------ 1: a CA file that is not one


def test_a_tls_ca_file_that_is_not_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("this is not a certificate\n")
    code, err = check(write_config(tmp_path, f"  tls_ca_file: {bad}\n"))
    assert code == EX_CONFIG
    assert "agent.tls_ca_file" in err and "holds no usable certificate" in err


def test_a_ca_file_spoiled_after_start_ends_the_connect_without_a_retry(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(LinkError, match=r"agent.tls_ca_file .* cannot be used"):
        make_ssl_context(str(bad))
    settings = LinkSettings("wss://127.0.0.1:9", "agent_1", tls_ca_file=str(bad))
    with pytest.raises(LinkError) as caught:
        run(open_link(settings))
    assert not should_retry(EndReason(EndKind.CONNECT_FAILED, str(caught.value)))


# ------------------------------------------------------------------ 2: a key with curly quotes


@pytest.mark.parametrize("where", ["file", "environment"])
def test_an_api_key_with_curly_quotes_is_refused_without_showing_it(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pi_agent.config import resolve_api_key

    key_file = tmp_path / "key"
    key_file.write_text(CURLY_KEY + "\n")
    key_file.chmod(0o600)
    if where == "file":
        code, err = check(write_config(tmp_path, f"  api_key_file: {key_file}\n"))
        assert code == EX_CONFIG
        message = err
    else:
        cfg = default_config("agent_1", "ws://127.0.0.1:9")
        with pytest.raises(ConfigError) as caught:
            resolve_api_key(cfg.agent, {"ELEVENLABS_API_KEY": CURLY_KEY})
        message = str(caught.value)
    assert "not plain ASCII" in message and "curly" in message
    assert "sk_x" not in message


# ------------------------------------------------------------------ 3: a signed-URL answer not HTTP


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A loopback TCP server that answers every request with `answer`; yields its ws:// URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"ws://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        (b"GARBAGE\r\n", "BadStatusLine"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n{}", "LineTooLong"),
    ],
    ids=["garbage", "70-KB-header"],
)
def test_a_signed_url_endpoint_that_answers_garbage_fails_the_connect_clearly(
    tmp_path: Path, answer: bytes, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with raw_server(answer) as url:
            settings = LinkSettings(url, "agent_1", api_key=Secret("sk_test"), connect_timeout_s=5)
            with pytest.raises(LinkError) as caught:
                await open_link(settings)
            assert str(caught.value) == (
                f"the signed-URL call got an answer that is not valid HTTP ({name})"
            )
            # The whole conversation ends with that reason, and the next one works.
            cfg = default_config(
                "agent_1", url, audio={"backend": "file", "input_file": str(speech(tmp_path))}
            )
            monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_test")
            reason, _ = await run_talk(cfg, out=io.StringIO())
            monkeypatch.delenv("ELEVENLABS_API_KEY")
            assert reason.kind is EndKind.CONNECT_FAILED
            assert name in reason.detail
        await a_normal_conversation_works(tmp_path)

    run(main())


# ------------------------------------------------------------------ 4: a speaker failing at the end


class FailingDrain(FileSpeaker):
    """Plays like a speaker, then fails when asked to let the last audio play out."""

    async def drain(self) -> None:
        raise AudioError("speaker 'usb' stopped (device unplugged or failed)")


def test_a_speaker_failing_while_draining_does_not_hold_the_end(tmp_path: Path) -> None:
    scenario = Scenario((Wait(0.2), SendAudio(duration_s=0.3, event_id=1), Close(1000, "bye")))

    async def main() -> None:
        options = SimulatorOptions(scenario=scenario, ping_interval_s=0)
        async with Simulator(options) as sim:
            cfg = default_config(
                "agent_1", sim.url, audio={"backend": "file", "input_file": str(speech(tmp_path))}
            )
            conv = build_conversation(
                cfg, FileMicrophone(speech(tmp_path), 20, 1.0), FailingDrain(None, 1.0)
            )
            reason = await asyncio.wait_for(conv.run(), 30)
        assert reason.kind is EndKind.SERVER_CLOSED, reason  # the server's end stands

    run(main())


# ------------------------------------------------------------------ 12: outputs through links


def test_an_output_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "reply.wav"
    link.symlink_to(target)
    wav = speech(tmp_path)
    code, err = check(
        write_config(
            tmp_path, f"audio:\n  backend: file\n  input_file: {wav}\n  output_file: {link}\n"
        )
    )
    assert code == EX_CONFIG
    assert "audio.output_file" in err and "is a symbolic link" in err
    with pytest.raises(AudioError, match="is a symbolic link"):
        WavWriter(link, RATE)
    assert target.read_text() == "keep me\n"


def test_an_output_file_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "reply.wav"
    os.mkfifo(fifo)
    code, err = check(
        write_config(
            tmp_path,
            f"audio:\n  backend: file\n  input_file: {speech(tmp_path)}\n  output_file: {fifo}\n",
        )
    )
    assert code == EX_CONFIG and "is not a regular file" in err
    with pytest.raises(AudioError, match="is not a regular file"):
        WavWriter(fifo, RATE)


def test_a_regular_output_file_is_truncated_and_written(tmp_path: Path) -> None:
    path = tmp_path / "reply.wav"
    path.write_bytes(b"x" * 10_000)
    writer = WavWriter(path, RATE)
    writer.write(np.zeros(160, np.int16))
    writer.close()
    assert path.stat().st_size == 44 + 320
    cfg = load_config(
        write_config(
            tmp_path,
            f"audio:\n  backend: file\n  input_file: {speech(tmp_path)}\n  output_file: {path}\n",
        )
    )
    assert cfg.audio.output_file == path


# ------------------------------------------------------------------ 5: a watcher that raises


def test_a_periodic_context_command_that_raises_ends_the_conversation_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after conversation.max_duration_s: billed minutes for nothing."""

    async def broken(argv: object, timeout_s: float, max_output_bytes: int) -> object:
        raise RuntimeError("the command runner broke")

    monkeypatch.setattr("pi_agent.adapters.context.run_command", broken)
    periodic = [{"argv": ["/bin/echo", "21.5 C"], "every_s": 10, "prefix": "Temperature:"}]

    async def main() -> None:
        async with daemon_bed(
            tmp_path, context={"periodic": periodic}, conversation={"max_duration_s": 600}
        ) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("error: internal: task watch failed: RuntimeError")
            await bed.notify.wait_for("idle: error shown")
            monkeypatch.undo()
            await request(bed.control, "wake")  # the next conversation works
            await bed.notify.wait_for("listening")
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")

    run(main())


def test_a_command_argument_with_a_nul_byte_is_a_failed_command_not_a_crash() -> None:
    from pi_agent.adapters.tools import run_command

    outcome = run(run_command(["/bin/echo", "a\0b"], 5.0, 1024))
    assert outcome.error is not None and "could not start /bin/echo" in outcome.error


# ------------------------------------------------------------------ 6, 15: tool call floods


def tool_flood_conversation(tmp_path: Path, flood: ToolCallFlood, then: Step) -> Any:
    """Run one conversation against `flood` then `then`; returns (reason, conv, record)."""

    async def main() -> tuple[EndReason, Any, ConversationRecord]:
        scenario = Scenario((Wait(0.1), flood, then))
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            cfg = default_config(
                "agent_1",
                sim.url,
                audio={"backend": "file", "input_file": str(speech(tmp_path, 2.0))},
                conversation={"max_duration_s": 60},
            )
            peak = 0
            mic = FileMicrophone(speech(tmp_path, 2.0), 20, 1.0)
            conv = build_conversation(cfg, mic, FileSpeaker(None, 1.0))
            task = asyncio.create_task(conv.run())
            while not task.done():
                peak = max(peak, len(conv._tool_tasks))
                await asyncio.sleep(0.005)
            record = await sim.next_conversation()
            conv.peak_tool_tasks = peak  # type: ignore[attr-defined]
            return task.result(), conv, record

    return run(main())


def test_a_tool_call_flood_from_a_server_that_never_reads_stays_bounded(tmp_path: Path) -> None:
    flood = ToolCallFlood(count=20_000, read=False)
    reason, conv, _ = tool_flood_conversation(tmp_path, flood, Close(1000, "bye"))
    assert conv.peak_tool_tasks <= MAX_PENDING_TOOL_CALLS
    assert conv.tool_calls_dropped > 0
    assert conv.tool_calls_dropped + len(conv._tool_call_ids) >= 20_000 - 1000  # all accounted
    assert reason.kind in (EndKind.SERVER_CLOSED, EndKind.CONNECTION_LOST), reason


def test_a_replayed_tool_call_id_runs_once(tmp_path: Path) -> None:
    flood = ToolCallFlood(count=2_000, same_id=True)
    reason, conv, record = tool_flood_conversation(tmp_path, flood, Close(1000, "bye"))
    assert reason.ok, reason
    results = [e for e in record.received if e.type == "client_tool_result"]
    assert len(results) == 1  # answered once
    assert conv.tool_calls_repeated == 1_999


# ------------------------------------------------------------------ 7: hours of audio at once


def test_hours_of_agent_audio_at_once_are_capped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = 6  # 16 MiB of pcm_16000 each: 6 x 393 s = 39 minutes, 4 x the cap
    steps: list[Step] = [SendBig(MAX_FRAME_BYTES, "audio") for _ in range(frames)]
    scenario = Scenario((Wait(0.1), *steps, Wait(0.5), Close(1011, "flooded")))

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            cfg = default_config(
                "agent_1", sim.url, audio={"backend": "file", "input_file": str(speech(tmp_path))}
            )
            mic = FileMicrophone(speech(tmp_path), 20, 1.0)
            conv = build_conversation(cfg, mic, FileSpeaker(None, 1.0))  # plays in real time
            reason = await asyncio.wait_for(conv.run(), 60)
            assert reason.kind is EndKind.SERVER_ERROR, reason
            queue = conv.playback
            assert queue is not None
            # Held at most the cap, plus what played meanwhile (the test takes seconds).
            assert queue.queued_total <= queue.max_queued + PLAYED_MEANWHILE_S * RATE
            assert queue.max_queued == int(MAX_QUEUED_S * RATE)
            # The rest was dropped and counted, to the sample.
            assert (
                queue.overflow_samples + queue.queued_total == conv.session.counters.audio_samples
            )
            assert queue.overflow_samples > 2 * queue.max_queued
        await a_normal_conversation_works(tmp_path)  # the next conversation is normal

    run(main())
    dropped = [r for r in caplog.records if "dropping agent audio beyond 600 s" in r.getMessage()]
    assert len(dropped) == 1  # once per conversation


# ------------------------------------------------------------------ 11, 13: huge server strings


def test_huge_ids_and_transcripts_are_clipped_and_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    huge_id = "conv_" + "x" * 15_000_000
    forged = "hello\nINFO pi_agent.app: a forged log line\n" + "y" * 3_000_000
    scenario = Scenario(
        (
            SendMetadata(conversation_id=huge_id),
            Send(p.UserTranscript(forged, 1)),
            Send(p.AgentResponse(forged, 1)),
            Wait(30),
        ),
        send_metadata=False,
    )

    async def main() -> None:
        options = SimulatorOptions(scenario=scenario, ping_interval_s=0)
        async with daemon_bed(tmp_path, options, logging={"transcripts": True}) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("thinking")  # the user's turn ended
            status = await request(bed.control, "status")
            assert len(json.dumps(status)) < 4096  # far from the client's 64 KiB reply limit
            assert len(status["conversation_id"]) <= MAX_ID_CHARS + 40
            await request(bed.control, "end")
            await bed.notify.wait_for("idle")

    with caplog.at_level(logging.INFO, logger="pi_agent"):
        run(main())
    ours = [r for r in caplog.records if not r.name.startswith("pi_agent.simulator")]
    lines = [r.getMessage() for r in ours if "conversation" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    assert all(len(line) < MAX_LINE_CHARS + 2 * MAX_ID_CHARS + 200 for line in lines)
    transcript = [line for line in lines if ": hello\\nINFO" in line]
    assert len(transcript) == 2  # user and agent, each one escaped line


# ------------------------------------------------------------------ 8: the group under ProtectProc


SERVICE_UID, CONTROL_GID, MEMBER_UID, STRANGER_UID = 65534, 4242, 65533, 65532
needs_root_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")),
    reason="needs root, unshare and setpriv (util-linux) for a private /proc",
)


def service_config(base: Path, socket_path: Path) -> Path:
    """A world-readable config (and input WAV) in `base` for a daemon run as another user."""
    wav = base / "in.wav"
    write_wav(wav, np.zeros(RATE, np.int16), RATE)
    config = base / "pi-agent.yaml"
    config.write_text(
        "agent:\n  agent_id: agent_1\n  server_url: ws://127.0.0.1:9\n"
        f"audio:\n  backend: file\n  input_file: {wav}\n"
        f"control:\n  socket: {socket_path}\n"
    )
    for path in (wav, config):
        path.chmod(0o644)
    return config


@needs_root_namespaces
def test_a_group_member_may_use_the_socket_while_proc_hides_its_process(tmp_path: Path) -> None:
    """As under the unit: the daemon is not root and /proc is mounted hidepid=invisible."""
    base = Path(tempfile.mkdtemp(prefix="pi-agent-hidepid-"))
    try:
        base.chmod(0o755)
        run_dir = base / "run"
        run_dir.mkdir(mode=0o750)
        os.chown(run_dir, SERVICE_UID, CONTROL_GID)
        config = service_config(base, run_dir / "control.sock")
        daemon = subprocess.Popen(
            [
                "unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t proc -o hidepid=invisible proc /proc && exec setpriv "
                f"--reuid={SERVICE_UID} --regid={CONTROL_GID} --clear-groups "
                f'{sys.executable} -m pi_agent run --config "$0"',
                str(config),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            while not (run_dir / "control.sock").exists():
                assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
                assert time.monotonic() < deadline, "the daemon did not create its socket"
                time.sleep(0.05)

            def status(uid: int, groups: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    ["setpriv", f"--reuid={uid}", f"--regid={uid}", groups, sys.executable,
                     "-m", "pi_agent", "status", "--socket", str(run_dir / "control.sock")],
                    cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
                    check=False,
                )  # fmt: skip

            member = status(MEMBER_UID, f"--groups={CONTROL_GID}")
            assert member.returncode == 0, member.stderr
            assert "state:          idle" in member.stdout
            stranger = status(STRANGER_UID, "--clear-groups")
            assert stranger.returncode == EX_UNAVAILABLE
            assert "permission denied" in stranger.stderr
        finally:
            daemon.terminate()
            assert daemon.wait(PROCESS_TIMEOUT_S) == 0
    finally:
        shutil.rmtree(base)


# ------------------------------------------------------------------ 9: a second daemon


def test_a_second_daemon_on_the_same_socket_is_refused_and_the_first_kept(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:

            async def handler(cmd: str, text: str) -> dict[str, Any]:
                return {"ok": True, "second": True}

            second = ControlServer(bed.control, handler)
            with pytest.raises(ControlError, match="another pi-agent is already running"):
                await second.start()
            await second.close()  # must not remove the first daemon's socket
            assert bed.control.exists()
            status = await request(bed.control, "status")
            assert status["ok"] and "second" not in status

    run(main())
    assert ControlError.exit_code == EX_UNAVAILABLE


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a killed daemon leaves

    async def main() -> None:
        async def handler(cmd: str, text: str) -> dict[str, Any]:
            return {"ok": True}

        server = ControlServer(path, handler)
        await server.start()
        assert await request(path, "status") == {"ok": True}
        await server.close()
        assert not path.exists()

    run(main())


# ------------------------------------------------------------------ 10, 11: the socket, flooded


def test_hundreds_of_idle_connections_are_turned_away_and_service_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            control = bed.daemon.control
            assert control is not None
            idle = [await asyncio.open_unix_connection(str(bed.control)) for _ in range(500)]
            try:
                async with asyncio.timeout(WAIT_S):
                    while control.busy < 500 - MAX_CONNECTIONS:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                assert control.busy == 500 - MAX_CONNECTIONS  # closed at once: no fd kept
                async with asyncio.timeout(WAIT_S):  # the idle ones time out; service resumes
                    while not (await request(bed.control, "status")).get("ok"):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
            finally:
                for _, writer in idle:
                    writer.close()

    run(main())


def test_a_deeply_nested_request_gets_an_answer(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            reader, writer = await asyncio.open_unix_connection(str(bed.control))
            writer.write(b"[" * 2000 + b"]" * 2000 + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
            writer.close()
            assert reply == {
                "ok": False,
                "error": f"request is nested too deeply; expected {REQUEST_SHAPE}",
            }

    run(main())


def test_an_oversized_reply_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def main() -> None:
        async def handler(cmd: str, text: str) -> dict[str, Any]:
            return {"ok": True, "state": "x" * 100_000}

        server = ControlServer(path, handler)
        await server.start()
        try:
            with pytest.raises(ControlError, match="reply is longer than 65536 bytes"):
                await request(path, "status")
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "pi_agent", "status", "--socket", str(path)],
                cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False,
            )  # fmt: skip
            assert result.returncode == EX_UNAVAILABLE
            assert result.stderr.strip() == (
                "pi-agent: the daemon's reply is longer than 65536 bytes"
            )
        finally:
            await server.close()

    run(main())


# ------------------------------------------------------------------ 14: negative numbers as options


def seq_tool(*argv: str) -> Any:
    from pi_agent.adapters.tools import ToolRegistry, command_tool
    from pi_agent.config import CommandTool, ParamSpec

    spec = ParamSpec("number", None, None, None, "how far")
    tool = CommandTool("count", "count", ("/usr/bin/seq", *argv), {"n": spec}, 5.0, 4096)
    return ToolRegistry({"count": command_tool(tool)})


@pytest.mark.parametrize("value", [-5, -1e-300, -2.5])
def test_a_negative_number_never_reaches_a_program_as_an_option(value: float) -> None:
    """seq parses options: '-5' would be one (seq: invalid option -- '5')."""
    text, error = run(seq_tool("{n}").call("count", {"n": value}))
    assert error
    assert "would reach /usr/bin/seq as an option" in text and "'--' before '{n}'" in text
    text, error = run(seq_tool("--", "{n}").call("count", {"n": value}))
    assert not error, text  # after '--' seq takes it as a number: counts 1 down to it, nothing


def test_negative_zero_is_passed_as_zero() -> None:
    text, error = run(seq_tool("{n}").call("count", {"n": -0.0}))
    assert not error, text  # "0.0", not "-0.0"
    text, error = run(seq_tool("{n}").call("count", {"n": 3}))
    assert (text, error) == ("1\n2\n3", False)


# ------------------------------------------------------------------ 16: the daemon's memory


@needs_root_namespaces
def test_a_program_of_the_same_user_cannot_read_the_daemons_environment(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="pi-agent-environ-"))
    try:
        base.chmod(0o755)
        config = service_config(base, base / "control.sock")
        os.chown(base, SERVICE_UID, -1)
        as_service = [
            "setpriv",
            f"--reuid={SERVICE_UID}",
            f"--regid={SERVICE_UID}",
            "--clear-groups",
        ]
        daemon = subprocess.Popen(
            [*as_service, sys.executable, "-m", "pi_agent", "run", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "ELEVENLABS_API_KEY": "sk_environ_secret"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            while not (base / "control.sock").exists():
                assert daemon.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            peek = subprocess.run(
                [*as_service, "cat", f"/proc/{daemon.pid}/environ"],
                capture_output=True, timeout=PROCESS_TIMEOUT_S, check=False,
            )  # fmt: skip
            assert peek.returncode != 0 and b"Permission denied" in peek.stderr
            assert b"sk_environ_secret" not in peek.stdout
        finally:
            daemon.terminate()
            assert daemon.wait(PROCESS_TIMEOUT_S) == 0
    finally:
        shutil.rmtree(base)


def test_tool_calls_with_huge_ids_or_names_are_ignored_not_stored() -> None:
    from pi_agent.adapters.tools import McpApprovals
    from pi_agent.core.session import Problem, Session

    session = Session()
    huge = "x" * 5_000_000
    for call in (p.ClientToolCall(huge, "id-1", {}, 1), p.ClientToolCall("get_time", huge, {}, 2)):
        [action] = session.on_event(call, 0.0)
        assert isinstance(action, Problem) and "5000000-character id or name" in action.text
    approvals = McpApprovals({"search"})
    for mcp in (
        p.McpToolCall("c1", huge, "awaiting_approval"),
        p.McpToolCall(huge, "search", "awaiting_approval"),
    ):
        assert approvals.answer(mcp) is None  # not answered, not logged, not remembered
    assert approvals.answer(p.McpToolCall("c2", "search", "awaiting_approval")) is not None


class SpeakerAt48k(FileSpeaker):
    """A speaker whose card takes only 48 kHz, as many HDMI outputs and USB cards do."""

    async def device_rate(self, stream_rate: int) -> int:
        return 48_000


def test_a_flood_resampled_for_the_speaker_is_cut_before_resampling_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = 4  # 4 x 393 s of pcm_16000: 2.6 x the cap, resampled 3 x to 48 kHz
    steps: list[Step] = [SendBig(MAX_FRAME_BYTES, "audio") for _ in range(frames)]
    scenario = Scenario((Wait(0.1), *steps, Wait(0.5), Close(1011, "flooded")))

    async def main() -> None:
        async with Simulator(SimulatorOptions(scenario=scenario, ping_interval_s=0)) as sim:
            cfg = default_config(
                "agent_1", sim.url, audio={"backend": "file", "input_file": str(speech(tmp_path))}
            )
            mic = FileMicrophone(speech(tmp_path), 20, 1.0)
            conv = build_conversation(cfg, mic, SpeakerAt48k(None, 1.0))
            reason = await asyncio.wait_for(conv.run(), 60)
            assert reason.kind is EndKind.SERVER_ERROR, reason
            queue = conv.playback
            assert queue is not None and queue.sample_rate == 48_000
            assert queue.queued_total <= queue.max_queued + PLAYED_MEANWHILE_S * 48_000
            assert queue.overflow_samples > queue.max_queued  # counted at the speaker's rate

    run(main())
    dropped = [r for r in caplog.records if "dropping agent audio beyond 600 s" in r.getMessage()]
    assert len(dropped) == 1
