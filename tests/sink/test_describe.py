"""A described catalog (issue 33 case 10): every table, view and column says what it is,
its grain and its units, in the file itself (any DuckDB client sees it) and through
``pipeline sql --describe [NAME]``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline.sink import schema
from pipeline.sink.writer import DuckDBWriter


@pytest.fixture
def described(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.duckdb"
    DuckDBWriter(path).open().close()
    return path


def test_every_table_view_and_column_has_a_comment_any_duckdb_client_sees(described):
    con = duckdb.connect(str(described), read_only=True)
    try:
        relations = con.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal "
            "UNION ALL SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        assert {name for name, _ in relations} >= set(schema.VIEWS) | {"job_events", "job_runs", "dead_letters"}
        assert [name for name, comment in relations if not comment] == []
        assert con.execute(
            "SELECT table_name || '.' || column_name FROM duckdb_columns() WHERE NOT internal AND coalesce(comment, '') = ''"
        ).fetchall() == []
        grain, units = con.execute(
            "SELECT v.comment, c.comment FROM duckdb_views() v JOIN duckdb_columns() c ON c.table_name = v.view_name "
            "WHERE v.view_name = 'job_attempts' AND c.column_name = 'duration_s'"
        ).fetchone()
    finally:
        con.close()
    assert "One row per attempt" in grain and "(seconds)" in units


def test_a_file_made_before_the_catalog_was_described_gets_its_comments(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.migrate(con, upto=4)
    con.close()
    DuckDBWriter(path).open().close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'stale_episodes'").fetchone()[0]
    finally:
        con.close()


def pipeline_sql(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sql", "--quack", "quack:localhost:1", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_pipeline_sql_describe_lists_the_catalog_and_one_relations_columns(described):
    listing = pipeline_sql("--db", str(described), "--describe")
    assert listing.returncode == 0, listing.stderr
    assert "job_attempts" in listing.stdout and "One row per attempt of a run" in listing.stdout
    columns = pipeline_sql("--db", str(described), "--describe", "failure_rates")
    assert columns.returncode == 0, columns.stderr
    assert "failure_rates (view): One row per (vendor, day)" in columns.stdout
    assert "failure_rate" in columns.stdout and "CANCELED and SKIPPED runs are left out" in columns.stdout
    unknown = pipeline_sql("--db", str(described), "--describe", "nope")
    assert unknown.returncode == 1 and "no table or view named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.integration
def test_describe_answers_from_the_live_sink_over_quack(broker, tmp_path):
    """While the sink holds the file, the catalog comes over Quack: the server runs the
    catalog query (a client's duckdb_tables() does not list an attached Quack catalog)."""
    from tests.support.processes import SinkProcess

    sink = SinkProcess(broker.bootstrap, tmp_path / "live.duckdb", token=None).start()
    try:
        sink.connect().close()
        result = pipeline_sql_live(sink, "--describe", "job_attempts")
        assert result.returncode == 0, result.stderr
        assert "job_attempts (view): One row per attempt" in result.stdout and "start_observed" in result.stdout
        listing = pipeline_sql_live(sink, "--describe")
        assert f"in {sink.uri}" in listing.stdout and "dead_letter_reasons" in listing.stdout
    finally:
        assert sink.stop() == 0, sink.tail()


def pipeline_sql_live(sink, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    from pipeline.sink import quack

    env = {k: v for k, v in os.environ.items() if k != quack.TOKEN_ENV}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sql", "--db", str(sink.db), "--quack", sink.uri, *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def _sample_events() -> list:
    """Every vendor's sample documents, normalized (the keys the worker really stores)."""
    from pipeline import vendors
    from pipeline.vendors import Rejected, registry

    events = []
    for vendor in registry.vendors():
        for path in sorted(vendor.sample_folder().glob("*")):
            pieces = path.read_bytes().splitlines() if path.suffix == ".jsonl" else [path.read_bytes()]
            for piece in filter(None, pieces):
                try:
                    events += vendors.normalize(vendor.name, piece)
                except Rejected:
                    pass
    return events


def _described_shape(comment: str, event) -> str:
    """The quoted key shape of a comment as a pattern: <job_key> is the event's job key,
    <vendor> its vendor, any other <...> one or more characters."""
    import re

    shape = re.search(r"'(<.*?>)'", comment)
    assert shape, f"no quoted key shape in {comment!r}"
    pattern = ""
    for literal, name in re.findall(r"([^<]*)(?:<([^>]*)>)?", shape.group(1)):
        pattern += re.escape(literal)
        if name == "job_key":
            pattern += re.escape(event.job_key)
        elif name == "vendor":
            pattern += re.escape(event.vendor)
        elif name:
            pattern += ".+"
    return pattern


def test_the_described_key_shapes_are_the_keys_the_normalizers_make():
    """An analyst parses keys by the catalog's words: run_key was described as
    '<job_key>/<run id>', which no vendor's run key is (a 10-minute demo, issue 33)."""
    import re

    from pipeline.sink import describe
    from pipeline.vendors import registry

    events = _sample_events()
    assert {event.vendor for event in events} == {vendor.name for vendor in registry.vendors()}
    for column in ("job_key", "run_key"):
        comment = describe.COMMON_COLUMNS[column]
        wrong = [getattr(event, column) for event in events
                 if not re.fullmatch(_described_shape(comment, event), getattr(event, column))]
        assert not wrong, f"{column} described as {comment!r}, but the normalizers make {sorted(set(wrong))[:3]}"
