"""Restarts and consumer groups, on the session broker.

These tests start workers of their own (their own app id, so their own consumer group
and changelog). Their outputs land in the same jobs.* topics as the session worker's,
with the same deterministic ids: a transition id seen ``n`` times means ``n`` groups
emitted it, which is how these tests tell "emitted again" from "emitted once".
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.model import UTC
from tests.support.kafka import collect, decode, group_members, send_documents
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration


def truenas_update(job_id: int, method: str, state: str, started: datetime, finished: datetime | None = None) -> dict:
    fields = {"id": job_id, "method": method, "state": state,
              "time_started": {"$date": int(started.timestamp() * 1000)},
              "progress": {"percent": 100 if finished else 50, "description": None, "extra": None}}
    if finished is not None:
        fields["time_finished"] = {"$date": int(finished.timestamp() * 1000)}
    return {"msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields}


async def transition_ids(bootstrap: str, source: str, *, want: int, timeout: float = 90.0) -> Counter:
    """How many times each transition id of ``source`` was emitted, once ``want``
    records (duplicates included) are there."""
    prefix = f"truenas:{source}:".encode()
    found = await collect(
        bootstrap, catalog.TRANSITIONS, lambda k, v: k is not None and k.startswith(prefix),
        count=want, timeout=timeout,
    )
    return Counter(decode(value)["transition_id"] for _key, value in found)


def assignments(worker: WorkerProcess) -> list[list[int]]:
    text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
    return [[int(p) for p in re.findall(r"\d+", match)] for match in re.findall(r"assigned raw partitions \[([^\]]*)\]", text)]


def start_worker(broker, tmp_path, app_id: str, name: str, store: str = "memory://") -> WorkerProcess:
    """A worker of its own; workers of one test share the datadir (RocksDB survives a restart)."""
    worker = WorkerProcess(broker.bootstrap, app_id, tmp_path / "data", tmp_path / f"{name}.log", store=store)
    worker.args[worker.args.index("--loglevel") + 1] = "info"
    return worker.start()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_killed_worker_recovers_its_table_and_emits_nothing_twice(broker, worker, tmp_path, store):
    """Part 1 runs, the worker is killed (no graceful commit), part 2 arrives, the
    restarted worker recovers (memory: from the changelog; RocksDB: its local store plus
    the changelog): part 2's transitions need part 1's state (RUNNING -> SUCCEEDED, not
    None -> SUCCEEDED), part 1's are not emitted again."""
    source = f"restart-{store[:4]}-{uuid.uuid4().hex[:8]}"
    app_id = f"jobstream-restart-{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC)
    jobs = [(100 + n, f"task.{n}") for n in range(12)]
    restarted = start_worker(broker, tmp_path, app_id, "first", store)
    try:
        await restarted.ready_from_log()
        await send_documents(broker.bootstrap, "truenas", [
            truenas_update(job_id, method, "RUNNING", t0) for job_id, method in jobs
        ], source=source)
        part1 = await transition_ids(broker.bootstrap, source, want=2 * len(jobs))
        assert len(part1) == len(jobs) and set(part1.values()) == {2}, part1  # session worker + this one
        keys = {f"truenas:{source}:{method}".encode() for _id, method in jobs}
        stored = await collect(broker.bootstrap, f"{app_id}-lifecycle-changelog", lambda k, v: k in keys,
                               count=len(jobs))
        assert {k for k, _v in stored} == keys  # step 3 done: state stored, offsets maybe not committed
        restarted.kill()
        await send_documents(broker.bootstrap, "truenas", [
            truenas_update(job_id, method, "SUCCESS", t0, t0 + timedelta(seconds=5)) for job_id, method in jobs
        ], source=source)
        restarted = start_worker(broker, tmp_path, app_id, "second", store)
        recovery_s = await restarted.ready_from_log()
        both = await transition_ids(broker.bootstrap, source, want=4 * len(jobs))
    finally:
        restarted.stop()
    assert len(both) == 2 * len(jobs)
    once = sorted(tid for tid, count in both.items() if count < 2)
    assert not once, (
        f"{len(once)} transitions came from one group only (lost by the restarted worker, or later than 90 s); "
        "its log says:\n" + "\n".join(line for line in restarted.text().splitlines()
                                      if "jobstream:" in line or "ERROR" in line or "Ready" in line)
    )
    assert set(both.values()) == {2}, "a transition was emitted twice by one group"
    prefix = f"truenas:{source}:".encode()
    records = [decode(v) for _k, v in await collect(
        broker.bootstrap, catalog.TRANSITIONS, lambda k, v: k is not None and k.startswith(prefix),
        count=4 * len(jobs),
    )]
    assert {(r["from_state"], r["to_state"]) for r in records} == {(None, "RUNNING"), ("RUNNING", "SUCCEEDED")}
    print(f"{store} restart to ready after SIGKILL: {recovery_s:.1f} s")


