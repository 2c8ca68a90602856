"""End to end: `pi-agent` processes (talk, simulate, demo, check-config) and their exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pi_agent.adapters.audio.wavfile import read_wav, write_wav

REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT_S = 60


def pi_agent(*args: str, timeout: float = PROCESS_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pi_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


@pytest.fixture
def simulator() -> Iterator[str]:
    """A `pi-agent simulate` process on a free port; yields its ws:// URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi_agent",
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--agent-id",
            "agent_1",
            "--ping-interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"ws://[\d.]+:\d+", line)
        assert match, f"unexpected first line from the simulator: {line!r}"
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def write_config(tmp_path: Path, server_url: str, agent_id: str = "agent_1") -> Path:
    t = np.arange(16000) / 16000
    speech = (np.sin(2 * np.pi * 330 * t) * 9000).astype(np.int16)
    write_wav(tmp_path / "in.wav", np.concatenate((speech, np.zeros(16000, np.int16))), 16000)
    path = tmp_path / "pi-agent.yaml"
    path.write_text(
        f"agent:\n  agent_id: {agent_id}\n  server_url: {server_url}\n"
        "audio:\n  backend: file\n  input_file: in.wav\n  output_file: out.wav\n  file_speed: 0\n"
    )
    return path


def test_talk_completes_against_the_simulator_process(tmp_path: Path, simulator: str) -> None:
    result = pi_agent("talk", "--config", str(write_config(tmp_path, simulator)))
    assert result.returncode == 0, result.stderr
    assert "you: (1.00 seconds of speech)" in result.stdout
    assert "agent: You said something 1.0 seconds long." in result.stdout
    played, rate = read_wav(tmp_path / "out.wav")  # relative paths resolve against the config
    assert rate == 16000
    assert len(played) == pytest.approx(16000, abs=800)


def test_talk_reports_the_servers_error_in_one_line(tmp_path: Path, simulator: str) -> None:
    result = pi_agent("talk", "--config", str(write_config(tmp_path, simulator, "nobody")))
    assert result.returncode == 69
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pi-agent: conversation failed: server_error:")
    assert "1008" in last
    assert "does not exist" in last


def test_talk_connection_refused(tmp_path: Path) -> None:
    result = pi_agent("talk", "--config", str(write_config(tmp_path, "ws://127.0.0.1:9")))
    assert result.returncode == 69
    assert "connection refused" in result.stderr


def test_talk_with_invalid_config_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("agent:\n  agnet_id: x\n")
    result = pi_agent("talk", "--config", str(path))
    assert result.returncode == 78
    assert "line 2: agent.agnet_id: unknown key; did you mean 'agent_id'?" in result.stderr


def test_check_config(tmp_path: Path) -> None:
    ok = pi_agent("check-config", str(REPO / "config" / "pi-agent.yaml"))
    assert ok.returncode == 0
    assert ok.stdout.startswith("OK: ")
    path = tmp_path / "bad.yaml"
    path.write_text("agent:\n  agent_id: a\naudio:\n  chunk_ms: 5\n")
    bad = pi_agent("check-config", "--config", str(path))
    assert bad.returncode == 78
    assert "line 4: audio.chunk_ms: 5 is out of range" in bad.stderr
    missing = pi_agent("check-config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 78


def test_usage_errors_exit_64() -> None:
    assert pi_agent("talk", "--max-s", "soon").returncode == 64
    assert pi_agent("no-such-command").returncode == 64


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    result = pi_agent("demo", "--fast", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"you: \(\d\.\d\d seconds of speech\)", result.stdout)
    assert "result:              completed" in result.stdout
    for label in ("connect:", "metadata:", "first agent audio:", "round trip:"):
        assert label in result.stdout
    played, rate = read_wav(out)
    assert rate == 16000
    assert len(played) > rate  # more than a second of the echoed speech


def test_simulate_rejects_bad_options() -> None:
    result = pi_agent("simulate", "--output-format", "mp3_44100")
    assert result.returncode == 64
    assert "mp3_44100" in result.stderr


def test_version() -> None:
    result = pi_agent("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pi-agent ")


def test_an_unexpected_exception_in_a_command_exits_70_with_its_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pi_agent import cli
    from pi_agent.commands import check_config

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(check_config, "main", broken)
    assert cli.main(["check-config", str(tmp_path / "x.yaml")]) == 70
    assert "internal error in check-config" in capsys.readouterr().err
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"  # the traceback


def test_every_subcommand_has_a_command_module() -> None:
    from pi_agent import cli

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(cli.COMMANDS)
    for module in set(cli.COMMANDS.values()):
        assert callable(importlib.import_module(f"pi_agent.commands.{module}").main)
