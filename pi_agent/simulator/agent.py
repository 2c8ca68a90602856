"""The simulator's echo agent: energy VAD, turn taking and paced replies; pure logic, told the time.

The server feeds it user audio and text with the current time and sends whatever `poll()` returns.
Event ids are turn ids (reference 4.5, elevenlabs-python #829): user turn N gets id N, and the
transcript, response and every audio chunk of the reply to it carry N. A barge-in sends
`interruption` with the new turn's id, so stale audio has ids below N and the new reply has N.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pi_agent.core import protocol
from pi_agent.core.audio import formats, resample
from pi_agent.core.audio.formats import AudioFormat

Int16Array = npt.NDArray[np.int16]

FRAME_MS = 20  # VAD analysis frame: the usual speech-codec frame, short enough to react fast
SPEECH_THRESHOLD_DBFS = -40.0  # frame RMS above this is speech; mic noise floors sit far below
SPEECH_START_MS = 60  # this much consecutive speech opens a turn, so clicks and pops do not
TURN_END_SILENCE_MS = 500  # this much silence closes a turn, so pauses between words do not
VAD_SCORE_INTERVAL_MS = 100  # vad_score cadence while the user speaks (audio time)
TENTATIVE_INTERVAL_MS = 500  # tentative_user_transcript cadence while the user speaks
VAD_SCORE_SLOPE_DB = 3.0  # logistic width of energy -> score: 0.5 at threshold, 0.95 at +9 dB
INPUT_GAP_END_TURN_S = 1.0  # wall time: a client that stops streaming mid-turn still gets a reply
MAX_TURN_MS = 30_000  # longer speech is answered in pieces, which bounds the memory of a turn
TONE_LEVEL_DBFS = -20.0  # level of synthesized agent audio: clearly audible, far from clipping
FADE_MS = 10  # raised-cosine ramps on synthesized audio, so it starts and stops without clicks
GREETING_S = 0.5  # length of the greeting's sweep
GREETING_LOW_HZ = 300.0  # sweep range: inside telephone bandwidth, so ulaw_8000 keeps it
GREETING_HIGH_HZ = 900.0
TEXT_REPLY_S = 0.3  # tone that voices a reply to a typed user_message
TEXT_REPLY_HZ = 660.0
SINE_RMS_DB = 20 * math.log10(math.sqrt(2))  # a sine's peak is 3.01 dB above its RMS
MS_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class EchoConfig:
    """Formats and pacing of one conversation's echo agent."""

    input_format: AudioFormat
    output_format: AudioFormat
    audio_chunk_ms: int = 250
    speak_rate: float = 2.0  # audio is sent this many times faster than real time; 0 = at once
    threshold_dbfs: float = SPEECH_THRESHOLD_DBFS
    tentative_transcripts: bool = True


@dataclass(slots=True)
class AgentTurn:
    """One agent reply: its id, texts, the whole planned audio and how much of it went out."""

    event_id: int
    agent_response: str
    audio: bytes  # the full reply in the output format, as planned
    user_transcript: str | None = None  # None for the greeting and for replies to text
    chunks_total: int = 0
    chunks_sent: int = 0
    interrupted: bool = False
    corrected_response: str | None = None


def tone(
    freq_hz: float, duration_s: float, rate: int, level_dbfs: float = TONE_LEVEL_DBFS
) -> Int16Array:
    """A sine of `freq_hz` whose RMS is `level_dbfs`, with short fades at both ends."""
    return sweep(freq_hz, freq_hz, duration_s, rate, level_dbfs)


