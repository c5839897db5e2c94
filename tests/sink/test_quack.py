"""Live SQL over Quack: reads see the writer's commits at once; every kind of write is
refused with a reason and changes nothing; a wrong token is refused; the analysts'
duckdb CLI (duckdb-cli 1.5.5) reads the file and the live sink."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import orjson
import pytest

from pipeline import catalog
from pipeline.sink import quack
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import Story

TOKEN = "quack-test-token"
CLI = Path(sys.executable).parent / "duckdb"


def write_events(writer: DuckDBWriter, story: Story, first: int, count: int) -> None:
    writer.write(decode_batch([
        KafkaRecord(catalog.EVENTS, 0, n, 0, b"k", orjson.dumps(story.event("j", "r", n, "RUNNING")))
        for n in range(first, first + count)
    ]))


@pytest.fixture
def served(tmp_path):
    writer = DuckDBWriter(tmp_path / "live.duckdb").open()
    server = quack.QuackServer.start_on_any_port(writer.connection, "localhost", TOKEN)
    yield writer, server
    server.stop()
    writer.close()


@pytest.fixture
def client(served):
    con = duckdb.connect()
    quack.attach(con, served[1].uri, TOKEN)
    yield con
    con.close()


def snapshot(writer: DuckDBWriter) -> tuple:
    """Everything a write could change: objects, row counts, attached databases, settings."""
    con = writer.connection
    objects = con.execute("SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
    counts = con.execute("SELECT (SELECT count(*) FROM job_events), (SELECT count(*) FROM job_runs), (SELECT count(*) FROM kafka_offsets)").fetchone()
    databases = con.execute("SELECT database_name FROM duckdb_databases() ORDER BY 1").fetchall()
    settings = con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', 'memory_limit', 'quack_authorization_function', 'enable_external_access')").fetchall()
    return objects, counts, databases, settings


def test_a_client_sees_each_commit_of_the_writer_while_it_writes(served, client):
    writer, _ = served
    story = Story()
    assert client.execute("SELECT count(*) FROM job_events").fetchone()[0] == 0
    write_events(writer, story, 0, 100)
    assert client.execute("SELECT count(*) FROM job_events").fetchone()[0] == 100
    write_events(writer, story, 100, 50)
    assert client.execute("SELECT count(*), count(DISTINCT event_id) FROM jobs.job_events").fetchone() == (150, 150)
    assert client.execute("SELECT count(*) FROM active_runs").fetchone()[0] == 0


ATTACHED_WRITES = {
    "INSERT": ("INSERT INTO jobs.job_runs (run_key, version) VALUES ('x', 1)", "Authorization failed"),
    "UPDATE": ("UPDATE jobs.job_events SET state = 'FAILED'", "Can only update base table"),
    "DELETE": ("DELETE FROM jobs.job_events", "Can only delete from base table"),
    "DROP": ("DROP TABLE jobs.job_events", "read-only over Quack"),
    "CREATE": ("CREATE TABLE jobs.mine (x INTEGER)", "read-only over Quack"),
    "CREATE VIEW": ("CREATE VIEW jobs.mine AS SELECT 1", "read-only over Quack"),
}

SENT_WRITES = {
    "INSERT": "INSERT INTO job_runs (run_key, version) VALUES ('x', 1)",
    "UPDATE": "UPDATE job_events SET state = 'FAILED'",
    "DELETE": "DELETE FROM job_events",
    "DROP": "DROP VIEW active_runs",
    "CREATE": "CREATE TABLE mine AS SELECT 1 AS x",
    "COPY": "COPY job_events TO '/tmp/jobstream-quack-copy.csv'",
    "ATTACH": "ATTACH ':memory:' AS elsewhere",
    "SET": "SET threads = 1",
    "CALL": "CALL quack_stop('quack:localhost')",
    "INSTALL": "INSTALL json",
    "LOAD": "LOAD json",
    "CHECKPOINT": "CHECKPOINT",
    "SELECT nextval": "SELECT nextval('anything')",
    "FROM quack_stop": "FROM quack_stop('quack:localhost')",
    "two statements": "SELECT 1; DROP TABLE job_events",
}


@pytest.mark.parametrize("kind", list(ATTACHED_WRITES))
def test_writes_through_the_attached_catalog_are_refused_and_change_nothing(served, client, kind):
    writer, _ = served
    write_events(writer, Story(), 0, 3)
    before = snapshot(writer)
    statement, message = ATTACHED_WRITES[kind]
    with pytest.raises(duckdb.Error, match=message):
        client.execute(statement)
    assert snapshot(writer) == before


@pytest.mark.parametrize("kind", list(SENT_WRITES))
def test_every_kind_of_write_sent_as_sql_is_refused_with_the_reason_and_changes_nothing(served, client, kind):
    writer, server = served
    write_events(writer, Story(), 0, 3)
    before = snapshot(writer)
    statement = SENT_WRITES[kind].replace("'", "''")
    # An INSERT can only be refused without a reason (quack.py: appends ignore a rewrite).
    reason = "Authorization failed" if kind == "INSERT" else r"jobstream: the live database is read-only over Quack \(SELECT and EXPLAIN only\); refused: "
    with pytest.raises(duckdb.Error, match=reason):
        client.execute(f"FROM quack_query('{server.uri}', '{statement}', token => '{TOKEN}')").fetchall()
    assert snapshot(writer) == before
    assert not os.path.exists("/tmp/jobstream-quack-copy.csv")
    assert client.execute(f"FROM quack_query('{server.uri}', 'SELECT count(*) FROM job_events', token => '{TOKEN}')").fetchone() == (3,)


@pytest.mark.parametrize("query", ["SELECT * FROM read_csv('/etc/hostname')", "SELECT * FROM glob('/etc/*')", "SELECT * FROM read_text('/etc/hostname')"])
def test_the_servers_files_cannot_be_read_over_quack(served, client, query):
    _, server = served
    statement = query.replace("'", "''")
    with pytest.raises(duckdb.Error, match="file system operations are disabled by configuration"):
        client.execute(f"FROM quack_query('{server.uri}', '{statement}', token => '{TOKEN}')").fetchall()


def test_a_wrong_token_is_refused(served):
    _, server = served
    con = duckdb.connect()
    with pytest.raises(duckdb.Error, match="Authentication failed"):
        quack.attach(con, server.uri, "not-the-token")


def test_a_generated_token_is_kept_across_starts_group_readable_until_rotated(tmp_path):
    token_file = quack.token_file_for(tmp_path / "x.duckdb")
    token = quack.resolve_token(token_file, env={})
    assert token_file.name == "x.duckdb.quack-token"
    assert token_file.read_text().strip() == token and len(token) >= 24
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert token_file.stat().st_gid == tmp_path.stat().st_gid  # the analysts' group owns the directory
    assert quack.resolve_token(token_file, env={}) == token  # a restart serves the same token
    rotated = quack.rotate_token(token_file)
    assert rotated != token and quack.resolve_token(token_file, env={}) == rotated
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert quack.resolve_token(token_file, env={quack.TOKEN_ENV: "from-env-1234"}) == "from-env-1234"


def test_explain_of_a_read_is_allowed_and_explain_of_a_write_refused(served):
    writer, server = served
    con = duckdb.connect()
    quack.load_extensions(con)
    plan = quack.query(con, server.uri, TOKEN, "EXPLAIN SELECT count(*) FROM job_runs r JOIN job_transitions t USING (run_key)")
    assert "HASH_JOIN" in "".join(value for _, value in plan)
    with pytest.raises(duckdb.Error, match="read-only over Quack"):
        quack.query(con, server.uri, TOKEN, "EXPLAIN ANALYZE DELETE FROM job_events")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60)


def test_the_duckdb_cli_opens_the_sinks_file(tmp_path):
    writer = DuckDBWriter(tmp_path / "closed.duckdb").open()
    write_events(writer, Story(), 0, 7)
    writer.close()
    done = cli("-readonly", "-csv", str(tmp_path / "closed.duckdb"), "-c", "SELECT count(*) AS n FROM job_events; SELECT count(*) AS v FROM active_runs")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "7", "v", "0"]
    assert "v1.5.5" in cli("-version").stdout


def test_the_duckdb_cli_queries_the_live_sink_over_quack(served):
    writer, server = served
    write_events(writer, Story(), 0, 11)
    load = f"LOAD '{quack.extension_path('httpfs')}'; LOAD '{quack.extension_path('quack')}';"
    attach = f"CREATE SECRET (TYPE quack, TOKEN '{TOKEN}'); ATTACH '{server.uri}' AS jobs;"
    done = cli("-csv", "-c", f"{load} {attach} SELECT count(*) AS n FROM jobs.job_events")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["n", "11"]  # after CREATE SECRET's "Success true"
    refused = cli("-csv", "-c", f"{load} {attach} DROP TABLE jobs.job_events")
    assert "read-only over Quack" in refused.stdout + refused.stderr
    assert writer.connection.execute("SELECT count(*) FROM job_events").fetchone()[0] == 11
