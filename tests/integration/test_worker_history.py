"""Issue 32.1 through the real command: `pipeline ingest file` of a month-old TrueNAS
history (no receive time: each record takes its vendor's own time) into a broker of its
own with a worker, so no other test's records move its partitions' event time. Healthy
runs must come out as they happened: RUNNING, then SUCCEEDED, no stale episode."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

import orjson
import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC
from tests.support.kafka import collect, decode
from tests.support.processes import WorkerProcess
from tests.support.processes import pipeline

pytestmark = pytest.mark.integration


def history(start: datetime, runs: int) -> list[dict]:
    """``runs`` healthy TrueNAS scrubs an hour apart, each done 3 minutes after it began
    (under the 240 s stale_after). TrueNAS progress updates carry no time of their own, so
    a file of history dates them by their job's time_started: only the start and the end
    of a run have times a backfill can replay."""
    lines = []
    for run in range(runs):
        begun = start + timedelta(hours=run)
        stamp = {"$date": int(begun.timestamp() * 1000)}
        running = {"id": run + 1, "method": "pool.scrub.scrub", "state": "RUNNING", "time_started": stamp,
                   "progress": {"percent": 0, "description": None, "extra": None}}
        lines.append({"msg": "added", "collection": "core.get_jobs", "id": run + 1, "fields": running})
        done = {**running, "state": "SUCCESS", "time_finished": {"$date": int((begun + timedelta(minutes=3)).timestamp() * 1000)},
                "progress": {"percent": 100, "description": "done", "extra": None}}
        lines.append({"msg": "changed", "collection": "core.get_jobs", "id": run + 1, "fields": done})
    return lines


@pytest.fixture
def own_broker(tmp_path):
    broker = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    asyncio.run(catalog.apply(broker.bootstrap))
    yield broker
    broker.stop()


def test_a_backfill_of_a_month_old_history_replays_it_as_it_happened(own_broker, tmp_path):
    worker = WorkerProcess(own_broker.bootstrap, "history", tmp_path / "data", tmp_path / "worker.log").start()
    try:
        source = f"nas-{uuid.uuid4().hex[:8]}"
        path = tmp_path / "truenas.jsonl"
        start = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
        path.write_bytes(b"\n".join(orjson.dumps(line) for line in history(start, 3)) + b"\n")
        result = pipeline("ingest", "file", "--vendor", "truenas", str(path), "-b", own_broker.bootstrap,
                          "--source", source)
        assert result.returncode == 0, result.stdout + result.stderr
        prefix = f"truenas:{source}:".encode()
        found = asyncio.run(collect(own_broker.bootstrap, catalog.TRANSITIONS,
                                    lambda k, v: k is not None and k.startswith(prefix), count=6, timeout=120))
        runs: dict[str, list[tuple]] = defaultdict(list)
        for _key, value in found:
            transition = decode(value)
            runs[transition["run_key"]].append((transition["from_state"], transition["to_state"]))
        assert len(runs) == 3, worker.tail()
        for run_key, moves in runs.items():
            assert moves == [(None, "RUNNING"), ("RUNNING", "SUCCEEDED")], (run_key, moves)
        assert worker.process.poll() is None, worker.tail()
    finally:
        worker.stop()
