"""Command line of the simulator: `pi-agent simulate ...` wires add_arguments and run_from_args."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from pi_agent.core.audio import formats
from pi_agent.errors import EX_OK, EX_UNAVAILABLE, EX_USAGE, ScenarioError
from pi_agent.simulator.scenario import load_scenario
from pi_agent.simulator.server import (
    AUDIO_CHUNK_MS,
    PING_INTERVAL_S,
    SPEAK_RATE,
    SimulatorOptions,
    serve_forever,
)

DEFAULT_PORT = 8765  # a fixed default so a config's server_url can name it; --port 0 picks one
PROG = "pi-agent simulate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to a (sub)parser."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port, 0 for any free one (default %(default)s)",
    )
    parser.add_argument(
        "--agent-id", action="append", metavar="ID", help="accept only this agent id (repeatable)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="require signed URLs issued for this key (repeatable)",
    )
    names = ", ".join(formats.FORMATS)
    parser.add_argument("--input-format", default="pcm_16000", help=f"user audio format: {names}")
    parser.add_argument("--output-format", default="pcm_16000", help=f"agent audio format: {names}")
    parser.add_argument(
        "--ping-interval", type=float, default=PING_INTERVAL_S, metavar="S", help="seconds, 0 = off"
    )
    parser.add_argument(
        "--audio-chunk-ms",
        type=int,
        default=AUDIO_CHUNK_MS,
        metavar="MS",
        help="agent audio event size",
    )
    parser.add_argument(
        "--speak-rate",
        type=float,
        default=SPEAK_RATE,
        help="agent audio speed vs real time, 0 = all at once",
    )
    parser.add_argument(
        "--first-message", metavar="TEXT", help="greeting the echo agent speaks first"
    )
    parser.add_argument(
        "--allowed-override",
        action="append",
        metavar="PATH",
        help="allowed init override, e.g. agent.language",
    )
    parser.add_argument(
        "--strict", action="store_true", help="close 1008 on invalid client messages"
    )
    parser.add_argument(
        "--scenario", metavar="FILE", help="JSON/YAML scenario to run instead of the echo agent"
    )


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed arguments; ValueError (incl. ScenarioError) when invalid."""
    scenario = load_scenario(args.scenario) if args.scenario else None
    return SimulatorOptions(
        agent_ids=frozenset(args.agent_id) if args.agent_id else None,
        api_keys=frozenset(args.api_key or ()),
        input_format=args.input_format,
        output_format=args.output_format,
        ping_interval_s=args.ping_interval,
        audio_chunk_ms=args.audio_chunk_ms,
        speak_rate=args.speak_rate,
        scenario=scenario,
        first_message=args.first_message,
        allowed_overrides=frozenset(args.allowed_override) if args.allowed_override else None,
        strict=args.strict,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 then, 64 for bad options, 69 when the port cannot be bound."""
    if not 0 <= args.port <= 65535:
        print(f"{PROG}: error: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return EX_USAGE
    try:
        options = options_from_args(args)
    except (ScenarioError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        asyncio.run(serve_forever(args.host, args.port, options))
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass
    return EX_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: parse argv, log to stderr, serve."""
    parser = _Parser(prog=PROG, description="Local ElevenLabs Agents-compatible server.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (64): return it as the status
        return exc.code if isinstance(exc.code, int) else EX_USAGE
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_from_args(args)
