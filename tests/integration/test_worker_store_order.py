"""The RocksDB store across restarts.

Issue 32.4: the store must never get ahead of the changelog. The worker is killed between
the two writes of step 3 (app.py's failure table, row 3a), restarted on its own datadir,
then the partition moves to a new owner that recovers from the changelog alone: the new
owner must see the run the first one applied.

Issue 39: a restarted worker indexes its stored entries from the due each one carries,
read from RocksDB as stored, and a run goes STALE on time from there."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key
from pipeline.stream import faults
from tests.support.kafka import collect, decode
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

TOPIC = catalog.raw_topic("truenas")


def update(source: str, method: str, state: str, started: datetime, received: datetime | None = None) -> tuple[bytes, bytes]:
    fields = {"id": 1, "method": method, "state": state, "time_started": {"$date": int(started.timestamp() * 1000)},
              "progress": {"percent": None, "description": None, "extra": None}}
    if state == "SUCCESS":
        fields["time_finished"] = {"$date": int((started + timedelta(seconds=30)).timestamp() * 1000)}
    envelope = RawEnvelope(vendor="truenas", source=source, received_at=received or datetime.now(UTC), payload=fields)
    return f"truenas:{source}:{method}".encode(), encode_envelope(envelope)


async def produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    """To partition 0 (its changelog partition is 0 too), whatever the key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(TOPIC, value, key=key, partition=0)
    finally:
        await producer.stop()


async def moves(bootstrap: str, key: bytes, count: int) -> list[tuple]:
    found = await collect(bootstrap, catalog.TRANSITIONS, lambda k, v: k == key, count=count, timeout=90)
    return [(decode(v)["from_state"], decode(v)["to_state"]) for _k, v in found]


@pytest.fixture
def own_broker(tmp_path):
    broker = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    asyncio.run(catalog.apply(broker.bootstrap))
    yield broker
    broker.stop()


def rocksdb_worker(broker: EmbeddedBroker, datadir, log, **env: str) -> WorkerProcess:
    worker = WorkerProcess(broker.bootstrap, "store-order", datadir, log, store="rocksdb://", **env)
    worker.args[worker.args.index("--loglevel") + 1] = "info"
    return worker.start()


async def test_a_worker_killed_between_changelog_and_local_store_leaves_every_owner_the_same_state(own_broker, tmp_path):
    source = f"order-{uuid.uuid4().hex[:8]}"
    started = datetime.now(UTC)
    key, running = update(source, "pool.scrub", "RUNNING", started)
    await produce(own_broker.bootstrap, [(key, running)])

    killed = rocksdb_worker(own_broker, tmp_path / "a", tmp_path / "a.log", **{faults.ENV: "exit-at:3a"})
    deadline = time.monotonic() + 120
    while killed.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert killed.process.returncode == faults.EXIT_KILLED, killed.tail()
    assert await moves(own_broker.bootstrap, key, 1) == [(None, "RUNNING")]  # step 2 was done

    # The same worker again, on its own datadir: it consumes the batch again, then a
    # record of another job behind it on the partition shows it got past the batch.
    restarted = rocksdb_worker(own_broker, tmp_path / "a", tmp_path / "a2.log")
    try:
        await restarted.ready_from_log()
        other, other_running = update(source, "pool.other", "RUNNING", started)
        await produce(own_broker.bootstrap, [(other, other_running)])
        assert await moves(own_broker.bootstrap, other, 1) == [(None, "RUNNING")]
    finally:
        assert restarted.stop() in (0, -15), restarted.tail()

    # A new owner with an empty datadir recovers from the changelog alone.
    owner = rocksdb_worker(own_broker, tmp_path / "b", tmp_path / "b.log")
    try:
        await owner.ready_from_log()
        _, done = update(source, "pool.scrub", "SUCCESS", started)
        await produce(own_broker.bootstrap, [(key, done)])
        assert await moves(own_broker.bootstrap, key, 2) == [(None, "RUNNING"), ("RUNNING", "SUCCEEDED")], owner.tail()
    finally:
        owner.stop()


async def test_a_restarted_worker_indexes_its_entries_from_their_stored_due_and_a_run_goes_stale_on_time(own_broker, tmp_path):
    source = f"due-{uuid.uuid4().hex[:8]}"
    started = datetime.now(UTC).replace(microsecond=0)
    key, running = update(source, "pool.scrub", "RUNNING", started, received=started)
    first = rocksdb_worker(own_broker, tmp_path / "a", tmp_path / "a.log", JOBSTREAM_STALE_AFTER_TRUENAS="60")
    try:
        await first.ready_from_log()
        await produce(own_broker.bootstrap, [(key, running)])
        assert await moves(own_broker.bootstrap, key, 1) == [(None, "RUNNING")]
    finally:
        assert first.stop() in (0, -15), first.tail()

    again = rocksdb_worker(own_broker, tmp_path / "a", tmp_path / "a2.log", JOBSTREAM_STALE_AFTER_TRUENAS="60")
    try:
        await again.ready_from_log()
        beat = RawEnvelope(vendor="truenas", source=source, received_at=started + timedelta(seconds=90), heartbeat=True)
        await produce(own_broker.bootstrap, [(heartbeat_key(source), encode_envelope(beat))])
        assert await moves(own_broker.bootstrap, key, 2) == [(None, "RUNNING"), ("RUNNING", "STALE")], again.tail()
        rebuilt = re.search(r"due index rebuilt from (\d+) stored entries \((\d+) decoded whole\)", again.text())
        assert rebuilt is not None and rebuilt.groups() == ("1", "0"), again.tail()
    finally:
        again.stop()
