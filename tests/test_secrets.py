"""Secrets: key file permissions, `Secret` redaction, and a whole daemon run that leaks nothing."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.adapters.audio.wavfile import write_wav
from pi_agent.adapters.control import request
from pi_agent.commands.check_config import check_config_main
from pi_agent.config import KEY_FILE_FIX, Secret, default_config, load_config, resolve_api_key
from pi_agent.errors import EX_CONFIG, ConfigError
from pi_agent.simulator import Simulator, SimulatorOptions
from pi_agent.testing import NotifySink, ScriptedMic
from pi_agent.wiring import build_link
from tests.beds.daemon import BLUE, BUTTON, GREEN, RATE, RED, bed_daemon, tone

KEY = "sk_secrets_test_7f3a9c0e5b1d2468ace"  # a fake API key that must show up nowhere
CONFIG_LOGGER = "pi_agent.config.secrets"
RUN_TIMEOUT_S = 90
STATUS_TIMEOUT_S = 30
SPEECH_S = 1.0
CONVERSATIONS = 2
REPO_ROOT = Path(__file__).resolve().parent.parent


def key_file(folder: Path, mode: int) -> Path:
    """Write KEY to `folder/key` with permission bits `mode` and return its path."""
    path = folder / "key"
    path.write_text(KEY + "\n")
    path.chmod(mode)
    return path


def agent_with_key(path: Path) -> Any:
    """Return an AgentConfig whose api_key_file is `path` (not checked by the loader)."""
    return dataclasses.replace(default_config("a").agent, api_key_file=path)


# ---------------------------------------------------------------- key file permissions


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o770])
def test_key_file_others_may_read_logs_one_warning_with_path_mode_and_fix(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path, mode)
    with caplog.at_level(logging.DEBUG, CONFIG_LOGGER):
        secret = resolve_api_key(agent_with_key(path), {})
    assert secret is not None and secret.reveal() == KEY
    [record] = [r for r in caplog.records if r.name == CONFIG_LOGGER]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert str(path) in text and f"{mode:04o}" in text and f"{KEY_FILE_FIX} {path}" in text
    assert KEY not in caplog.text and KEY not in repr(record.args)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_key_file_logs_nothing(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, CONFIG_LOGGER):
        secret = resolve_api_key(agent_with_key(key_file(tmp_path, mode)), {})
    assert secret is not None and secret.reveal() == KEY
    assert caplog.records == []


@pytest.mark.parametrize("mode", [0o666, 0o602, 0o622])
def test_world_writable_key_file_is_refused(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path, mode)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        resolve_api_key(agent_with_key(path), {})
    assert info.value.exit_code == EX_CONFIG
    assert str(info.value) == (
        f"{path}: the API key file is writable by anyone (mode {mode:04o}); "
        f"expected a file only its owner can change (fix: {KEY_FILE_FIX} {path})"
    )
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_check_config_refuses_a_world_writable_key_file(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o666)
    config = tmp_path / "pi-agent.yaml"
    config.write_text("agent:\n  agent_id: kitchen\n  api_key_file: key\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(config), out, err) == EX_CONFIG
    assert err.getvalue().splitlines() == [
        f"{config}: invalid configuration (1 problem)",
        f"  line 3: agent.api_key_file: 'key' is writable by anyone (mode 0666); "
        f"expected a file only its owner can change (fix: {KEY_FILE_FIX} {path})",
    ]
    assert KEY not in err.getvalue()
    path.chmod(0o600)
    assert check_config_main(str(config), out, io.StringIO()) == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "cannot read the API key file: Is a directory"),
        (lambda p: p.symlink_to(p.parent / "gone"), "cannot read the API key file: No such file"),
        (os.mkfifo, "the API key file is not a regular file"),
    ],
    ids=["directory", "dangling-symlink", "fifo"],
)
def test_unusable_key_files_are_refused_even_for_root(
    make: Callable[[Path], object], reason: str, tmp_path: Path
) -> None:
    """Root reads any mode-000 file; these fail for everyone, and a FIFO must not hang."""
    path = tmp_path / "key"
    make(path)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(agent_with_key(path), {})
    assert str(info.value).startswith(f"{path}: {reason}")


def test_credential_directory_key_is_not_mode_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd owns the credential copy and its mode; only the user's own file is checked."""
    (tmp_path / "elevenlabs-api-key").write_text(KEY)
    (tmp_path / "elevenlabs-api-key").chmod(0o644)
    with caplog.at_level(logging.DEBUG, CONFIG_LOGGER):
        secret = resolve_api_key(
            default_config("a").agent, {"CREDENTIALS_DIRECTORY": str(tmp_path)}
        )
    assert secret == Secret(KEY) and caplog.records == []


# ---------------------------------------------------------------- Secret


def test_secret_never_shows_its_value() -> None:
    secret = Secret(KEY)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the logging style of formatting
        "{} {!r}".format(secret, secret),  # noqa: UP032
        repr([secret]),
        repr({"key": secret}),
        repr(dataclasses.replace(build_link(default_config("a")), api_key=secret)),
    ]
    assert all(text and KEY not in text for text in shown)
    assert repr(secret) == "Secret('***')"
    assert not hasattr(secret, "__dict__")
    with pytest.raises(TypeError):
        format(secret, ">40")  # a format spec must not reach the value either


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_refuses_pickling(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(KEY), protocol=protocol)


