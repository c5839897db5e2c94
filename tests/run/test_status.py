"""`pipeline status` internals against the session broker: committed offsets, ends, lag,
last-moved time and group state, without disturbing the group it reads."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.model import UTC
from pipeline.run.status import RoleGroup, age, gather

pytestmark = pytest.mark.integration


async def test_status_reports_lag_and_the_last_consumed_record(broker):
    topic = f"status-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    base_ms = 1_764_460_800_000  # 2025-11-30T00:00:00Z
    try:
        for n in range(10):
            await producer.send_and_wait(topic, b"v%d" % n, key=b"k", partition=0, timestamp_ms=base_ms + n * 1000)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    records = (await consumer.getmany(tp, timeout_ms=5000, max_records=4))[tp]
    assert len(records) == 4
    await consumer.commit({tp: 4})
    await consumer.stop()

    statuses = await gather(broker.bootstrap, [RoleGroup("sink", group, [topic])])
    status = next(s for s in statuses if s.partition == 0)  # the broker auto-created it with several
    assert (status.role, status.topic, status.partition) == ("sink", topic, 0)
    assert (status.committed, status.end, status.lag) == (4, 10, 6)
    assert status.last_consumed_at == datetime.fromtimestamp((base_ms + 3000) / 1000, UTC)

    again = await gather(broker.bootstrap, [RoleGroup("sink", group, [topic])])
    assert next(s for s in again if s.partition == 0).committed == 4, "reading the status must not move the group"


async def test_a_group_that_never_committed_shows_the_whole_partition_as_lag(broker):
    topic = f"status-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b"x", partition=0)
    finally:
        await producer.stop()
    statuses = await gather(broker.bootstrap, [RoleGroup("worker", f"never-{uuid.uuid4().hex[:6]}", [topic])])
    status = next(s for s in statuses if s.partition == 0)
    assert not status.committed and status.end == 3 and status.lag == 3 and status.last_consumed_at is None


def test_age_reads_like_a_person_would_say_it():
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert age(None, now) == "never"
    assert age(now - timedelta(seconds=12), now) == "12 s ago"
    assert age(now - timedelta(minutes=30), now) == "30 min ago"
    assert age(now - timedelta(hours=5), now) == "5 h ago"


async def test_two_live_groups_are_described_one_request_each(broker):
    """Tansu answers one DescribeGroups for two live groups with bytes aiokafka cannot
    decode (Buffer underrun): status asks one group per request."""
    topic = f"status-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x", partition=0)
    finally:
        await producer.stop()
    groups = [f"live-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    members = [
        AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
        for group in groups
    ]
    for member in members:
        await member.start()
    try:
        for member in members:  # joined once it has an assignment
            await member.getmany(timeout_ms=8000)
        statuses = await gather(broker.bootstrap, [RoleGroup("worker", groups[0], [topic]), RoleGroup("alerter", groups[1], [topic])])
    finally:
        for member in members:
            await member.stop()
    by_role = {s.role: s for s in statuses if s.partition == 0}
    assert set(by_role) == {"worker", "alerter"}
    assert all(s.state == "Stable" and s.members == 1 for s in by_role.values()), by_role


def test_status_with_a_run_config_looks_for_that_runs_sink_and_says_nothing_runs(broker, tmp_path):
    import subprocess
    import sys

    db = tmp_path / "elsewhere.duckdb"
    config = tmp_path / "my.toml"
    config.write_text(f'[pipeline]\ndb_path = "{db}"\nquack_port = 19494\nrun_state_file = "{tmp_path / "state.json"}"\n')
    result = subprocess.run([sys.executable, "-m", "pipeline", "status", "-b", broker.bootstrap, "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"pipeline run: not running (no state file at {tmp_path / 'state.json'})" in result.stdout
    assert f"no database at {db} and no live sink at quack:localhost:19494" in result.stdout
