"""``pipeline check`` (issue 33 case 12): data tests over the analytics file, one line per
check with its count, exit 1 when one fails; run on a demo database."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipeline import catalog
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import Story
from tests.support.records import qrs_retried_run, write
from tests.support.processes import pipeline




@pytest.fixture
def consistent(tmp_path: Path) -> Path:
    """A file written through the sink's writer: a run that failed then succeeded on retry,
    a dead letter, a parent and its child."""
    path = tmp_path / "checked.duckdb"
    writer = DuckDBWriter(path).open()
    s = Story(vendor="qlik_qrs")
    i = Story(vendor="informatica")
    parent = i.run_key("pub", "p")
    write(writer, [
        *qrs_retried_run(s),
        (catalog.DEADLETTER, s.dead_letter(1, reason="not valid JSON: unexpected end of data: line 1 column 9 (char 8)")),
        (catalog.TRANSITIONS, i.transition("pub", "p", 1, None, "RUNNING")),
        (catalog.RUNS, i.run("pub", "p", 1, "RUNNING")),
        (catalog.TRANSITIONS, i.transition("sub", "c", 1, None, "RUNNING")),
        (catalog.RUNS, {**i.run("sub", "c", 1, "RUNNING"), "parent_run_key": parent}),
    ])
    writer.close()
    return path


def test_a_consistent_file_passes_every_check_one_line_each(consistent):
    result = pipeline("check", "--db", str(consistent))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok") for line in lines[:-1])
    assert any("job_transitions.run_key -> job_runs" in line for line in lines)
    assert lines[-1].startswith(f"{len(lines) - 1} of {len(lines) - 1} checks passed")


@pytest.mark.parametrize(("damage", "failing"), [
    ("INSERT INTO job_events SELECT * FROM job_events LIMIT 1", "unique        job_events.event_id"),
    ("UPDATE job_runs SET state = NULL WHERE state = 'RUNNING'", "not_null      job_runs.state"),
    ("UPDATE job_transitions SET run_key = 'nowhere' WHERE to_state = 'FAILED'", "relationship  job_transitions.run_key -> job_runs"),
    ("UPDATE job_runs SET parent_run_key = 'gone' WHERE parent_run_key IS NOT NULL", "relationship  job_runs.parent_run_key -> job_runs"),
    ("UPDATE job_runs SET state = 'DONE' WHERE state = 'SUCCEEDED'", "accepted      job_runs.state in 7 values"),
    ("UPDATE job_runs SET stale_episodes = 2", "reconcile     sum(job_runs.stale_episodes) = rows of stale_episodes"),
    ("UPDATE job_runs SET state = 'FAILED' WHERE state = 'SUCCEEDED'", "reconcile     job_runs.state = its last unflagged transition"),
])
def test_each_kind_of_broken_data_fails_its_check_and_the_command(consistent, damage, failing):
    con = duckdb.connect(str(consistent))
    con.execute(damage)
    con.close()
    result = pipeline("check", "--db", str(consistent))
    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if failing in line]
    assert line.startswith("FAIL") and int(line.split()[-1]) > 0
    assert "failed" in result.stdout.splitlines()[-1]


def test_a_missing_or_unmigrated_file_is_one_clear_line(tmp_path):
    missing = pipeline("check", "--db", str(tmp_path / "none.duckdb"))
    assert missing.returncode == 1 and "no database at" in missing.stderr and "Traceback" not in missing.stderr
    old = tmp_path / "old.duckdb"
    from pipeline.sink import schema

    con = duckdb.connect(str(old))
    schema.migrate(con, upto=4)
    con.close()
    result = pipeline("check", "--db", str(old))
    assert result.returncode == 1 and "older schema" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_demo_database_passes_every_check(tmp_path):
    """CI: the whole pipeline (simulators, ingestors, worker, sink, alerter) writes a file
    for a short demo, and every check passes on it."""
    db = tmp_path / "demo.duckdb"
    demo = pipeline("demo", "--duration", "30", "--db", str(db), "--run-dir", str(tmp_path / "run"), timeout=400)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    result = pipeline("check", "--db", str(db))
    assert result.returncode == 0, result.stdout
    last = result.stdout.splitlines()[-1]
    assert "checks passed" in last and "failed" not in last
