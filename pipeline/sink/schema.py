"""The analysts' schema: tables, views and the migrations that build them.

Each migration is one numbered step applied once, in order, in its own transaction;
``jobstream_schema`` records which ones a file has. A file made by an older jobstream is
brought up to date at start; a file with a step this code does not know was made by a
newer jobstream and is refused (opening it could break what that version wrote).

Tables hold facts (one row per event, transition, dead letter; the current row per run
and alert); views answer the questions (README "Analysts' views"). ``jobs`` is a view
over ``job_runs`` rather than a table kept per batch: it is always consistent with the
runs, costs nothing on the write path, and aggregating one row per run is quick in
DuckDB for millions of runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from pipeline import reason_codes
from pipeline.sink import describe
from pipeline.errors import JobstreamError


class SchemaError(JobstreamError, RuntimeError):
    """The file's schema cannot be used by this version of jobstream."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    why: str
    sql: str
    then: Callable[[duckdb.DuckDBPyConnection], None] | None = None
    """Python run after ``sql`` in the same transaction: what SQL alone cannot compute."""


_TABLES = """
CREATE TABLE job_events (
    event_id VARCHAR NOT NULL, vendor VARCHAR, source VARCHAR, job_key VARCHAR, run_key VARCHAR,
    attempt INTEGER, native_state VARCHAR, state VARCHAR, occurred_at TIMESTAMPTZ,
    received_at TIMESTAMPTZ, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, progress DOUBLE,
    "rows" BIGINT, counts JSON, error_code VARCHAR, error_message VARCHAR, parent_run_key VARCHAR,
    raw_topic VARCHAR, raw_partition INTEGER, raw_offset BIGINT, attrs JSON, late BOOLEAN,
    skewed BOOLEAN, schema_version INTEGER
);
CREATE TABLE job_transitions (
    transition_id VARCHAR NOT NULL, vendor VARCHAR, job_key VARCHAR, run_key VARCHAR,
    attempt INTEGER, from_state VARCHAR, to_state VARCHAR, "at" TIMESTAMPTZ, cause VARCHAR,
    event_id VARCHAR, late BOOLEAN, duplicate BOOLEAN, illegal BOOLEAN, schema_version INTEGER
);
CREATE TABLE job_runs (
    run_key VARCHAR NOT NULL, job_key VARCHAR, vendor VARCHAR, source VARCHAR,
    parent_run_key VARCHAR, version BIGINT, state VARCHAR, attempt INTEGER, retries INTEGER,
    first_event_at TIMESTAMPTZ, last_event_at TIMESTAMPTZ, current_at TIMESTAMPTZ,
    queued_at TIMESTAMPTZ, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, duration_s DOUBLE,
    queue_s DOUBLE, native_state VARCHAR, progress DOUBLE, "rows" BIGINT,
    stale_episodes INTEGER, reactivations INTEGER, events BIGINT, last_error_code VARCHAR,
    last_error_message VARCHAR, last_error_at TIMESTAMPTZ, deadline TIMESTAMPTZ,
    schema_version INTEGER
);
CREATE TABLE dead_letters (
    dead_letter_id VARCHAR NOT NULL, "at" TIMESTAMPTZ, stage VARCHAR, error_type VARCHAR,
    reason VARCHAR, topic VARCHAR, "partition" INTEGER, "offset" BIGINT, vendor VARCHAR,
    key_b64 VARCHAR, value_b64 VARCHAR, value_size BIGINT, value_preview VARCHAR,
    schema_version INTEGER
);
CREATE TABLE kafka_offsets (
    topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, next_offset BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (topic, "partition")
);
"""

_ALERTS = """
CREATE TABLE alerts (
    alert_id VARCHAR NOT NULL, rule VARCHAR, status VARCHAR, reason VARCHAR, vendor VARCHAR,
    source VARCHAR, job_key VARCHAR, run_key VARCHAR, attempt INTEGER, transition_id VARCHAR,
    state VARCHAR, "at" TIMESTAMPTZ, delivered_at TIMESTAMPTZ, channels VARCHAR[],
    message VARCHAR, schema_version INTEGER, status_rank INTEGER, kafka_partition INTEGER,
    kafka_offset BIGINT
);
"""

