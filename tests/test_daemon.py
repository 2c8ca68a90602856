"""`pi-agent run` end to end: simulator, gpiozero mock pins, control socket, real sd_notify."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from pi_agent.adapters.control import request
from pi_agent.simulator import Scenario, SendAudio, SimulatorOptions, Wait
from tests.beds.daemon import POLL_S, RATE, STATE_TIMEOUT_S, daemon_bed, tone
from tests.helpers import run


def test_push_to_talk_conversation_states_leds_and_status(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            assert bed.rgb() == (0.0, 0.0, 0.0)  # idle: off
            bed.press()
            await bed.notify.wait_for("connecting")
            await bed.notify.wait_for("user_speaking")
            assert bed.rgb() == (0.0, 1.0, 1.0)  # cyan: the user is talking
            bed.mic.say(tone(1.0))
            await asyncio.sleep(1.1)
            bed.release()  # silence from now on: the server ends the turn
            await bed.notify.wait_for("thinking")
            await bed.notify.wait_for("agent_speaking")
            await bed.notify.wait_for("listening: agent finished")
            assert bed.rgb() == (0.0, 0.0, 1.0)  # blue: listening
            status = await request(bed.control, "status")
            assert status["state"] == "listening"
            assert status["conversation_id"].startswith("conv_")
            assert status["rtt_ms"] is not None
            reply = await request(bed.control, "end")
            assert reply["ok"]
            await bed.notify.wait_for("idle: local: pi-agent end")
            status = await request(bed.control, "status")
            assert status["state"] == "idle"
            assert status["conversations"] == 1
            assert status["failures"] == 0
            assert status["last_conversation"]["conversation_id"].startswith("conv_")
            record = bed.sim.conversations[0]
            heard = record.user_audio()
            assert len(heard) > RATE  # the speech reached the server
            assert bed.daemon.machine.violations == []

    run(main())


def test_sigusr1_wakes_and_long_press_ends(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            os.kill(os.getpid(), signal.SIGUSR1)
            await bed.notify.wait_for("connecting: SIGUSR1")
            await bed.notify.wait_for("listening: conversation started")
            bed.press()
            await asyncio.sleep(1.8)  # past long_press_s
            await bed.notify.wait_for("ending: long press")
            bed.release()
            await bed.notify.wait_for("idle")

    run(main())


def test_button_press_barges_in_while_the_agent_speaks(tmp_path: Path) -> None:
    scenario = Scenario(
        (
            Wait(0.3),
            SendAudio(duration_s=4.0, event_id=1, paced=False),
            Wait(1.5),  # the server has not noticed the barge-in yet: more of the same reply
            SendAudio(duration_s=2.0, event_id=1, paced=False),
            Wait(30),
        )
    )
    options = SimulatorOptions(scenario=scenario, ping_interval_s=0)

    async def main() -> None:
        async with daemon_bed(tmp_path, options, button={"mode": "toggle"}) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("agent_speaking")
            conv = bed.daemon.conv
            assert conv is not None
            assert conv.playback is not None
            assert conv.playback.queued_samples > RATE  # seconds of agent audio queued
            bed.press()
            await bed.notify.wait_for("user_speaking: barge-in")
            assert conv.playback.queued_samples == 0  # flushed at once, locally
            # The rest of the interrupted reply still arriving is dropped, not played.
            playback = conv.playback
            async with asyncio.timeout(STATE_TIMEOUT_S):
                while playback.stale_events == 0:  # noqa: ASYNC110 - counted by the receiver
                    await asyncio.sleep(POLL_S)
            assert playback.queued_samples == 0
            bed.release()

    run(main())


def test_failure_shows_error_then_idle_and_next_trigger_works(tmp_path: Path) -> None:
    async def main() -> None:
        options = SimulatorOptions(agent_ids=frozenset({"someone_else"}), ping_interval_s=0)
        async with daemon_bed(tmp_path, options) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("error: server_error")
            assert bed.rgb() in ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # red, blinking
            await bed.notify.wait_for("idle: error shown")
            status = await request(bed.control, "status")
            assert status["failures"] == 1
            assert "does not exist" in status["last_conversation"]["end"]

    run(main())


def test_sighup_reload_is_deferred_during_a_conversation(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            text = bed.config_path.read_text().replace("idle_timeout_s", "idle_timeout_s")
            bed.config_path.write_text(text + "logging:\n  transcripts: true\n")
            reloads = len(bed.notify.drain())
            os.kill(os.getpid(), signal.SIGHUP)
            async with asyncio.timeout(STATE_TIMEOUT_S):
                while not bed.daemon._reload_pending:  # noqa: ASYNC110 - set by the signal
                    await asyncio.sleep(POLL_S)
            assert not any("RELOADING=1" in m for m in bed.notify.drain()[reloads:])
            assert not bed.daemon.cfg.logging.transcripts
            await request(bed.control, "end")
            await bed.notify.wait_message("RELOADING=1")
            await bed.notify.wait_for("idle: configuration reloaded")
            assert bed.daemon.cfg.logging.transcripts
            # An invalid file is refused and the running configuration kept.
            bed.config_path.write_text("agent:\n  agnet_id: x\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await bed.notify.wait_for("idle: configuration reloaded")  # the attempt is over
            assert bed.daemon.cfg.logging.transcripts
            assert (await request(bed.control, "status"))["state"] == "idle"

    run(main())


def test_sigterm_shuts_down_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            await request(bed.control, "wake")
            await bed.notify.wait_for("listening")
            mode = stat.S_IMODE(os.stat(bed.control).st_mode)
            assert mode == 0o660
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(bed.task, 15) == 0
            assert any("STOPPING=1" in m for m in bed.notify.drain())
            assert bed.rgb() == (0.0, 0.0, 0.0)  # LEDs off
            assert not bed.control.exists()
            record = bed.sim.conversations[0]
            await record.wait_ended(5)
            assert record.close_code == 1000

    run(main())


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json\n", "request is not JSON"),
        (b'{"cmd": "format_disk"}\n', "unknown command 'format_disk'"),
        (b'{"cmd": "say"}\n', "say needs a text"),
        (b'{"cmd": "say", "text": "' + b"x" * 10_000 + b'"}\n', "oversized"),
    ],
)
def test_control_socket_rejects_bad_requests_harmlessly(
    tmp_path: Path, payload: bytes, error: str
) -> None:
    async def main() -> None:
        async with daemon_bed(tmp_path) as bed:
            reader, writer = await asyncio.open_unix_connection(str(bed.control))
            writer.write(payload)
            await writer.drain()
            reply = json.loads(await reader.readline())
            writer.close()
            assert reply["ok"] is False
            assert error in reply["error"]
            assert (await request(bed.control, "status"))["state"] == "idle"

    run(main())


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (401, 1)])
def test_failed_connects_are_retried_only_when_it_can_help(
    tmp_path: Path, status: int, attempts: int
) -> None:
    """503: two quick retries, then the error; 401: the key is wrong, no retry."""
    calls: list[str] = []

    async def counting_connect(url: str, **kwargs: Any) -> Any:
        calls.append(url)
        return await connect(url, **kwargs)

    async def main() -> None:
        options = SimulatorOptions(refuse_status=status, ping_interval_s=0)
        async with daemon_bed(tmp_path, options) as bed:
            bed.daemon.connector = counting_connect
            await request(bed.control, "wake")
            await bed.notify.wait_for("error:")
            assert len(calls) == attempts
            # The next press waits out the back-off only after a failure retrying could fix.
            waiting = bed.daemon.backoff.wait_s(asyncio.get_running_loop().time())
            assert (waiting > 0) == (status == 503)

    run(main())
