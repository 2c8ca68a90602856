"""`pi-agent check-config`: validate a configuration file without running anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from pi_agent.config import DEFAULT_CONFIG_PATH, load_config
from pi_agent.errors import ConfigError


def main(args: argparse.Namespace) -> int:
    """`pi-agent check-config [FILE]`: 0 when valid, 78 with every problem when not."""
    return check_config_main(str(args.file or args.config_opt or DEFAULT_CONFIG_PATH))


def check_config_main(
    path: str | None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Validate the file at `path` (default /etc/pi-agent.yaml) without running anything.

    Prints 'OK: <path>' and a summary to `out` (default: the current sys.stdout) and returns 0,
    or every problem to `err` (default: the current sys.stderr) and returns 78.
    """
    out, err = out or sys.stdout, err or sys.stderr  # looked up now, so redirection works
    file = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        config = load_config(file)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"{file}: invalid configuration ({count} problem{'s' * (count != 1)})", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return exc.exit_code
    agent, audio = config.agent, config.audio
    print(f"OK: {file}", file=out)
    print(
        f"  agent {agent.agent_id} at {agent.server_url}, audio backend {audio.backend}", file=out
    )
    return 0
