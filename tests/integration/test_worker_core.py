"""Issues 23 and 25 through the real worker on the session broker: poison pills, a
changed stale_after, a key on two partitions with RocksDB, heartbeats, and a 12,000-run
backfill through ``pipeline replay``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline import catalog
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key
from pipeline.stream.state import decode_entry
from tests.support.kafka import collect, dead_letters_of, decode, transitions_of
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration


async def send_raw(bootstrap: str, vendor: str, items: list[tuple[bytes, RawEnvelope, int | None]]) -> None:
    """(key, envelope, partition or None for the default partitioner), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for key, envelope, partition in items:
            await producer.send_and_wait(catalog.raw_topic(vendor), encode_envelope(envelope), key=key, partition=partition)
    finally:
        await producer.stop()


def truenas_update(job_id: int, method: str, state: str, started: datetime) -> dict:
    fields = {"id": job_id, "method": method, "state": state, "time_started": {"$date": int(started.timestamp() * 1000)}}
    return {"jsonrpc": "2.0", "method": "collection_update",
            "params": {"msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields}}


@pytest.mark.parametrize("vendor", ["truenas", "zuora"])
async def test_a_giant_identifier_is_a_dead_letter_and_the_partition_goes_on(broker, worker, vendor):
    """Issue 23: a 300,000-character TrueNAS method or Zuora task id between two good
    messages of the same key: one dead letter with the reason, the next message is
    processed, the worker never restarts."""
    source = f"giant-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    if vendor == "truenas":
        key = f"truenas:{source}:pool.scrub".encode()
        docs = [truenas_update(1, "pool.scrub", "RUNNING", now), truenas_update(2, "m" * 300_000, "RUNNING", now),
                truenas_update(3, "pool.scrub", "RUNNING", now)]
    else:
        key = f"zuora:{source}:RPRO_BI3_LN_V".encode()

        def task(token: str) -> dict:
            return {"active": [{"task_id": token, "status": "SCANNING-PAGE-1",
                                "activity_tracker": {"last_activity": now.strftime("%Y-%m-%d %H:%M:%S")},
                                "query_config": {"object_name": "RPRO_BI3_LN_V"}}]}
        docs = [task("first"), task("t" * 300_000), task("third")]
    await send_raw(broker.bootstrap, vendor, [
        (key, RawEnvelope(vendor=vendor, source=source, received_at=now, payload=doc), None) for doc in docs
    ])
    runs = await transitions_of(broker.bootstrap, vendor, source, count=2)
    assert sorted(runs) == (["1", "3"] if vendor == "truenas" else ["first", "third"])
    [letter] = await dead_letters_of(broker.bootstrap, vendor, source=source, count=1)
    assert letter["stage"] == "normalize" and "characters long (at most" in letter["reason"]
    assert letter["value_b64"] is None or len(letter["value_b64"]) < 1_000_000
    assert worker.process.poll() is None


async def test_stale_after_changed_between_restarts_and_a_key_on_two_partitions_with_rocksdb(broker, tmp_path):
    """Issue 25 cases 1 and 2 on a RocksDB worker of its own, and a stale timeout driven
    by heartbeats on a quiet partition:

    - stale_after 60 s: a RUNNING run at t0 on partition 0; its key then arrives on
      partition 1: a dead letter, no table write, the worker keeps running;
    - restart with stale_after 200 s and a message at t0 + 120 s: the old deadline
      (t0 + 60) is passed, yet nothing hangs and nothing goes STALE;
    - heartbeats at t0 + 260 s: the run goes STALE at t0 + 200 s, the current setting.
    (The session worker, if running, sees the same input: its STALE is at t0 + 240.)
    """
    source = f"moved-{uuid.uuid4().hex[:8]}"
    app_id = f"jobstream-core-{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC).replace(microsecond=0)
    key = f"truenas:{source}:pool.scrub".encode()

    def envelope(doc: dict | None, at: datetime, heartbeat: bool = False) -> RawEnvelope:
        return RawEnvelope(vendor="truenas", source=source, received_at=at, payload=doc, heartbeat=heartbeat)

    def start(stale_after: int, name: str) -> WorkerProcess:
        process = WorkerProcess(broker.bootstrap, app_id, tmp_path / "data", tmp_path / f"{name}.log",
                                store="rocksdb://", JOBSTREAM_STALE_AFTER_TRUENAS=str(stale_after))
        process.args[process.args.index("--loglevel") + 1] = "info"
        return process.start()

    first = start(60, "first")
    try:
        await first.ready_from_log()
        await send_raw(broker.bootstrap, "truenas", [(key, envelope(truenas_update(1, "pool.scrub", "RUNNING", t0), t0), 0)])
        # Partitions are consumed in no fixed order: the job is at home in 0 before 1 sees it.
        await collect(broker.bootstrap, f"{app_id}-lifecycle-changelog", lambda k, v: k == key, count=1)
        await send_raw(broker.bootstrap, "truenas", [
            (key, envelope(truenas_update(1, "pool.scrub", "RUNNING", t0), t0 + timedelta(seconds=1)), 1),
        ])
        # The session worker reads the same raw topic into the same dead-letter topic; a
        # lagging one may fetch both messages at once and take partition 1 as the job's
        # home, dead-lettering the message on 0. Ours saw 0 first: its letter is for 1.
        letters = await dead_letters_of(broker.bootstrap, "truenas", source=source, count=1,
                                        where=lambda letter: letter["partition"] == 1)
        assert [d["stage"] for d in letters] == ["partition"]
        changelog = await collect(broker.bootstrap, f"{app_id}-lifecycle-changelog", lambda k, v: k == key, count=1)
        assert all(decode_entry(v).partition == 0 for _k, v in changelog if v is not None)
        assert first.process.poll() is None, first.tail()
    finally:
        first.stop()
    assert first.process.returncode in (0, -15), first.tail()

    second = start(200, "second")
    try:
        await second.ready_from_log()
        await send_raw(broker.bootstrap, "truenas", [
            (key, envelope(truenas_update(2, "pool.scrub", "RUNNING", t0), t0 + timedelta(seconds=120)), 0),
            *[(heartbeat_key(source), envelope(None, t0 + timedelta(seconds=260), heartbeat=True), p) for p in range(4)],
        ])
        iso = lambda s: (t0 + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")  # noqa: E731
        ours = {iso(60).encode(), iso(200).encode()}  # the old setting's instant, the current one's

        def stale_of_run_1(k: bytes | None, v: bytes) -> bool:
            record = decode(v) if k == key else {}
            return record.get("run_key") == f"truenas:{source}:{int(t0.timestamp() * 1000)}:1" \
                and record["cause"] == "stale_timeout" \
                and record["at"].encode() in ours

        stale = await collect(broker.bootstrap, catalog.TRANSITIONS, stale_of_run_1, count=1)
        assert second.process.poll() is None, second.tail()
    finally:
        second.stop()
    assert {decode(v)["at"] for _k, v in stale} == {iso(200)}


def test_a_12000_run_backfill_of_one_method_replays_and_reports_every_run(tmp_path):
    """Issue 25 case 3: 24,000 collection_update lines of one TrueNAS method, all with one
    received_at, once crash-looped the worker on a 1.08 MB changelog record."""
    started = 1_767_225_600_000
    lines = []
    for job_id in range(1, 12_001):
        for state, extra in (("RUNNING", {}), ("SUCCESS", {"time_finished": {"$date": started + job_id * 1000 + 500}})):
            fields = {"id": job_id, "method": "pool.scrub", "state": state,
                      "time_started": {"$date": started + job_id * 1000}, **extra}
            lines.append(orjson.dumps({"jsonrpc": "2.0", "method": "collection_update", "params": {
                "msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields}}))
    path = tmp_path / "truenas-history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--vendor", "truenas", str(path), "--timeout", "400"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = re.search(r"(\d+) events, (\d+) transitions .*?, (\d+) runs, (\d+) dead letters", result.stdout)
    assert summary, result.stdout[-3000:]
    assert summary.groups() == ("24000", "24000", "12000", "0")
