"""Analysts on the lake: any DuckDB attaches it (no USE needed) and finds the file's
views, descriptions and checks; joins work; several readers at once while a sink
commits; `pipeline sql --lake` and `pipeline check --lake` (pipeline/sink/lake_sql.py)."""

from __future__ import annotations

import subprocess
import sys
import threading

import duckdb
import pytest

from pipeline.sink import check, describe, lake_sql, schema
from pipeline.sink.lake import LakeWriter
from tests.support.lake import analyst, write_story
from tests.support.records import Story



@pytest.fixture
def filled(lake):
    story = Story()
    writer = LakeWriter(lake).open()
    try:
        write_story(writer, story)
    finally:
        writer.close()
    return lake, story


def test_an_analyst_attaching_the_lake_gets_the_views_joins_and_descriptions(filled):
    target, story = filled
    con = analyst(target)
    try:
        views = {v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE database_name = 'analytics'").fetchall()}
        assert set(schema.VIEWS) <= views
        assert con.execute("SELECT sum(runs) FROM analytics.jobs WHERE source = ?", [story.source]).fetchone()[0] == 12
        joined = con.execute(
            "SELECT count(*) FROM analytics.job_runs r JOIN analytics.job_events e USING (run_key) WHERE r.source = ?",
            [story.source]).fetchone()[0]
        assert joined == 60
        comment = con.execute("SELECT comment FROM duckdb_tables() WHERE database_name = 'analytics' AND table_name = 'job_runs'").fetchone()[0]
        assert comment == describe.CATALOG["job_runs"].text
        with pytest.raises(duckdb.Error, match="read-only|read only"):
            con.execute("DELETE FROM analytics.job_runs")
    finally:
        con.close()


def test_every_data_check_passes_on_the_lake(filled):
    target, _ = filled
    outcomes = lake_sql.run_checks(target)
    assert outcomes and all(o.passed for o in outcomes), check.report(outcomes, "lake")


def test_readers_at_once_while_a_sink_commits_each_see_whole_batches(filled):
    target, _ = filled
    writer = LakeWriter(target).open()
    answers: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            con = analyst(target)
            for _ in range(5):
                answers.append(con.execute("SELECT count(*) FROM analytics.job_events").fetchone()[0] % 60)
            con.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    try:
        for reader in readers:
            reader.start()
        for n in range(1, 4):
            write_story(writer, Story(), first_offset=1000 * n)
        for reader in readers:
            reader.join(60)
    finally:
        writer.close()
    assert not errors, errors
    assert len(answers) == 20 and set(answers) == {0}  # 60 events per story: never half a batch


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_pipeline_sql_and_check_on_the_lake(filled):
    target, story = filled
    done = cli("sql", "--lake", target.catalog, "-f", "csv", f"SELECT job_key, runs FROM jobs WHERE source = '{story.source}' ORDER BY job_key LIMIT 2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["job_key,runs", f"{story.job_key('job0')},1", f"{story.job_key('job1')},1"]
    refused = cli("sql", "--lake", target.catalog, "DELETE FROM job_runs")
    assert refused.returncode != 0 and "read-only" in refused.stderr and "Traceback" not in refused.stderr
    described = cli("sql", "--lake", target.catalog, "--describe", "active_runs")
    assert described.returncode == 0, described.stderr
    assert describe.CATALOG["active_runs"].columns["attempt"] in described.stdout
    checked = cli("check", "--lake", target.catalog)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checks passed on the lake" in checked.stdout
    missing = cli("sql", "--lake", target.catalog.replace("dbname=", "dbname=nosuch"), "FROM jobs")
    assert missing.returncode != 0 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
