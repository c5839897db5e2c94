"""The pieces the sink's bench stages stand on: the true ends of the jobs.* topics (Tansu's
ListOffsets answers short after multi-record batches) and a sink file that starts there."""

from __future__ import annotations

import asyncio

import duckdb
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import catalog
from pipeline.bench.sink_stages import jobs_partitions, jobs_ends, new_file, sink_alone
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration


async def read_to_the_end(bootstrap: str) -> dict[tuple[str, int], int]:
    """Every jobs.* partition read from its start: the offset after its last record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = jobs_partitions()
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        last = {(tp.topic, tp.partition): 0 for tp in partitions}
        quiet = 0
        while quiet < 3:  # three empty fetches in a row: nothing more is there
            fetched = await consumer.getmany(timeout_ms=300, max_records=10_000)
            quiet = 0 if fetched else quiet + 1
            for tp, records in fetched.items():
                last[(tp.topic, tp.partition)] = records[-1].offset + 1
        return last
    finally:
        await consumer.stop()


def events(story: Story, count: int) -> list[tuple[str, dict]]:
    return [(catalog.EVENTS, story.event(f"job{n % 7}", "r", n, "RUNNING")) for n in range(count)]


def test_the_ends_are_the_offsets_after_the_last_records_even_after_batches_of_many(broker):
    asyncio.run(produce(broker.bootstrap, events(Story(), 600)))  # linger: several records per batch
    assert asyncio.run(jobs_ends(broker.bootstrap)) == asyncio.run(read_to_the_end(broker.bootstrap))


def test_a_file_started_at_the_ends_loads_only_what_came_after(broker, tmp_path):
    before, after = Story(), Story()
    asyncio.run(produce(broker.bootstrap, events(before, 200)))
    start = asyncio.run(jobs_ends(broker.bootstrap))
    asyncio.run(produce(broker.bootstrap, events(after, 300)))
    end = asyncio.run(jobs_ends(broker.bootstrap))
    db = tmp_path / "sink.duckdb"
    records, rows, seconds = asyncio.run(sink_alone(broker.bootstrap, start, end, db, timeout_s=60))
    assert records == rows == 300 and seconds > 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        by_source = dict(con.execute("SELECT source, count(*) FROM job_events GROUP BY source").fetchall())
    finally:
        con.close()
    assert by_source == {after.source: 300}


def test_a_new_file_holds_the_offsets_and_no_rows(tmp_path):
    db = tmp_path / "new.duckdb"
    new_file(db, {(catalog.EVENTS, 0): 12, (catalog.RUNS, 3): 0})
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets ORDER BY topic').fetchall() == [
            (catalog.EVENTS, 0, 12), (catalog.RUNS, 3, 0)]
        assert con.execute("SELECT count(*) FROM job_events").fetchone()[0] == 0
    finally:
        con.close()
