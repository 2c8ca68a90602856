"""`pi-agent simulate`: the local Agents-compatible server, until SIGTERM."""

from __future__ import annotations

import argparse

from pi_agent.adapters.systemd import configure_logging
from pi_agent.simulator.cli import run_from_args


def main(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    configure_logging(args.log_level or "info")
    return run_from_args(args)
