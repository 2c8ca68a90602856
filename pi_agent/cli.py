"""Command line: parses the arguments and dispatches to `pi_agent.commands`; nothing else.

Every command module has `main(args) -> int`. An expected error (`PiAgentError`) becomes its exit
code and one line on stderr; an unexpected exception is logged with its traceback and exits 70.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pi_agent import __version__
from pi_agent.config import DEFAULT_CONFIG_PATH
from pi_agent.errors import EX_SOFTWARE, EX_USAGE, PiAgentError

log = logging.getLogger("pi_agent")

# Subcommand -> module of pi_agent.commands.
COMMANDS = {
    "run": "run",
    "talk": "talk",
    "demo": "demo",
    "bench": "bench",
    "devices": "devices",
    "test-audio": "test_audio",
    "check-config": "check_config",
    "simulate": "simulate",
    **dict.fromkeys(("wake", "end", "mute", "status", "say", "context"), "control"),
}


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"configuration file (default {DEFAULT_CONFIG_PATH})",
    )


def _rounds(text: str) -> int:
    """--rounds: an integer from 1 to 200 (5 minutes of timed sounds)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 200:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer from 1 to 200")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `pi-agent` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="pi-agent", description="Voice terminal for ElevenLabs agents on a Raspberry Pi."
    )
    parser.add_argument("--version", action="version", version=f"pi-agent {__version__}")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override logging.level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon: wait for triggers and hold conversations")
    _config_arg(run)

    for name, text in (
        ("wake", "start a conversation (as the button would)"),
        ("end", "end the running conversation"),
        ("mute", "ignore triggers until run again (toggles)"),
        ("status", "show the daemon's state, conversation, round trip and counters"),
        ("say", "send TEXT to the agent as if the user had said it"),
        ("context", "send TEXT to the agent as background information"),
    ):
        cmd = sub.add_parser(name, help=text)
        _config_arg(cmd)
        cmd.add_argument("--socket", type=Path, help="control socket (default from the config)")
        if name in ("say", "context"):
            cmd.add_argument("text", nargs="+", help="the text")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")

    talk = sub.add_parser("talk", help="hold one conversation and exit")
    _config_arg(talk)
    talk.add_argument("--max-s", type=float, help="end the conversation after this many seconds")

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", nargs="?", type=Path, help=f"default {DEFAULT_CONFIG_PATH}")
    check.add_argument("--config", type=Path, dest="config_opt", help="same as FILE")

    sub.add_parser("devices", help="list audio devices and the sample rates they accept")

    bench = sub.add_parser(
        "bench", help="measure speaker -> microphone round trips and CPU on this device"
    )
    _config_arg(bench)
    bench.add_argument("--rounds", type=_rounds, default=10, metavar="N", help="1 to 200")
    bench.add_argument("--json", type=Path, help="also write the figures as JSON here")

    test_audio = sub.add_parser(
        "test-audio", help="record a few seconds, show the level, play it back"
    )
    _config_arg(test_audio)
    test_audio.add_argument("--seconds", type=float, default=3.0, help="recording length")
    test_audio.add_argument("--no-playback", action="store_true", help="only measure the level")

    demo = sub.add_parser("demo", help="talk to the built-in simulator from a bundled recording")
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("pi-agent-demo-reply.wav"),
        help="where the agent's audio is written (default ./pi-agent-demo-reply.wav)",
    )
    demo.add_argument(
        "--output-format", default="pcm_16000", help="agent audio format the simulator announces"
    )
    demo.add_argument(
        "--fast", action="store_true", help="stream the recording as fast as possible"
    )

    from pi_agent.simulator.cli import add_arguments

    simulate = sub.add_parser("simulate", help="run the local Agents-compatible simulator")
    add_arguments(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pi-agent`; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors; sysexits says 64
        return EX_USAGE if exc.code not in (0, None) else 0
    try:
        command = importlib.import_module(f"pi_agent.commands.{COMMANDS[args.command]}")
        return int(command.main(args))
    except PiAgentError as exc:
        print(f"pi-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug: say so with the traceback, and exit so systemd restarts us
        log.critical("pi-agent %s failed unexpectedly", args.command, exc_info=True)
        print(
            f"pi-agent: internal error in {args.command} (see the traceback above)", file=sys.stderr
        )
        return EX_SOFTWARE