@pytest.mark.parametrize(
    "leak",
    [copy.copy, copy.deepcopy, json.dumps, lambda s: dataclasses.asdict(build_with(s))],
    ids=["copy", "deepcopy", "json", "asdict"],
)
def test_secret_refuses_copies_and_serialisation(leak: Any) -> None:
    with pytest.raises(TypeError):
        leak(Secret(KEY))


def build_with(secret: Secret) -> Any:
    """Return LinkSettings holding `secret` (asdict deep-copies it)."""
    return dataclasses.replace(build_link(default_config("a")), api_key=secret)


# ---------------------------------------------------------------- a whole daemon run


def write_config(folder: Path, server_url: str, key: Path) -> Path:
    """Write a daemon configuration using `key` and return its path."""
    write_wav(folder / "unused.wav", np.zeros(160, np.int16), RATE)
    text = f"""\
agent:
  agent_id: agent_1
  server_url: {server_url}
  api_key_file: {key}
audio:
  backend: file
  input_file: {folder / "unused.wav"}
  jitter_ms: 0
button:
  pin: {BUTTON}
  bounce_ms: 0
leds:
  driver: rgb
  pins: [{RED}, {GREEN}, {BLUE}]
control:
  socket: {folder / "control.sock"}
conversation:
  error_display_s: 0.5
logging:
  level: debug
  transcripts: true
"""
    path = folder / "pi-agent.yaml"
    path.write_text(text)
    return path


def reprs(obj: object) -> Iterator[str]:
    """Yield repr() of `obj` and of every config dataclass inside it."""
    yield repr(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from reprs(getattr(obj, f.name))


@dataclasses.dataclass
class Seen:
    """Everything the daemon run showed: the haystack the key and tokens must not be in."""

    texts: list[str] = dataclasses.field(default_factory=list)
    tokens: list[str] = dataclasses.field(default_factory=list)


async def status_json(control: Path) -> str:
    """Run `pi-agent status --json` as a process (the daemon answers on this event loop)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pi_agent",
        "status",
        "--json",
        "--socket",
        str(control),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(STATUS_TIMEOUT_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode() + err.decode()


async def converse(tmp_path: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold CONVERSATIONS conversations with a private agent, collecting everything shown."""
    options = SimulatorOptions(api_keys=frozenset({KEY}), ping_interval_s=0.2)
    async with Simulator(options) as sim:
        issue = sim.issue_token

        def spy(agent_id: str) -> str:
            token = issue(agent_id)
            seen.tokens.append(token)
            return token

        monkeypatch.setattr(sim, "issue_token", spy)
        config_path = write_config(tmp_path, sim.url, key_file(tmp_path, 0o640))
        cfg = load_config(config_path)
        mic, pins = ScriptedMic(), MockFactory(pin_class=MockPWMPin)
        notify = NotifySink(tmp_path / "notify.sock")
        daemon = bed_daemon(cfg, config_path, mic, pins, notify.path)
        control = tmp_path / "control.sock"
        task = asyncio.create_task(daemon.run())
        try:
            await notify.wait_message("READY=1")
            for _ in range(CONVERSATIONS):
                pins.pin(BUTTON).drive_low()
                await notify.wait_for("user_speaking")
                assert daemon.conv is not None
                seen.texts.extend(reprs(daemon.conv.link))
                mic.say(tone(SPEECH_S))
                await asyncio.sleep(SPEECH_S + 0.1)
                pins.pin(BUTTON).drive_high()
                await notify.wait_for("listening: agent finished")
                seen.texts.append(json.dumps(await request(control, "status")))
                seen.texts.append(await status_json(control))
                assert (await request(control, "end"))["ok"]
                await notify.wait_for("idle")
            seen.texts.append(await status_json(control))
            seen.texts.extend(reprs(daemon.cfg))
            seen.texts.extend(reprs(build_link(daemon.cfg)))
            seen.texts.append(repr(daemon.status()))
            seen.texts.extend(notify.drain())
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 20)
            notify.sock.close()
        assert daemon.stats.conversations == CONVERSATIONS and daemon.stats.failures == 0


def test_daemon_conversations_leak_neither_key_nor_tokens(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logs at DEBUG (caplog and a file), status, sd_notify and every repr: no key, no token."""
    log_file = tmp_path / "everything.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)r"))
    root = logging.getLogger()
    root.addHandler(handler)
    seen = Seen()

    async def bounded() -> None:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await converse(tmp_path, seen, monkeypatch)

    try:
        with caplog.at_level(logging.DEBUG):
            asyncio.run(bounded())
    finally:
        root.removeHandler(handler)
        handler.close()
    assert len(seen.tokens) == CONVERSATIONS, "each conversation must use a fresh signed URL"
    captured = capsys.readouterr()
    logged = log_file.read_text()
    haystack = "\n".join(
        [*seen.texts, caplog.text, logged, captured.out, captured.err]
        + [f"{r.msg!r} {r.args!r}" for r in caplog.records]
    )
    assert "signed URL obtained" in logged  # the link's debug logging did run
    assert "group or others may read the key" in logged  # the 0640 key file was noticed
    assert '"conversations": 2' in haystack  # the status --json output is in there
    assert KEY not in haystack
    for token in seen.tokens:
        assert token not in haystack
