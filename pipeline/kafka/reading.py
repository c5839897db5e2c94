"""Reading topics: a partition list that waits for the topics to exist, and every record
up to the end a read first saw (the fetch high-water mark, which Tansu answers right,
unlike ListOffsets: docs/design.md, "Tansu")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.kafka.compat import refresh_metadata


class EndNotReached(TimeoutError):
    """A topic read did not reach the end it saw within its time."""


class TopicsMissing(LookupError):
    """Topics a consumer needs do not exist (``pipeline topics apply`` creates them)."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(f"topics {', '.join(topics)} do not exist: run `pipeline topics apply` first")
        self.topics = topics


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str], *, timeout_s: float = 10.0,
                        every_s: float = 0.2) -> list[TopicPartition]:
    """Every partition of ``topics``, refreshing the consumer's metadata until each topic is
    known (a topic created after the consumer started is not, until then)."""
    topics = list(topics)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [t for t in topics if not consumer.partitions_for_topic(t)]
        if not missing:
            return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]
        if time.monotonic() > deadline:
            raise TopicsMissing(missing)
        await refresh_metadata(consumer)
        if [t for t in topics if not consumer.partitions_for_topic(t)]:
            await asyncio.sleep(every_s)


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *, timeout_s: float = 30.0,
) -> AsyncIterator[Any]:
    """Every record of ``partitions`` (assigned and positioned by the caller) up to their end
    as first seen, even while writers keep appending."""
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batches = await consumer.getmany(*partitions, timeout_ms=300)
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if tp not in ends and highwater is not None:
                ends[tp] = highwater
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends.get(tp, record.offset + 1):
                    yield record
        if len(ends) == len(partitions) and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
            return
    raise EndNotReached(f"reading {partitions[0].topic} did not reach its end within {timeout_s:.0f} s")


async def highwaters(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *,
                     timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """Each partition's end from a fetch's high-water mark (0 if none came in time);
    the consumer is assigned ``partitions`` and read from their beginning."""
    if not partitions:
        return {}
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    deadline = time.monotonic() + timeout_s
    pending = set(partitions)
    while pending and time.monotonic() < deadline:
        await consumer.getmany(*pending, timeout_ms=300, max_records=1)
        pending = {tp for tp in pending if consumer.highwater(tp) is None}
    return {tp: consumer.highwater(tp) or 0 for tp in partitions}
