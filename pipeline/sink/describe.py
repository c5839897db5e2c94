"""The described catalog: what every table, view and column of the analytics file is.

The text lives here once. ``comment_sql`` turns it into ``COMMENT ON`` statements (a
schema migration applies them), so any DuckDB client sees it in ``duckdb_tables()``,
``duckdb_views()`` and ``duckdb_columns()``; ``describe`` reads it back from the file for
``pipeline sql --describe [NAME]``. Each text says what the thing is, its grain (one row
per what) and its units. ``CREATE OR REPLACE VIEW`` drops a view's comments: a migration
that replaces a view applies ``comment_sql`` again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.sink import sql as sql_module


@dataclass(frozen=True, slots=True)
class Relation:
    kind: str  # TABLE | VIEW
    text: str
    columns: dict[str, str] = field(default_factory=dict)
    """Column texts for this relation; a column not named here takes ``COMMON_COLUMNS``'s."""


_TERMINAL = "SUCCEEDED, FAILED, CANCELED or SKIPPED"

COMMON_COLUMNS: dict[str, str] = {
    "vendor": "Vendor: the name of its package under pipeline/vendors/ (one per vendor, e.g. 'qlik_qrs').",
    "source": "The vendor instance: tenant, host or server the run was read from.",
    "job_key": "The job: stable id of what runs repeatedly, '<vendor>:<source>:<vendor's job id>'.",
    "job_name": "The job's human name (task, app, method, object or publication name), from its latest event that has one; NULL when no event names it.",
    "run_key": "The run: one execution of a job, '<vendor>:<source>:<vendor's run id>' (not prefixed by its job_key: join job_runs for that); retries of a run share it.",
    "attempt": "Attempt number within the run, from 1; a retry opens the next.",
    "state": "Canonical state: PENDING, RUNNING, STALE, SUCCEEDED, FAILED, CANCELED or SKIPPED.",
    "native_state": "The vendor's own state text, as reported.",
    "started_at": "When the run started (UTC); NULL when no event showed a start.",
    "finished_at": "When the run reached its terminal state (UTC); NULL while it is not terminal.",
    "progress": "The vendor's progress, 0 to 1 (fraction), when it reports one.",
    "rows": "Rows the job processed, when the vendor reports it (count).",
    "error_code": "The vendor's error code, when the event reports an error.",
    "error_message": "The vendor's error message, when the event reports an error.",
    "parent_run_key": "The run that started this one (Informatica publication -> subscription), or NULL.",
    "schema_version": "Contract version of the record the row came from (docs/records.md).",
    "event_id": "Deterministic id of the canonical event (the same input gives the same id).",
    "transition_id": "Deterministic id of the state change record.",
    "late": "True for a record that changed nothing because it arrived after the run moved on.",
    "kafka_partition": "Partition of the jobs.* topic the record was read from.",
    "kafka_offset": "Offset of the record in its partition: a run's records in the order the worker made them.",
    "at": "When it happened (UTC).",
    "reason": "Why, one line for humans (carries variable parts: offsets, ids).",
    "reason_code": "The cause without the reason's variable parts: '<error_type>.<stable words>' (pipeline/reason_codes.py); group by this.",
    "stage": "Where the record was refused: decode, normalize, lifecycle, expiry, size, partition, sink or alerts.",
    "topic": "Kafka topic.",
    "partition": "Kafka partition.",
    "offset": "Kafka offset in the partition.",
    "runs": "Runs (count).",
    "attempts": "Attempts of all runs (count): runs plus retries.",
    "retries": "Retries (count): attempts beyond each run's first.",
    "events": "Canonical events (count).",
    "stale_episodes": "Times a run went STALE (count).",
    "reactivations": "Times a STALE run came back within the same attempt (count).",
    "succeeded": "Runs whose current state is SUCCEEDED (count).",
    "failed": "Runs whose current state is FAILED (count); a run that failed and then succeeded on retry is not here (see failed_attempts).",
    "canceled": "Runs whose current state is CANCELED (count).",
    "skipped": "Runs whose current state is SKIPPED (count).",
    "failed_attempts": "Attempts whose outcome is FAILED (count), including failed attempts of runs that later succeeded.",
    "duration_s": "finished_at - started_at (seconds).",
    "queue_s": "started_at - queued_at: time waiting before it started (seconds).",
    "queued_at": "When the vendor first showed it waiting (PENDING) (UTC).",
    "deadline": "When a silent PENDING/RUNNING run goes STALE (UTC); NULL otherwise.",
    "last_event_at": "Latest event time of the run (UTC, vendor's clock).",
    "first_at": "Earliest one (UTC).",
    "last_at": "Latest one (UTC).",
}

