"""Wake word: the detector core, its worker thread, the pre-roll cut, and a running daemon.

Tests marked `speech` use the real microWakeWord model (pymicro-wakeword) on espeak-ng speech
generated here, as `scripts/wakeword_eval.py` does for the published figures.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from pi_agent.adapters.audio.capture import CaptureHub
from pi_agent.adapters.audio.devices import ChunkQueue, FileSpeaker, Samples
from pi_agent.adapters.control import request
from pi_agent.adapters.wakeword import (
    INSTALL_HINT,
    Detection,
    WakeWordDetector,
    WakeWordListener,
    load_backend,
)
from pi_agent.app import Daemon
from pi_agent.config import WakewordConfig
from pi_agent.core.audio.preroll import PrerollRing
from pi_agent.core.audio.resample import resample
from pi_agent.errors import EX_CONFIG, WakewordUnavailable
from pi_agent.testing import ScriptedMic
from scripts import wakeword_eval as corpus
from tests.beds.daemon import Bed, daemon_bed, make_config
from tests.helpers import run

RATE = 16000
CHUNK = 320  # 20 ms
LOUD = 1000  # a chunk of the phrase with a sample above this is speech
COMMA_S = 0.2  # the pause people make after a wake word ("Okay Nabu, what time is it?")
WAIT_S = 10.0

speech = pytest.mark.skipif(
    not corpus.espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


@functools.cache
def said(text: str, voice: str = "en-us", speed: int = 160) -> Samples:
    """espeak-ng speech at 16 kHz, trimmed (cached: espeak-ng output is deterministic)."""
    return corpus.speak(text, voice, speed)


def quiet(seconds: float, seed: int = 0) -> Samples:
    """Room noise at -60 dBFS."""
    return corpus.room(int(seconds * RATE), np.random.default_rng(seed))


def stream(samples: Samples, detector: WakeWordDetector, chunk: int = CHUNK) -> list[Detection]:
    """Feed `samples` in chunks from position 0; every detection."""
    found = []
    for offset in range(0, len(samples) - chunk + 1, chunk):
        detection = detector.process(samples[offset : offset + chunk], offset + chunk)
        if detection is not None:
            found.append(detection)
    return found


# ---------------------------------------------------------------- pre-roll cut (pure)


def level(value: int) -> Samples:
    return np.full(CHUNK, value, dtype=np.int16)


def test_cut_keeps_the_audio_after_the_quietest_chunk_before_the_detection() -> None:
    ring = PrerollRing(20 * CHUNK)
    for value in [900, 800, 700, 5, 600, 500, 400, 300]:  # 5: the pause after the wake word
        ring.append(level(value))
    dropped = ring.cut_at_quietest(keep_samples=2 * CHUNK, search_samples=5 * CHUNK)
    assert dropped == 3 * CHUNK
    assert [int(c[0]) for c in ring.take()] == [5, 600, 500, 400, 300]


def test_cut_prefers_the_earliest_of_equally_quiet_chunks_and_never_drops_newer_audio() -> None:
    ring = PrerollRing(20 * CHUNK)
    for value in [900, 0, 0, 0, 700, 1]:
        ring.append(level(value))
    ring.cut_at_quietest(keep_samples=CHUNK, search_samples=10 * CHUNK)  # the 1 is kept anyway
    assert [int(c[0]) for c in ring.take()] == [0, 0, 0, 700, 1]
    for value in [900, 800, 700]:
        ring.append(level(value))
    assert ring.cut_at_quietest(keep_samples=2 * CHUNK, search_samples=0) == CHUNK
    assert ring.samples == 2 * CHUNK
    assert ring.cut_at_quietest(keep_samples=10 * CHUNK, search_samples=CHUNK) == 0


class Numbered:
    """A microphone delivering numbered chunks as fast as the loop lets it."""

    sample_rate = RATE
    chunk_samples = CHUNK
    finished = False

    def __init__(self) -> None:
        self.count = 0
        self.twenty = asyncio.Event()  # set once 20 chunks are out

    async def run(self, queue: ChunkQueue) -> None:
        while True:
            self.count += 1
            queue.put_nowait(np.full(CHUNK, self.count, dtype=np.int16))
            if self.count >= 20:
                self.twenty.set()
            await asyncio.sleep(0.001)


def test_idle_listeners_get_chunks_and_positions_only_while_no_conversation_borrows_the_hub() -> (
    None
):
    async def main() -> None:
        mic = Numbered()
        hub = CaptureHub(mic, preroll_ms=100)
        heard: list[tuple[int, int]] = []
        hub.add_idle_listener(lambda chunk, end: heard.append((int(chunk[0]), end)))
        device = asyncio.create_task(hub.run_device())
        await asyncio.sleep(0.05)
        assert hub.idle
        borrowed = asyncio.create_task(hub.borrow().run(ChunkQueue(1000)))
        await asyncio.sleep(0.05)
        assert not hub.idle
        during = len(heard)
        await asyncio.sleep(0.05)
        assert len(heard) == during  # nothing while the conversation holds the microphone
        assert hub.drop_wake_word(hub.position, 0, CHUNK) == 0  # nor any cut
        borrowed.cancel()
        await asyncio.gather(borrowed, return_exceptions=True)
        await asyncio.sleep(0.05)
        device.cancel()
        await asyncio.gather(device, return_exceptions=True)
        assert len(heard) > during
        assert all(end == n * CHUNK for n, end in heard)  # position: samples since the start
        assert heard[during][0] > heard[during - 1][0] + 1  # the conversation's chunks: not heard
        assert hub.position == mic.count * CHUNK

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


def test_hub_cut_counts_the_chunks_that_arrived_after_the_detection() -> None:
    async def main() -> None:
        mic = Numbered()
        hub = CaptureHub(mic, preroll_ms=200)  # 10 chunks
        device = asyncio.create_task(hub.run_device())
        await mic.twenty.wait()
        device.cancel()
        await asyncio.gather(device, return_exceptions=True)
        newest = hub.position // CHUNK
        # Detected at the end of chunk newest-2; the wake word ended 1-4 chunks before that,
        # in chunk newest-5, -4 or -3. Numbered chunks get louder: the quietest is newest-5.
        hub.drop_wake_word((newest - 2) * CHUNK, CHUNK, 4 * CHUNK)
        assert [int(c[0]) for c in hub.ring.take()] == list(range(newest - 5, newest + 1))

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


# ---------------------------------------------------------------- detector core (fake backend)


class Scripted:
    """A backend whose score is the chunk's first sample / 1000; records what it was given."""

    sample_rate = RATE
    default_threshold = 0.5

    def __init__(self) -> None:
        self.received = 0
        self.resets = 0
        self.closed = False
        self.fail = False

    def process(self, samples: Samples) -> float:
        if self.fail:
            raise RuntimeError("model broke")
        self.received += len(samples)
        return float(samples[0]) / 1000 if len(samples) else 0.0

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def scores(*values: float) -> Samples:
    return np.concatenate([np.full(CHUNK, int(v * 1000), dtype=np.int16) for v in values])


