"""Shortened soak (the full one is `scripts/soak.py`): nothing grows, no pong is missed."""

from __future__ import annotations

import asyncio

from scripts import soak

FD_SLACK = 2  # a descriptor or two may be cached by the resolver or the event loop
RSS_SLACK_KIB = 4096  # allocator noise over a short run


def test_many_conversations_leak_nothing() -> None:
    report = asyncio.run(asyncio.wait_for(soak.soak_conversations(15, every=5), 120))
    assert report.conversations == 15
    assert report.failures == []
    assert report.pings > 0
    assert report.missed_pongs == 0
    first, last = report.snapshots[1], report.snapshots[-1]  # after warm-up vs the end
    assert last.fds <= first.fds + FD_SLACK
    assert last.threads == first.threads
    assert last.tasks == first.tasks
    assert last.rss_kib <= first.rss_kib + RSS_SLACK_KIB


def test_a_long_conversation_keeps_its_queues_small() -> None:
    report = asyncio.run(asyncio.wait_for(soak.soak_continuous(12.0, every_s=4.0), 60))
    assert report.failures == []
    assert report.missed_pongs == 0
    assert report.capture_dropped == 0
    assert report.max_capture_queue <= 5  # the sender keeps up: chunks do not pile up
    start, end = report.snapshots[0], report.snapshots[-1]
    assert end.fds <= start.fds + FD_SLACK
    assert end.tasks <= start.tasks + 1
