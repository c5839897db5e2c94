"""BatchSender on the embedded broker: records land where aiokafka's own ``send`` puts
them, in order, split over as many batches as their size needs, with the offsets Kafka
gave them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.stream.batches import BatchSender

pytestmark = pytest.mark.integration


async def _topic(bootstrap: str, partitions: int = 4) -> str:
    name = f"test-batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of ``count`` records, read from the start."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[int, int, bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out += [(r.partition, r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return out


async def _producer(bootstrap: str, **options) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **options)
    await producer.start()
    return producer


def test_records_without_a_partition_land_where_the_default_partitioner_puts_them(broker):
    async def scenario() -> None:
        ours, theirs = await _topic(broker.bootstrap), await _topic(broker.bootstrap)
        keys = [f"job-{n}".encode() for n in range(200)]
        producer = await _producer(broker.bootstrap)
        try:
            await BatchSender(producer).send((ours, key, b"v", None) for key in keys)
            await asyncio.gather(*[await producer.send(theirs, b"v", key=key) for key in keys])
        finally:
            await producer.stop()
        placed = {key: partition for partition, _, key, _ in await _read(broker.bootstrap, ours, len(keys))}
        expected = {key: partition for partition, _, key, _ in await _read(broker.bootstrap, theirs, len(keys))}
        assert placed == expected
        assert len(set(placed.values())) == 4  # the keys really spread: the check means something

    asyncio.run(scenario())


def test_order_per_partition_batches_split_by_size_and_last_offsets(broker):
    async def scenario() -> None:
        topic = await _topic(broker.bootstrap)
        records = [(topic, f"k{n}".encode(), f"{n:05d}".encode() * 40, n % 2) for n in range(300)]
        producer = await _producer(broker.bootstrap, max_batch_size=4096)  # ~20 records a batch
        try:
            last = await BatchSender(producer).send(records)
        finally:
            await producer.stop()
        read = await _read(broker.bootstrap, topic, len(records))
        for partition in (0, 1):
            values = [value for p, _, _, value in sorted(read) if p == partition]
            assert values == [value for _, _, value, p in records if p == partition]
            assert last[(topic, partition)] == max(offset for p, offset, _, _ in read if p == partition)
        assert set(last) == {(topic, 0), (topic, 1)}

    asyncio.run(scenario())


def test_a_tombstone_is_sent_as_a_record_without_value(broker):
    async def scenario() -> None:
        topic = await _topic(broker.bootstrap, partitions=1)
        producer = await _producer(broker.bootstrap)
        try:
            await BatchSender(producer).send([(topic, b"a", b"1", 0), (topic, b"a", None, 0)])
        finally:
            await producer.stop()
        assert [(key, value) for _, _, key, value in await _read(broker.bootstrap, topic, 2)] == [(b"a", b"1"), (b"a", None)]

    asyncio.run(scenario())