def test_detects_above_the_threshold_once_per_refractory_period() -> None:
    backend = Scripted()
    detector = WakeWordDetector(backend, RATE, refractory_s=0.1)  # 5 chunks
    assert detector.threshold == 0.5  # null in the config: the model's own
    found = stream(scores(0.2, 0.5, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9), detector)
    assert [(d.position // CHUNK, d.score) for d in found] == [(3, 0.9), (8, 0.9)]
    assert detector.suppressed == 3  # chunks 4 and 5, then 9: inside a period
    assert backend.resets == 2  # after each detection: one utterance, one wake
    assert WakeWordDetector(Scripted(), RATE, threshold=0.95).threshold == 0.95


def test_a_gap_in_the_stream_restarts_the_detector_but_not_the_refractory_period() -> None:
    backend = Scripted()
    detector = WakeWordDetector(backend, RATE, refractory_s=1.0)
    assert detector.process(scores(0.9), CHUNK) is not None
    assert detector.process(scores(0.1), 2 * CHUNK) is None
    assert detector.gaps == 0
    later = 10 * CHUNK  # a conversation held the microphone in between
    assert detector.process(scores(0.9), later) is None  # still inside the period
    assert detector.gaps == 1
    assert backend.resets == 2  # the detection, then the gap
    assert detector.process(scores(0.9), RATE + 2 * CHUNK) is not None


def test_a_48k_microphone_is_resampled_to_the_model_rate() -> None:
    backend = Scripted()
    detector = WakeWordDetector(backend, 48000)
    chunk = np.zeros(960, dtype=np.int16)
    for i in range(50):  # one second
        detector.process(chunk, (i + 1) * 960)
    assert RATE - 100 < backend.received <= RATE  # minus the filter's look-ahead
    assert detector.samples == 48000


# ---------------------------------------------------------------- worker thread


def test_listener_runs_the_detector_off_the_loop_and_posts_detections_back() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        got: list[tuple[Detection, int]] = []
        done = asyncio.Event()

        def on_detect(detection: Detection) -> None:
            got.append((detection, threading.get_ident()))
            done.set()

        backend = Scripted()
        listener = WakeWordListener(WakeWordDetector(backend, RATE), on_detect)
        task = asyncio.create_task(listener.run())
        for i, value in enumerate((0.1, 0.2, 0.7, 0.1)):
            listener.feed(scores(value), (i + 1) * CHUNK)
        await asyncio.wait_for(done.wait(), WAIT_S)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [(d.position, t) for d, t in got] == [(3 * CHUNK, loop_thread)]
        assert listener.detections == 1 and listener.chunks == 4
        assert backend.closed
        assert not any(t.name == "wakeword" for t in threading.enumerate())
        assert "1 detections, 0 chunks dropped" in listener.summary()

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


def test_listener_never_blocks_the_loop_it_drops_the_oldest_chunk_when_full() -> None:
    listener = WakeWordListener(WakeWordDetector(Scripted(), RATE), lambda d: None, max_queue=3)
    for i in range(5):  # no worker running: the queue fills up
        listener.feed(scores(0.1), (i + 1) * CHUNK)
    assert listener.dropped == 2
    queued = [listener._queue.get_nowait() for _ in range(3)]
    assert [item[1] for item in queued if item is not None] == [3 * CHUNK, 4 * CHUNK, 5 * CHUNK]


def test_a_failing_model_fails_the_listener_task() -> None:
    async def main() -> None:
        backend = Scripted()
        backend.fail = True
        listener = WakeWordListener(WakeWordDetector(backend, RATE), lambda d: None)
        task = asyncio.create_task(listener.run())
        listener.feed(scores(0.1), CHUNK)
        with pytest.raises(RuntimeError, match="model broke"):
            await asyncio.wait_for(task, WAIT_S)

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


# ---------------------------------------------------------------- the extra


def test_without_the_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)  # import fails
    with pytest.raises(WakewordUnavailable) as info:
        load_backend("okay_nabu")
    assert str(info.value) == INSTALL_HINT
    assert info.value.exit_code == EX_CONFIG  # systemd must not restart-loop on it
    cfg = WakewordConfig(enabled=True, model="alexa", threshold=None, refractory_s=2.0)
    with pytest.raises(WakewordUnavailable):
        WakeWordListener.from_config(cfg, RATE, lambda d: None)


def test_the_daemon_refuses_to_start_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)
    cfg, path = make_config(tmp_path, "ws://127.0.0.1:9", wakeword={"enabled": True})
    daemon = Daemon(
        cfg,
        path,
        devices=lambda c: (ScriptedMic(), FileSpeaker(None)),
        pin_factory=MockFactory(pin_class=MockPWMPin),
    )
    with pytest.raises(WakewordUnavailable, match=r"pip install 'pi-agent\[wakeword\]'"):
        run(daemon.run())


