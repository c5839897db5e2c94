"""The commit protocol's table (pipeline/sink/consumer.py), one test per row, plus a real
SIGKILL of ``pipeline sink`` mid-stream: every restart ends with exactly the rows of a
run that was never killed (same ids, none twice, none missing)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline import catalog
from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.writer import DuckDBWriter, SinkError
from tests.support.processes import SinkProcess
from tests.support.records import Story, produce
from tests.support.sink_story import EXPECTED, sink_until_complete, story_rows, stream_of

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def produced(broker) -> Story:
    """One story on the broker and the reference: the rows of a sink that was never killed."""
    story = Story()
    asyncio.run(produce(broker.bootstrap, stream_of(story)))
    return story


@pytest.fixture(scope="module")
def reference(broker, produced, tmp_path_factory) -> dict[str, list[tuple]]:
    rows = asyncio.run(sink_until_complete(broker.bootstrap, tmp_path_factory.mktemp("ref") / "ref.duckdb", produced))
    assert {t: len(rows[t]) for t in EXPECTED} == EXPECTED
    assert len(rows["dead_letters"]) == 5
    return rows


def crash(bootstrap: str, db: Path, point: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tests.sink.crash_child", str(db), bootstrap, point],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert done.stdout.strip() == "dying"
    return done.stdout


def committed(db: Path) -> tuple[int, int]:
    """Rows in every table and stored offsets (the session's topics hold other tests' records too)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT (SELECT count(*) FROM job_events) + (SELECT count(*) FROM job_transitions) + (SELECT count(*) FROM job_runs)"
            " + (SELECT count(*) FROM dead_letters) + (SELECT count(*) FROM alerts)"
        ).fetchone()[0]
        offsets = con.execute("SELECT count(*) FROM kafka_offsets").fetchone()[0]
        return rows, offsets
    finally:
        con.close()


@pytest.mark.parametrize("point", ["after_assign", "before_write", "before_commit"])
def test_killed_before_the_commit_leaves_nothing_of_the_batch_and_the_restart_reads_it_again(broker, produced, reference, tmp_path, point):
    db = tmp_path / "crash.duckdb"
    crash(broker.bootstrap, db, point)
    assert committed(db) == (0, 0)
    assert asyncio.run(sink_until_complete(broker.bootstrap, db, produced)) == reference


def test_killed_after_the_commit_keeps_the_batch_and_the_restart_seeks_past_it(broker, produced, reference, tmp_path):
    db = tmp_path / "crash.duckdb"
    crash(broker.bootstrap, db, "after_commit")
    rows, offsets = committed(db)
    assert rows > 0 and offsets > 0
    con = duckdb.connect(str(db), read_only=True)
    stored = dict(((t, p), o) for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall())
    con.close()
    assert asyncio.run(sink_until_complete(broker.bootstrap, db, produced)) == reference
    con = duckdb.connect(str(db), read_only=True)
    later = dict(((t, p), o) for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall())
    con.close()
    assert all(later[k] >= v for k, v in stored.items())


BACKLOG = 5000
"""Dead letters of another story ahead of this one's in ``jobs.deadletter`` (one
partition), as the session broker holds after the rest of the suite has run."""


def test_sigkill_of_pipeline_sink_mid_stream_then_restart_gives_the_rows_of_a_run_without_the_kill(broker, tmp_path):
    """The killed file is compared once the restarted sink has committed every offset
    the story was written at. Waiting for some tables' rows instead compared it while
    the sink was still reading a backlog in ``jobs.deadletter``: a full-suite run saw a
    dead letter "missing" whose offset the file had not yet reached (nothing skipped)."""
    asyncio.run(produce(broker.bootstrap, [(catalog.DEADLETTER, Story().dead_letter(n)) for n in range(BACKLOG)]))
    story = Story()
    records = stream_of(story)
    half = len(records) // 2
    db = tmp_path / "killed.duckdb"
    sink = SinkProcess(broker.bootstrap, db, env={"JOBSTREAM_SINK_BATCH_MAX": "20"}).start()
    events = f"SELECT count(*) FROM job_events WHERE source = '{story.source}'"
    try:
        sink.connect().close()  # serving, so consuming
        written = asyncio.run(produce(broker.bootstrap, records[:half]))
        sink.wait_for(events, lambda n: n > 0)
        sink.kill()  # SIGKILL, while the first half is being written
        assert sink.process.returncode == -9
        for position, offset in asyncio.run(produce(broker.bootstrap, records[half:])).items():  # the stream goes on while it is down
            written[position] = max(written.get(position, 0), offset)
        sink.start()
        sink.wait_until_read(written, timeout=120)
    finally:
        assert sink.stop() == 0, sink.tail()
    con = duckdb.connect(str(db), read_only=True)
    killed_rows = story_rows(con, story)
    con.close()
    clean = asyncio.run(sink_until_complete(broker.bootstrap, tmp_path / "clean.duckdb", story))
    assert killed_rows == clean
    assert {t: len(killed_rows[t]) for t in EXPECTED} == EXPECTED
    assert len(killed_rows["dead_letters"]) == 5


def test_stored_offsets_beyond_the_end_of_the_topics_stop_the_sink_with_one_line(broker, tmp_path):
    """Found by `pipeline chaos` (a broker restarted empty): Tansu answers a fetch past
    the end with nothing instead of OffsetOutOfRange, and the sink waited forever, then
    would have skipped every new record below its stored offsets."""
    db = tmp_path / "ahead.duckdb"
    writer = DuckDBWriter(db).open()
    try:
        writer.connection.execute(
            "INSERT INTO kafka_offsets VALUES (?, 0, 10000000, now())", [catalog.EVENTS])
        with pytest.raises(SinkError) as stopped:
            asyncio.run(asyncio.wait_for(
                consume(Settings(bootstrap=broker.bootstrap, db_path=db), writer, stop=asyncio.Event()), 30))
    finally:
        writer.close()
    assert f"{catalog.EVENTS}:0 at 10000000" in str(stopped.value)
    assert "Kafka no longer has the offsets stored in the database" in str(stopped.value)
