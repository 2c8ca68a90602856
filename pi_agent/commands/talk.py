"""`pi-agent talk`: one conversation from the configuration, no daemon.

Exit 0 only for a completed conversation; otherwise the end kind's exit status
(`pi_agent.core.ending`) and one line of reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from pi_agent.adapters.systemd import configure_logging
from pi_agent.config import Config, load_config
from pi_agent.errors import PiAgentError
from pi_agent.once import run_talk


def main(args: argparse.Namespace) -> int:
    """`pi-agent talk --config FILE [--max-s N]`."""
    cfg = load_config(args.config)
    configure_logging(args.log_level or cfg.logging.level)
    return talk_main(cfg, args.max_s, sys.stdout, sys.stderr)


def talk_main(cfg: Config, max_s: float | None, out: TextIO, err: TextIO) -> int:
    """Entry point of `pi-agent talk`: one line of reason on stderr when it fails."""
    try:
        reason, _ = asyncio.run(run_talk(cfg, max_s=max_s, out=out))
    except PiAgentError as exc:
        print(f"pi-agent: {exc}", file=err)
        return exc.exit_code
    if reason.ok:
        print(f"conversation ended: {reason.detail}", file=err)
    else:
        print(f"pi-agent: conversation failed: {reason}", file=err)
    return reason.policy.exit_code
