"""The shared ingestor surface: backoff, Retry-After, redaction, keyed records, and the
poll -> send -> heartbeat -> cursor protocol against the session broker."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from pipeline import catalog
from pipeline.model import UTC, decode_envelope, heartbeat_key
from pipeline.sources import (
    Backoff, CursorStore, Poll, RawProducer, Record, Redactor, TransientError, parse_retry_after,
    records_for, run_poller,
)
from pipeline.vendors import Context
from tests.support.kafka import collect


def test_backoff_grows_with_jitter_and_stops_at_the_maximum():
    backoff = Backoff(initial_s=1.0, maximum_s=8.0, factor=2.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        delays = [backoff.delay(failures, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


def test_backoff_never_shorter_than_retry_after():
    assert Backoff(initial_s=1.0, maximum_s=2.0).delay(1, retry_after=30.0) == 30.0


def test_parse_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Mon, 30 Nov 2026 12:00:45 GMT", now) == 45.0
    assert parse_retry_after("Mon, 30 Nov 2026 11:00:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


def test_redactor_hides_every_secret_in_text_and_log_records(caplog):
    redact = Redactor(["s3cr3t-token", "pw12", "abc"])
    assert redact("auth failed for s3cr3t-token and pw12") == "auth failed for *** and ***"
    assert redact("abc stays: too short to be a secret") == "abc stays: too short to be a secret"
    logger = logging.getLogger("test.redactor")
    logger.addFilter(redact)
    with caplog.at_level(logging.INFO, logger="test.redactor"):
        logger.info("login with %s", "s3cr3t-token")
    assert "s3cr3t-token" not in caplog.text and "***" in caplog.text


def test_records_for_keys_each_job_and_keeps_refused_documents_unkeyed():
    ctx = Context(source="nas1", received_at=datetime(2026, 11, 30, tzinfo=UTC))
    jobs = [
        {"id": 1, "method": "pool.scrub", "state": "RUNNING", "time_started": {"$date": 1764460800000}},
        {"id": 2, "method": "cloudsync.sync", "state": "SUCCESS", "time_started": {"$date": 1764460800000},
         "time_finished": {"$date": 1764460860000}},
    ]
    records = records_for("truenas", jobs, ctx)
    assert len(records) == 2 and len({r.key for r in records}) == 2
    assert all(r.key and r.key.startswith("truenas:nas1:") for r in records)
    refused = records_for("truenas", {"not": "a job"}, ctx)
    assert refused == [Record(key=None, payload={"not": "a job"}, received_at=ctx.received_at)]


@pytest.mark.integration
async def test_raw_producer_sends_keyed_envelopes_and_a_heartbeat_per_partition(broker):
    source = f"src-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    async with RawProducer(broker.bootstrap, "zuora", source) as producer:
        report = await producer.send([
            Record(key="zuora:x:1", payload={"a": 1}, received_at=at),
            Record(key="zuora:x:2", payload="x" * 2_000_000, received_at=at),  # cannot fit
            Record(key="zuora:x:3", payload={"a": 3}, received_at=at),
        ])
        beats = await producer.heartbeat(at)
    assert report.sent == 2 and [i for i, _ in report.too_large] == [1]
    assert "2,000" in report.too_large[0][1] or "exceeds" in report.too_large[0][1]
    partitions = catalog.topic(catalog.raw_topic("zuora")).partitions
    assert beats == partitions

    def ours(key: bytes | None, value: bytes) -> bool:
        # other tests put poison (not envelopes) on raw.zuora: look only at ours
        return source.encode() in value and decode_envelope(value).source == source

    found = await collect(broker.bootstrap, catalog.raw_topic("zuora"), ours, count=2 + partitions)
    envelopes = [(key, decode_envelope(value)) for key, value in found]
    docs = [(k, e.payload) for k, e in envelopes if not e.heartbeat]
    assert docs == [(b"zuora:x:1", {"a": 1}), (b"zuora:x:3", {"a": 3})]
    beats_seen = [(k, e) for k, e in envelopes if e.heartbeat]
    assert len(beats_seen) == partitions
    assert all(k == heartbeat_key(source) and e.payload is None and e.received_at == at for k, e in beats_seen)


@pytest.mark.integration
async def test_cursor_store_returns_the_latest_cursor_per_key(broker):
    key = f"test:{uuid.uuid4().hex[:8]}"
    store = await CursorStore(broker.bootstrap).start()
    try:
        assert await store.load(key) is None
        await store.save(key, {"since": "a"})
        await store.save(f"{key}-other", {"since": "zzz"})
        await store.save(key, {"since": "b"})
        assert await store.load(key) == {"since": "b"}
    finally:
        await store.stop()


class _CountingSource:
    """A real PollingSource over an in-memory list of 'vendor' jobs; fails on request."""

    vendor = "truenas"

    def __init__(self, source: str, jobs: list[dict[str, Any]], failures: list[Exception]) -> None:
        self.source = source
        self.jobs = jobs
        self.failures = failures
        self.cursors_polled: list[int] = []

    @property
    def cursor_key(self) -> str:
        return f"truenas:{self.source}"

    def initial_cursor(self) -> int:
        return 0

    async def poll(self, cursor: int) -> Poll:
        self.cursors_polled.append(cursor)
        if self.failures:
            raise self.failures.pop(0)
        page = self.jobs[cursor:cursor + 2]
        ctx = Context(source=self.source, received_at=datetime(2026, 11, 30, tzinfo=UTC))
        records = [r for job in page for r in records_for("truenas", job, ctx)]
        return Poll(records=records, cursor=cursor + len(page), next_in_s=0.0)


@pytest.mark.integration
async def test_run_poller_retries_transient_errors_and_stores_the_cursor_after_the_ack(broker):
    source_name = f"nas-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 11, 30, tzinfo=UTC)
    jobs = [
        {"id": n, "method": "pool.scrub", "state": "SUCCESS",
         "time_started": {"$date": int((start + timedelta(minutes=n)).timestamp() * 1000)},
         "time_finished": {"$date": int((start + timedelta(minutes=n, seconds=5)).timestamp() * 1000)}}
        for n in range(1, 6)
    ]
    source = _CountingSource(source_name, jobs, [TransientError("HTTP 503", retry_after=0.01)])
    stop = asyncio.Event()
    cursors = await CursorStore(broker.bootstrap).start()

    async def stop_when_done(poll: Poll, report: Any) -> None:
        if poll.cursor >= len(jobs):
            stop.set()

    try:
        async with RawProducer(broker.bootstrap, "truenas", source_name) as producer:
            await asyncio.wait_for(
                run_poller(source, producer, cursors, stop=stop, backoff=Backoff(initial_s=0.01, maximum_s=0.02),
                           on_poll=stop_when_done),
                timeout=30,
            )
        assert source.cursors_polled == [0, 0, 2, 4]  # the failed poll was repeated from its cursor
        assert await cursors.load(source.cursor_key) == 5
    finally:
        await cursors.stop()

    def ours(key: bytes | None, value: bytes) -> bool:
        if source_name.encode() not in value:  # other tests put poison (not envelopes) here
            return False
        envelope = decode_envelope(value)
        return envelope.source == source_name and not envelope.heartbeat

    found = await collect(broker.bootstrap, catalog.raw_topic("truenas"), ours, count=5)
    assert sorted(decode_envelope(v).payload["id"] for _, v in found) == [1, 2, 3, 4, 5]