_VIEWS = """
CREATE OR REPLACE VIEW jobs AS
SELECT job_key,
       any_value(vendor) AS vendor,
       any_value(source) AS source,
       count(*) AS runs,
       arg_max(run_key, last_event_at) AS last_run_key,
       arg_max(state, last_event_at) AS last_state,
       max(last_event_at) AS last_event_at,
       count(*) FILTER (state = 'SUCCEEDED') AS succeeded,
       count(*) FILTER (state = 'FAILED') AS failed,
       count(*) FILTER (state = 'CANCELED') AS canceled,
       count(*) FILTER (state = 'SKIPPED') AS skipped,
       count(*) FILTER (state IN ('PENDING', 'RUNNING')) AS active,
       count(*) FILTER (state = 'STALE') AS stale,
       sum(retries) AS retries,
       sum(stale_episodes) AS stale_episodes,
       sum(reactivations) AS reactivations,
       sum(events) AS events
FROM job_runs
GROUP BY job_key;

CREATE OR REPLACE VIEW run_durations AS
SELECT vendor, job_key,
       count(*) AS runs,
       quantile_cont(duration_s, 0.5) AS p50_s,
       quantile_cont(duration_s, 0.95) AS p95_s,
       max(duration_s) AS max_s
FROM job_runs
WHERE duration_s IS NOT NULL
GROUP BY vendor, job_key;

CREATE OR REPLACE VIEW job_retries AS
SELECT vendor, job_key,
       count(*) AS runs,
       sum(attempt) AS attempts,
       sum(retries) AS retries
FROM job_runs
GROUP BY vendor, job_key;

CREATE OR REPLACE VIEW stale_episodes AS
WITH moves AS (
    SELECT vendor, run_key, from_state, to_state, "at", cause, event_id,
           lead(to_state) OVER w AS next_state,
           lead("at") OVER w AS next_at,
           lead(cause) OVER w AS next_cause,
           lead(event_id) OVER w AS next_event_id
    FROM job_transitions
    WHERE NOT coalesce(late OR duplicate OR illegal, false)
    WINDOW w AS (PARTITION BY run_key ORDER BY "at", transition_id)
)
SELECT m.vendor, m.run_key, m."at" AS stale_at, m.next_at AS ended_at,
       CASE
           WHEN m.next_state IS NULL THEN 'still_stale'
           WHEN m.next_cause = 'reactivation' THEN 'reactivated'
           WHEN e.error_code = 'DRAINED_STALE' THEN 'drained'
           ELSE 'finished'
       END AS ended_by
FROM moves m
LEFT JOIN job_events e ON e.event_id = m.next_event_id
WHERE m.to_state = 'STALE' AND m.from_state IS DISTINCT FROM 'STALE';

CREATE OR REPLACE VIEW failure_rates AS
SELECT vendor,
       CAST(finished_at AT TIME ZONE 'UTC' AS DATE) AS day,
       count(*) AS finished,
       count(*) FILTER (state = 'FAILED') AS failed,
       round(count(*) FILTER (state = 'FAILED') / count(*), 4) AS failure_rate
FROM job_runs
WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELED', 'SKIPPED') AND finished_at IS NOT NULL
GROUP BY ALL;

CREATE OR REPLACE VIEW active_runs AS
SELECT vendor, source, job_key, run_key, state, attempt, started_at, last_event_at,
       deadline, progress, native_state
FROM job_runs
WHERE state IN ('PENDING', 'RUNNING', 'STALE');

CREATE OR REPLACE VIEW dead_letter_reasons AS
SELECT vendor, stage, reason,
       count(*) AS dead_letters,
       min("at") AS first_at,
       max("at") AS last_at
FROM dead_letters
GROUP BY ALL;
"""