# ---------------------------------------------------------------- the real detector


PHRASE = "Okay Nabu"
OTHER_SENTENCES = (
    "Hello there, how are you today?",
    "Turn on the kitchen lights.",
    "What is the weather like tomorrow?",
    "Hey Jarvis",
    "Alexa",
    "Okay Google",
)


@speech
@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp", "en+m7"])
def test_the_real_detector_hears_the_phrase_once_just_after_it_ends(voice: str) -> None:
    phrase = said(PHRASE, voice)
    audio = np.concatenate((quiet(0.5), phrase, quiet(1.5)))
    found = stream(audio, WakeWordDetector(load_backend("okay_nabu"), RATE))
    assert len(found) == 1
    phrase_end = int(0.5 * RATE) + len(phrase)
    assert 0 <= found[0].position - phrase_end <= 0.4 * RATE
    assert found[0].score > 0.85


@speech
def test_the_real_detector_on_a_48k_microphone() -> None:
    audio = resample(np.concatenate((quiet(0.5), said(PHRASE), quiet(1.0))), RATE, 48000)
    found = stream(audio, WakeWordDetector(load_backend("okay_nabu"), 48000), chunk=960)
    assert len(found) == 1


@speech
def test_the_real_detector_ignores_other_speech_silence_and_noise() -> None:
    rng = np.random.default_rng(7)
    parts = [np.concatenate((said(text, voice), quiet(0.5))) for text in OTHER_SENTENCES
             for voice in ("en-us", "en-gb-x-rp")]  # fmt: skip
    parts += [
        np.zeros(5 * RATE, dtype=np.int16),
        quiet(5.0),
        corpus.noise("white", 5 * RATE, -20.0, rng),
        corpus.noise("pink", 5 * RATE, -15.0, rng),
        corpus.noise("hum", 5 * RATE, -20.0, rng),
    ]
    detector = WakeWordDetector(load_backend("okay_nabu"), RATE)
    assert stream(np.concatenate(parts), detector) == []
    assert detector.peak < 0.5


