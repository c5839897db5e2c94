"""Issue 27.2: a broker that stops answering must end the worker (one line, exit 70)
within ``send_timeout_s``, SIGTERM must always be honoured, and repeated connection
errors must not flood the log.

Each test kills a broker, so each has one of its own (the session broker is shared).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.stream.app import EXIT_UNEXPECTED, SHUTDOWN_GRACE_S
from tests.support.kafka import truenas_probe
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.integration

SEND_TIMEOUT_S = 5


@pytest.fixture
def own_broker(tmp_path: Path):
    embedded = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    asyncio.run(catalog.apply(embedded.bootstrap))
    yield embedded
    embedded.stop()


async def backlog(bootstrap: str, count: int) -> None:
    """``count`` finished TrueNAS jobs, sent at full speed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=20)
    await producer.start()
    try:
        topic = catalog.raw_topic("truenas")
        futures = []
        for job_id in range(1, count + 1):
            envelope = RawEnvelope(vendor="truenas", source="load", received_at=datetime.now(UTC), payload=truenas_probe(job_id))
            futures.append(await producer.send(topic, encode_envelope(envelope), key=f"load-{job_id % 997}".encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def first_record(bootstrap: str, topic: str, timeout: float) -> bool:
    """True as soon as ``topic`` holds any record: the worker is then mid-backlog (reading
    on to the end, as ``collect`` does, could outlast the backlog on a fast worker)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any((await consumer.getmany(timeout_ms=100, max_records=1)).values()):
                return True
        return False
    finally:
        await consumer.stop()


def start_worker(bootstrap: str, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(
        bootstrap, f"jobstream-deadline-{uuid.uuid4().hex[:6]}", tmp_path / "data", tmp_path / "worker.log",
        JOBSTREAM_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
    ).start()


def test_a_broker_that_stops_answering_mid_batch_ends_the_worker_with_exit_70(own_broker, tmp_path):
    # 150,000 updates: 15-30 s of work, so the worker is surely mid-backlog (sending) when
    # the broker stops; with 30,000 a fast worker had once finished before the test looked,
    # and an idle worker whose broker dies only retries (see the issue note).
    asyncio.run(backlog(own_broker.bootstrap, 150_000))
    worker = start_worker(own_broker.bootstrap, tmp_path)
    try:
        assert asyncio.run(first_record(own_broker.bootstrap, catalog.EVENTS, timeout=120)), worker.tail()
        own_broker.stop()  # the worker is busy with the backlog: step 2 or 3 is under way
        stopped = time.monotonic()
        code = worker.process.wait(timeout=SEND_TIMEOUT_S + 60)
        waited = time.monotonic() - stopped
    finally:
        worker.kill()
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x08", "", worker.log.read_text(errors="replace"))  # Faust's cursor codes
    assert code == EXIT_UNEXPECTED, worker.tail()
    assert waited < SEND_TIMEOUT_S + 60
    (line,) = [line for line in log.splitlines() if line.startswith("pipeline worker: stopping on")]
    # Which of the two comes first depends on where the batch was: a deadline on step 2 or
    # 3, or the producer's own connection error. Either is the one line and exit 70.
    assert line.startswith((
        "pipeline worker: stopping on Kafka did not acknowledge step ",
        "pipeline worker: stopping on an unexpected KafkaConnectionError",
    )), line
    assert line.endswith("(exit 70; restart it, no acknowledged input is lost)"), line
    assert len(log.splitlines()) < 200, f"{len(log.splitlines())} log lines"


def test_sigterm_ends_a_worker_whose_broker_is_gone(own_broker, tmp_path):
    worker = start_worker(own_broker.bootstrap, tmp_path)
    try:
        asyncio.run(worker.ready(own_broker.bootstrap))
        own_broker.stop()
        time.sleep(2)  # let it notice: its consumer now retries a dead broker
        worker.process.send_signal(signal.SIGTERM)
        code = worker.process.wait(timeout=SHUTDOWN_GRACE_S + 30)
    finally:
        worker.kill()
    assert code in (0, -15, 143), worker.tail()
    lines = worker.log.read_text(errors="replace").splitlines()
    assert len(lines) < 100, f"{len(lines)} log lines in {SHUTDOWN_GRACE_S:g} s of a dead broker"


def test_repeated_warning_lines_are_held_back_and_counted():
    import logging

    from pipeline.stream.app import RepeatedLinesFilter

    keep = RepeatedLinesFilter(every_s=3600)

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", level, __file__, 1, msg, ("node 1",), None)

    passed = [keep.filter(record(logging.ERROR, "Unable to connect to %s")) for _ in range(100)]
    assert passed == [True] + [False] * 99
    assert keep.filter(record(logging.ERROR, "another message %s"))
    assert all(keep.filter(record(logging.INFO, "Unable to connect to %s")) for _ in range(3))