_TRANSITION_ORDER = """
ALTER TABLE job_transitions ADD COLUMN kafka_partition INTEGER;
ALTER TABLE job_transitions ADD COLUMN kafka_offset BIGINT;

CREATE OR REPLACE VIEW stale_episodes AS
WITH moves AS (
    SELECT vendor, run_key, from_state, to_state, "at", cause, event_id,
           lead(to_state) OVER w AS next_state,
           lead("at") OVER w AS next_at,
           lead(cause) OVER w AS next_cause,
           lead(event_id) OVER w AS next_event_id
    FROM job_transitions
    WHERE NOT coalesce(late OR duplicate OR illegal, false)
    WINDOW w AS (PARTITION BY run_key ORDER BY kafka_offset NULLS LAST, "at", transition_id)
)
SELECT m.vendor, m.run_key, m."at" AS stale_at, m.next_at AS ended_at,
       CASE
           WHEN m.next_state IS NULL THEN 'still_stale'
           WHEN m.next_cause = 'reactivation' THEN 'reactivated'
           WHEN e.error_code = 'DRAINED_STALE' THEN 'drained'
           ELSE 'finished'
       END AS ended_by
FROM moves m
LEFT JOIN job_events e ON e.event_id = m.next_event_id
WHERE m.to_state = 'STALE' AND m.from_state IS DISTINCT FROM 'STALE';
"""

_TERMINAL = "('SUCCEEDED', 'FAILED', 'CANCELED', 'SKIPPED')"

