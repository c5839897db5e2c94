"""The analysts' views answer known data exactly (README "Analysts' views")."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from pipeline import catalog
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import T0, Story, iso, qrs_retried_run, write



@pytest.fixture
def db(tmp_path):
    writer = DuckDBWriter(tmp_path / "views.duckdb").open()
    yield writer
    writer.close()


def finished(story: Story, job: str, run: str, state: str, seconds: float, *, day: int = 0, attempt: int = 1) -> dict:
    end = T0 + timedelta(days=day, seconds=seconds)
    return story.run(
        job, run, 9, state, at=end, started_at=iso(T0 + timedelta(days=day)), finished_at=iso(end),
        duration_s=seconds, attempt=attempt, retries=attempt - 1,
    )


def test_run_durations_job_retries_failure_rates_and_active_runs(db):
    z = Story(vendor="zuora")
    q = Story(vendor="qlik_cloud", source=z.source)
    write(db, [
        (catalog.RUNS, finished(z, "a", "r1", "SUCCEEDED", 10)),
        (catalog.RUNS, finished(z, "a", "r2", "SUCCEEDED", 30)),
        (catalog.RUNS, finished(z, "a", "r3", "FAILED", 20, attempt=3)),
        (catalog.RUNS, finished(z, "a", "r4", "FAILED", 40, day=1)),
        (catalog.RUNS, z.run("b", "r5", 2, "RUNNING")),
        (catalog.RUNS, z.run("b", "r6", 3, "STALE")),
        (catalog.RUNS, finished(q, "c", "r7", "SUCCEEDED", 5)),
    ])
    con = db.connection
    assert con.execute("SELECT vendor, job_key, outcome, runs, p50_s, p95_s FROM run_durations ORDER BY ALL").fetchall() == [
        ("qlik_cloud", q.job_key("c"), "SUCCEEDED", 1, 5.0, 5.0),
        ("zuora", z.job_key("a"), "FAILED", 2, 30.0, 39.0),
        ("zuora", z.job_key("a"), "SUCCEEDED", 2, 20.0, 29.0),
    ]
    assert con.execute("SELECT vendor, job_key, runs, attempts, retries FROM job_retries ORDER BY job_key").fetchall() == [
        ("qlik_cloud", q.job_key("c"), 1, 1, 0),
        ("zuora", z.job_key("a"), 4, 6, 2),
        ("zuora", z.job_key("b"), 2, 2, 0),
    ]
    assert con.execute("SELECT vendor, day::VARCHAR, finished, failed, failure_rate FROM failure_rates ORDER BY ALL").fetchall() == [
        ("qlik_cloud", "2026-11-30", 1, 0, 0.0),
        ("zuora", "2026-11-30", 3, 1, 0.3333),
        ("zuora", "2026-12-01", 1, 1, 1.0),
    ]
    assert con.execute("SELECT run_key, state FROM active_runs ORDER BY run_key").fetchall() == [
        (z.run_key("b", "r5"), "RUNNING"), (z.run_key("b", "r6"), "STALE"),
    ]
    assert con.execute("SELECT job_key, runs, succeeded, failed, active, stale, retries FROM jobs ORDER BY job_key").fetchall() == [
        (q.job_key("c"), 1, 1, 0, 0, 0, 0),
        (z.job_key("a"), 4, 2, 2, 0, 0, 2),
        (z.job_key("b"), 2, 0, 0, 1, 1, 0),
    ]


def test_stale_episodes_end_reactivated_drained_finished_or_still_stale(db):
    s = Story()
    t = [T0 + timedelta(minutes=m) for m in range(10)]
    write(db, [
        # x: stale, reactivated, stale again, then drained by the vendor (Zuora's draining queue)
        (catalog.TRANSITIONS, s.transition("j", "x", 1, None, "RUNNING", at=t[0])),
        (catalog.TRANSITIONS, s.transition("j", "x", 2, "RUNNING", "STALE", at=t[1], cause="stale_timeout", event_id=None)),
        (catalog.TRANSITIONS, s.transition("j", "x", 3, "STALE", "STALE", at=t[2], duplicate=True)),
        (catalog.TRANSITIONS, s.transition("j", "x", 4, "STALE", "RUNNING", at=t[3], cause="reactivation")),
        (catalog.TRANSITIONS, s.transition("j", "x", 5, "RUNNING", "STALE", at=t[4], cause="stale_timeout", event_id=None)),
        (catalog.TRANSITIONS, s.transition("j", "x", 6, "STALE", "FAILED", at=t[5])),
        (catalog.EVENTS, s.event("j", "x", 6, "FAILED", at=t[5], error_code="DRAINED_STALE")),
        # y: stale and never heard of again
        (catalog.TRANSITIONS, s.transition("j", "y", 1, None, "RUNNING", at=t[0])),
        (catalog.TRANSITIONS, s.transition("j", "y", 2, "RUNNING", "STALE", at=t[6], cause="stale_timeout", event_id=None)),
        # z: stale, then the vendor reports it finished
        (catalog.TRANSITIONS, s.transition("j", "z", 1, None, "STALE", at=t[0])),
        (catalog.TRANSITIONS, s.transition("j", "z", 2, "STALE", "SUCCEEDED", at=t[7])),
        (catalog.EVENTS, s.event("j", "z", 2, "SUCCEEDED", at=t[7])),
    ])
    rows = db.connection.execute("SELECT run_key, stale_at, ended_at, ended_by FROM stale_episodes ORDER BY run_key, stale_at").fetchall()
    assert [(r[0].rsplit("/", 1)[1], r[1], r[2], r[3]) for r in rows] == [
        ("x", t[1], t[3], "reactivated"),
        ("x", t[4], t[5], "drained"),
        ("y", t[6], None, "still_stale"),
        ("z", t[0], t[7], "finished"),
    ]


def test_dead_letter_reasons_count_per_vendor_stage_and_reason(db):
    s = Story()
    write(db, [
        (catalog.DEADLETTER, s.dead_letter(1, stage="normalize", reason="no job id")),
        (catalog.DEADLETTER, s.dead_letter(2, stage="normalize", reason="no job id")),
        (catalog.DEADLETTER, s.dead_letter(2, stage="normalize", reason="no job id")),  # re-sent: same id
        (catalog.DEADLETTER, s.dead_letter(3, stage="decode", reason="not JSON")),
    ])
    assert db.connection.execute(
        "SELECT vendor, stage, reason, dead_letters FROM dead_letter_reasons ORDER BY stage"
    ).fetchall() == [("zuora", "decode", "not JSON", 1), ("zuora", "normalize", "no job id", 2)]


def test_every_example_query_in_the_readme_runs(db):
    import re
    from pathlib import Path

    s = Story()
    write(db, [
        (catalog.RUNS, finished(s, "a", "r1", "FAILED", 10)),
        (catalog.TRANSITIONS, s.transition("j", "x", 1, "RUNNING", "STALE", cause="stale_timeout", event_id=None)),
        (catalog.DEADLETTER, s.dead_letter(1)),
    ])
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    queries = re.findall(r"```sql\n(.*?)\n```", readme, re.S)
    assert len(queries) >= 7
    for query in queries:
        assert db.connection.execute(query).fetchall() is not None, query


def test_a_stale_episode_that_shares_its_instant_with_what_ends_it_follows_the_workers_order(db):
    """A Zuora token reported stale keeps its last activity time, so its STALE and the
    reactivation after it can carry one instant: the view orders a run's transitions as
    the worker made them (their Kafka offsets), not by time alone (seen in the demo)."""
    s = Story()
    t = T0
    # transition ids chosen so that ordering by (at, transition_id) would put them backwards
    write(db, [
        (catalog.TRANSITIONS, s.transition("j", "w", 9, None, "RUNNING", at=t)),
        (catalog.TRANSITIONS, s.transition("j", "w", 8, "RUNNING", "STALE", at=t + timedelta(seconds=4))),
        (catalog.TRANSITIONS, s.transition("j", "w", 1, "STALE", "RUNNING", at=t + timedelta(seconds=4), cause="reactivation")),
        (catalog.TRANSITIONS, s.transition("j", "w", 2, "RUNNING", "SUCCEEDED", at=t + timedelta(seconds=340))),
    ])
    [(stale_at, ended_at, ended_by)] = db.connection.execute(
        "SELECT stale_at, ended_at, ended_by FROM stale_episodes").fetchall()
    assert (stale_at, ended_at, ended_by) == (t + timedelta(seconds=4), t + timedelta(seconds=4), "reactivated")


def test_a_stale_run_that_comes_back_as_a_new_attempt_ended_its_episode_retried(db):
    """Issue 33 case 4: the lifecycle emits STALE -> RUNNING with cause 'retry' when a new
    attempt arrives (R7); nothing finished, the run was retried."""
    s = Story(vendor="qlik_qrs")
    t = [T0 + timedelta(minutes=m) for m in (0, 5, 20, 30)]
    write(db, [
        (catalog.TRANSITIONS, s.transition("j", "r", 1, None, "RUNNING", at=t[0])),
        (catalog.TRANSITIONS, s.transition("j", "r", 2, "RUNNING", "STALE", at=t[1], cause="stale_timeout", event_id=None)),
        (catalog.TRANSITIONS, {**s.transition("j", "r", 3, "STALE", "RUNNING", at=t[2], cause="retry"), "attempt": 2}),
        (catalog.TRANSITIONS, {**s.transition("j", "r", 4, "RUNNING", "SUCCEEDED", at=t[3]), "attempt": 2}),
    ])
    assert db.connection.execute("SELECT stale_at, ended_at, ended_by FROM stale_episodes").fetchall() == [
        (t[1], t[2], "retried"),
    ]
    assert db.connection.execute("SELECT attempt, outcome FROM job_attempts ORDER BY attempt").fetchall() == [
        (1, "RETRIED"), (2, "SUCCEEDED"),
    ]



def test_job_attempts_show_each_attempt_and_failed_attempts_count_beside_runs(db):
    """Issue 33 case 5: a task that fails then succeeds on retry is one SUCCEEDED run of 40 s
    and two attempts: FAILED after 10 s (with its error) and SUCCEEDED after 28 s."""
    s = Story(vendor="qlik_qrs")
    write(db, qrs_retried_run(s))
    con = db.connection
    assert con.execute(
        "SELECT attempt, outcome, started_at, finished_at, duration_s, start_observed, error_code, error_message, events "
        "FROM job_attempts ORDER BY attempt"
    ).fetchall() == [
        (1, "FAILED", T0, T0 + timedelta(seconds=10), 10.0, True, "TaskFailed", "reload failed", 2),
        (2, "SUCCEEDED", T0 + timedelta(seconds=12), T0 + timedelta(seconds=40), 28.0, True, None, None, 2),
    ]
    assert con.execute("SELECT runs, failed, attempts, failed_attempts FROM jobs").fetchall() == [(1, 0, 2, 1)]
    assert con.execute(
        "SELECT finished, failed, failure_rate, finished_attempts, failed_attempts, attempt_failure_rate FROM failure_rates"
    ).fetchall() == [(1, 0, 0.0, 2, 1, 0.5)]


def test_job_attempts_queue_time_and_a_start_never_reported(db):
    """An attempt seen waiting (PENDING) and then finished, never seen running: its start
    is the last time it was seen waiting (``start_observed`` false), its queue time runs
    from the first time it was seen waiting."""
    s = Story(vendor="truenas")
    at = [T0 + timedelta(seconds=n) for n in (0, 5, 30)]
    write(db, [
        (catalog.EVENTS, s.event("m", "r", 1, "PENDING", at=at[0])),
        (catalog.EVENTS, s.event("m", "r", 2, "PENDING", at=at[1])),
        (catalog.EVENTS, s.event("m", "r", 3, "SUCCEEDED", at=at[2])),
        (catalog.TRANSITIONS, s.transition("m", "r", 1, None, "PENDING", at=at[0])),
        (catalog.TRANSITIONS, s.transition("m", "r", 3, "PENDING", "SUCCEEDED", at=at[2])),
    ])
    assert db.connection.execute(
        "SELECT outcome, queued_at, started_at, start_observed, finished_at, queue_s, duration_s FROM job_attempts"
    ).fetchall() == [("SUCCEEDED", at[0], at[1], False, at[2], 5.0, 25.0)]


def test_an_attempt_that_waits_after_it_started_has_no_queue_time(db):
    """An Airflow sensor in reschedule mode runs, waits (up_for_reschedule: PENDING) and
    succeeds in one try: waiting after the start is not queue time (R3), so the attempt's
    queue time is unknown, never negative (a demo run's ``pipeline check`` found -32 s)."""
    s = Story(vendor="airflow")
    at = [T0 + timedelta(seconds=n) for n in (0, 32, 62)]
    write(db, [
        (catalog.EVENTS, s.event("m", "r", 1, "RUNNING", at=at[0], started_at=iso(at[0]), attempt=1)),
        (catalog.EVENTS, s.event("m", "r", 2, "PENDING", at=at[1], attempt=1)),
        (catalog.EVENTS, s.event("m", "r", 3, "SUCCEEDED", at=at[2], started_at=iso(at[2] - timedelta(seconds=2)),
                                 finished_at=iso(at[2]), attempt=1)),
        (catalog.TRANSITIONS, s.transition("m", "r", 1, None, "RUNNING", at=at[0])),
        (catalog.TRANSITIONS, s.transition("m", "r", 2, "RUNNING", "PENDING", at=at[1])),
        (catalog.TRANSITIONS, s.transition("m", "r", 3, "PENDING", "SUCCEEDED", at=at[2])),
    ])
    assert db.connection.execute(
        "SELECT outcome, queued_at, started_at, start_observed, finished_at, queue_s, duration_s FROM job_attempts"
    ).fetchall() == [("SUCCEEDED", None, at[0], True, at[2], None, 62.0)]


def test_an_attempt_that_waited_before_and_after_its_start_queues_from_the_first_wait(db):
    s = Story(vendor="airflow")
    at = [T0 + timedelta(seconds=n) for n in (0, 4, 30, 50)]
    write(db, [
        (catalog.EVENTS, s.event("m", "r", 1, "PENDING", at=at[0], attempt=1)),
        (catalog.EVENTS, s.event("m", "r", 2, "RUNNING", at=at[1], started_at=iso(at[1]), attempt=1)),
        (catalog.EVENTS, s.event("m", "r", 3, "PENDING", at=at[2], attempt=1)),
        (catalog.EVENTS, s.event("m", "r", 4, "SUCCEEDED", at=at[3], finished_at=iso(at[3]), attempt=1)),
        (catalog.TRANSITIONS, s.transition("m", "r", 1, None, "PENDING", at=at[0])),
        (catalog.TRANSITIONS, s.transition("m", "r", 2, "PENDING", "RUNNING", at=at[1])),
        (catalog.TRANSITIONS, s.transition("m", "r", 3, "RUNNING", "PENDING", at=at[2])),
        (catalog.TRANSITIONS, s.transition("m", "r", 4, "PENDING", "SUCCEEDED", at=at[3])),
    ])
    assert db.connection.execute(
        "SELECT queued_at, started_at, queue_s, duration_s FROM job_attempts"
    ).fetchall() == [(at[0], at[1], 4.0, 46.0)]


def test_counts_and_sums_in_every_view_are_bigint_never_hugeint(db):
    """Issue 33 case 7: DuckDB's sum of integers is HUGEINT, which reaches pandas and Arrow
    as decimal objects; a notebook wants int64."""
    s = Story()
    write(db, [(catalog.RUNS, finished(s, "a", "r1", "FAILED", 10, attempt=2))])
    con = db.connection
    wide = con.execute(
        "SELECT view_name, column_name, data_type FROM duckdb_columns() c JOIN duckdb_views() v USING (database_name, schema_name) "
        "WHERE c.table_name = v.view_name AND NOT v.internal AND data_type IN ('HUGEINT', 'DECIMAL(38,0)') ORDER BY ALL"
    ).fetchall()
    assert wide == []
    arrow = con.sql("SELECT retries, stale_episodes, reactivations, events FROM jobs").arrow()
    assert {str(f.type) for f in arrow.schema} == {"int64"}
    assert str(con.sql("SELECT attempts FROM job_retries").arrow().schema.field("attempts").type) == "int64"


def test_run_durations_per_outcome_with_runs_whose_start_was_never_seen(db):
    """Issue 33 case 8: a run seen WAITING then SUCCESS has no started_at and was left out;
    successes were mixed with failures, drained and skipped runs, without an outcome column."""
    s = Story(vendor="truenas")
    end = T0 + timedelta(seconds=30)
    write(db, [
        (catalog.RUNS, finished(s, "m", "ok", "SUCCEEDED", 10)),
        (catalog.RUNS, finished(s, "m", "bad", "FAILED", 100)),
        (catalog.RUNS, {**finished(s, "m", "drained", "FAILED", 300), "last_error_code": "DRAINED_STALE"}),
        (catalog.RUNS, finished(s, "m", "skip", "SKIPPED", 0)),
        (catalog.EVENTS, s.event("m", "waited", 1, "PENDING", at=T0)),
        (catalog.EVENTS, s.event("m", "waited", 2, "PENDING", at=T0 + timedelta(seconds=10))),
        (catalog.EVENTS, s.event("m", "waited", 3, "SUCCEEDED", at=end)),
        (catalog.RUNS, s.run("m", "waited", 3, "SUCCEEDED", at=end, queued_at=iso(T0), started_at=None, finished_at=iso(end))),
    ])
    assert db.connection.execute(
        "SELECT outcome, runs, runs_start_estimated, p50_s, max_s FROM run_durations ORDER BY outcome"
    ).fetchall() == [
        ("DRAINED", 1, 0, 300.0, 300.0),
        ("FAILED", 1, 0, 100.0, 100.0),
        ("SKIPPED", 1, 0, 0.0, 0.0),
        ("SUCCEEDED", 2, 1, 15.0, 20.0),
    ]


def test_failure_rates_say_what_the_denominator_is(db):
    """Issue 33 case 8: CANCELED and SKIPPED runs are counted in their own columns and left
    out of ``failure_rate`` = failed / (succeeded + failed)."""
    s = Story()
    write(db, [
        (catalog.RUNS, finished(s, "a", "r1", "SUCCEEDED", 10)),
        (catalog.RUNS, finished(s, "a", "r2", "FAILED", 10)),
        (catalog.RUNS, finished(s, "a", "r3", "CANCELED", 10)),
        (catalog.RUNS, finished(s, "a", "r4", "SKIPPED", 10)),
    ])
    assert db.connection.execute(
        "SELECT finished, succeeded, failed, canceled, skipped, failure_rate FROM failure_rates"
    ).fetchall() == [(4, 1, 1, 1, 1, 0.5)]


def test_jobs_carry_the_name_of_their_latest_event(db):
    """Issue 33 case 11: the job's human name (every normalizer sets attrs.job_name), from
    its latest event, so a renamed task shows its current name."""
    s = Story(vendor="qlik_qrs")
    write(db, [
        (catalog.EVENTS, s.event("t", "r1", 1, "RUNNING", at=T0, attrs={"job_name": "Reload HR"})),
        (catalog.EVENTS, s.event("t", "r2", 2, "RUNNING", at=T0 + timedelta(hours=1), attrs={"job_name": "Reload HR (new)"})),
        (catalog.EVENTS, s.event("t", "r2", 3, "SUCCEEDED", at=T0 + timedelta(hours=2), attrs={})),
        (catalog.EVENTS, s.event("u", "r3", 4, "RUNNING", at=T0, attrs={})),
        (catalog.RUNS, s.run("t", "r1", 1, "RUNNING")),
        (catalog.RUNS, s.run("t", "r2", 1, "SUCCEEDED")),
        (catalog.RUNS, s.run("u", "r3", 1, "RUNNING")),
    ])
    assert db.connection.execute("SELECT job_key, job_name FROM jobs ORDER BY job_key").fetchall() == [
        (s.job_key("t"), "Reload HR (new)"), (s.job_key("u"), None),
    ]


def test_dead_letter_reasons_group_one_cause_by_its_reason_code(db):
    """Issue 33 case 6: the reason text carries byte offsets, so one cause was spread over
    one row per offset; the code keeps the cause, the latest reason stays as an example."""
    s = Story()
    write(db, [
        (catalog.DEADLETTER, s.dead_letter(1, reason="not valid JSON: unexpected end of data: line 1 column 57 (char 56)")),
        (catalog.DEADLETTER, s.dead_letter(2, reason="not valid JSON: unexpected end of data: line 1 column 12 (char 11)")),
        (catalog.DEADLETTER, {**s.dead_letter(3, reason="missing required field 'id'"), "reason_code": "qrs.no_task_id"}),
    ])
    assert db.connection.execute(
        "SELECT reason_code, dead_letters FROM dead_letter_reasons ORDER BY reason_code"
    ).fetchall() == [("qrs.no_task_id", 1), ("rejected.not_valid_json_unexpected_end_of_data_line", 2)]


def test_a_failure_reported_after_the_retry_opened_is_the_failed_attempts_outcome(db):
    """As QRS shows it in the demo: attempt 1 RUNNING, attempt 2 RUNNING (the retry), and the
    attempt-1 FAILED from the other endpoint (no attempt number) arriving after the retry
    opened: the lifecycle flags it late (RUNNING -> RUNNING), so no transition says FAILED;
    by its time it belongs to attempt 1, whose outcome it is."""
    s = Story(vendor="qlik_qrs")
    at = [T0 + timedelta(seconds=n) for n in (0, 10, 12, 40)]
    write(db, [
        (catalog.EVENTS, s.event("hr", "r", 1, "RUNNING", at=at[0], attempt=1)),
        (catalog.EVENTS, s.event("hr", "r", 2, "RUNNING", at=at[2], attempt=2)),
        (catalog.EVENTS, s.event("hr", "r", 3, "FAILED", at=at[1])),
        (catalog.EVENTS, s.event("hr", "r", 4, "SUCCEEDED", at=at[3])),
        (catalog.TRANSITIONS, s.transition("hr", "r", 1, None, "RUNNING", at=at[0])),
        (catalog.TRANSITIONS, {**s.transition("hr", "r", 2, "RUNNING", "RUNNING", at=at[2], cause="retry"), "attempt": 2}),
        (catalog.TRANSITIONS, {**s.transition("hr", "r", 3, "RUNNING", "RUNNING", at=at[1], late=True), "attempt": 2}),
        (catalog.TRANSITIONS, {**s.transition("hr", "r", 4, "RUNNING", "SUCCEEDED", at=at[3]), "attempt": 2}),
    ])
    assert db.connection.execute(
        "SELECT attempt, outcome, started_at, finished_at, duration_s FROM job_attempts ORDER BY attempt"
    ).fetchall() == [
        (1, "FAILED", at[0], at[1], 10.0),
        (2, "SUCCEEDED", at[2], at[3], 28.0),
    ]


def test_a_run_that_left_the_workers_state_open_is_not_active(db):
    """Lifecycle R21: a run evicted while RUNNING leaves with a last snapshot saying
    left_open; active_runs must not show it running for ever (issue 32 case 7a)."""
    z = Story(vendor="zuora")
    write(db, [
        (catalog.RUNS, z.run("b", "r1", 2, "RUNNING")),
        (catalog.RUNS, z.run("b", "r2", 2, "RUNNING")),
        (catalog.RUNS, z.run("b", "r2", 3, "RUNNING", left_open=True)),
    ])
    con = db.connection
    assert con.execute("SELECT run_key FROM active_runs").fetchall() == [(z.run_key("b", "r1"),)]
    assert con.execute("SELECT runs, active, stale FROM jobs").fetchall() == [(2, 1, 0)]
    assert con.execute("SELECT run_key, coalesce(left_open, false) FROM job_runs ORDER BY run_key").fetchall() == [
        (z.run_key("b", "r1"), False), (z.run_key("b", "r2"), True),
    ]
