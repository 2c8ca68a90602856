#!/usr/bin/env python3
"""Every fault of tests/beds/faultnet.py, N times: what the user sees, whether the next one works.

Usage: python scripts/reliability.py [--runs N] [--jobs J] [--only NAME ...]
                                     [--output FILE | --output -] [--max-minutes M]

One run is a `talk` conversation against the fault, then one against a healthy simulator, in
this process (the client must keep no state that breaks the next conversation). Everything runs
on loopback; name lookups are answered locally. The client's metadata, keepalive and
reply-settle timeouts are shortened (tests/beds/faultnet.py QUICK_*), so times are test times, not
device times. Prints a table and writes it, with the machine, command and date, to
docs/reliability.md (see there for how to read it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import importlib.metadata
import logging
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout: pi_agent and tests/beds/faultnet.py

from pi_agent.app import LED_RESTARTS, TICK_S, UNHEALTHY_EXIT_S  # noqa: E402
from pi_agent.core.backoff import should_retry  # noqa: E402
from pi_agent.core.ending import END_POLICIES, EndKind, policy  # noqa: E402
from tests.beds import faultnet  # noqa: E402
from tests.beds.faultnet import FAULTS, HEALTHY, Fault, converse  # noqa: E402

DEFAULT_RUNS = 20
DEFAULT_JOBS = 4  # concurrent runs on one event loop; most of a run is waiting on a timeout
DEFAULT_MAX_MINUTES = 15.0  # no new run starts after this; the table says how many ran
RUN_TIMEOUT_S = 60.0  # one faulty + one healthy conversation; the slowest takes about 7 s
DEFAULT_OUTPUT = REPO / "docs" / "reliability.md"
_PORT = re.compile(r"(127\.0\.0\.1|\[::1\]|localhost):\d+")
_CONV_ID = re.compile(r"conv_[0-9a-f]+")

_current = contextvars.ContextVar[str]("fault", default="(outside a run)")


@dataclass(slots=True)
class Run:
    """One faulty conversation and the healthy one after it."""

    kind: EndKind | None
    detail: str
    seconds: float
    expected: bool
    retry: bool
    next_ok: bool
    next_detail: str


@dataclass(slots=True)
class Tally:
    """The runs of one fault."""

    fault: Fault
    runs: list[Run] = field(default_factory=list)
    errors_logged: int = 0


class ErrorCounter(logging.Handler):
    """Counts ERROR records per fault (from the context of the run that logged them)."""

    def __init__(self, tallies: dict[str, Tally]) -> None:
        super().__init__(logging.ERROR)
        self.tallies = tallies
        self.examples: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        name = _current.get()
        tally = self.tallies.get(name)
        if tally is not None:
            tally.errors_logged += 1
        self.examples.setdefault(name, f"{record.name}: {record.getMessage()}"[:200])


def normalise(detail: str) -> str:
    """The detail with ports and conversation ids replaced, so runs can be compared."""
    return _CONV_ID.sub("conv_ID", _PORT.sub(r"\1:PORT", detail))


async def one_run(fault: Fault, work: Path) -> Run:
    """The faulty conversation, then the healthy one; exceptions count as failures."""
    _current.set(fault.name)
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            faulty = await converse(work, fault.target)
    except Exception as exc:  # a crash is a result here, not a reason to stop
        return Run(None, f"raised {exc!r}", RUN_TIMEOUT_S, False, False, False, "not run")
    reason = faulty.reason
    expected = reason.kind is fault.kind and fault.text in reason.detail
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            healthy = await converse(work, HEALTHY)
        next_ok, next_detail = healthy.reason.kind is EndKind.COMPLETED, str(healthy.reason)
    except Exception as exc:
        next_ok, next_detail = False, f"raised {exc!r}"
    return Run(
        reason.kind,
        normalise(reason.detail),
        faulty.seconds,
        expected,
        should_retry(reason),
        next_ok,
        next_detail,
    )


async def run_all(
    faults: Sequence[Fault], runs: int, jobs: int, deadline: float, tallies: dict[str, Tally]
) -> None:
    """Runs round-robin over the faults, `jobs` at a time, until done or the deadline."""
    queue: asyncio.Queue[Fault] = asyncio.Queue()
    for _ in range(runs):
        for fault in faults:
            queue.put_nowait(fault)
    total = queue.qsize()
    done = 0

    async def worker(index: int) -> None:
        nonlocal done
        with tempfile.TemporaryDirectory(prefix=f"pi-agent-reliability-{index}-") as tmp:
            work = Path(tmp)
            while not queue.empty() and time.monotonic() < deadline:
                fault = queue.get_nowait()
                run = await one_run(fault, work)
                tallies[fault.name].runs.append(run)
                done += 1
                mark = "ok" if run.expected and run.next_ok else "UNEXPECTED"
                print(
                    f"[{done:4d}/{total}] {fault.name:18} {run.seconds:6.2f} s  {mark}",
                    file=sys.stderr,
                    flush=True,
                )

    await asyncio.gather(*(worker(i) for i in range(jobs)))


def led(kind: EndKind | None) -> str:
    """The daemon's state (LED pattern) after this end: error for failures, else idle."""
    return "error" if kind is None or policy(kind).shows_error else "idle"