_ATTEMPTS = f"""
ALTER TABLE dead_letters ADD COLUMN reason_code VARCHAR;

CREATE OR REPLACE VIEW job_attempts AS
WITH moves AS (
    SELECT vendor, job_key, run_key, attempt, to_state, "at",
           row_number() OVER (PARTITION BY run_key, attempt ORDER BY kafka_offset NULLS LAST, "at", transition_id) AS step
    FROM job_transitions
    WHERE NOT coalesce(late OR duplicate OR illegal, false)
),
opened AS (
    SELECT run_key, attempt,
           any_value(vendor) AS vendor,
           any_value(job_key) AS job_key,
           min("at") AS opened_at,
           arg_max(to_state, step) AS last_state,
           arg_min(to_state, step) FILTER (to_state IN {_TERMINAL}) AS terminal_state,
           min("at") FILTER (to_state IN {_TERMINAL}) AS terminal_at,
           min("at") FILTER (to_state = 'PENDING') AS pending_at,
           min("at") FILTER (to_state = 'RUNNING') AS running_at
    FROM moves
    GROUP BY run_key, attempt
),
attempt_events AS (
    SELECT e.vendor, e.job_key, e.run_key, coalesce(e.attempt, o.attempt, 1) AS attempt, e.state,
           e.occurred_at, e.started_at, e.finished_at, e.error_code, e.error_message
    FROM job_events e
    ASOF LEFT JOIN opened o ON e.run_key = o.run_key AND e.occurred_at >= o.opened_at
),
waiting AS (
    SELECT run_key, attempt,
           min(occurred_at) FILTER (state = 'PENDING') AS first_waiting_at,
           max(occurred_at) FILTER (state = 'PENDING') AS last_waiting_at
    FROM attempt_events
    GROUP BY run_key, attempt
),
facts AS (
    SELECT e.run_key, e.attempt,
           any_value(e.vendor) AS vendor,
           any_value(e.job_key) AS job_key,
           min(e.started_at) FILTER (e.started_at > coalesce(w.first_waiting_at, '-infinity'::TIMESTAMPTZ)) AS reported_start,
           min(e.occurred_at) FILTER (e.state = 'RUNNING') AS seen_running_at,
           any_value(w.first_waiting_at) AS first_waiting_at,
           any_value(w.last_waiting_at) AS last_waiting_at,
           arg_min(e.state, e.occurred_at) FILTER (e.state IN {_TERMINAL}) AS reported_outcome,
           min(coalesce(e.finished_at, e.occurred_at)) FILTER (e.state IN {_TERMINAL}) AS reported_finish,
           arg_max(e.error_code, e.occurred_at) FILTER (e.error_code IS NOT NULL OR e.error_message IS NOT NULL) AS error_code,
           arg_max(e.error_message, e.occurred_at) FILTER (e.error_code IS NOT NULL OR e.error_message IS NOT NULL) AS error_message,
           count(*) AS events
    FROM attempt_events e
    LEFT JOIN waiting w USING (run_key, attempt)
    GROUP BY e.run_key, e.attempt
),
merged AS (
    SELECT coalesce(o.vendor, f.vendor) AS vendor,
           coalesce(o.job_key, f.job_key) AS job_key,
           run_key, attempt,
           max(attempt) OVER (PARTITION BY run_key) AS last_attempt,
           o.last_state,
           coalesce(o.terminal_state, f.reported_outcome) AS outcome_state,
           least(f.first_waiting_at, o.pending_at) AS queued_at,
           least(f.reported_start, f.seen_running_at, o.running_at) AS observed_start,
           f.last_waiting_at,
           coalesce(f.reported_finish, o.terminal_at) AS reported_finish,
           f.error_code, f.error_message,
           coalesce(f.events, 0) AS events
    FROM opened o
    FULL JOIN facts f USING (run_key, attempt)
),
timed AS (
    SELECT *,
           coalesce(observed_start, CASE WHEN outcome_state IS NOT NULL THEN last_waiting_at END) AS start_at,
           CASE WHEN outcome_state IS NOT NULL THEN reported_finish END AS end_at
    FROM merged
)
SELECT vendor, job_key, run_key, attempt,
       CASE
           WHEN outcome_state IS NOT NULL THEN outcome_state
           WHEN attempt < last_attempt THEN 'RETRIED'
           ELSE coalesce(last_state, 'PENDING')
       END AS outcome,
       queued_at,
       start_at AS started_at,
       observed_start IS NOT NULL AS start_observed,
       end_at AS finished_at,
       epoch(end_at - start_at) AS duration_s,
       epoch(start_at - queued_at) AS queue_s,
       error_code, error_message,
       CAST(events AS BIGINT) AS events
FROM timed;

CREATE OR REPLACE VIEW jobs AS
WITH per_job AS (
    SELECT job_key,
           any_value(vendor) AS vendor,
           any_value(source) AS source,
           count(*) AS runs,
           arg_max(run_key, last_event_at) AS last_run_key,
           arg_max(state, last_event_at) AS last_state,
           max(last_event_at) AS last_event_at,
           count(*) FILTER (state = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (state = 'FAILED') AS failed,
           count(*) FILTER (state = 'CANCELED') AS canceled,
           count(*) FILTER (state = 'SKIPPED') AS skipped,
           count(*) FILTER (state IN ('PENDING', 'RUNNING')) AS active,
           count(*) FILTER (state = 'STALE') AS stale,
           CAST(sum(attempt) AS BIGINT) AS attempts,
           CAST(sum(retries) AS BIGINT) AS retries,
           CAST(sum(stale_episodes) AS BIGINT) AS stale_episodes,
           CAST(sum(reactivations) AS BIGINT) AS reactivations,
           CAST(sum(events) AS BIGINT) AS events
    FROM job_runs
    GROUP BY job_key
),
names AS (
    SELECT job_key, arg_max(attrs->>'job_name', occurred_at) AS job_name
    FROM job_events
    WHERE attrs->>'job_name' IS NOT NULL
    GROUP BY job_key
),
attempt_outcomes AS (
    SELECT job_key, count(*) FILTER (outcome = 'FAILED') AS failed_attempts
    FROM job_attempts
    GROUP BY job_key
)
SELECT p.job_key, n.job_name, p.vendor, p.source, p.runs, p.last_run_key, p.last_state, p.last_event_at,
       p.succeeded, p.failed, p.canceled, p.skipped, p.active, p.stale,
       p.attempts, coalesce(a.failed_attempts, 0) AS failed_attempts,
       p.retries, p.stale_episodes, p.reactivations, p.events
FROM per_job p
LEFT JOIN names n USING (job_key)
LEFT JOIN attempt_outcomes a USING (job_key);

CREATE OR REPLACE VIEW run_durations AS
WITH waiting AS (
    SELECT run_key, max(occurred_at) AS last_waiting_at
    FROM job_events
    WHERE state = 'PENDING'
    GROUP BY run_key
),
finished AS (
    SELECT r.vendor, r.job_key,
           CASE WHEN r.state = 'FAILED' AND r.last_error_code = 'DRAINED_STALE' THEN 'DRAINED' ELSE r.state END AS outcome,
           coalesce(r.duration_s, epoch(r.finished_at - w.last_waiting_at)) AS duration_s,
           r.started_at IS NULL AS start_estimated
    FROM job_runs r
    LEFT JOIN waiting w USING (run_key)
    WHERE r.state IN {_TERMINAL} AND r.finished_at IS NOT NULL
)
SELECT vendor, job_key, outcome,
       count(*) AS runs,
       count(*) FILTER (start_estimated) AS runs_start_estimated,
       quantile_cont(duration_s, 0.5) AS p50_s,
       quantile_cont(duration_s, 0.95) AS p95_s,
       max(duration_s) AS max_s
FROM finished
WHERE duration_s IS NOT NULL
GROUP BY vendor, job_key, outcome;

CREATE OR REPLACE VIEW job_retries AS
SELECT vendor, job_key,
       count(*) AS runs,
       CAST(sum(attempt) AS BIGINT) AS attempts,
       CAST(sum(retries) AS BIGINT) AS retries
FROM job_runs
GROUP BY vendor, job_key;

CREATE OR REPLACE VIEW stale_episodes AS
WITH moves AS (
    SELECT vendor, run_key, from_state, to_state, "at", cause, event_id,
           lead(to_state) OVER w AS next_state,
           lead("at") OVER w AS next_at,
           lead(cause) OVER w AS next_cause,
           lead(event_id) OVER w AS next_event_id
    FROM job_transitions
    WHERE NOT coalesce(late OR duplicate OR illegal, false)
    WINDOW w AS (PARTITION BY run_key ORDER BY kafka_offset NULLS LAST, "at", transition_id)
)
SELECT m.vendor, m.run_key, m."at" AS stale_at, m.next_at AS ended_at,
       CASE
           WHEN m.next_state IS NULL THEN 'still_stale'
           WHEN m.next_cause = 'reactivation' THEN 'reactivated'
           WHEN m.next_cause = 'retry' THEN 'retried'
           WHEN e.error_code = 'DRAINED_STALE' THEN 'drained'
           ELSE 'finished'
       END AS ended_by
FROM moves m
LEFT JOIN job_events e ON e.event_id = m.next_event_id
WHERE m.to_state = 'STALE' AND m.from_state IS DISTINCT FROM 'STALE';

CREATE OR REPLACE VIEW failure_rates AS
WITH runs AS (
    SELECT vendor,
           CAST(finished_at AT TIME ZONE 'UTC' AS DATE) AS day,
           count(*) AS finished,
           count(*) FILTER (state = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (state = 'FAILED') AS failed,
           count(*) FILTER (state = 'CANCELED') AS canceled,
           count(*) FILTER (state = 'SKIPPED') AS skipped
    FROM job_runs
    WHERE state IN {_TERMINAL} AND finished_at IS NOT NULL
    GROUP BY ALL
),
attempts AS (
    SELECT vendor,
           CAST(finished_at AT TIME ZONE 'UTC' AS DATE) AS day,
           count(*) AS finished_attempts,
           count(*) FILTER (outcome = 'SUCCEEDED') AS succeeded_attempts,
           count(*) FILTER (outcome = 'FAILED') AS failed_attempts
    FROM job_attempts
    WHERE outcome IN {_TERMINAL} AND finished_at IS NOT NULL
    GROUP BY ALL
)
SELECT vendor, day,
       coalesce(r.finished, 0) AS finished,
       coalesce(r.succeeded, 0) AS succeeded,
       coalesce(r.failed, 0) AS failed,
       coalesce(r.canceled, 0) AS canceled,
       coalesce(r.skipped, 0) AS skipped,
       round(coalesce(r.failed, 0) / nullif(coalesce(r.succeeded, 0) + coalesce(r.failed, 0), 0), 4) AS failure_rate,
       coalesce(a.finished_attempts, 0) AS finished_attempts,
       coalesce(a.failed_attempts, 0) AS failed_attempts,
       round(coalesce(a.failed_attempts, 0) / nullif(coalesce(a.succeeded_attempts, 0) + coalesce(a.failed_attempts, 0), 0), 4)
           AS attempt_failure_rate
FROM runs r
FULL JOIN attempts a USING (vendor, day);

CREATE OR REPLACE VIEW dead_letter_reasons AS
SELECT vendor, stage, reason_code,
       count(*) AS dead_letters,
       coalesce(arg_max(reason, "at"), any_value(reason)) AS reason,
       min("at") AS first_at,
       max("at") AS last_at
FROM dead_letters
GROUP BY vendor, stage, reason_code;
"""


