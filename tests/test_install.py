"""scripts/install.sh into a scratch tree (--root), with host-changing commands stubbed out."""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.beds.systemd import checkable_copy, needs_analyze, verify_output

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install.sh"
SCRIPT_TIMEOUT_S = 60
KEY = "sk_test_0123456789abcdef_SECRET"  # the tests look for this string in every output
OFFLINE = ("--skip-venv",)  # no venv, no pip: fast and offline
# Commands that would change the host; under --root the installer must not run any of them.
HOST_COMMANDS = (
    "systemctl",
    "useradd",
    "usermod",
    "userdel",
    "groupadd",
    "groupdel",
    "apt-get",
    "dpkg-query",
    "chown",
    "chgrp",
    "runuser",
)
CREDENTIAL = Path("etc/pi-agent/credentials/elevenlabs-api-key")
DROPIN = Path("etc/systemd/system/pi-agent.service.d/10-api-key.conf")
UNIT = Path("etc/systemd/system/pi-agent.service")
CONFIG = Path("etc/pi-agent.yaml")


class Installer:
    """Runs the script with --root and host-changing commands replaced by recording stubs."""

    def __init__(self, root: Path, stubs: Path) -> None:
        self.root = root
        self.stubs = stubs
        self.calls = stubs / "calls.log"
        self.outputs: list[str] = []

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PATH=f"{self.stubs}:{os.environ['PATH']}")
        result = subprocess.run(
            ["bash", str(SCRIPT), "--root", str(self.root), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            env=env,
            check=False,
        )
        self.outputs.append(result.stdout + result.stderr)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Installer]:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in HOST_COMMANDS:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"{stubs}/calls.log"\nexit 1\n')
        stub.chmod(0o755)
    installer = Installer(tmp_path / "root", stubs)
    yield installer
    assert not installer.calls.exists(), installer.calls.read_text()
    assert all(KEY not in output for output in installer.outputs)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")
    return path


