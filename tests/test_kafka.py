"""pipeline/kafka/ against a real embedded broker: the client factory, the probes, a topic
read to its end, and the one private aiokafka call (a topic created after a consumer
started is found)."""

from __future__ import annotations

import uuid

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients, probes
from pipeline.kafka.reading import highwaters, partitions_of, read_to_end
from pipeline.settings import Settings


async def test_every_client_kind_takes_the_settings_or_an_address(broker):
    """Through the settings or an address, the clients reach the same broker."""
    settings = Settings(bootstrap=broker.bootstrap)
    topic = f"t.kafka.{uuid.uuid4().hex[:8]}"
    admin = clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = clients.producer(settings, client_id="jobstream-test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"v", key=b"k")
    finally:
        await producer.stop()
    consumer = clients.consumer(broker.bootstrap)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, [topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        assert [(r.key, r.value) async for r in read_to_end(consumer, partitions)] == [(b"k", b"v")]
    finally:
        await consumer.stop()


def test_a_broker_answers_the_probe_and_a_stopped_one_does_not(tmp_path):
    embedded = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    try:
        assert probes.any_broker_answers(embedded.bootstrap)
    finally:
        embedded.stop()
    assert not probes.any_broker_answers(embedded.bootstrap, timeout=0.2)


async def test_a_topic_created_after_the_consumer_started_is_found_and_read_to_its_end(broker):
    topic = f"t.kafka.{uuid.uuid4().hex[:8]}"
    consumer = clients.consumer(broker.bootstrap)
    await consumer.start()
    try:
        admin = clients.admin(broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()
        producer = clients.producer(broker.bootstrap)
        await producer.start()
        try:
            for n in range(5):
                await producer.send_and_wait(topic, str(n).encode(), partition=n % 2)
        finally:
            await producer.stop()
        partitions = await partitions_of(consumer, [topic])  # refreshes the metadata (kafka/compat.py)
        assert partitions == [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values = sorted([record.value async for record in read_to_end(consumer, partitions, timeout_s=30)])
        assert values == [b"0", b"1", b"2", b"3", b"4"]
        assert await highwaters(consumer, partitions) == {partitions[0]: 3, partitions[1]: 2}
    finally:
        await consumer.stop()