def _code_old_dead_letters(con: duckdb.DuckDBPyConnection) -> None:
    """Dead letters written before reason codes get the code the worker now gives."""
    rows = con.execute(
        "SELECT DISTINCT error_type, reason FROM dead_letters WHERE reason_code IS NULL"
    ).fetchall()
    codes = pa.table({
        "error_type": pa.array([error_type for error_type, _ in rows], pa.string()),
        "reason": pa.array([reason for _, reason in rows], pa.string()),
        "reason_code": pa.array([reason_codes.derive(error_type or "", reason or "") for error_type, reason in rows], pa.string()),
    })
    con.register("old_dead_letter_codes", codes)
    try:
        con.execute(
            "UPDATE dead_letters d SET reason_code = c.reason_code FROM old_dead_letter_codes c "
            "WHERE d.reason_code IS NULL AND d.error_type IS NOT DISTINCT FROM c.error_type "
            "AND d.reason IS NOT DISTINCT FROM c.reason"
        )
    finally:
        con.unregister("old_dead_letter_codes")


def _jobs_view_without_left_open_runs() -> str:
    """Migration 5's ``jobs`` view with runs that left the worker's state open counted
    neither active nor stale (their state is the last one known, not a live one)."""
    start = _ATTEMPTS.index("CREATE OR REPLACE VIEW jobs AS")
    end = _ATTEMPTS.index("LEFT JOIN attempt_outcomes a USING (job_key);") + len("LEFT JOIN attempt_outcomes a USING (job_key);")
    view = _ATTEMPTS[start:end]
    for live in ("state IN ('PENDING', 'RUNNING')", "state = 'STALE'"):
        assert view.count(f"FILTER ({live})") == 1, live
        view = view.replace(f"FILTER ({live})", f"FILTER ({live} AND NOT coalesce(left_open, false))")
    return view


