"""The Postgres-wire endpoint on a lake (pipeline/sink/lake_pgwire.py): a psycopg client
reads the tables and the views, sees a later commit, and is refused writes and the
server's other files."""

from __future__ import annotations

import psycopg
import pytest

from pipeline.sink.lake import LakeWriter
from pipeline.sink.lake_pgwire import serve
from pipeline.sink.pgwire import PgConfig
from tests.support.lake import write_story
from tests.support.records import Story

PASSWORD = "lake-secret"


def test_a_postgres_client_reads_the_lake_sees_later_commits_and_writes_nothing(lake):
    writer = LakeWriter(lake).open()
    endpoint = None
    try:
        write_story(writer, Story())
        endpoint = serve(lake, PgConfig("127.0.0.1", 0, PASSWORD, 10.0))
        dsn = f"{endpoint.uri}?user=analyst&password={PASSWORD}&sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as client:
            assert client.execute("SELECT count(*) FROM job_events").fetchone()[0] == 60
            assert client.execute("SELECT count(*) FROM job_events e JOIN job_runs r USING (run_key)").fetchone()[0] == 60
            assert client.execute("SELECT count(*) >= 0 FROM active_runs").fetchone()[0] is True
            write_story(writer, Story(), first_offset=1000)
            assert client.execute("SELECT count(*) FROM job_events").fetchone()[0] == 120
            with pytest.raises(psycopg.Error):
                client.execute("DELETE FROM job_events")
            with pytest.raises(psycopg.Error, match="disabled by configuration|not allowed|refus"):
                client.execute("SELECT * FROM read_csv('/etc/passwd')")
    finally:
        if endpoint is not None:
            endpoint.stop()
        writer.close()


def test_the_sink_refuses_to_serve_the_lake_without_a_password_in_one_line(lake, monkeypatch):
    from pipeline.settings import Settings
    from pipeline.sink.lake_role import serve_postgres
    from pipeline.sink.writer import SinkError

    monkeypatch.delenv("JOBSTREAM_QUACK_TOKEN", raising=False)
    with pytest.raises(SinkError, match="needs a password: JOBSTREAM_PG_PASSWORD_FILE or JOBSTREAM_QUACK_TOKEN"):
        serve_postgres(Settings(pg_port=5433), lake)


def test_the_sink_serves_the_lake_with_its_password_file(lake, tmp_path):
    from pipeline.settings import Settings
    from pipeline.sink.lake_role import serve_postgres

    LakeWriter(lake).open().close()
    password_file = tmp_path / "pg-password"
    password_file.write_text(PASSWORD + "\n")
    endpoint = serve_postgres(Settings(pg_host="127.0.0.1", pg_port=0, pg_password_file=password_file), lake)
    try:
        with psycopg.connect(f"{endpoint.uri}?user=analyst&password={PASSWORD}&sslmode=disable", autocommit=True) as client:
            assert client.execute("SELECT count(*) FROM job_runs").fetchone()[0] == 0
    finally:
        endpoint.stop()