def summary_rows(tallies: dict[str, Tally]) -> list[list[str]]:
    """One table row per fault."""
    rows = []
    for tally in tallies.values():
        runs = tally.runs
        if not runs:
            continue
        seen = collections.Counter((r.kind, r.detail) for r in runs)
        (kind, detail), count = seen.most_common(1)[0]
        sees = f"`{kind.value if kind else 'crash'}`: {detail}"
        if len(seen) > 1:
            sees += f" ({len(runs) - count} of {len(runs)} runs differ)"
        if tally.fault.note:
            sees += f" *Note: {tally.fault.note}.*"
        expected = sum(r.expected for r in runs)
        next_ok = sum(r.next_ok for r in runs)
        retry = {r.retry for r in runs}
        decision = "yes" if retry == {True} else "no" if retry == {False} else "mixed"
        rows.append(
            [
                tally.fault.title,
                sees.replace("|", "\\|"),
                led(kind),
                "-" if kind is not None and policy(kind).success else decision,
                f"{expected}/{len(runs)}",
                f"{next_ok}/{len(runs)}",
                f"{statistics.median(r.seconds for r in runs):.2f}",
                str(tally.errors_logged),
            ]
        )
    return rows


HEADER = [
    "fault",
    "what the user sees (end kind: the one-line reason)",
    "daemon LED",
    "retry?",
    "as expected",
    "next conversation OK",
    "median s to end",
    "errors logged",
]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, OS and versions, one line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, websockets {importlib.metadata.version('websockets')}"
    )


