"""`pi-agent wake|end|mute|status|say|context`: one request to the running daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pi_agent.adapters.control import request, socket_path
from pi_agent.config import load_config
from pi_agent.errors import EX_OK, EX_UNAVAILABLE

VERBS = ("wake", "end", "mute", "status", "say", "context")


def main(args: argparse.Namespace) -> int:
    """Send the verb (and text) to the control socket; print the status, or the refusal."""
    path = args.socket
    if path is None:
        configured = None
        if args.config.exists():  # the socket path may be set in the config
            configured = load_config(args.config).control.socket
        path = socket_path(configured)
    text = " ".join(getattr(args, "text", []))
    reply = asyncio.run(request(path, args.command, text))
    if not reply.get("ok"):
        print(f"pi-agent: {reply.get('error', 'the daemon refused the request')}", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.command == "status":
        if args.json:
            print(json.dumps(reply, indent=2, sort_keys=True))
        else:
            print(format_status(reply))
    return EX_OK


def format_status(s: dict[str, object]) -> str:
    """Human-readable `pi-agent status`."""
    lines = [
        f"state:          {s.get('state')}",
        f"conversation:   {s.get('conversation_id') or '-'}",
        f"round trip:     {s.get('rtt_ms') if s.get('rtt_ms') is not None else '-'} ms",
        f"uptime:         {s.get('uptime_s')} s",
        f"conversations:  {s.get('conversations')} ({s.get('failures')} failed)",
    ]
    if s.get("healthy") is False:
        lines.append(f"health:         unhealthy: {s.get('unhealthy')}")
    last = s.get("last_conversation")
    if isinstance(last, dict):
        lines.append(
            f"last:           {last.get('conversation_id') or '-'}, "
            f"{last.get('duration_s')} s, {last.get('end')}"
        )
    return "\n".join(lines)
