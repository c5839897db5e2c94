"""``pipeline sql``: live over Quack while the sink runs, the file read-only when it does
not, writes refused with one line, ``--attach`` prints a command that works."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.sink import quack
from tests.support.processes import SinkProcess
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration


def pipeline_sql(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != quack.TOKEN_ENV} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "sql", *args], capture_output=True, text=True, timeout=60, env=clean,
    )


@pytest.fixture(scope="module")
def live(broker, tmp_path_factory):
    """A running sink with a generated token, and one story's events in it."""
    db = tmp_path_factory.mktemp("sql") / "live.duckdb"
    story = Story()
    sink = SinkProcess(broker.bootstrap, db, token=None).start()
    try:
        sink.connect().close()
        asyncio.run(produce(broker.bootstrap, [(catalog.EVENTS, story.event("j", "r", n, "RUNNING")) for n in range(4)]))
        sink.wait_for(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'", 4)
        yield sink, story
    finally:
        assert sink.stop() == 0, sink.tail()


def test_a_query_is_answered_live_over_quack_in_each_format(live):
    sink, story = live
    query = f"SELECT event_id, state FROM job_events WHERE source = '{story.source}' ORDER BY event_id"
    args = ["--db", str(sink.db), "--quack", sink.uri]
    table = pipeline_sql(*args, query)
    assert table.returncode == 0, table.stderr
    assert f"4 rows from {sink.uri}" in table.stdout
    rows = list(csv.reader(io.StringIO(pipeline_sql(*args, "--format", "csv", query).stdout)))
    assert rows == [["event_id", "state"]] + [[f"{story.source}-j-r-e{n}", "RUNNING"] for n in range(4)]
    lines = pipeline_sql(*args, "-f", "json", query).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"event_id": f"{story.source}-j-r-e{n}", "state": "RUNNING"} for n in range(4)]


def test_the_generated_token_is_in_a_0600_file_and_never_in_the_sinks_output(live):
    sink, _ = live
    token_file = quack.token_file_for(sink.db)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token and token not in sink.tail()
    assert str(token_file) in sink.tail()


@pytest.mark.parametrize("statement", ["DELETE FROM job_events", "INSERT INTO alerts (alert_id) VALUES ('x')", "DROP VIEW jobs", "CALL quack_stop('x')"])
def test_a_write_is_refused_with_one_line(live, statement):
    sink, _ = live
    done = pipeline_sql("--db", str(sink.db), "--quack", sink.uri, statement)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the database is read-only here: only SELECT queries (and DESCRIBE / SHOW / SUMMARIZE) are allowed"
    ]


def test_attach_prints_a_duckdb_command_that_attaches_the_live_database(live):
    sink, story = live
    done = pipeline_sql("--attach", "--db", str(sink.db), "--quack", sink.uri)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().replace("\n", "")
    assert line.startswith(str(Path(sys.executable).parent / "duckdb"))
    assert quack.token_file_for(sink.db).read_text().strip() not in line
    session = subprocess.run(
        ["bash", "-c", line + " -csv"], input=f"SELECT count(*) AS n FROM job_events WHERE source = '{story.source}';\n",
        capture_output=True, text=True, timeout=60,
    )
    assert session.stdout.split()[-2:] == ["n", "4"], session.stderr


def test_without_a_running_sink_the_file_is_opened_read_only(live, tmp_path):
    sink, story = live
    db = tmp_path / "stopped.duckdb"
    stopped = SinkProcess(sink.args[sink.args.index("--bootstrap") + 1], db).start()
    stopped.wait_for(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'", 4)
    assert stopped.stop() == 0
    done = pipeline_sql("--db", str(db), "--quack", stopped.uri, "-f", "csv", f"SELECT count(*) AS n FROM job_events WHERE source = '{story.source}'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "4"]


def test_no_database_and_no_sink_is_one_line(tmp_path):
    done = pipeline_sql("--db", str(tmp_path / "none.duckdb"), "--quack", "quack:localhost:1", "SELECT 1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: no database at {tmp_path / 'none.duckdb'} and no live sink at quack:localhost:1: start `pipeline sink` or pass --db"
    ]
