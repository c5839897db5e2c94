"""``pipeline report`` on a large history (issue 38 case 1): the page stays bounded (the
timeline draws the most recent ``MAX_TIMELINE_BARS`` attempts and says how many there
were) while the numbers still count every run."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb

from pipeline.report import data
from pipeline.sink import schema

RUNS = 20_000


def _large_history(path, *, jobs: int = 40, runs: int = RUNS) -> None:
    """Finished runs (20,000 of 40 jobs unless told) over a week, as the sink's tables hold them."""
    con = duckdb.connect(str(path))
    schema.migrate(con)
    con.execute(f"""
        CREATE TEMP TABLE gen AS
        SELECT i, 'qlik_cloud' AS vendor, 'qlik_cloud:t:app-' || (i % {jobs}) AS job_key, 'qlik_cloud:t:run-' || i AS run_key,
               now() - INTERVAL 7 DAY + i * INTERVAL 30 SECOND AS t, 10 + (i % 17) AS d,
               CASE WHEN i % 9 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END AS outcome
        FROM range({runs}) r(i)""")
    con.execute("""
        INSERT INTO job_events (event_id, vendor, source, job_key, run_key, attempt, native_state, state, occurred_at,
                                received_at, started_at, finished_at, attrs)
        SELECT run_key || ':start', vendor, 't', job_key, run_key, 1, 'RELOADING', 'RUNNING', t, t, t, NULL, '{"job_name": "app"}' FROM gen
        UNION ALL
        SELECT run_key || ':end', vendor, 't', job_key, run_key, 1, outcome, outcome, t + d * INTERVAL 1 SECOND,
               t + d * INTERVAL 1 SECOND, t, t + d * INTERVAL 1 SECOND, '{"job_name": "app"}' FROM gen""")
    con.execute("""
        INSERT INTO job_transitions (transition_id, vendor, job_key, run_key, attempt, from_state, to_state, "at", cause, event_id,
                                     late, duplicate, illegal)
        SELECT run_key || ':t1', vendor, job_key, run_key, 1, NULL, 'RUNNING', t, 'vendor', run_key || ':start', false, false, false FROM gen
        UNION ALL
        SELECT run_key || ':t2', vendor, job_key, run_key, 1, 'RUNNING', outcome, t + d * INTERVAL 1 SECOND, 'vendor',
               run_key || ':end', false, false, false FROM gen""")
    con.execute("""
        INSERT INTO job_runs (run_key, job_key, vendor, source, version, state, attempt, retries, first_event_at, last_event_at,
                              current_at, started_at, finished_at, duration_s, stale_episodes, reactivations, events)
        SELECT run_key, job_key, vendor, 't', 2, outcome, 1, 0, t, t + d * INTERVAL 1 SECOND, t + d * INTERVAL 1 SECOND, t,
               t + d * INTERVAL 1 SECOND, d, 0, 0, 2 FROM gen""")
    con.close()


def test_a_large_history_draws_the_most_recent_attempts_and_counts_them_all(tmp_path):
    db = tmp_path / "large.duckdb"
    _large_history(db)
    page = tmp_path / "large.html"
    started = time.monotonic()
    made = subprocess.run([sys.executable, "-m", "pipeline", "report", "--db", str(db), "--since", "all", "--out", str(page)],
                          capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert f"the {data.MAX_TIMELINE_BARS} most recent of {RUNS})" in text  # 40 jobs: all of them drawn
    assert f'data-column="runs" data-value="{RUNS}"' in text
    size_mb = len(text.encode()) / 1e6
    assert size_mb < 8, size_mb
    print(f"{RUNS} runs: report in {took:.1f} s, {size_mb:.1f} MB")


def test_a_history_of_many_jobs_draws_the_most_recently_run_and_counts_them_all(tmp_path):
    db = tmp_path / "wide.duckdb"
    _large_history(db, jobs=100, runs=1000)
    page = tmp_path / "wide.html"
    made = subprocess.run([sys.executable, "-m", "pipeline", "report", "--db", str(db), "--since", "all", "--out", str(page)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    drawn = 1000 * data.MAX_TIMELINE_JOBS // 100
    assert f"Runs and attempts per job ({drawn} attempts; the {data.MAX_TIMELINE_JOBS} jobs most recently run of 100)" in text