def document(
    rows: list[list[str]],
    faults: Sequence[Fault],
    args: argparse.Namespace,
    elapsed_s: float,
    examples: dict[str, str],
) -> str:
    """docs/reliability.md."""
    q = faultnet
    injections = markdown_table(
        ["fault", "name", "how it is injected", "expected end"],
        [
            [f.title, f"`{f.name}`", f.injection.replace("|", "\\|"), f"`{f.kind.value}`"]
            for f in faults
        ],
    )
    errors = "".join(f"\n- `{k}`: {v}" for k, v in sorted(examples.items()))
    command = "python scripts/reliability.py " + shlex.join(sys.argv[1:])
    return f"""# Reliability: faults and recovery

Generated by `scripts/reliability.py`; do not edit by hand, run it again.

- Command: `{command.strip()}`
- Date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
- Machine: {machine()}
- Runs per fault: {args.runs}, {args.jobs} at a time on one event loop; total {elapsed_s:.0f} s

Each run is one `pi-agent talk` conversation (`pi_agent.once.run_talk`, file microphone and
speaker, 0.4 s of speech) against the fault, then one against a healthy simulator in the same
process. **as expected**: the run ended with the fault's expected kind and text
(`tests/beds/faultnet.py`, also asserted by `tests/test_faults.py`). **next conversation OK**: the
healthy conversation after it completed. **median s to end**: from the start of the faulty
conversation to its end. **daemon LED**: the state `pi-agent run` shows after that end (`error`,
red, for `conversation.error_display_s`, then idle; `idle` for ends that are not failures).
**retry?**: `pi_agent.core.backoff.should_retry` for that end (the daemon's retry policy; `-` for
ends that are not failures). **errors logged**: ERROR log records during the fault's runs (0:
nothing unexpected was logged).

Timeouts are shortened for the run; the device's values are in brackets.

- metadata: {q.QUICK_METADATA_TIMEOUT_S:g} s [10 s]
- keepalive: a ping every {q.QUICK_KEEPALIVE_INTERVAL_S:g} s, {q.QUICK_KEEPALIVE_TIMEOUT_S:g} s \
to answer [20 s and 20 s: a dead peer is noticed after about 42 s, with the 2 s close]
- reply settled: {q.QUICK_REPLY_SETTLE_S:g} s [1 s]
- `agent.connect_timeout_s` and `conversation.reply_timeout_s`: 1 s where a fault needs them,
  the smallest the configuration allows [10 s and 20 s]

Ports in the reasons are shown as PORT.

## Results

{markdown_table(HEADER, rows)}

## How each fault is injected

{injections}

The DNS fault never leaves the process: `faultnet.loopback_resolver()` fails every name lookup
(a `.invalid` name included) without asking a resolver, and hides proxy variables.

## Retry policy

`pi_agent.core.backoff.should_retry(reason)` says whether the same conversation may work if tried
again unchanged: yes for connect failures (DNS, refused, timeouts, TLS: on a Pi without a
real-time clock the clock may not be set by NTP yet, or a captive portal answers), HTTP
408/425/429/5xx, a lost connection, a
protocol break, and close codes 1002 (the service's timeouts and LLM/TTS/ASR failures), 1011,
1012-1014; no for successful and local ends, refused credentials, HTTP 4xx, close 1008 and the
error types a retry cannot fix (`invalid_message`, `override_error`, `missing_dynamic_variable`,
`safety_violation`, an agent that "does not exist"). `Backoff` spaces the attempts out: 1 s,
2 s, 4 s, ... up to 60 s, each with half of it random.

{supervision_section()}
{"" if not examples else chr(10) + "## Error records (first per fault)" + chr(10) + errors}
"""


# What each task of `pi-agent run` does, and what an unexpected exception in it does; each row
# is measured by tests/test_supervision.py, which throws a RuntimeError into the task.
SUPERVISION_ROWS = [
    ["`capture`", "the microphone for the daemon's life: pre-roll, wake word feed", "exit 70"],
    ["`wakeword`", "results of the detector thread (wake word on)", "exit 70"],
    ["`dispatch`", "events into the state machine, its commands out to the adapters", "exit 70"],
    ["`tick`", "time for the machine, health checks, the watchdog", "exit 70"],
    [
        "`leds`",
        "the one LED animation (state patterns and set_led overrides)",
        f"restarted in place, {LED_RESTARTS} times; then exit 70",
    ],
    ["`conversation`", "holds one conversation, with its connect retries", "ends `internal`"],
    ["`receive`", "server frames in; pongs first", "ends `internal`"],
    ["`uplink`", "microphone chunks out", "ends `internal`"],
    ["`playback`", "the jitter buffer to the speaker", "ends `internal` (`device` for OSError)"],
    [
        "`microphone`",
        "the conversation's share of the capture",
        "ends `internal` (`device` for OSError)",
    ],
    ["`watch-playback`", "tells the machine when the agent's audio ran out", "ends `internal`"],
    ["`time-limit`", "conversation.max_duration_s", "ends `internal`"],
    [
        "`end-request`",
        "an orderly end asked for (button, `pi-agent end`, a tool)",
        "ends `internal`",
    ],
]
# The hand-written sections from here on (hostile input, soak figures) are kept when the
# document is rewritten.
KEPT_FROM = "\n## Hostile input"


