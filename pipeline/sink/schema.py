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

from dataclasses import dataclass

import duckdb


class SchemaError(RuntimeError):
    """The file's schema cannot be used by this version of jobstream."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    why: str
    sql: str


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

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "fact tables and the sink's offsets", _TABLES),
    Migration(2, "alerts (the alerter's jobs.alerts records, latest status per alert)", _ALERTS),
    Migration(3, "the analysts' views and jobs (current per job)", _VIEWS),
    Migration(4, "transitions keep their Kafka place: a run's transitions in the order the worker made "
                 "them (a Zuora token reported stale keeps its last activity time, so a STALE and what "
                 "follows it can share one instant)", _TRANSITION_ORDER),
)
LATEST = MIGRATIONS[-1].version

VIEWS = ("jobs", "run_durations", "job_retries", "stale_episodes", "failure_rates", "active_runs", "dead_letter_reasons")


def version_of(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version a file has (0 for a new, empty file)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'jobstream_schema'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM jobstream_schema").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection, upto: int = LATEST) -> list[int]:
    """Apply the missing migrations (up to ``upto``); return the versions applied."""
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
                con.execute("CREATE TABLE IF NOT EXISTS jobstream_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ, why VARCHAR)")
                con.execute(migration.sql)
                con.execute(
                    "INSERT INTO jobstream_schema VALUES (?, now(), ?)", [migration.version, migration.why]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            applied.append(migration.version)
    return applied
