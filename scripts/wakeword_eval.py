#!/usr/bin/env python3
"""Wake word figures on a generated corpus: miss rate, false triggers, cut point, CPU cost.

The corpus is made here, deterministically: espeak-ng speech of each model's phrase (15 voices,
3 speeds, 2 pitches; clean and in pink noise at 10 dB SNR), other sentences, other wake phrases,
sound-alikes, silence, noise and babble. Every clip goes through the real detector
(`pi_agent.adapters.wakeword`) in 20 ms chunks, as the daemon feeds it. Prints JSON and tables;
asserts nothing. Needs espeak-ng (`apt-get install espeak-ng`) and
`pip install 'pi-agent[wakeword]'`.

    .venv/bin/python scripts/wakeword_eval.py                 # all four models
    .venv/bin/python scripts/wakeword_eval.py --model okay_nabu --json figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pi_agent.adapters.audio.wavfile import read_wav
from pi_agent.adapters.wakeword import (
    WAKE_END_MAX_MS,
    WAKE_END_MIN_MS,
    Backend,
    WakeWordDetector,
    load_backend,
)
from pi_agent.config import DEFAULT_REFRACTORY_S, WAKEWORD_MODELS
from pi_agent.core.audio.preroll import PrerollRing
from pi_agent.core.audio.resample import resample

Samples = npt.NDArray[np.int16]

RATE = 16000  # Hz: the corpus rate (the detector's own)
CHUNK = 320  # 20 ms at 16 kHz, the daemon's chunk
FULL_SCALE = 32767.0
PHRASES = {
    "okay_nabu": "Okay Nabu",
    "hey_jarvis": "Hey Jarvis",
    "hey_mycroft": "Hey Mycroft",
    "alexa": "Alexa",
}
# Phrases that sound partly like a model's own: reported apart from the other false triggers.
SOUND_ALIKES = {
    "okay_nabu": ("Okay", "Nabu", "Okay now", "A bamboo", "Okay Nora"),
    "hey_jarvis": ("Jarvis", "Hey Travis", "Hey Charles", "Hey, are we there"),
    "hey_mycroft": ("Hey Microsoft", "My craft", "Hey, my car", "Minecraft"),
    "alexa": ("Alex", "Alexander", "A lexicon", "Alexis"),
}
OTHER_WAKE = ("Okay Google", "Hey Siri")
SENTENCES = (
    "Hello there, how are you today?",
    "What time is it?",
    "Turn on the kitchen lights.",
    "Set a timer for ten minutes.",
    "What is the weather like tomorrow?",
    "Play some music in the living room.",
    "I think we should leave at eight.",
    "Could you remind me to call my mother?",
    "The train to London is running late.",
    "How many ounces are in a cup?",
    "Please add milk and bread to the list.",
    "Good morning, did you sleep well?",
    "Tell me a joke about computers.",
    "Open the garage door.",
    "We need to book a table for four.",
    "Is it going to rain this afternoon?",
    "Switch off the television, please.",
    "Nobody knows where the keys are.",
    "Let us meet at the library on Monday.",
    "Thank you, that will be all.",
)
VOICES = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us+f3",
    "en-us+m3",
    "en+f2",
    "en-us+klatt",
    "en+Andy",
    "en+annie",
    "en-us+f4",
    "en+m7",
)
SPEEDS_WPM = (130, 160, 190)
PITCHES = (35, 65)  # espeak-ng pitch, 0-99
LEAD_S = 0.5  # room noise before a phrase
TAIL_S = 1.0  # and after it: the detector fires up to ~0.2 s after the phrase ends
ROOM_DBFS = -60.0  # a quiet room through a typical USB microphone
NOISY_SNR_DB = 10.0  # positives repeated in pink noise at this speech-to-noise ratio
NOISE_CLIP_S = 10.0
NOISE_CLIPS = 6  # one minute of each noise
NOISE_DBFS = (-30.0, -15.0)
TRIM_DBFS = -40.0  # speech starts and ends where the signal first/last exceeds this
SWEEP = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97)
PAUSES_MS = (0, 150, 300)  # "<phrase> what time is it" with no pause, and with short ones
NOTICEABLE_MS = 30  # less than this of the wake word sent or of the command lost is harmless
COMMAND = "What time is it?"
HUM_HZ = 50.0
BABBLE_TALKERS = 6
SEED = 1234
POSITIVE = "phrase"  # categories starting with this hold the wake phrase


@dataclass
class Clip:
    """One corpus item: `category` groups the figures; `phrase_end` marks where speech ends."""

    category: str
    label: str
    samples: Samples
    phrase_end: int = 0  # samples: end of the wake phrase (positives)


@dataclass
class Rates:
    """Outcome of one category of clips at one threshold."""

    clips: int
    audio_s: float
    triggered: int  # clips with at least one detection
    detections: int

    @property
    def rate(self) -> float:
        return self.triggered / self.clips if self.clips else 0.0


@dataclass
class ModelReport:
    """Everything measured for one model."""

    model: str
    phrase: str
    threshold: float
    categories: dict[str, Rates] = field(default_factory=dict)
    sweep: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    missed: dict[str, int] = field(default_factory=dict)  # clean phrases missed, per voice
    false_triggers: list[str] = field(default_factory=list)  # labels of negatives that woke it
    cuts: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (sent, lost) ms
    cpu_ms_per_s: float = 0.0
    cpu_ms_per_s_48k: float = 0.0


# ------------------------------------------------------------------------------- corpus


def espeak_available() -> bool:
    """Tell whether espeak-ng is on PATH."""
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> Samples:
    """espeak-ng speech of `text` at 16 kHz, leading and trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        args = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path)]
        subprocess.run([*args, text], check=True, capture_output=True)  # noqa: S603
        samples, rate = read_wav(path)
    return trim(resample(samples, rate, RATE))