_LEFT_OPEN = "ALTER TABLE job_runs ADD COLUMN left_open BOOLEAN;\n" + _jobs_view_without_left_open_runs() + """
CREATE OR REPLACE VIEW active_runs AS
SELECT vendor, source, job_key, run_key, state, attempt, started_at, last_event_at,
       deadline, progress, native_state
FROM job_runs
WHERE state IN ('PENDING', 'RUNNING', 'STALE') AND NOT coalesce(left_open, false);
"""


def _attempts_view_queued_before_start() -> str:
    """Migration 5's ``job_attempts`` with an attempt's ``queued_at`` only when it waited at
    or before its start (R3, as the run's own): a PENDING after the start (an Airflow sensor
    rescheduled mid-try) is not queue time, and ``queue_s`` was negative for it."""
    start = _ATTEMPTS.index("CREATE OR REPLACE VIEW job_attempts AS")
    end = _ATTEMPTS.index("FROM timed;", start) + len("FROM timed;")
    view = _ATTEMPTS[start:end]
    queued = (
        "queued AS (\n"
        "    SELECT * REPLACE (CASE WHEN start_at IS NULL OR queued_at <= start_at THEN queued_at END AS queued_at)\n"
        "    FROM timed\n"
        ")\nSELECT vendor,"
    )
    assert view.count(")\nSELECT vendor,") == 1  # the slice ends with "FROM timed;" by construction
    return view.replace(")\nSELECT vendor,", "),\n" + queued).removesuffix("FROM timed;") + "FROM queued;\n"