Entry = tuple[str, int, str, int]  # kind, mode, sha256 of the contents, mtime (files only)


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under `root` with its kind, permission bits, content hash and file mtime."""
    tree: dict[str, Entry] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            tree[str(path.relative_to(root))] = ("file", mode, digest, st.st_mtime_ns)
        else:
            tree[str(path.relative_to(root))] = ("dir", mode, "", 0)
    return tree


def modes(root: Path) -> dict[str, int]:
    return {name: entry[1] for name, entry in snapshot(root).items()}


def test_files_land_with_the_right_modes(install: Installer, key_file: Path) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    assert modes(install.root) == {
        "etc": 0o755,
        "etc/pi-agent": 0o755,
        "etc/pi-agent/credentials": 0o700,
        str(CREDENTIAL): 0o600,
        str(CONFIG): 0o640,
        "etc/systemd": 0o755,
        "etc/systemd/system": 0o755,
        str(UNIT): 0o644,
        "etc/systemd/system/pi-agent.service.d": 0o755,
        str(DROPIN): 0o644,
    }
    root = install.root
    assert (root / UNIT).read_text() == (REPO / "systemd/pi-agent.service").read_text()
    assert (root / CONFIG).read_text() == (REPO / "config/pi-agent.yaml").read_text()
    assert (root / CREDENTIAL).read_text() == KEY + "\n"
    assert (root / DROPIN).read_text().splitlines()[1:] == [
        "[Service]",
        "LoadCredential=elevenlabs-api-key:/etc/pi-agent/credentials/elevenlabs-api-key",
    ]


def test_without_a_key_there_is_no_load_credential(install: Installer) -> None:
    result = install(*OFFLINE)
    assert not (install.root / DROPIN).exists()
    assert not (install.root / CREDENTIAL).exists()
    assert "no API key given" in result.stderr


def test_running_twice_changes_nothing(install: Installer, key_file: Path) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    before = snapshot(install.root)
    result = install(*OFFLINE, "--api-key-file", str(key_file))
    assert snapshot(install.root) == before
    assert "is up to date" in result.stderr
    assert "unchanged" in result.stderr


def test_a_rerun_without_the_key_keeps_it(install: Installer, key_file: Path) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    before = snapshot(install.root)
    install(*OFFLINE)
    assert snapshot(install.root) == before


def test_an_existing_config_is_never_overwritten(install: Installer, key_file: Path) -> None:
    config = install.root / CONFIG
    config.parent.mkdir(parents=True)
    config.write_text("agent:\n  agent_id: mine\n")
    config.chmod(0o600)
    before = snapshot(install.root)[str(CONFIG)]
    result = install(*OFFLINE, "--api-key-file", str(key_file))
    install(*OFFLINE)
    assert snapshot(install.root)[str(CONFIG)] == before
    assert f"kept your configuration {config}" in result.stderr


def test_the_key_goes_only_into_the_credential(install: Installer, key_file: Path) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    install(*OFFLINE, "--api-key-file", str(key_file))
    holders = [p for p in install.root.rglob("*") if p.is_file() and KEY in p.read_text()]
    assert holders == [install.root / CREDENTIAL]
    assert stat.S_IMODE((install.root / CREDENTIAL).stat().st_mode) == 0o600
    # the fixture checks that no output showed the key


def test_the_key_can_come_on_stdin(install: Installer) -> None:
    install(*OFFLINE, "--api-key-file", "-", stdin=KEY + "\n")
    assert (install.root / CREDENTIAL).read_text() == KEY + "\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "is empty"),
        (f"{KEY} {KEY}\n", "whitespace or control characters"),
        (f"{KEY}\n{KEY}\n", "more than one line"),
        (f"\u2018{KEY}\u2019\n", "not plain ASCII"),
    ],
    ids=["empty", "inner-space", "two-lines", "curly-quotes"],
)
def test_a_bad_key_is_refused_before_anything_is_installed(
    install: Installer, tmp_path: Path, content: str, reason: str
) -> None:
    bad = tmp_path / "bad-key"
    bad.write_text(content)
    result = install(*OFFLINE, "--api-key-file", str(bad), check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert reason in last
    assert snapshot(install.root) == {}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--api-key-file", "/nonexistent/key"), "cannot read the API key file /nonexistent/key"),
        (("--frobnicate",), "unknown option --frobnicate"),
        (("--source", "/nonexistent"), "/nonexistent is not a pi-agent source tree"),
    ],
    ids=["missing-key-file", "unknown-option", "bad-source"],
)
def test_failures_end_with_a_one_line_reason(
    install: Installer, args: tuple[str, ...], reason: str
) -> None:
    result = install(*OFFLINE, *args, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {reason}")


def test_uninstall_removes_everything_but_the_config(install: Installer, key_file: Path) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    (install.root / CONFIG).write_text("agent:\n  agent_id: edited\n")
    config_before = snapshot(install.root)[str(CONFIG)]
    result = install("--uninstall")
    tree = snapshot(install.root)
    assert {name for name, entry in tree.items() if entry[0] == "file"} == {str(CONFIG)}
    assert tree[str(CONFIG)] == config_before
    assert not any("pi-agent" in name for name in tree if name != str(CONFIG))
    assert "kept your configuration" in result.stderr
    install("--uninstall")  # again: nothing left to do, still fine
    assert snapshot(install.root) == tree


def test_uninstall_removes_the_venv(install: Installer) -> None:
    venv = install.root / "opt/pi-agent/venv/bin"
    venv.mkdir(parents=True)
    (venv / "pi-agent").write_text("#!/bin/sh\n")
    install("--uninstall")
    assert not (install.root / "opt/pi-agent").exists()


def test_steps_that_need_the_real_system_are_reported_as_skipped(install: Installer) -> None:
    result = install(*OFFLINE)
    for step in (
        "skipped (--root): Debian packages",
        "skipped (--root): system user pi-agent in groups audio gpio spi",
        "skipped (--skip-venv): virtual environment",
        "skipped (--root): systemctl daemon-reload && systemctl enable --now pi-agent",
    ):
        assert step in result.stderr


@needs_analyze
def test_the_installed_unit_and_drop_in_pass_verify(
    install: Installer, key_file: Path, tmp_path: Path
) -> None:
    install(*OFFLINE, "--api-key-file", str(key_file))
    unit = checkable_copy(install.root / UNIT.parent, tmp_path / "check")
    assert (unit.parent / DROPIN.parent.name / DROPIN.name).exists()
    assert verify_output(unit) == "exit 0\n"


def test_the_script_parses_and_passes_shellcheck() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "-x", str(SCRIPT)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_the_installer_offers_the_aec_extra_of_setup_cfg() -> None:
    """scripts/install.sh installs echo cancellation as the `aec` extra pins it (wheel only)."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extra = setup["options.extras_require"]["aec"].strip()
    assert f'AEC_REQUIREMENT="{extra}"' in (REPO / "scripts" / "install.sh").read_text()
