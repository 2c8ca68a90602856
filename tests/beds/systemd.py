"""systemd-analyze as a test bed: the unit checked as systemd itself would read it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DAEMON_PATH = "/opt/pi-agent/venv/bin/pi-agent"
ANALYZE_TIMEOUT_S = 30
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (CI installs `systemd`)"
)


def checkable_copy(unit_dir: Path, dest: Path) -> Path:
    """Copy the unit and drop-ins to `dest`, ExecStart= on an existing binary (verify wants one)."""
    true_bin = shutil.which("true")
    assert true_bin is not None
    dest.mkdir(parents=True, exist_ok=True)
    for path in unit_dir.glob("pi-agent.service*"):
        if path.is_dir():
            shutil.copytree(path, dest / path.name, dirs_exist_ok=True)
        else:
            (dest / path.name).write_text(path.read_text().replace(DAEMON_PATH, true_bin))
    return dest / "pi-agent.service"


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
    )


def verify_output(unit: Path) -> str:
    """Everything `systemd-analyze verify` says: it exits 0 on warnings, so any output fails."""
    result = analyze("verify", str(unit))
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"
