"""Send many records as one Kafka batch per topic-partition.

Faust's ``producer.send`` costs ~30-100 us a record (a future, a callback, a metadata
check, a lookup of the partition's open batch, each time: docs/design.md, "Faust"); the worker sends a
few thousand records per consumed batch. aiokafka's batch API (``create_batch``,
``BatchBuilder.append``, ``send_batch``) does the per-record work in its C record builder
and leaves one future per batch. Records without a partition go where aiokafka's default
partitioner (murmur2 of the key, as the Java client) would put them, so a key lands in the
same partition as with ``producer.send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Record = tuple[str, bytes | None, bytes | None, int | None]
"""(topic, key, value, partition or None); a value of None is a tombstone."""


class BatchSender:
    """Sends records through ``producer`` (started; the caller owns it), one batch per
    topic-partition and size limit, and waits until Kafka acknowledged every batch."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()

    async def send(self, records: Iterable[Record]) -> dict[tuple[str, int], int]:
        """Send ``records``, keeping their order within each topic-partition. Returns
        the offset of the last record written per (topic, partition)."""
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value, partition in records:
            if partition is None:
                partition = await self._partition(topic, key)
            target = grouped.get((topic, partition))
            if target is None:
                target = grouped[(topic, partition)] = []
            target.append((key, value))
        sent: list[tuple[tuple[str, int], int, asyncio.Future]] = []
        for (topic, partition), pairs in grouped.items():
            batch, count = self._producer.create_batch(), 0
            for key, value in pairs:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send, start the next
                    batch.close()
                    sent.append(((topic, partition), count, await self._producer.send_batch(batch, topic, partition=partition)))
                    batch, count = self._producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
                count += 1
            batch.close()
            sent.append(((topic, partition), count, await self._producer.send_batch(batch, topic, partition=partition)))
        results = await asyncio.gather(*(future for _, _, future in sent))
        last: dict[tuple[str, int], int] = {}
        for (tp, count, _), metadata in zip(sent, results):
            last[tp] = metadata.offset + count - 1
        return last

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = sorted(await self._producer.partitions_for(topic))  # cached by aiokafka's metadata
        return self._partitioner(key, partitions, partitions)