def trim(samples: Samples) -> Samples:
    """Cut what is quieter than TRIM_DBFS before the first and after the last loud sample."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _level(TRIM_DBFS))
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


def _level(dbfs: float) -> float:
    return FULL_SCALE * 10 ** (dbfs / 20)


def noise(kind: str, n: int, dbfs: float, rng: np.random.Generator) -> Samples:
    """`n` samples of white, pink or brown noise, or mains hum, at an RMS level of `dbfs`."""
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    if kind == "hum":
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * HUM_HZ * k * t) / k for k in (1, 2, 3, 5))
        x = np.asarray(x, dtype=np.float64)
    else:
        x = rng.standard_normal(n)
        if kind in ("pink", "brown"):
            spectrum = np.fft.rfft(x)
            freqs = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 1.0)
            spectrum /= freqs ** (0.5 if kind == "pink" else 1.0)
            x = np.fft.irfft(spectrum, n)
    x = x - x.mean()
    x *= _level(dbfs) / max(float(np.sqrt(np.mean(x**2))), 1e-12)
    out: Samples = np.clip(np.rint(x), -FULL_SCALE, FULL_SCALE).astype(np.int16)
    return out


def mix(speech: Samples, background: Samples) -> Samples:
    """Add two signals of the same length, clipped to int16."""
    total = speech.astype(np.int32) + background.astype(np.int32)
    return np.clip(total, -FULL_SCALE, FULL_SCALE).astype(np.int16)


def room(n: int, rng: np.random.Generator) -> Samples:
    """`n` samples of quiet room noise."""
    return noise("white", n, ROOM_DBFS, rng)


def framed(speech: Samples, rng: np.random.Generator) -> tuple[Samples, int]:
    """`speech` between LEAD_S and TAIL_S of room noise; returns the clip and the speech end."""
    lead, tail = room(int(LEAD_S * RATE), rng), room(int(TAIL_S * RATE), rng)
    clip = np.concatenate((lead, mix(speech, room(len(speech), rng)), tail))
    return clip, len(lead) + len(speech)


def in_noise(clip: Samples, snr_db: float, speech_rms: float, rng: np.random.Generator) -> Samples:
    """`clip` with pink noise `snr_db` below the speech's RMS."""
    dbfs = 20 * np.log10(speech_rms / FULL_SCALE) - snr_db
    return mix(clip, noise("pink", len(clip), float(dbfs), rng))