CATALOG: dict[str, Relation] = {
    "job_events": Relation("TABLE", "Fact: one row per canonical event (event_id), every vendor's report normalized; the history behind every other table.", {
        "occurred_at": "When the vendor says the event happened (UTC, vendor's clock).",
        "received_at": "When the ingestor received the vendor document (UTC).",
        "started_at": "The start the event reports (UTC), or NULL.",
        "finished_at": "The end the event reports (UTC), or NULL.",
        "state": "Canonical state the event reports: PENDING, RUNNING, STALE or " + _TERMINAL + ".",
        "attempt": "The attempt the vendor gives, or NULL when it gives none (the worker then infers it; job_attempts assigns such events by time).",
        "counts": "The vendor's counters (JSON object, e.g. pages, records).",
        "raw_topic": "Raw topic of the vendor document the event came from (lineage).",
        "raw_partition": "Partition of that raw document.",
        "raw_offset": "Offset of that raw document.",
        "attrs": "Vendor-specific attributes (JSON object); attrs->>'job_name' is the job's name.",
        "late": "True when the event arrived after its run moved on (counted, changed no state).",
        "skewed": "True when the event's time was ahead of its receive time beyond the allowed clock skew.",
    }),
    "job_transitions": Relation("TABLE", "Fact: one row per state change of a run (transition_id), as the worker's lifecycle made it, plus flagged records that changed nothing (late, duplicate, illegal).", {
        "attempt": "The run's attempt when the change happened.",
        "from_state": "State before (NULL when the run opened).",
        "to_state": "State after (equal to from_state on flagged records).",
        "at": "Event time of the change (UTC); for a stale timeout, last activity + stale_after.",
        "cause": "vendor (the vendor reported it), retry (a new attempt opened), reactivation (STALE came back), stale_timeout (silent too long).",
        "event_id": "The event that caused it; NULL for a stale timeout.",
        "duplicate": "True for a re-delivered event (changed nothing).",
        "illegal": "True for an event that would leave a terminal state without a new attempt (changed nothing).",
    }),
    "job_runs": Relation("TABLE", "Current state: one row per run (run_key), the worker's latest snapshot (highest version wins).", {
        "version": "Snapshot number: every change of the run adds 1.",
        "left_open": "True when the run left the worker's state still open (evicted by count or size, lifecycle R21): its state is the last one known, and it is not active.",
        "attempt": "The run's current (highest) attempt.",
        "first_event_at": "Earliest event time of the run (UTC).",
        "current_at": "Event time of the newest event applied to the current attempt (UTC).",
        "started_at": "Earliest start over all attempts (UTC); NULL when no event showed a start.",
        "finished_at": "When the current attempt reached its terminal state (UTC); NULL while not terminal.",
        "duration_s": "finished_at - started_at across all attempts (seconds); per attempt see job_attempts.",
        "events": "Events of the run (count).",
        "last_error_code": "Error code of the latest event that reported an error.",
        "last_error_message": "Error message of the latest event that reported an error.",
        "last_error_at": "Event time of that error (UTC).",
    }),
    "dead_letters": Relation("TABLE", "Fact: one row per refused record (dead_letter_id = '<topic>:<partition>:<offset>'), from the worker, the alerter or the sink, with its bytes.", {
        "dead_letter_id": "'<topic>:<partition>:<offset>' of the refused record: stable across re-sends.",
        "at": "Kafka timestamp of the refused record (UTC).",
        "error_type": "Error class (Rejected for a vendor document the normalizer refused).",
        "topic": "Topic of the refused record.",
        "partition": "Partition of the refused record.",
        "offset": "Offset of the refused record.",
        "vendor": "Vendor of the raw topic, or NULL.",
        "key_b64": "The record's key, base64.",
        "value_b64": "The record's value, base64 (NULL when over 256 KB: read it from topic/partition/offset).",
        "value_size": "Size of the value (bytes).",
        "value_preview": "First 200 characters of the value.",
    }),
    "alerts": Relation("TABLE", "Current state: one row per alert (alert_id), its latest status (the alerter's jobs.alerts records).", {
        "alert_id": "Deterministic id from the rule and the transition (or window).",
        "rule": "Name of the rule that fired.",
        "status": "fired, delivered, suppressed (rate limit) or failed (delivery failed).",
        "reason": "Why suppressed or why delivery failed.",
        "attempt": "Attempt of the run the alert is about.",
        "transition_id": "The transition that fired it, or NULL for windowed rules.",
        "state": "The run's state the alert is about.",
        "at": "When it fired (UTC).",
        "delivered_at": "When it was delivered (UTC), or NULL.",
        "channels": "Channels it went to (list).",
        "message": "The text sent.",
        "status_rank": "Sink bookkeeping: 1 for a final status, 0 for fired (the higher wins).",
    }),
    "kafka_offsets": Relation("TABLE", "The sink's own: one row per (topic, partition), the next offset to read, written in the same transaction as the rows.", {
        "topic": "A jobs.* topic the sink reads.",
        "partition": "Its partition.",
        "next_offset": "The next offset the sink reads (offset).",
        "committed_at": "When that batch was committed (UTC, sink's clock).",
    }),
    "jobstream_schema": Relation("TABLE", "Migrations applied to this file: one row per schema version.", {
        "version": "Schema version (migration number).",
        "applied_at": "When it was applied (UTC).",
        "why": "What the migration added.",
    }),
    "jobs": Relation("VIEW", "One row per job (job_key): its name, latest run and counts over its runs in job_runs; per-attempt failures beside the per-run ones.", {
        "runs": "Runs of the job (count).",
        "last_run_key": "The run with the latest event.",
        "last_state": "That run's current state.",
        "last_event_at": "Latest event time of any of its runs (UTC).",
        "active": "Runs PENDING or RUNNING now (count).",
        "stale": "Runs STALE now (count).",
        "attempts": "Attempts of all its runs (count): runs plus retries.",
    }),
    "job_attempts": Relation("VIEW", "One row per attempt of a run (run_key, attempt): its outcome, times, queue time and error, from job_transitions and job_events.", {
        "outcome": _TERMINAL + " (the attempt's first terminal state); RETRIED when a later attempt opened before it reported one; else the current state (PENDING, RUNNING or STALE).",
        "queued_at": "When the attempt was first seen waiting (PENDING), at or before its start (UTC), or NULL.",
        "started_at": "When the attempt started (UTC): its reported start or first RUNNING time; when never seen running, the last time it was seen waiting (start_observed false).",
        "start_observed": "False when started_at is the last time seen waiting, because the vendor never showed the start.",
        "finished_at": "When the attempt ended (UTC): the reported end of its terminal event; NULL for attempts without an outcome.",
        "duration_s": "finished_at - started_at of this attempt (seconds).",
        "queue_s": "started_at - queued_at of this attempt (seconds).",
        "error_code": "Error code of the attempt's latest event that reported an error.",
        "error_message": "Error message of the attempt's latest event that reported an error.",
        "events": "Events of the attempt (count).",
    }),
    "run_durations": Relation("VIEW", "One row per (vendor, job, outcome): how long its finished runs took, in seconds, over all attempts of each run.", {
        "outcome": _TERMINAL + ", or DRAINED (FAILED with DRAINED_STALE: Zuora drained a stale token).",
        "runs": "Finished runs with a duration (count).",
        "runs_start_estimated": "Of those, runs never seen starting (count): their duration runs from the last time they were seen waiting, an upper bound.",
        "p50_s": "Median duration (seconds).",
        "p95_s": "95th percentile duration, interpolated (seconds).",
        "max_s": "Longest duration (seconds).",
    }),
    "job_retries": Relation("VIEW", "One row per (vendor, job): its runs, attempts and retries.", {}),
    "stale_episodes": Relation("VIEW", "One row per time a run went STALE: when and how the episode ended.", {
        "stale_at": "When the run went STALE (UTC).",
        "ended_at": "When the episode ended (UTC); NULL while still stale.",
        "ended_by": "reactivated (came back in the same attempt), retried (a new attempt opened), drained (Zuora drained the token), finished (the vendor reported an outcome) or still_stale.",
    }),
    "failure_rates": Relation("VIEW", "One row per (vendor, day): finished runs by outcome and failure rates, per run and per attempt. Day is the UTC date of finished_at.", {
        "day": "UTC date of finished_at.",
        "finished": "Runs that reached a terminal state that day (count): succeeded + failed + canceled + skipped.",
        "failure_rate": "failed / (succeeded + failed): CANCELED and SKIPPED runs are left out (fraction, 4 decimals); NULL when none succeeded or failed.",
        "finished_attempts": "Attempts that reached a terminal outcome that day (count).",
        "failed_attempts": "Attempts whose outcome is FAILED that day (count), including those of runs that later succeeded.",
        "attempt_failure_rate": "failed attempts / (succeeded + failed attempts) (fraction, 4 decimals); NULL when none.",
    }),
    "active_runs": Relation("VIEW", "One row per run PENDING, RUNNING or STALE now (from job_runs), less runs that left the worker's state open (left_open).", {
        "attempt": "The run's current attempt.",
    }),
    "dead_letter_reasons": Relation("VIEW", "One row per (vendor, stage, reason_code): how many dead letters one cause made.", {
        "dead_letters": "Dead letters (count).",
        "reason": "The latest letter's reason, as an example of the cause.",
    }),
}


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_sql(columns: dict[str, list[str]], *, view_columns: bool = True) -> str:
    """``COMMENT ON`` every relation of ``CATALOG`` and every column of it in ``columns``
    (relation -> its column names, as the file has them); without ``view_columns`` the
    columns of views are left out (DuckLake 1.5.5 comments only a table's columns)."""
    statements = []
    for name, relation in CATALOG.items():
        statements.append(f"COMMENT ON {relation.kind} {name} IS {_quoted(relation.text)};")
        if relation.kind == "VIEW" and not view_columns:
            continue
        for column in columns.get(name, []):
            text = relation.columns.get(column) or COMMON_COLUMNS.get(column)
            if text is None:
                raise KeyError(f"{name}.{column} has no description: add it to pipeline/sink/describe.py")
            statements.append(f'COMMENT ON COLUMN {name}."{column}" IS {_quoted(text)};')
    return "\n".join(statements)