def sweep(
    start_hz: float,
    end_hz: float,
    duration_s: float,
    rate: int,
    level_dbfs: float = TONE_LEVEL_DBFS,
) -> Int16Array:
    """A linear chirp from start_hz to end_hz at RMS `level_dbfs`, faded in and out."""
    n = round(duration_s * rate)
    t = np.arange(n, dtype=np.float64) / rate
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t * t / (2 * max(duration_s, 1e-9)))
    peak = 10 ** ((level_dbfs + SINE_RMS_DB) / 20)
    x = peak * np.sin(phase)
    fade = min(n // 2, round(rate * FADE_MS / MS_PER_S))
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    return formats.from_float(x)


def split_chunks(data: bytes, fmt: AudioFormat, chunk_ms: int) -> list[bytes]:
    """Cut wire audio into chunks of `chunk_ms` (the last may be shorter); never splits a sample."""
    size = max(fmt.bytes_for_ms(chunk_ms), fmt.bytes_per_sample)
    return [data[i : i + size] for i in range(0, len(data), size)]


def due_offsets(durations_s: Sequence[float], speak_rate: float) -> list[float]:
    """Seconds after the first chunk at which each chunk is due when sent at `speak_rate`."""
    offsets: list[float] = []
    elapsed = 0.0
    for duration in durations_s:
        offsets.append(elapsed / speak_rate if speak_rate > 0 else 0.0)
        elapsed += duration
    return offsets


def played_s(send_times: Sequence[float], durations_s: Sequence[float], now: float) -> float:
    """Audio a real-time player has played by `now`, starting each chunk when it has arrived."""
    cursor = -math.inf
    played = 0.0
    for sent, duration in zip(send_times, durations_s, strict=False):
        start = max(cursor, sent)
        if now <= start:
            break
        played += min(now - start, duration)
        cursor = start + duration
    return played


def playback_end(send_times: Sequence[float], durations_s: Sequence[float]) -> float:
    """When a real-time player finishes the chunks sent so far (-inf when none were sent)."""
    cursor = -math.inf
    for sent, duration in zip(send_times, durations_s, strict=False):
        cursor = max(cursor, sent) + duration
    return cursor


def truncate_text(text: str, fraction: float) -> str:
    """The first `fraction` of `text`, cut back to a whole word (what had been spoken)."""
    if fraction >= 1.0:
        return text
    cut = max(0, math.floor(len(text) * fraction))
    if cut < len(text) and not text[cut].isspace():
        space = text.rfind(" ", 0, cut + 1)
        cut = space if space >= 0 else 0
    return text[:cut].rstrip()


def vad_score(level_dbfs: float, threshold_dbfs: float) -> float:
    """Map a frame level to a 0..1 speech probability (logistic around the threshold)."""
    if level_dbfs == -math.inf:
        return 0.0
    z = (level_dbfs - threshold_dbfs) / VAD_SCORE_SLOPE_DB
    return round(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))), 3)


@dataclass(slots=True)
class _Reply:
    turn: AgentTurn
    chunks: list[bytes]
    durations_s: list[float]
    due: list[float]  # absolute times
    send_times: list[float] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(self.durations_s)


