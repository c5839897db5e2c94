"""pipeline/kafka/ against a real embedded broker: the client factory, the probes, a topic
read to its end, and the one private aiokafka call (a topic created after a consumer
started is found)."""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import UnknownError

from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients, probes
from pipeline.kafka.reading import highwaters, partitions_of, read_to_end
from pipeline.settings import Settings, host_port
from tests.support.kafka import group_members


async def _create_topic(admin, topic: str, *, partitions: int) -> None:
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def test_every_client_kind_takes_the_settings_or_an_address(broker):
    """Through the settings or an address, the clients reach the same broker."""
    settings = Settings(bootstrap=broker.bootstrap)
    topic = f"t.kafka.{uuid.uuid4().hex[:8]}"
    await _create_topic(clients.admin(settings), topic, partitions=1)
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
        await _create_topic(clients.admin(broker.bootstrap), topic, partitions=2)
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


async def _answer_init_producer_id(error_code: int) -> tuple[asyncio.base_events.Server, int]:
    """A server that answers every request as InitProducerId v0 would (``error_code``):
    a broker's side of the one question ``clients.idempotent`` asks."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        request = await reader.readexactly(size)
        correlation = request[4:8]
        body = correlation + struct.pack(">ihqh", 0, error_code, 7, 0)
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_producers_are_idempotent_where_the_broker_serves_init_producer_id(broker):
    """Case 15: on unless the broker refuses aiokafka's InitProducerId (v0). Tansu 0.6.0
    answers it with error -1, and an idempotent producer cannot start against it."""
    assert await asyncio.to_thread(probes.serves_idempotence, *host_port(broker.bootstrap)) is False
    assert clients.idempotent(broker.bootstrap) is False
    assert clients.producer(broker.bootstrap)._txn_manager is None
    refused = clients.producer(clients.Connection(broker.bootstrap, idempotent=True))
    with pytest.raises(UnknownError):
        await asyncio.wait_for(refused.start(), 30)
    await refused.stop()
    server, port = await _answer_init_producer_id(0)
    async with server:
        serving = f"127.0.0.1:{port}"
        assert await asyncio.to_thread(clients.idempotent, serving) is True
        assert clients.producer(serving)._txn_manager is not None  # enable_idempotence on
    assert clients.idempotent(Settings(bootstrap=broker.bootstrap, kafka_idempotence=True)) is True
    assert clients.idempotent(Settings(bootstrap=serving, kafka_idempotence=False)) is False


async def test_a_group_member_leaves_its_group_when_it_stops_from_generation_0_too(broker):
    """Tansu numbers a new group's first generation 0, and aiokafka leaves only from a
    generation above 0: the stopped member stayed in the group until its session timed
    out, and the next member's join waited for it (kafka/compat.py, ``leaves_its_group``)."""
    topic, group = f"t.leave.{uuid.uuid4().hex[:8]}", f"t-leave-{uuid.uuid4().hex[:8]}"
    await _create_topic(clients.admin(broker.bootstrap), topic, partitions=1)
    consumer = clients.consumer(broker.bootstrap, topic, group_id=group, session_timeout_ms=10_000)
    await consumer.start()
    try:
        async def joined() -> None:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)

        await asyncio.wait_for(joined(), 60)
        assert consumer._coordinator.generation == 0  # the premise: what Tansu 0.6 answers a first join
        assert len(await group_members(broker.bootstrap, group)) == 1
    finally:
        await consumer.stop()
    assert await group_members(broker.bootstrap, group) == []