def apply_comments(con) -> None:
    """Comment the catalog of the connection's database (a migration step)."""
    names = list(CATALOG)
    rows = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND table_name IN (SELECT unnest(?)) ORDER BY table_name, column_index", [names],
    ).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    kind = con.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    con.execute(comment_sql(columns, view_columns=kind != "ducklake"))


_RELATIONS = """
SELECT table_name AS name, 'table' AS kind, comment FROM duckdb_tables()
WHERE database_name = current_database() AND NOT internal AND NOT temporary
UNION ALL
SELECT view_name, 'view', comment FROM duckdb_views()
WHERE database_name = current_database() AND NOT internal AND NOT temporary
ORDER BY kind, name
"""

_COLUMNS = """
SELECT column_name AS name, data_type AS type, comment FROM duckdb_columns()
WHERE database_name = current_database() AND table_name = '{name}' ORDER BY column_index
"""


def describe(db_path: Path, address: str, token_file: Path, name: str | None) -> str:
    """The catalog (every table and view with what it is) or one relation's columns, as
    text, read from the database itself: from the live sink over Quack (the server runs the
    catalog query: a client's own ``duckdb_tables()`` does not list an attached Quack
    catalog), else from the file opened read-only."""
    sources: list[str] = []

    def read(sql: str) -> list[tuple]:
        result = sql_module.run_query(db_path, address, token_file, sql)
        sources.append(result.source)
        return result.rows

    relations = read(_RELATIONS)
    return _describe(read, sources[0], name, relations)


def _describe(read: Callable[[str], list[tuple]], source: str, name: str | None, relations: list[tuple]) -> str:
    if name is None:
        width = max((len(n) for n, _, _ in relations), default=0)
        lines = [f"{n.ljust(width)}  {kind:<5}  {comment or ''}" for n, kind, comment in relations]
        return "\n".join(lines) + f"\n({len(lines)} tables and views in {source}; pipeline sql --describe NAME for its columns)\n"
    found = [row for row in relations if row[0] == name]
    if not found:
        known = ", ".join(n for n, _, _ in relations)
        raise sql_module.SqlError(f"no table or view named {name!r} in {source}; there are: {known}")
    _, kind, comment = found[0]
    columns = read(_COLUMNS.format(name=name.replace("'", "''")))
    width = max(len(n) for n, _, _ in columns)
    type_width = max(len(t) for _, t, _ in columns)
    lines = [f"{name} ({kind}): {comment or ''}", ""]
    lines += [f"  {n.ljust(width)}  {t.ljust(type_width)}  {c or ''}" for n, t, c in columns]
    return "\n".join(lines) + "\n"