def supervision_section() -> str:
    """The tasks of the daemon and what their failure does; the end-reason table."""
    tasks = markdown_table(["task", "what it does", "an unexpected exception"], SUPERVISION_ROWS)
    ends = markdown_table(
        ["end kind", "success", "error LED", "failure", "retry may help", "talk exits", "meaning"],
        [
            [
                f"`{kind.value}`",
                *(
                    "yes" if flag else "-"
                    for flag in (e.success, e.shows_error, e.failure, e.retry)
                ),
                str(e.exit_code),
                e.explanation,
            ]
            for kind, e in END_POLICIES.items()
        ],
    )
    return f"""## Supervision

Every long-lived task of `pi-agent run` is supervised (`pi_agent.app.Supervisor`). An unexpected
exception is logged once at ERROR with the task's name and traceback; the daemon then shuts down in
its normal order (conversation ended, tasks stopped, socket removed, LEDs off, `STOPPING=1`) and
exits 70 (EX_SOFTWARE), so that `Restart=on-failure` restarts it. Inside a conversation, an
unexpected exception ends that conversation as `internal`: the error LED for
`conversation.error_display_s`, a journal line with the traceback, a failure counted in
`pi-agent status`, and the daemon idle again. `tests/test_supervision.py` throws a RuntimeError into
each task at the await it is suspended on and checks the outcome.

{tasks}

The other tasks of a conversation (`wait-metadata`, `hangup-grace`, a tool call) end it the same
way. A control request whose handling raises is answered `internal error`, logged with its
traceback, and the daemon goes on.

The watchdog is fed (`WATCHDOG=1`, every {TICK_S:g} s) only while the dispatcher has handled an
event since the last tick, no task has failed, and no state has outlived its bound. The bounds come
from the configuration (`pi_agent.wiring.state_bounds`): connecting may last the back-off spacing
plus three connect attempts (signed URL and handshake, each `agent.connect_timeout_s`, and the
metadata wait) with their retry delays; ending may last the drains of the last audio and the end
earcon, the hang-up grace and the close; a conversation may last `conversation.max_duration_s` on
top; the error display `conversation.error_display_s`; each plus 10 s. A daemon that stays
unhealthy for {UNHEALTHY_EXIT_S:g} s exits 70 by itself, for when no watchdog watches it.
`pi-agent status` shows `healthy` and, when not, why.

Blocking PortAudio calls (opening, probing and closing streams) run on one PortAudio thread, so a
slow sound card never delays a pong, an LED frame or a control-socket answer.

### End reasons

One table in the core (`pi_agent.core.ending`) says what each end means:

{ends}
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per fault")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="concurrent runs")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these faults only")
    parser.add_argument(
        "--output", default=str(DEFAULT_OUTPUT), help="markdown file to write; '-' for none"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=DEFAULT_MAX_MINUTES, help="stop starting runs after"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.jobs < 1 or args.max_minutes <= 0:
        parser.error("--runs, --jobs and --max-minutes must be positive")
    names = {f.name for f in FAULTS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; known: {', '.join(sorted(names))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the table, write the document; exit 1 if any run was not as expected."""
    args = parse_args(argv)
    faults = [f for f in FAULTS if not args.only or f.name in args.only]
    tallies = {f.name: Tally(f) for f in faults}
    counter = ErrorCounter(tallies)
    logging.basicConfig(level=logging.CRITICAL)  # expected warnings stay quiet
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.ERROR)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    with faultnet.quick_timeouts(), faultnet.loopback_resolver():
        asyncio.run(run_all(faults, args.runs, args.jobs, deadline, tallies))
    elapsed = time.monotonic() - started
    rows = summary_rows(tallies)
    print(markdown_table(HEADER, rows))
    print(f"\n{sum(len(t.runs) for t in tallies.values())} runs in {elapsed:.0f} s")
    if args.output != "-":
        out = Path(args.output)
        old = out.read_text() if out.exists() else ""
        kept = old[old.index(KEPT_FROM) :] if KEPT_FROM in old else ""
        new = document(rows, faults, args, elapsed, counter.examples)
        out.write_text(new.rstrip("\n") + "\n" + kept if kept else new)
        print(f"written to {args.output}")
    bad = [t for t in tallies.values() if any(not (r.expected and r.next_ok) for r in t.runs)]
    short = [t for t in tallies.values() if len(t.runs) < args.runs]
    for tally in bad:
        print(f"UNEXPECTED: {tally.fault.name}", file=sys.stderr)
    for tally in short:
        print(f"INCOMPLETE: {tally.fault.name} ran {len(tally.runs)}/{args.runs}", file=sys.stderr)
    return 1 if bad or short else 0


if __name__ == "__main__":
    sys.exit(main())