def positives(model: str, voices: Sequence[str], rng: np.random.Generator) -> Iterator[Clip]:
    """The model's phrase in every voice, speed and pitch; clean, then in pink noise."""
    phrase = PHRASES[model]
    for voice in voices:
        for speed in SPEEDS_WPM:
            for pitch in PITCHES:
                speech = speak(phrase, voice, speed, pitch)
                clip, end = framed(speech, rng)
                label = f"{voice} {speed} wpm pitch {pitch}"
                yield Clip("phrase", label, clip, end)
                rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
                yield Clip("phrase in noise", label, in_noise(clip, NOISY_SNR_DB, rms, rng), end)


def negatives(model: str, voices: Sequence[str], rng: np.random.Generator) -> Iterator[Clip]:
    """Other sentences, other wake phrases, sound-alikes, silence, noise, babble."""
    for text in SENTENCES:
        for voice in voices[::3]:
            yield Clip("other sentences", f"{voice}: {text}", framed(speak(text, voice), rng)[0])
    others = [p for m, p in PHRASES.items() if m != model] + list(OTHER_WAKE)
    for text in others:
        for voice in voices:
            yield Clip("other wake phrases", f"{voice}: {text}", framed(speak(text, voice), rng)[0])
    for text in SOUND_ALIKES[model]:
        for voice in voices:
            yield Clip("sound-alikes", f"{voice}: {text}", framed(speak(text, voice), rng)[0])
    n = int(NOISE_CLIP_S * RATE)
    for i in range(NOISE_CLIPS if len(voices) == len(VOICES) else 1):
        yield Clip("silence", f"digital silence {i}", np.zeros(n, dtype=np.int16))
        yield Clip("silence", f"room noise {i}", room(n, rng))
        for kind in ("white", "pink", "brown"):
            for dbfs in NOISE_DBFS:
                yield Clip("noise", f"{kind} {dbfs:g} dBFS {i}", noise(kind, n, dbfs, rng))
        yield Clip("noise", f"hum {i}", noise("hum", n, -20.0, rng))
        yield Clip("babble", f"babble {i}", babble(i, rng))


