"""The package's layers, enforced by directory: a new file is covered without editing this test.

- `pi_agent/core/` is pure: no event loop, socket, device, file format library, clock or randomness.
- `pi_agent/commands/` is reached only from `cli.py`; no command imports another.
- No two public classes in the package share a name.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pi_agent"
CORE = PACKAGE / "core"
COMMANDS = PACKAGE / "commands"
FORBIDDEN_IN_CORE = {
    "asyncio",
    "websockets",
    "pyaudio",
    "gpiozero",
    "yaml",
    "systemd",
    "socket",
    "subprocess",
    "threading",
    "time",
    "random",
}
# The core may use the standard library's pure parts and numpy, and the project's own pure
# modules: the core itself and the exception tree.
ALLOWED_PROJECT_IMPORTS_IN_CORE = ("pi_agent.core", "pi_agent.errors")


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def imports(path: Path) -> list[str]:
    """Every absolute module name `path` imports (from-imports give their module)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_core_folder_holds_the_pure_modules() -> None:
    names = {p.relative_to(CORE).as_posix() for p in modules(CORE)}
    for expected in (
        "protocol.py",
        "session.py",
        "ending.py",
        "machine.py",
        "states.py",
        "backoff.py",
        "patterns.py",
        "audio/formats.py",
        "audio/resample.py",
        "audio/playback.py",
        "audio/echo.py",
        "audio/earcons.py",
        "audio/preroll.py",
    ):
        assert expected in names


@pytest.mark.parametrize("module", modules(CORE), ids=rel)
def test_core_module_has_no_io_imports(module: Path) -> None:
    roots = {name.split(".")[0] for name in imports(module)}
    assert roots & FORBIDDEN_IN_CORE == set()
    project = [n for n in imports(module) if n.startswith("pi_agent.") or n == "pi_agent"]
    outside = [n for n in project if not n.startswith(ALLOWED_PROJECT_IMPORTS_IN_CORE)]
    assert outside == [], f"{rel(module)} imports {outside} from outside the core"


def test_the_simulated_agent_is_pure_too() -> None:
    roots = {name.split(".")[0] for name in imports(PACKAGE / "simulator" / "agent.py")}
    assert roots & FORBIDDEN_IN_CORE == set()


@pytest.mark.parametrize("module", modules(PACKAGE), ids=rel)
def test_only_the_cli_reaches_the_commands(module: Path) -> None:
    reached = [n for n in imports(module) if n.startswith("pi_agent.commands")]
    if module == PACKAGE / "cli.py":
        return
    if module.is_relative_to(COMMANDS):
        own = f"pi_agent.commands.{module.stem}"
        reached = [n for n in reached if n != own and not n.startswith(own + ".")]
    assert reached == [], f"{rel(module)} imports {reached}"


def test_no_two_public_classes_share_a_name() -> None:
    where: dict[str, list[str]] = collections.defaultdict(list)
    for path in modules(PACKAGE):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(rel(path))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert shared == {}
