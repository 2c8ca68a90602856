"""The pure core imports no I/O library: it can be tested without a loop, socket or device."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pi_agent"
PURE_MODULES = [
    "protocol.py",
    "session.py",
    "audio/formats.py",
    "audio/resample.py",
    "audio/playback.py",
    "simulator/agent.py",
]
FORBIDDEN = {
    "asyncio",
    "websockets",
    "pyaudio",
    "gpiozero",
    "yaml",
    "systemd",
    "socket",
    "threading",
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_has_no_io_imports(module: str) -> None:
    assert imported_roots(PACKAGE / module) & FORBIDDEN == set()
