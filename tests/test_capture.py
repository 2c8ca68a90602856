"""Pre-roll: audio from before a conversation starts reaches it, in order, nothing lost."""

from __future__ import annotations

import asyncio

import numpy as np

from pi_agent.adapters.audio.capture import CaptureHub
from pi_agent.adapters.audio.devices import ChunkQueue, Samples
from pi_agent.core.audio.preroll import PrerollRing

RATE = 16000
CHUNK = 320  # 20 ms


def numbered(i: int) -> Samples:
    return np.full(CHUNK, i, dtype=np.int16)


def test_ring_keeps_the_newest_audio_up_to_its_limit() -> None:
    ring = PrerollRing(1000)
    for i in range(10):
        ring.append(numbered(i))
    kept = ring.take()
    assert [int(c[0]) for c in kept] == [6, 7, 8, 9]  # 4 x 320 >= 1000 > 3 x 320
    assert ring.samples == 0
    off = PrerollRing(0)
    off.append(numbered(1))
    assert off.take() == []


class CountingMic:
    """Delivers numbered 20 ms chunks every `period_s` (a stand-in for a device thread)."""

    sample_rate = RATE
    chunk_samples = CHUNK
    finished = False

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.count = 0

    async def run(self, queue: ChunkQueue) -> None:
        while True:
            queue.put_nowait(numbered(self.count))
            self.count += 1
            await asyncio.sleep(self.period_s)


def test_conversation_gets_preroll_then_live_audio_without_gaps() -> None:
    async def main() -> None:
        mic = CountingMic(0.002)
        hub = CaptureHub(mic, preroll_ms=100)  # 5 chunks
        device = asyncio.create_task(hub.run_device())
        await asyncio.sleep(0.1)  # idle: about 50 chunks captured, the newest 5 kept
        queue = ChunkQueue(1000)
        borrowed = hub.borrow()
        conversation = asyncio.create_task(borrowed.run(queue))
        await asyncio.sleep(0.05)
        conversation.cancel()
        await asyncio.gather(conversation, return_exceptions=True)
        after_end = mic.count
        await asyncio.sleep(0.02)
        device.cancel()
        await asyncio.gather(device, return_exceptions=True)
        got = []
        while queue.qsize():
            got.append(int((await queue.get())[0]))
        assert borrowed.preroll_samples == 5 * CHUNK
        assert got == list(range(got[0], got[0] + len(got)))  # consecutive: nothing lost
        assert got[-1] == after_end - 1  # live audio flowed until the conversation ended
        assert len(got) > 5
        # Back to idle: new audio goes to the ring again, not to the old queue.
        assert hub.ring.samples > 0

    asyncio.run(asyncio.wait_for(main(), 10))


class BatchingMic(CountingMic):
    """A CountingMic with the PyAudio microphone's `batch` knob."""

    batch = 1


def test_the_hub_batches_idle_capture_and_not_conversations_or_wake_words() -> None:
    from pi_agent.adapters.audio.capture import IDLE_BATCH_CHUNKS

    mic = BatchingMic(0.01)
    hub = CaptureHub(mic, 300)
    assert mic.batch == IDLE_BATCH_CHUNKS  # idle, nobody listening
    hub.begin(ChunkQueue(100))
    assert mic.batch == 1  # a conversation gets every chunk as it comes
    hub.end()
    assert mic.batch == IDLE_BATCH_CHUNKS

    def listener(chunk: Samples, position: int) -> None:
        pass

    hub.add_idle_listener(listener)
    assert mic.batch == 1  # a wake word detector too
    hub.remove_idle_listener(listener)
    assert mic.batch == IDLE_BATCH_CHUNKS
