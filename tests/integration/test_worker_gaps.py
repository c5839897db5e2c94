"""Issue 32.2: a raw partition whose offsets skip, through a real worker on its own
embedded broker (so the offsets are known). A hole (what transaction markers and
compaction leave on Kafka) must not end the worker; records Faust did not hand over must
be read again in the process, not by a restart."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.stream import faults
from tests.support.kafka import collect, decode
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

TOPIC = catalog.raw_topic("truenas")
KEY = b"truenas:gap:gap.job"


def envelope(job_id: int, state: str) -> bytes:
    doc = {"id": job_id, "method": "gap.job", "state": state, "time_started": {"$date": 1_700_000_000_000 + job_id},
           "progress": {"percent": None, "description": None, "extra": None}}
    if state == "SUCCESS":
        doc["time_finished"] = {"$date": 1_700_000_060_000 + job_id}
    return encode_envelope(RawEnvelope(vendor="truenas", source="gap", received_at=datetime.now(UTC), payload=doc))


async def produce(bootstrap: str, values: list[bytes], *, every_other_offset: bool = False) -> None:
    """Records to partition 0; with ``every_other_offset``, one batch whose records sit
    at offset deltas 0, 2, 4 ... (the holes a log cleaner or transaction markers leave)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        if not every_other_offset:
            for value in values:
                await producer.send_and_wait(TOPIC, value, key=KEY, partition=0)
            return
        batch = producer.create_batch()
        for index, value in enumerate(values):
            batch._builder.append(2 * index, timestamp=int(time.time() * 1000), key=KEY, value=value, headers=[])
            batch._relative_offset = 2 * index + 1
        batch.close()
        await (await producer.send_batch(batch, TOPIC, partition=0))
    finally:
        await producer.stop()


async def event_offsets(bootstrap: str, count: int) -> list[int]:
    found = await collect(bootstrap, catalog.EVENTS, lambda k, v: k == KEY, count=count, timeout=90)
    return sorted(decode(value)["raw_ref"]["offset"] for _key, value in found)


@pytest.fixture
def own_broker(tmp_path):
    broker = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    asyncio.run(catalog.apply(broker.bootstrap))
    yield broker
    broker.stop()


def start_worker(broker: EmbeddedBroker, tmp_path, **env: str) -> WorkerProcess:
    worker = WorkerProcess(broker.bootstrap, "gaps", tmp_path / "data", tmp_path / "worker.log", **env)
    worker.args[worker.args.index("--loglevel") + 1] = "info"
    return worker.start()


async def test_a_hole_in_a_raw_partition_is_gone_past_and_the_worker_keeps_running(own_broker, tmp_path):
    await produce(own_broker.bootstrap, [envelope(1, "RUNNING")])
    await produce(own_broker.bootstrap, [envelope(1, "SUCCESS"), envelope(2, "RUNNING")], every_other_offset=True)
    worker = start_worker(own_broker, tmp_path)
    try:
        assert await event_offsets(own_broker.bootstrap, 3) == [0, 1, 3]
        await produce(own_broker.bootstrap, [envelope(2, "SUCCESS")])
        assert await event_offsets(own_broker.bootstrap, 4) == [0, 1, 3, 4]
        assert worker.process.poll() is None, worker.tail()
        assert "offsets 2-2 hold no records" in worker.log.read_text(errors="replace")
    finally:
        code = worker.stop()
    assert code in (0, -15), worker.tail()


async def test_a_record_not_handed_over_is_read_again_in_the_process(own_broker, tmp_path):
    await produce(own_broker.bootstrap, [envelope(1, "RUNNING"), envelope(1, "SUCCESS"),
                                         envelope(2, "RUNNING"), envelope(2, "SUCCESS")])
    worker = start_worker(own_broker, tmp_path, **{faults.ENV: f"hide:{TOPIC}:0:1"})
    try:
        assert await event_offsets(own_broker.bootstrap, 4) == [0, 1, 2, 3]
        assert worker.process.poll() is None, worker.tail()
        assert "read again from 1" in worker.log.read_text(errors="replace")
    finally:
        code = worker.stop()
    assert code in (0, -15), worker.tail()
