"""The stack works end to end on the embedded broker."""

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from pipeline import catalog
from pipeline.cli import app
from pipeline.stream.state import decode_entry

pytestmark = pytest.mark.integration


async def test_aiokafka_round_trip_on_a_catalog_topic(broker):
    topic = catalog.DEADLETTER
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    sent = await producer.send_and_wait(topic, b"round-trip", key=b"k")
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([sent.topic_partition])
        consumer.seek(sent.topic_partition, sent.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"round-trip")


def test_topics_apply_is_idempotent_and_reports_mismatches(broker):
    runner = CliRunner()
    first = runner.invoke(app, ["topics", "apply", "--bootstrap", broker.bootstrap])
    assert first.exit_code == 0, first.output
    assert "created" not in first.output
    assert first.output.count("present") == len(catalog.load())
    mismatch = runner.invoke(app, ["topics", "apply", "--bootstrap", broker.bootstrap, "--partitions", "3"])
    assert mismatch.exit_code == 1
    assert "jobs.events: 4 partitions on the broker, 3 in the catalog" in mismatch.output


async def test_faust_worker_with_its_table_turns_a_raw_message_into_events(broker, worker):
    """The session worker (a Faust agent + changelog-backed table) answers a probe."""
    from tests.support.kafka import wait_until_processing

    seconds = await wait_until_processing(broker.bootstrap, source="stack-probe", timeout=60)
    assert seconds < 60
    changelog = "jobstream-test-lifecycle-changelog"
    consumer = AIOKafkaConsumer(changelog, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    entries = [decode_entry(r.value) for records in batches.values() for r in records if r.value is not None]
    assert any(entry.job.job_key == "truenas:stack-probe:probe.job" for entry in entries)
