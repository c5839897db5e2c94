"""The analysts' views answer known data exactly (README "Analysts' views")."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from pipeline import catalog
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import T0, Story, iso


def write(writer: DuckDBWriter, records: list[tuple[str, dict]]) -> None:
    writer.write(decode_batch([
        KafkaRecord(topic, 0, offset, 0, b"k", orjson.dumps(value)) for offset, (topic, value) in enumerate(records)
    ]))


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
    assert con.execute("SELECT vendor, job_key, runs, p50_s, p95_s FROM run_durations ORDER BY job_key").fetchall() == [
        ("qlik_cloud", q.job_key("c"), 1, 5.0, 5.0),
        ("zuora", z.job_key("a"), 4, 25.0, 38.5),
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
