"""``pipeline sql``: live over Quack while the sink runs, the file read-only when it does
not, writes refused with one line, ``--attach`` prints a command that works."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.sink import endpoint, quack
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


def test_the_generated_token_is_in_a_0640_file_and_never_in_the_sinks_output(live):
    sink, _ = live
    token_file = quack.token_file_for(sink.db)
    assert oct(token_file.stat().st_mode & 0o777) == "0o640"
    token = token_file.read_text().strip()
    assert token and token not in sink.tail()
    assert str(token_file) in sink.tail()


@pytest.mark.parametrize("statement", ["DELETE FROM job_events", "INSERT INTO alerts (alert_id) VALUES ('x')", "DROP VIEW jobs", "CALL quack_stop('x')"])
def test_a_write_is_refused_with_one_line(live, statement):
    sink, _ = live
    done = pipeline_sql("--db", str(sink.db), "--quack", sink.uri, statement)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the database is read-only here: only SELECT queries (and DESCRIBE / SHOW / SUMMARIZE / EXPLAIN) are allowed"
    ]


def test_attach_prints_a_duckdb_command_that_attaches_the_live_database(live):
    sink, story = live
    done = pipeline_sql("--attach", "--db", str(sink.db))  # no --quack: the endpoint file says where
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().replace("\n", "")
    assert line.startswith(str(Path(sys.executable).parent / "duckdb") + " -init ")
    token = quack.token_file_for(sink.db).read_text().strip()
    assert token not in line and "$(" not in line
    init_file = Path(shlex.split(line)[-1])
    assert stat.S_IMODE(init_file.stat().st_mode) == 0o600
    session = subprocess.Popen([*shlex.split(line), "-csv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        argv = Path(f"/proc/{session.pid}/cmdline").read_bytes().decode()  # what `ps` shows every local user
        assert token not in argv
        out, errors = session.communicate(f"SELECT count(*) AS n FROM job_events WHERE source = '{story.source}';\n", timeout=60)
    finally:
        session.kill()
    assert out.split()[-2:] == ["n", "4"], errors


def test_a_join_of_stored_tables_is_answered_live(live):
    sink, story = live
    mine = f"source = '{story.source}'"
    query = (f"SELECT count(*) AS n FROM job_events e LEFT JOIN job_runs r USING (run_key) WHERE e.{mine} "
             f"UNION ALL SELECT count(*) FROM job_events WHERE {mine} AND event_id IN (SELECT event_id FROM job_events)")
    done = pipeline_sql("--db", str(sink.db), "-f", "csv", query)  # no --quack: the endpoint file says where
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows == [["n"], ["4"], ["4"]]


def test_explain_of_a_read_is_answered_and_a_query_error_is_the_servers_line(live):
    sink, _ = live
    done = pipeline_sql("--db", str(sink.db), "-f", "csv", "EXPLAIN SELECT * FROM job_runs JOIN job_transitions USING (run_key)")
    assert done.returncode == 0, done.stderr
    assert "HASH_JOIN" in done.stdout
    missing = pipeline_sql("--db", str(sink.db), "SELECT * FROM no_such_table")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and "no_such_table does not exist" in missing.stderr
    assert "quack_query" not in missing.stderr


def test_the_endpoint_file_is_there_while_the_sink_runs_and_the_token_survives_a_restart(live, tmp_path):
    sink, story = live
    db = tmp_path / "restarted.duckdb"
    bootstrap = sink.args[sink.args.index("--bootstrap") + 1]
    first = SinkProcess(bootstrap, db, token=None).start()
    try:
        first.connect().close()
        assert endpoint.discover(db) == endpoint.Endpoint(first.process.pid, first.uri)
        token = quack.token_file_for(db).read_text()
    finally:
        assert first.stop() == 0, first.tail()
    assert not endpoint.endpoint_file_for(db).exists()
    second = SinkProcess(bootstrap, db, token=None).start()
    try:
        second.connect().close()
        assert quack.token_file_for(db).read_text() == token
        done = pipeline_sql("--db", str(db), "-f", "csv", "SELECT 42 AS answer")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["answer", "42"]
    finally:
        assert second.stop() == 0, second.tail()


def test_rotate_token_writes_a_new_one(tmp_path):
    db = tmp_path / "x.duckdb"
    token_file = quack.token_file_for(db)
    token_file.write_text("old-token-1234\n")
    done = pipeline_sql("--db", str(db), "--rotate-token")
    assert done.returncode == 0, done.stderr
    assert token_file.read_text().strip() not in ("", "old-token-1234")
    assert done.stdout.strip() == f"new token in {token_file}; restart the sink to serve it"


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