async def test_two_workers_share_the_partitions_and_emit_what_one_worker_emits(broker, worker, tmp_path):
    source = f"group-{uuid.uuid4().hex[:8]}"
    app_id = f"jobstream-pair-{uuid.uuid4().hex[:6]}"
    first = start_worker(broker, tmp_path, app_id, "a")
    second = start_worker(broker, tmp_path, app_id, "b")
    try:
        await asyncio.gather(first.ready_from_log(), second.ready_from_log())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            a, b = assignments(first), assignments(second)
            if a and b and a[-1] and b[-1] and not set(a[-1]) & set(b[-1]) and len(a[-1]) + len(b[-1]) == 4:
                break
            await asyncio.sleep(0.5)
        a, b = assignments(first)[-1], assignments(second)[-1]
        assert a and b and sorted(a + b) == [0, 1, 2, 3], (a, b)
        t0 = datetime.now(UTC)
        jobs = [(200 + n, f"pair.{n}") for n in range(16)]
        await send_documents(broker.bootstrap, "truenas", [
            doc for job_id, method in jobs for doc in (
                truenas_update(job_id, method, "RUNNING", t0),
                truenas_update(job_id, method, "FAILED", t0, t0 + timedelta(seconds=3)),
            )
        ], source=source)
        ids = await transition_ids(broker.bootstrap, source, want=2 * 2 * len(jobs))
    finally:
        first.stop()
        second.stop()
    # The session worker alone and the pair together each emitted every transition once.
    assert len(ids) == 2 * len(jobs)
    assert set(ids.values()) == {2}


async def test_aiokafka_s_seek_to_committed_leaves_a_partition_with_nothing_committed_where_it_was(broker):
    """Why the worker rewinds such partitions itself (``faust_compat.seek_uncommitted_to_start``):
    Faust's recovery "seeks to the committed offsets" through aiokafka's ``seek_to_committed``,
    which moves only partitions with a committed offset. Records of a group that has not
    committed yet, fetched and then dropped by Faust in a rebalance, are not fetched again by it."""
    topic = f"seek-premise-{uuid.uuid4().hex[:8]}"
    admin = clients.admin(broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = clients.producer(broker.bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b"%d" % n, partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = clients.consumer(broker.bootstrap, group_id=f"{topic}-group", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        fetched: list[int] = []
        deadline = time.monotonic() + 30
        while len(fetched) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                fetched.extend(record.offset for record in records)
        assert fetched == [0, 1, 2]
        assert await consumer.seek_to_committed() == {tp: None}
        assert await consumer.position(tp) == 3, "aiokafka now rewinds it: the worker's own rewind may go"
    finally:
        await consumer.stop()


async def test_a_worker_stopped_with_sigterm_leaves_its_group(broker, tmp_path):
    """Tansu numbers a new group's first generation 0, from which aiokafka does not leave
    (kafka/compat.py): a worker stopped by a deploy stayed in its group until its session
    timed out, and its successor waited for it (restart to ready ~19 s instead of ~8)."""
    app_id = f"jobstream-leave-{uuid.uuid4().hex[:6]}"
    worker = start_worker(broker, tmp_path, app_id, "leaving")
    try:
        await worker.ready_from_log()
        assert len(await group_members(broker.bootstrap, app_id)) == 1
    finally:
        code = await worker.stop_async()
    assert code == 0, worker.tail()
    assert await group_members(broker.bootstrap, app_id) == []
    assert "LeaveGroup (generation 0)" in worker.text()  # kafka/compat.py's, not aiokafka's own
