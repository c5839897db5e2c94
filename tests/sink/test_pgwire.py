"""The live database over the PostgreSQL wire, from a real ``pipeline sink``, with real
clients: psql and psycopg; reads (a join, parameters, TIMESTAMPTZ and BIGINT) answer, a
write and a wrong password are refused with a reason, a query runs while the sink
commits, a runaway query is stopped, and TLS is served when a certificate is given."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import datetime, timezone

import psycopg
import pytest

from pipeline import catalog
from pipeline.broker import free_port
from pipeline.sink import endpoint, quack
from tests.support.processes import SinkProcess
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration

PASSWORD = "pg-test-password-1234"
JOIN = ("SELECT r.run_key, count(t.transition_id) AS transitions FROM job_runs r "
        "LEFT JOIN job_transitions t USING (run_key) GROUP BY r.run_key")


@pytest.fixture(scope="module")
def live(broker, tmp_path_factory):
    """A sink serving Postgres on a port of its own, the password from a file, 2 s per query."""
    root = tmp_path_factory.mktemp("pg")
    password_file = root / "pg-password"
    password_file.write_text(PASSWORD + "\n")
    port = free_port()
    sink = SinkProcess(broker.bootstrap, root / "live.duckdb", env={
        "JOBSTREAM_PG_PORT": str(port), "JOBSTREAM_PG_PASSWORD_FILE": str(password_file),
        "JOBSTREAM_LIVE_QUERY_TIMEOUT_S": "2",
    }).start()
    story = Story()
    try:
        sink.connect().close()
        asyncio.run(produce(broker.bootstrap, [(catalog.EVENTS, story.event("j", "r", n, "RUNNING")) for n in range(3)]))
        sink.wait_for(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'", 3)
        yield sink, port, story
    finally:
        assert sink.stop() == 0, sink.tail()


def dsn(port: int, password: str = PASSWORD, **extra: str) -> str:
    return " ".join([f"host=127.0.0.1 port={port} user=analyst dbname=jobs password={password}",
                     *(f"{k}={v}" for k, v in extra.items())])


def psql(port: int, *commands: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    args = [shutil.which("psql") or "psql", f"postgresql://analyst@127.0.0.1:{port}/jobs", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSWORD": password}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def test_psql_runs_a_join_and_an_analysts_view_and_is_refused_a_write(live):
    sink, port, story = live
    done = psql(port, f"SELECT count(*) FROM job_events e LEFT JOIN job_runs r USING (run_key) WHERE e.source = '{story.source}'",
                "SELECT count(*) >= 0 FROM active_runs", JOIN + " LIMIT 0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "t"]
    refused = psql(port, "DELETE FROM job_events")
    assert refused.returncode != 0
    assert "read-only here: only SELECT queries" in refused.stderr
    assert sink.connect().execute(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'").fetchone()[0] == 3


def test_a_wrong_password_is_refused(live):
    _, port, _ = live
    done = psql(port, "SELECT 1", password="not-the-password")
    assert done.returncode != 0
    assert 'password authentication failed for user "analyst"' in done.stderr
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(port, "wrong"))


def test_psycopg_parameters_timestamptz_and_bigint_round_trip(live):
    sink, port, story = live
    moment = datetime(2026, 12, 5, 10, 30, 15, 123456, tzinfo=timezone.utc)
    big = 9_007_199_254_740_993  # 2**53 + 1: lost by any float on the way
    with psycopg.connect(dsn(port)) as con:
        assert con.execute("SELECT %s::TIMESTAMPTZ AS at, %s::BIGINT AS n", [moment, big]).fetchone() == (moment, big)
        rows = con.execute("SELECT event_id, occurred_at, raw_offset FROM job_events WHERE source = %s AND raw_offset >= %s ORDER BY event_id",
                           [story.source, 0]).fetchall()
    expected = sink.connect().execute(
        "SELECT event_id, occurred_at, raw_offset FROM job_events WHERE source = ? ORDER BY event_id", [story.source]).fetchall()
    assert rows == expected and len(rows) == 3
    assert rows[0][1].tzinfo is not None


def test_a_query_runs_while_the_sink_commits(live):
    sink, port, _ = live
    story = Story()
    counts = []
    with psycopg.connect(dsn(port), autocommit=True) as con:
        asyncio.run(produce(sink.args[sink.args.index("--bootstrap") + 1],
                            [(catalog.EVENTS, story.event("j", f"r{n}", 0, "RUNNING")) for n in range(200)]))
        while not counts or counts[-1] < 200:
            counts.append(con.execute(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'").fetchone()[0])
            assert len(counts) < 10_000, "the sink's commits never became visible over Postgres"
    assert counts == sorted(counts) and counts[-1] == 200


def test_a_runaway_query_is_stopped_at_the_time_limit(live):
    _, port, _ = live
    with psycopg.connect(dsn(port)) as con:
        with pytest.raises(psycopg.errors.QueryCanceled, match="limit of 2 s per query"):
            con.execute("SELECT count(*) FROM range(100000000000) a")
        con.rollback()
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_the_endpoint_file_names_the_postgres_endpoint(live):
    sink, port, _ = live
    assert endpoint.discover(sink.db) == endpoint.Endpoint(sink.process.pid, sink.uri, f"postgresql://127.0.0.1:{port}/jobs")


def test_tls_is_served_when_a_certificate_is_given(broker, tmp_path):
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    authority.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    sink = SinkProcess(broker.bootstrap, tmp_path / "tls.duckdb", token="tls-token-1234", env={
        "JOBSTREAM_PG_PORT": str(port), "JOBSTREAM_PG_TLS_CERT": str(cert_file), "JOBSTREAM_PG_TLS_KEY": str(key_file),
    }).start()
    try:
        sink.connect().close()
        with psycopg.connect(dsn(port, "tls-token-1234", sslmode="verify-full", sslrootcert=str(ca_file))) as con:
            assert con.pgconn.ssl_in_use
            assert con.execute("SELECT count(*) >= 0 FROM job_runs").fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError, match="requires TLS"):
            psycopg.connect(dsn(port, "tls-token-1234", sslmode="disable"))
    finally:
        assert sink.stop() == 0, sink.tail()
    assert quack.token_file_for(tmp_path / "tls.duckdb").exists() is False  # the token came from the environment


def test_a_plain_endpoint_on_a_network_address_is_refused(tmp_path):
    import duckdb

    from pipeline.sink import pgwire

    with pytest.raises(pgwire.PgWireError, match="refusing to serve Postgres on 0.0.0.0 without TLS"):
        pgwire.PgServer.start(duckdb.connect(), pgwire.PgConfig("0.0.0.0", 0, PASSWORD, 5.0))