@speech
@pytest.mark.parametrize(("refractory_s", "detections"), [(2.0, 1), (0.2, 2)])
def test_the_refractory_period_is_honoured(refractory_s: float, detections: int) -> None:
    phrase = said(PHRASE)
    audio = np.concatenate((quiet(0.3), phrase, quiet(0.3), phrase, quiet(1.0)))
    detector = WakeWordDetector(load_backend("okay_nabu"), RATE, refractory_s=refractory_s)
    assert len(stream(audio, detector)) == detections
    assert detector.suppressed >= 2 - detections


# ---------------------------------------------------------------- in a running daemon


def contains(haystack: Samples, needle: Samples) -> bool:
    """Whether `needle` occurs in `haystack` sample for sample."""
    at = haystack.tobytes().find(needle.tobytes())
    return at >= 0 and at % 2 == 0


async def wake_and_check(bed: Bed, phrase: Samples, command: Samples) -> None:
    """Say the wake word, a comma's pause, a command; the agent gets the command, not the word."""
    conversations = len(bed.sim.conversations)
    bed.mic.say(np.concatenate((phrase, quiet(COMMA_S), command, quiet(0.2))))
    await bed.notify.wait_for("connecting: wake word")
    await bed.notify.wait_for("listening: conversation started")
    record = bed.sim.conversations[conversations]
    await record.wait_until(lambda: contains(record.user_audio(), command[-CHUNK:]), WAIT_S)
    heard = record.user_audio()
    assert contains(heard, command)  # every sample of the command, in order
    body = phrase[: int(0.8 * len(phrase))]
    voiced = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]  # espeak-ng has gaps of
    voiced = [part for part in voiced if np.abs(part).max() > LOUD]  # digital silence: skip them
    assert not any(contains(heard, part) for part in voiced)


@speech
def test_a_wake_word_starts_a_conversation_that_hears_what_follows_only_while_idle(
    tmp_path: Path,
) -> None:
    phrase, command = said(PHRASE), said("What time is it?")

    async def main() -> None:
        async with daemon_bed(
            tmp_path,
            wakeword={"enabled": True},
            audio={"mic_while_speaking": "open"},  # the scripted mic hears no speaker
            button={"mode": "toggle"},
        ) as bed:
            listener = bed.daemon.wakeword
            assert listener is not None
            await wake_and_check(bed, phrase, command)
            # During the conversation the detector hears nothing, so the phrase cannot wake.
            fed = listener.chunks
            bed.mic.say(np.concatenate((phrase, quiet(1.0))))
            await asyncio.sleep(len(phrase) / RATE + 1.0)
            assert listener.chunks == fed
            assert listener.detections == 1
            await bed.notify.wait_for("thinking")  # the server heard a turn (the echo agent)
            await asyncio.sleep(0.5)
            reply = await request(bed.control, "end")
            assert reply["ok"]
            await bed.notify.wait_for("idle")
            # Idle again: it listens again, and wakes again.
            await asyncio.sleep(2.0)  # past the refractory period and the end chime
            await wake_and_check(bed, phrase, command)
            assert listener.detections == 2
            assert bed.daemon.machine.violations == []

    run(main())


# ---------------------------------------------------------------- the figures' script


@speech
def test_the_evaluation_script_runs_on_a_small_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    assert corpus.main(["--model", "okay_nabu", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    (model,) = figures["models"]
    categories = model["categories"]
    assert {"phrase", "phrase in noise", "other sentences", "silence", "noise", "babble"} <= set(
        categories
    )
    assert categories["phrase"]["triggered"] > 0
    assert categories["silence"]["triggered"] == 0
    assert model["cpu_ms_per_s"] > 0
    assert "| threshold |" in capsys.readouterr().out