class EchoAgent:
    """Answers each user turn with its own audio; see the module docstring for event ids."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.turns: list[AgentTurn] = []
        self._last_id = 0
        self._outbox: list[protocol.Message] = []
        self._reply: _Reply | None = None
        fmt = config.input_format
        self._frame_len = fmt.samples_for_ms(FRAME_MS)
        self._pending = np.zeros(0, dtype=np.int16)  # samples not yet a whole frame
        self._speaking = False  # inside a user turn
        self._run_frames: list[Int16Array] = []  # consecutive speech frames before a turn opens
        self._turn_frames: list[Int16Array] = []
        self._turn_id = 0
        self._last_speech = 0  # index in _turn_frames of the last speech frame
        self._silent_frames = 0
        self._last_audio_at = 0.0

    @property
    def last_event_id(self) -> int:
        """The newest turn id handed out (0 before the first)."""
        return self._last_id

    def greet(self, text: str, now: float) -> None:
        """Speak `text` as the agent's first message, voiced by a short sweep."""
        rate = self.config.output_format.sample_rate
        audio = sweep(GREETING_LOW_HZ, GREETING_HIGH_HZ, GREETING_S, rate)
        self._start_reply(self._new_id(), text, audio, None, now)

    def receive_text(self, text: str, now: float) -> None:
        """A typed user_message: a new turn that interrupts and gets a short voiced reply."""
        turn_id = self._new_id()
        self._interrupt(turn_id, now)
        rate = self.config.output_format.sample_rate
        audio = tone(TEXT_REPLY_HZ, TEXT_REPLY_S, rate)
        self._start_reply(turn_id, f'You wrote "{text}". Here is a tone.', audio, None, now)

    def receive_audio(self, samples: Int16Array, now: float) -> None:
        """Feed user audio (int16 at the input rate); turn events go to the outbox."""
        self._last_audio_at = now
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        whole = data.size - data.size % self._frame_len
        for start in range(0, whole, self._frame_len):
            self._frame(data[start : start + self._frame_len], now)
        self._pending = data[whole:].copy()

    def poll(self, now: float) -> list[protocol.Message]:
        """Everything due by `now`: queued events, then reply chunks whose time has come."""
        if self._speaking and now - self._last_audio_at >= INPUT_GAP_END_TURN_S:
            self._end_turn(now)
        reply = self._reply
        if reply is not None:
            while (
                len(reply.send_times) < len(reply.chunks)
                and reply.due[len(reply.send_times)] <= now
            ):
                index = len(reply.send_times)
                reply.send_times.append(now)
                reply.turn.chunks_sent += 1
                encoded = base64.b64encode(reply.chunks[index]).decode("ascii")
                self._outbox.append(
                    protocol.Audio(audio_base_64=encoded, event_id=reply.turn.event_id)
                )
            if not self.is_speaking(now):
                self._reply = None
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        """The next time poll() has something to do by itself, or None."""
        deadlines: list[float] = []
        reply = self._reply
        if reply is not None:
            if len(reply.send_times) < len(reply.chunks):
                deadlines.append(reply.due[len(reply.send_times)])
            else:
                deadlines.append(playback_end(reply.send_times, reply.durations_s))
        if self._speaking:
            deadlines.append(self._last_audio_at + INPUT_GAP_END_TURN_S)
        if self._outbox:
            deadlines.append(-math.inf)
        return min(deadlines) if deadlines else None

    def is_speaking(self, now: float) -> bool:
        """Whether reply audio is still being sent or, by real-time playback, still heard."""
        reply = self._reply
        if reply is None:
            return False
        if len(reply.send_times) < len(reply.chunks):
            return True
        return now < playback_end(reply.send_times, reply.durations_s)

    # ------------------------------------------------------------------ internals

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _frame(self, frame: Int16Array, now: float) -> None:
        level = formats.rms_dbfs(frame)
        speech = level > self.config.threshold_dbfs
        if not self._speaking:
            if not speech:
                self._run_frames.clear()
                return
            self._run_frames.append(frame)
            if len(self._run_frames) * FRAME_MS >= SPEECH_START_MS:
                self._open_turn(now)
            return
        self._turn_frames.append(frame)
        if speech:
            self._last_speech = len(self._turn_frames) - 1
            self._silent_frames = 0
        else:
            self._silent_frames += 1
        count = len(self._turn_frames)
        if count % (VAD_SCORE_INTERVAL_MS // FRAME_MS) == 0:
            recent = np.concatenate(self._turn_frames[-(VAD_SCORE_INTERVAL_MS // FRAME_MS) :])
            score = vad_score(formats.rms_dbfs(recent), self.config.threshold_dbfs)
            self._outbox.append(protocol.VadScore(vad_score=score))
        tentative_due = count % (TENTATIVE_INTERVAL_MS // FRAME_MS) == 0
        if self.config.tentative_transcripts and speech and tentative_due:
            text = f"({self._speech_s():.1f} seconds of speech so far)"
            self._outbox.append(protocol.TentativeUserTranscript(text, event_id=self._turn_id))
        if self._silent_frames * FRAME_MS >= TURN_END_SILENCE_MS or count * FRAME_MS >= MAX_TURN_MS:
            self._end_turn(now)

    def _open_turn(self, now: float) -> None:
        self._speaking = True
        self._turn_id = self._new_id()
        self._turn_frames = list(self._run_frames)
        self._run_frames.clear()
        self._last_speech = len(self._turn_frames) - 1
        self._silent_frames = 0
        self._interrupt(self._turn_id, now)

    def _speech_s(self) -> float:
        frames = self._turn_frames[: self._last_speech + 1]
        return sum(f.size for f in frames) / self.config.input_format.sample_rate

    def _end_turn(self, now: float) -> None:
        speech = self._turn_frames[: self._last_speech + 1]
        self._speaking = False
        self._turn_frames = []
        self._silent_frames = 0
        captured = np.concatenate(speech) if speech else np.zeros(0, dtype=np.int16)
        seconds = captured.size / self.config.input_format.sample_rate
        transcript = f"({seconds:.2f} seconds of speech)"
        self._outbox.append(protocol.UserTranscript(transcript, event_id=self._turn_id))
        src = self.config.input_format.sample_rate
        audio = resample.resample(captured, src, self.config.output_format.sample_rate)
        text = f"You said something {seconds:.1f} seconds long. Here it is back."
        self._start_reply(self._turn_id, text, audio, transcript, now)

    def _interrupt(self, new_id: int, now: float) -> None:
        """Barge-in: stop the current reply and say how much of its text was heard."""
        reply = self._reply
        if reply is None or not self.is_speaking(now):
            self._reply = None
            return
        self._reply = None
        fraction = played_s(reply.send_times, reply.durations_s, now) / max(reply.total_s, 1e-9)
        original = reply.turn.agent_response
        corrected = truncate_text(original, fraction)
        reply.turn.interrupted = True
        reply.turn.corrected_response = corrected
        self._outbox.append(protocol.Interruption(event_id=new_id))
        self._outbox.append(
            protocol.AgentResponseCorrection(original, corrected, event_id=reply.turn.event_id)
        )

    def _start_reply(
        self, turn_id: int, text: str, samples: Int16Array, transcript: str | None, now: float
    ) -> None:
        fmt = self.config.output_format
        data = formats.encode(samples, fmt)
        chunks = split_chunks(data, fmt, self.config.audio_chunk_ms)
        durations = [fmt.duration_s(len(c)) for c in chunks]
        offsets = due_offsets(durations, self.config.speak_rate)
        turn = AgentTurn(turn_id, text, data, transcript, chunks_total=len(chunks))
        self.turns.append(turn)
        # agent_response goes out with the first audio chunk (reference 3).
        self._outbox.append(protocol.AgentResponse(text, event_id=turn_id))
        self._reply = _Reply(turn, chunks, durations, [now + o for o in offsets])
