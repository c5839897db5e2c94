"""The demo's closing report, on a real DuckDB file with the sink's schema: labelled
summary tables, a first query readable at 80 columns, commands a fresh install can run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from pipeline.run import demo
from pipeline.sink import schema


def _database(path: Path) -> Path:
    con = duckdb.connect(str(path))
    try:
        schema.migrate(con)
        con.execute("INSERT INTO job_runs (run_key, job_key, vendor, state, attempt, retries, duration_s) "
                    "VALUES ('r1', 'zuora:s:t1', 'zuora', 'SUCCEEDED', 2, 1, 12.5)")
    finally:
        con.close()
    return path


def test_each_summary_section_is_a_small_table_with_its_column_names(tmp_path):
    db = _database(tmp_path / "demo.duckdb")
    lines = demo.report(demo.DemoOptions(run_dir=tmp_path, db=db), demo.DemoResult(demo.summary(db), {}, 1.0))
    retries = lines.index("  retries:")
    assert lines[retries + 1].split() == ["vendor", "retries", "attempts"]
    assert lines[retries + 2].split() == ["zuora", "1", "2"]
    alerts = lines.index("  alerts:")
    assert lines[alerts + 1].split() == ["rule", "status", "alerts"] and lines[alerts + 2].strip() == "(none)"


def test_the_suggested_commands_name_this_installation_unless_it_is_on_path(tmp_path, monkeypatch):
    db = _database(tmp_path / "demo.duckdb")
    bin_dir = Path(sys.executable).absolute().parent
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    lines = demo.report(demo.DemoOptions(run_dir=tmp_path, db=db), demo.DemoResult({}, {}, 1.0))
    assert f"  {bin_dir / 'duckdb'} -readonly {db}" in lines
    assert any(line.startswith(f"  {bin_dir / 'pipeline'} sql --db {db} ") for line in lines)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin")
    lines = demo.report(demo.DemoOptions(run_dir=tmp_path, db=db), demo.DemoResult({}, {}, 1.0))
    assert f"  duckdb -readonly {db}" in lines


def test_the_first_suggested_query_runs_and_fits_80_columns(tmp_path):
    db = _database(tmp_path / "demo.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(demo.RECENT_RUNS_QUERY)
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    assert columns[:3] == ["vendor", "state", "attempt"] and len(columns) <= 6 and len(rows) == 1


def test_the_progress_line_shows_per_vendor_ingested_normalized_and_in_duckdb_then_lag_and_alerts():
    from collections import Counter

    tally = demo._Tally("127.0.0.1:9")  # never started: only its counters
    tally.raw.update({"zuora": 9, "truenas": 4})
    tally.events.update({"zuora": 7, "truenas": 4})
    tally.dead_letters = 2
    line = demo._progress_line(12.0, tally, 3, [], Counter({"zuora": 5}), {"worker": 11, "sink": None})
    assert "ingested/normalized/in DuckDB:" in line and "zuora 9/7/5" in line and "truenas 4/4/0" in line
    assert "dead letters 2" in line and "lag: worker 11 sink ?" in line and line.endswith("alerts 3")


def test_the_tally_counts_an_event_emitted_again_once_as_duckdb_keeps_it():
    import orjson

    from pipeline import catalog

    tally = demo._Tally("127.0.0.1:9")  # never started: fed by hand
    for event_id in ("a", "b", "a", "a"):  # "a" re-emitted for a re-sent raw record
        tally._count(catalog.EVENTS, orjson.dumps({"event_id": event_id, "vendor": "informatica"}))
    tally._count(catalog.raw_topics()[0], orjson.dumps({"payload": {}}))
    assert tally.events["informatica"] == 2
    assert sum(tally.raw.values()) == 1


def test_progress_reads_the_lag_from_a_roles_metrics(tmp_path):
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    lag = Gauge("jobstream_consumer_lag", "lag", ["role", "topic", "partition"], registry=registry)
    lag.labels("worker", "raw.zuora", "0").set(4)
    lag.labels("worker", "raw.zuora", "1").set(6)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    try:  # the sink has reported no metrics port yet
        progress = demo._Progress("quack:127.0.0.1:9", tmp_path / "no-token", {"worker": port}.get)
        assert progress.lag() == {"worker": 10, "sink": None}
        assert progress.in_duckdb() == {}  # no token file: nothing to ask yet
    finally:
        server.shutdown()
        thread.join(timeout=5)