def babble(index: int, rng: np.random.Generator) -> Samples:
    """Several talkers at once (other sentences), like a room full of people."""
    n = int(NOISE_CLIP_S * RATE)
    total = np.zeros(n, dtype=np.float64)
    for talker in range(BABBLE_TALKERS):
        text = SENTENCES[(index * BABBLE_TALKERS + talker) % len(SENTENCES)]
        voice = VOICES[(index + talker) % len(VOICES)]
        speech = speak(text, voice).astype(np.float64)
        loop = np.resize(np.concatenate((speech, np.zeros(RATE // 4))), n)
        total += np.roll(loop, int(rng.integers(0, n)))
    total *= _level(-20.0) / max(float(np.sqrt(np.mean(total**2))), 1e-12)
    return np.clip(np.rint(total), -FULL_SCALE, FULL_SCALE).astype(np.int16)


# ------------------------------------------------------------------------------- scoring


def scan(detector: WakeWordDetector, samples: Samples, start: int = 0) -> list[int]:
    """Feed `samples` in 20 ms chunks from stream position `start`; detection positions."""
    found = []
    position = start
    for offset in range(0, len(samples) - CHUNK + 1, CHUNK):
        position += CHUNK
        detection = detector.process(samples[offset : offset + CHUNK], position)
        if detection is not None:
            found.append(detection.position)
    return found


def fresh(backend: Backend, threshold: float | None = None) -> WakeWordDetector:
    """A detector for a new clip: a new stream, no refractory period running."""
    backend.reset()
    return WakeWordDetector(backend, RATE, threshold=threshold, refractory_s=DEFAULT_REFRACTORY_S)


def peak_score(backend: Backend, samples: Samples) -> float:
    """The highest score on `samples` (with a threshold nothing reaches, so nothing resets)."""
    detector = fresh(backend, threshold=1.0)
    scan(detector, samples)
    return detector.peak


def cut_point(
    backend: Backend, clip: Samples, phrase_end: int, command_start: int
) -> tuple[float, float] | None:
    """Milliseconds of the wake word sent and of the command lost (None: no detection).

    The pre-roll ring and the cut are the daemon's own (`CaptureHub.drop_wake_word`); the
    conversation takes the ring right after the detection.
    """
    detector = fresh(backend)
    ring = PrerollRing(RATE * 300 // 1000)  # audio.preroll_ms default
    position = 0
    for offset in range(0, len(clip) - CHUNK + 1, CHUNK):
        chunk = clip[offset : offset + CHUNK]
        position += CHUNK
        ring.append(chunk)
        if detector.process(chunk, position) is not None:
            low, high = RATE * WAKE_END_MIN_MS // 1000, RATE * WAKE_END_MAX_MS // 1000
            ring.cut_at_quietest(low, high - low)
            start = position - ring.samples  # the first sample handed to the conversation
            sent = max(0, phrase_end - start)
            lost = max(0, start - command_start)
            return 1000 * sent / RATE, 1000 * lost / RATE
    return None


def evaluate(model: str, *, backend: Backend | None = None, quick: bool = False) -> ModelReport:
    """Run the corpus for `model` through the real detector; `quick` takes a small sample."""
    rng = np.random.default_rng(SEED)
    backend = backend or load_backend(model)
    report = ModelReport(model, PHRASES[model], fresh(backend).threshold)
    peaks: dict[str, list[float]] = {}
    cpu_s = audio_s = 0.0
    voices = VOICES[:2] if quick else VOICES
    clips = [*positives(model, voices, rng), *negatives(model, voices, rng)]
    for clip in clips:
        started = time.thread_time()
        found = scan(fresh(backend), clip.samples)
        cpu_s += time.thread_time() - started
        audio_s += len(clip.samples) / RATE
        rates = report.categories.setdefault(clip.category, Rates(0, 0.0, 0, 0))
        rates.clips += 1
        rates.audio_s += len(clip.samples) / RATE
        rates.triggered += bool(found)
        rates.detections += len(found)
        peaks.setdefault(clip.category, []).append(peak_score(backend, clip.samples))
        if clip.category == "phrase" and found:
            report.latency_ms.append(1000 * (found[0] - clip.phrase_end) / RATE)
        elif clip.category == "phrase":
            voice = clip.label.split()[0]
            report.missed[voice] = report.missed.get(voice, 0) + 1
        elif found and not clip.category.startswith(POSITIVE):
            report.false_triggers.append(f"{clip.category}: {clip.label}")
    report.cpu_ms_per_s = 1000 * cpu_s / audio_s
    report.cpu_ms_per_s_48k = cpu_at_48k(backend, rng)
    for threshold in SWEEP:
        report.sweep[f"{threshold:g}"] = {
            category: sum(p > threshold for p in values) / len(values)
            for category, values in peaks.items()
        }
    for pause_ms in PAUSES_MS:
        cuts = report.cuts.setdefault(f"{pause_ms} ms", [])
        for voice in voices:
            for speed in SPEEDS_WPM:
                phrase, command = speak(PHRASES[model], voice, speed), speak(COMMAND, voice, speed)
                gap = room(RATE * pause_ms // 1000, rng)
                audio, end = framed(np.concatenate((phrase, gap, command)), rng)
                command_start = end - len(command)
                cut = cut_point(backend, audio, command_start - len(gap), command_start)
                if cut is not None:
                    cuts.append(cut)
    return report


def cpu_at_48k(backend: Backend, rng: np.random.Generator) -> float:
    """CPU ms per second of audio when the microphone runs at 48 kHz (resampled to 16 kHz)."""
    rate = 48000
    backend.reset()
    detector = WakeWordDetector(backend, rate)
    speech = framed(speak("Hello there, how are you today?"), rng)[0]
    stream = resample(
        np.concatenate([speech, noise("pink", int(NOISE_CLIP_S * RATE), -30.0, rng)]), RATE, rate
    )
    chunk = rate // 50
    started = time.thread_time()
    position = 0
    for offset in range(0, len(stream) - chunk + 1, chunk):
        position += chunk
        detector.process(stream[offset : offset + chunk], position)
    return 1000 * (time.thread_time() - started) / (len(stream) / rate)


# ------------------------------------------------------------------------------- output


def summary(report: ModelReport) -> dict[str, Any]:
    """JSON-ready figures."""
    data = asdict(report)
    data["categories"] = {
        name: {**asdict(r), "rate": round(r.rate, 4)} for name, r in report.categories.items()
    }
    data["latency_ms"] = _spread(report.latency_ms)
    data["cuts"] = {name: _cut_figures(values) for name, values in report.cuts.items()}
    return data


def _cut_figures(cuts: list[tuple[float, float]]) -> dict[str, float | int]:
    """Mean ms of the wake word sent and of the command lost, and how often each passed 30 ms."""
    if not cuts:
        return {"n": 0}
    sent, lost = [c[0] for c in cuts], [c[1] for c in cuts]
    return {
        "n": len(cuts),
        "wake_word_sent_mean_ms": round(statistics.mean(sent)),
        "wake_word_sent_over_30ms": sum(v > NOTICEABLE_MS for v in sent),
        "command_lost_mean_ms": round(statistics.mean(lost)),
        "command_lost_over_30ms": sum(v > NOTICEABLE_MS for v in lost),
    }


def _spread(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values)),
        "median": round(statistics.median(values)),
        "max": round(max(values)),
    }


def print_tables(reports: list[ModelReport]) -> None:
    """Markdown tables, ready for docs/wakeword.md."""
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    for r in reports:
        print(f"\n### {r.model} ('{r.phrase}'), threshold {r.threshold:g}\n")
        print("| category | clips | audio | clips triggered | detections |")
        print("|---|---|---|---|---|")
        for name, c in r.categories.items():
            hit = f"{c.triggered} ({100 * c.rate:.1f}%)"
            print(f"| {name} | {c.clips} | {c.audio_s / 60:.1f} min | {hit} | {c.detections} |")
        lat = _spread(r.latency_ms)
        print(f"\ndetection after the phrase ends: {lat} ms")
        per_voice = len(SPEEDS_WPM) * len(PITCHES)
        missed = ", ".join(f"{v} {n}/{per_voice}" for v, n in sorted(r.missed.items()))
        print(f"clean phrases missed, by voice: {missed or 'none'}")
        print(f"false triggers: {'; '.join(r.false_triggers) or 'none'}")
        print(
            "\n| pause after the wake word | wakes | wake word sent: mean, >30 ms "
            "| command lost: mean, >30 ms |"
        )
        print("|---|---|---|---|")
        for name, values in r.cuts.items():
            f = _cut_figures(values)
            if f["n"]:
                print(
                    f"| {name} | {f['n']} | {f['wake_word_sent_mean_ms']} ms, "
                    f"{f['wake_word_sent_over_30ms']} | {f['command_lost_mean_ms']} ms, "
                    f"{f['command_lost_over_30ms']} |"
                )
        print(
            f"CPU: {r.cpu_ms_per_s:.2f} ms per second of audio at 16 kHz "
            f"({r.cpu_ms_per_s / 10:.2f}% of real time), {r.cpu_ms_per_s_48k:.2f} ms at 48 kHz"
        )
        names = list(next(iter(r.sweep.values())))
        heads = [f"{n}: {'missed' if n.startswith(POSITIVE) else 'triggered'}" for n in names]
        print("\n| threshold | " + " | ".join(heads) + " |")
        print("|---" * (1 + len(names)) + "|")
        for threshold, rates in r.sweep.items():
            shown = [1 - v if n.startswith(POSITIVE) else v for n, v in rates.items()]
            print(f"| {threshold} | " + " | ".join(f"{100 * v:.1f}%" for v in shown) + " |")


def main(argv: list[str] | None = None) -> int:
    """Evaluate the chosen models; print tables, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=WAKEWORD_MODELS, action="append")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="2 voices, 1 noise clip of each")
    args = parser.parse_args(argv)
    if not espeak_available():
        print("espeak-ng is needed: apt-get install espeak-ng", file=sys.stderr)
        return 69
    reports = [evaluate(model, quick=args.quick) for model in args.model or WAKEWORD_MODELS]
    figures = {"machine": platform.machine(), "models": [summary(r) for r in reports]}
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print_tables(reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
