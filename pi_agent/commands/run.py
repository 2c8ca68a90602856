"""`pi-agent run`: the daemon, until SIGTERM; exit 0, or 70 when a task failed."""

from __future__ import annotations

import argparse
import asyncio

from pi_agent.adapters.hardening import make_undumpable
from pi_agent.adapters.systemd import configure_logging
from pi_agent.app import Daemon
from pi_agent.config import load_config


def main(args: argparse.Namespace) -> int:
    """Load the configuration, log to the journal under systemd, run the daemon."""
    make_undumpable()  # before anything secret is read: command tools cannot read our /proc
    cfg = load_config(args.config)
    configure_logging(args.log_level or cfg.logging.level)
    return asyncio.run(Daemon(cfg, args.config).run())
