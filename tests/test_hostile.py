"""Hostile servers and careless operators: every input path has a bound and a specific error.

Each test reproduces one case of docs/reliability.md, "Hostile input", against the real part: a
loopback server that answers garbage, a key file with curly quotes, a symbolic link where an
output file should be, a speaker that fails while draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pi_agent.adapters.audio.devices import FileMicrophone, FileSpeaker
from pi_agent.adapters.audio.wavfile import WavWriter, write_wav
from pi_agent.adapters.control import request
from pi_agent.adapters.link import LinkSettings, make_ssl_context, open_link
from pi_agent.commands.check_config import check_config_main
from pi_agent.config import Secret, default_config, load_config
from pi_agent.core.backoff import should_retry
from pi_agent.core.ending import EndKind, EndReason
from pi_agent.errors import EX_CONFIG, AudioError, ConfigError, LinkError
from pi_agent.once import run_talk
from pi_agent.simulator import Close, Scenario, SendAudio, Simulator, SimulatorOptions, Wait
from pi_agent.wiring import build_conversation
from tests.beds.daemon import daemon_bed
from tests.helpers import run

RATE = 16000
CURLY_KEY = "\u2018sk_x\u2019"  # what a copy-paste from a rich-text page brings along


def speech(tmp_path: Path, seconds: float = 0.4) -> Path:
    path = tmp_path / "in.wav"
    t = np.arange(int(seconds * RATE)) / RATE
    write_wav(path, (np.sin(2 * np.pi * 440 * t) * 9000).astype(np.int16), RATE)
    return path


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
        async with Simulator(SimulatorOptions(ping_interval_s=0)) as sim:
            cfg = default_config(
                "agent_1",
                sim.url,
                audio={"backend": "file", "input_file": str(speech(tmp_path)), "file_speed": 0},
            )
            reason, _ = await run_talk(cfg, out=io.StringIO())
            assert reason.ok, reason

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
