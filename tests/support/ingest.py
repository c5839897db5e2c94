"""What the ingestor tests share: reading one source's raw records back from Kafka,
waiting for a condition with a deadline, a simulator clock in the past (``pipeline
ingest`` as a child process is ``processes.IngestProcess``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.kafka.reading import read_to_end
from pipeline.model import UTC, decode_envelope
from pipeline.vendors._simulator import SimClock


async def raw_records(bootstrap: str, vendor: str, source: str) -> list[tuple[str | None, Any]]:
    """Every non-heartbeat (key, payload) of ``source`` in ``raw.<vendor>``, read to the end."""
    consumer = clients.consumer(bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[str | None, Any]] = []
    topic = catalog.raw_topic(vendor)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    try:
        async for record in read_to_end(consumer, partitions):
            envelope = decode_envelope(record.value)
            if envelope.source == source and not envelope.heartbeat:
                found.append((record.key.decode() if record.key else None, envelope.payload))
    finally:
        await consumer.stop()
    return found


async def wait_for(condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def past_clock(factor: float) -> SimClock:
    """A simulator clock whose vendor time starts two hours ago, so that even at a high
    factor it never runs ahead of real time: the session worker reads these raw topics
    too, and vendor times in the future would move its partitions' event time on."""
    return SimClock(factor=factor, epoch=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