_ATTEMPTS_QUEUED_BEFORE_START = _attempts_view_queued_before_start()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "fact tables and the sink's offsets", _TABLES),
    Migration(2, "alerts (the alerter's jobs.alerts records, latest status per alert)", _ALERTS),
    Migration(3, "the analysts' views and jobs (current per job)", _VIEWS),
    Migration(4, "transitions keep their Kafka place: a run's transitions in the order the worker made "
                 "them (a Zuora token reported stale keeps its last activity time, so a STALE and what "
                 "follows it can share one instant)", _TRANSITION_ORDER),
    Migration(5, "the attempt grain (job_attempts; failed attempts in jobs and failure_rates), job names, "
                 "outcomes in run_durations, retried stale episodes, BIGINT counts, dead letters' reason codes",
              _ATTEMPTS, then=_code_old_dead_letters),
    Migration(6, "the catalog described: COMMENT ON every table, view and column (pipeline/sink/describe.py)",
              "", then=describe.apply_comments),
    Migration(7, "runs that left the worker's state still open (left_open, lifecycle R21) are not active",
              _LEFT_OPEN, then=describe.apply_comments),
    Migration(8, "an attempt's queue time counts only waiting at or before its start (never negative)",
              _ATTEMPTS_QUEUED_BEFORE_START, then=describe.apply_comments),
)
LATEST = MIGRATIONS[-1].version

VIEWS = ("jobs", "job_attempts", "run_durations", "job_retries", "stale_episodes", "failure_rates", "active_runs", "dead_letter_reasons")


def version_of(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version a file has (0 for a new, empty file)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'jobstream_schema'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM jobstream_schema").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection, upto: int = LATEST, adapt: Callable[[str], str] = str) -> list[int]:
    """Apply the missing migrations (up to ``upto``); return the versions applied.
    ``adapt`` rewrites each statement text for another target (``sink/lake.py``: DuckLake
    has no PRIMARY KEY), so both targets share one list of migrations."""
    current = version_of(con)
    if current > LATEST:
        raise SchemaError(
            f"the database was written by a newer jobstream (schema version {current}); "
            f"this one knows up to {LATEST}: upgrade jobstream to open it"
        )
    applied = []
    for migration in MIGRATIONS:
        if current < migration.version <= upto:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(adapt("CREATE TABLE IF NOT EXISTS jobstream_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ, why VARCHAR)"))
                if migration.sql:
                    con.execute(adapt(migration.sql))
                if migration.then is not None:
                    migration.then(con)
                con.execute(
                    "INSERT INTO jobstream_schema VALUES (?, now(), ?)", [migration.version, migration.why]
                )
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.TransactionException:
                    pass  # a COMMIT that failed (a lake's conflict) ended the transaction: its error is the one to raise
                raise
            applied.append(migration.version)
    return applied
