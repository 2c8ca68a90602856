"""Command line: argument parsing, logging set-up and exit codes for every subcommand."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pi_agent import __version__
from pi_agent.commands.check_config import check_config_main
from pi_agent.config import DEFAULT_CONFIG_PATH, Config, load_config
from pi_agent.errors import EX_UNAVAILABLE, EX_USAGE, ConfigError, PiAgentError

log = logging.getLogger("pi_agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds its own timestamps


def setup_logging(level: str = "info") -> None:
    """Plain lines on stderr; under systemd (JOURNAL_STREAM set) no timestamps of our own."""
    fmt = JOURNAL_FORMAT if os.environ.get("JOURNAL_STREAM") else LOG_FORMAT
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


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


CONTROL_COMMANDS = ("wake", "end", "mute", "status", "say", "context")


def control_main(args: argparse.Namespace) -> int:
    """`pi-agent wake|end|mute|status|say|context`: one request to the daemon."""
    import json

    from pi_agent.adapters.control import request, socket_path

    path = args.socket
    if path is None:
        configured = None
        if args.config.exists():  # the socket path may be set in the config
            configured = _load(args.config).control.socket
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
    return 0


def format_status(s: dict[str, object]) -> str:
    """Human-readable `pi-agent status`."""
    lines = [
        f"state:          {s.get('state')}",
        f"conversation:   {s.get('conversation_id') or '-'}",
        f"round trip:     {s.get('rtt_ms') if s.get('rtt_ms') is not None else '-'} ms",
        f"uptime:         {s.get('uptime_s')} s",
        f"conversations:  {s.get('conversations')} ({s.get('failures')} failed)",
    ]
    last = s.get("last_conversation")
    if isinstance(last, dict):
        lines.append(
            f"last:           {last.get('conversation_id') or '-'}, "
            f"{last.get('duration_s')} s, {last.get('end')}"
        )
    return "\n".join(lines)


def _load(path: Path) -> Config:
    return load_config(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pi-agent`; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors; sysexits says 64
        return EX_USAGE if exc.code not in (0, None) else 0
    level = args.log_level
    try:
        if args.command == "check-config":
            path = args.file or args.config_opt or DEFAULT_CONFIG_PATH
            return check_config_main(str(path))
        if args.command == "simulate":
            setup_logging(level or "info")
            from pi_agent.simulator.cli import run_from_args

            return run_from_args(args)
        if args.command == "demo":
            setup_logging(level or "warning")
            from pi_agent.commands.demo import demo_main

            return demo_main(args.output, args.output_format, fast=args.fast)
        if args.command == "devices":
            setup_logging(level or "warning")
            from pi_agent.adapters.audio.devicelist import devices_main

            return devices_main(sys.stdout, sys.stderr)
        if args.command == "bench":
            cfg = _load(args.config)
            setup_logging(level or "warning")
            from pi_agent.commands.bench import bench_main

            return bench_main(cfg, rounds=args.rounds, json_path=args.json)
        if args.command == "test-audio":
            cfg = _load(args.config)
            setup_logging(level or "warning")
            from pi_agent.commands.test_audio import run_test_audio
            from pi_agent.wiring import open_devices

            mic, speaker = open_devices(cfg)
            return asyncio.run(
                run_test_audio(
                    mic, speaker, args.seconds, sys.stdout, playback=not args.no_playback
                )
            )
        if args.command == "run":
            cfg = _load(args.config)
            from pi_agent.adapters.systemd import configure_logging

            configure_logging(level or cfg.logging.level)
            from pi_agent.app import Daemon

            return asyncio.run(Daemon(cfg, args.config).run())
        if args.command in CONTROL_COMMANDS:
            return control_main(args)
        if args.command == "talk":
            cfg = _load(args.config)
            setup_logging(level or cfg.logging.level)
            from pi_agent.commands.talk import talk_main

            return talk_main(cfg, args.max_s, sys.stdout, sys.stderr)
    except ConfigError as exc:
        print(f"pi-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except PiAgentError as exc:
        print(f"pi-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EX_USAGE
