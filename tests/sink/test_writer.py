"""The DuckDB writer: rows and offsets in one transaction, ids once across batches,
current state by version, migrations, and files it must refuse with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import msgspec
import orjson
import pytest

from pipeline import catalog
from pipeline.sink import schema
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter, SinkError
from tests.support.records import Story


def batch_of(*items: tuple[str, int, dict | bytes], partition: int = 0):
    return decode_batch([
        KafkaRecord(topic, partition, offset, 0, b"k", value if isinstance(value, bytes) else orjson.dumps(value))
        for topic, offset, value in items
    ])


@pytest.fixture
def writer(tmp_path: Path):
    w = DuckDBWriter(tmp_path / "sink.duckdb").open()
    yield w
    w.close()


def count(w: DuckDBWriter, sql: str) -> int:
    return w.connection.execute(sql).fetchone()[0]


def test_an_id_redelivered_in_later_batches_appears_once(writer):
    s = Story()
    e1, e2 = s.event("j", "r", 1, "RUNNING"), s.event("j", "r", 2, "SUCCEEDED")
    t1 = s.transition("j", "r", 1, None, "RUNNING")
    writer.write(batch_of((catalog.EVENTS, 0, e1), (catalog.TRANSITIONS, 0, t1)))
    writer.write(batch_of((catalog.EVENTS, 1, e1), (catalog.EVENTS, 2, e2), (catalog.TRANSITIONS, 1, t1)))
    writer.write(batch_of((catalog.EVENTS, 3, e2), (catalog.EVENTS, 4, e1)))
    assert count(writer, "SELECT count(*) FROM job_events") == 2
    assert count(writer, "SELECT count(DISTINCT event_id) FROM job_events") == 2
    assert count(writer, "SELECT count(*) FROM job_transitions") == 1
    assert writer.read_offsets() == {(catalog.EVENTS, 0): 5, (catalog.TRANSITIONS, 0): 2}


def test_runs_keep_the_highest_version_across_batches_in_any_order(writer):
    s = Story()
    writer.write(batch_of((catalog.RUNS, 0, s.run("j", "a", 3, "RUNNING")), (catalog.RUNS, 1, s.run("j", "b", 1, "PENDING"))))
    writer.write(batch_of((catalog.RUNS, 2, s.run("j", "a", 2, "PENDING")), (catalog.RUNS, 3, s.run("j", "b", 4, "FAILED"))))
    writer.write(batch_of((catalog.RUNS, 4, s.run("j", "a", 5, "SUCCEEDED")), (catalog.RUNS, 5, s.run("j", "b", 4, "FAILED"))))
    rows = writer.connection.execute("SELECT run_key, version, state FROM job_runs ORDER BY run_key").fetchall()
    assert rows == [(s.run_key("j", "a"), 5, "SUCCEEDED"), (s.run_key("j", "b"), 4, "FAILED")]


def test_stale_runs_counts_the_runs_stale_now(writer):
    s = Story()
    writer.write(batch_of((catalog.RUNS, 0, s.run("j", "a", 1, "STALE")), (catalog.RUNS, 1, s.run("j", "b", 1, "STALE")),
                          (catalog.RUNS, 2, s.run("j", "c", 1, "RUNNING"))))
    assert writer.stale_runs() == 2
    writer.write(batch_of((catalog.RUNS, 3, s.run("j", "a", 2, "RUNNING"))))  # came back
    assert writer.stale_runs() == 1


def test_alerts_keep_the_latest_status_per_alert_across_batches(writer):
    s = Story()
    writer.write(batch_of((catalog.ALERTS, 0, s.alert(1, "fired")), (catalog.ALERTS, 1, s.alert(2, "fired"))))
    writer.write(batch_of((catalog.ALERTS, 2, s.alert(1, "delivered")), (catalog.ALERTS, 3, s.alert(2, "failed"))))
    writer.write(batch_of((catalog.ALERTS, 4, s.alert(1, "fired")), (catalog.ALERTS, 5, s.alert(2, "delivered"))))
    rows = writer.connection.execute("SELECT alert_id, status FROM alerts ORDER BY alert_id").fetchall()
    assert rows == [(f"{s.source}-a1", "delivered"), (f"{s.source}-a2", "delivered")]


def test_a_file_made_by_an_older_version_is_migrated(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.migrate(con, upto=1)
    con.execute("INSERT INTO job_runs (run_key, version, state) VALUES ('r', 1, 'RUNNING')")
    con.close()
    w = DuckDBWriter(path).open()
    try:
        assert schema.version_of(w.connection) == schema.LATEST
        assert count(w, "SELECT count(*) FROM active_runs") == 1
        assert count(w, "SELECT count(*) FROM alerts") == 0
    finally:
        w.close()


def test_a_file_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    DuckDBWriter(path).open().close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO jobstream_schema VALUES (?, now(), 'from the future')", [schema.LATEST + 1])
    con.close()
    with pytest.raises(SinkError, match=r"newer jobstream \(schema version \d+\).*upgrade"):
        DuckDBWriter(path).open()


def run_sink_cli(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sink", "--db", str(db), "--bootstrap", "127.0.0.1:1", "--quack-port", "0"],
        capture_output=True, text=True, timeout=60,
    )


def test_a_file_that_is_not_duckdb_gives_one_line_and_a_nonzero_exit(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("these are my notes, not a database\n" * 100)
    done = run_sink_cli(path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {path} is not a DuckDB database file: choose another --db"]
    assert path.read_text().startswith("these are my notes")


def test_a_file_locked_by_another_writer_gives_one_line_and_a_nonzero_exit(tmp_path):
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_sink_cli(path)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert lines == [f"error: {path} is in use by another process (DuckDB allows one writer per file): stop it or choose another --db"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs (needs root, as in this project's CI); skipped only where mounting is impossible."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_with_one_line_and_never_leaves_half_a_batch(tiny_disk):
    path = tiny_disk / "full.duckdb"
    s = Story()
    writer = DuckDBWriter(path).open()
    committed = 0
    payload = "x" * 2000
    with pytest.raises(SinkError) as failure:
        for n in range(1000):
            events = [(catalog.EVENTS, n * 100 + i, s.event("j", f"r{n}", i, "RUNNING", error_message=payload)) for i in range(100)]
            writer.write(batch_of(*events))
            committed = n + 1
    writer.close()
    assert str(failure.value) == f"no space left on the device holding {path}; the batch was not committed"
    assert committed > 0
    reopened = duckdb.connect(str(path), read_only=True)
    try:
        rows = reopened.execute("SELECT count(*) FROM job_events").fetchone()[0]
        offset = reopened.execute("SELECT next_offset FROM kafka_offsets").fetchone()[0]
    finally:
        reopened.close()
    assert rows == committed * 100
    assert offset == committed * 100


def test_every_field_of_each_record_lands_in_its_column(writer):
    s = Story()
    event = s.event(
        "j", "r", 1, "FAILED", attempt=2, started_at="2026-11-30T08:59:00.250Z", finished_at="2026-11-30T09:00:00Z",
        progress=99.5, rows=12, counts={"pages": 3}, error_code="E1", error_message="boom", parent_run_key="p",
        attrs={"queue": "draining"}, late=True, skewed=True,
    )
    transition = s.transition("j", "r", 1, "RUNNING", "FAILED", cause="retry", duplicate=True)
    run = s.run("j", "r", 7, "FAILED", queued_at="2026-11-30T08:58:00Z", duration_s=60.0, queue_s=60.0, rows=12,
                retries=1, stale_episodes=2, reactivations=1, last_error_code="E1", last_error_message="boom",
                last_error_at="2026-11-30T09:00:00Z", deadline="2026-11-30T09:04:00Z", progress=99.5,
                left_open=True)
    letter = s.dead_letter(1)
    alert = s.alert(1, "delivered")
    writer.write(batch_of((catalog.EVENTS, 0, event), (catalog.TRANSITIONS, 0, transition), (catalog.RUNS, 0, run),
                          (catalog.DEADLETTER, 0, letter), (catalog.ALERTS, 0, alert)))

    def row(table: str) -> dict:
        cursor = writer.connection.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        (values,) = cursor.fetchall()
        return {n: v.isoformat().replace("+00:00", "Z") if hasattr(v, "isoformat") else v for n, v in zip(names, values)}

    stored = row("job_events")
    ref = event.pop("raw_ref")
    assert {k: stored[k] for k in event if k not in ("counts", "attrs")} == {
        **{k: v for k, v in event.items() if k not in ("counts", "attrs")},
        "started_at": "2026-11-30T08:59:00.250000Z", "occurred_at": "2026-11-30T09:00:00Z", "received_at": "2026-11-30T09:00:00Z",
        "finished_at": "2026-11-30T09:00:00Z",
    }
    assert (stored["raw_topic"], stored["raw_partition"], stored["raw_offset"]) == (ref["topic"], ref["partition"], ref["offset"])
    assert orjson.loads(stored["counts"]) == {"pages": 3} and orjson.loads(stored["attrs"]) == {"queue": "draining"}
    # plus where the record sat in Kafka (the order the worker made a run's transitions)
    assert row("job_transitions") == {**transition, "at": "2026-11-30T09:00:00Z", "kafka_partition": 0, "kafka_offset": 0}
    assert row("job_runs") == {**run, "first_event_at": "2026-11-30T09:00:00Z", "last_event_at": "2026-11-30T09:00:00Z",
                               "current_at": "2026-11-30T09:00:00Z", "started_at": "2026-11-30T09:00:00Z"}
    # a letter from a writer that sets no reason_code gets the code the worker gives (reason_codes.derive)
    assert row("dead_letters") == {**letter, "at": "2026-11-30T09:00:00Z", "reason_code": "rejected.bad_document"}
    assert row("alerts") == {**alert, "at": "2026-11-30T09:00:00Z", "delivered_at": "2026-11-30T09:00:00Z",
                             "status_rank": 1, "kafka_partition": 0, "kafka_offset": 0}


def test_the_alerters_own_records_land_in_alerts_and_dead_letters(writer):
    """The alerter (pipeline/alerts/) writes jobs.alerts and jobs.deadletter from the same
    contract: its encoder's output is what the sink reads."""
    from datetime import datetime, timezone

    from pipeline import contract
    from pipeline.alerts import records as alerting

    at = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    fired = contract.Alert(
        alert_id="a1", rule="run_failed", status="fired", reason=None, vendor="zuora", source="s",
        job_key="zuora:s:j", run_key="zuora:s:j/r", attempt=1, transition_id="t1", state="FAILED", at=at,
        delivered_at=None, channels=["slack"], message="run failed", schema_version=contract.SCHEMA_VERSION,
    )
    delivered = msgspec.structs.replace(fired, status="delivered", delivered_at=at)
    letter = contract.DeadLetter(
        dead_letter_id="jobs.transitions:0:7", at=at, stage="alerts", error_type="DecodeError", reason="not JSON",
        topic="jobs.transitions", partition=0, offset=7, vendor=None, key_b64=None, value_b64="eA==", value_size=1,
        value_preview="x", schema_version=contract.SCHEMA_VERSION,
    )
    writer.write(batch_of(
        (catalog.ALERTS, 0, alerting.encode(fired)), (catalog.ALERTS, 1, alerting.encode(delivered)),
        (catalog.DEADLETTER, 0, alerting.encode(letter)),
    ))
    assert writer.connection.execute("SELECT alert_id, status, delivered_at, channels FROM alerts").fetchall() == [
        ("a1", "delivered", at, ["slack"]),
    ]
    assert writer.connection.execute("SELECT dead_letter_id, stage, reason FROM dead_letters").fetchall() == [
        ("jobs.transitions:0:7", "alerts", "not JSON"),
    ]


def test_dead_letters_of_a_file_older_than_reason_codes_get_their_code(tmp_path):
    """Schema 5 adds dead_letters.reason_code; the letters already in the file are coded
    as the worker now codes new ones, so dead_letter_reasons groups old and new alike."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.migrate(con, upto=4)
    con.execute(
        "INSERT INTO dead_letters (dead_letter_id, stage, error_type, reason) VALUES "
        "('a', 'normalize', 'Rejected', 'not valid JSON: unexpected end of data: line 1 column 9 (char 8)'), "
        "('b', 'normalize', 'Rejected', 'not valid JSON: unexpected end of data: line 1 column 3 (char 2)')"
    )
    con.close()
    w = DuckDBWriter(path).open()
    try:
        assert w.connection.execute("SELECT reason_code, dead_letters FROM dead_letter_reasons").fetchall() == [
            ("rejected.not_valid_json_unexpected_end_of_data_line", 2),
        ]
    finally:
        w.close()
