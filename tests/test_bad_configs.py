"""The bad-config corpus: `pi-agent check-config` refuses every file with exit 78 and its message.

Each `tests/data/bad_configs/NAME.yaml` starts with one `# expect: PROBLEM` line per problem the
check must print, in order; `{here}` stands for the corpus folder (relative paths resolve against
it). A `# not shown: TEXT` line names a secret in the file that must never be printed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pi_agent.commands.check_config import check_config_main
from pi_agent.errors import EX_CONFIG

CORPUS = Path(__file__).resolve().parent / "data" / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))
EXPECT = b"# expect: "
NOT_SHOWN = b"# not shown: "
HERE = "{here}"
MIN_CASES = 30
# A few cases also run as a real process: the exit status and streams as a shell sees them.
SUBPROCESS_CASES = (
    "several_problems",
    "non_utf8_bytes",
    "missing_input_file",
    "alias_bomb",
    "server_url_with_password",
    "empty",
)
SUBPROCESS_TIMEOUT_S = 30
DANGLING_LINK = CORPUS / "dangling-key-link"


def header(path: Path, prefix: bytes) -> list[str]:
    """Return the values of the leading comment lines of `path` that start with `prefix`."""
    values = []
    for line in path.read_bytes().splitlines():
        if not line.startswith(b"#"):
            break
        if line.startswith(prefix):
            values.append(line[len(prefix) :].decode("utf-8"))
    return values


def expected_report(path: Path) -> str:
    """Return the exact stderr check-config must print for `path`."""
    problems = [p.replace(HERE, str(CORPUS)) for p in header(path, EXPECT)]
    count = len(problems)
    lines = [f"{path}: invalid configuration ({count} problem{'s' * (count != 1)})"]
    return "\n".join(lines + [f"  {p}" for p in problems]) + "\n"


def case_id(path: Path) -> str:
    """Name a case after its file."""
    return path.stem


def test_corpus_is_complete() -> None:
    assert len(CASES) >= MIN_CASES
    assert all(header(path, EXPECT) for path in CASES), "every case needs an '# expect:' line"
    # Git keeps symlinks; a checkout that turned this one into a file would test nothing.
    assert DANGLING_LINK.is_symlink() and not DANGLING_LINK.exists()


@pytest.mark.parametrize("path", CASES, ids=case_id)
def test_check_config_refuses_with_the_expected_problems(path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out, err) == EX_CONFIG
    assert out.getvalue() == ""
    assert err.getvalue() == expected_report(path)
    for secret in header(path, NOT_SHOWN):
        assert secret not in err.getvalue()


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_check_config_process_exits_78_with_the_expected_problems(name: str) -> None:
    path = CORPUS / f"{name}.yaml"
    env = {**os.environ, "PYTHONPATH": str(CORPUS.parent.parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pi_agent", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == EX_CONFIG == 78
    assert done.stdout == ""
    assert done.stderr == expected_report(path)
    for secret in header(path, NOT_SHOWN):
        assert secret not in done.stderr
