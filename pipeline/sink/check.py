"""``pipeline check``: data tests over an analytics file, dbt-style.

Each check is one SQL query that counts offending rows (0 passes): uniqueness, not-null,
relationships, accepted values, the integrity of a run's own numbers, and the
reconciliation of the views with the tables and with each other (the cross-view
counts analysts used to do by hand). ``run_checks`` answers each with its count; the
command prints one line per check and exits non-zero when one fails.

The checks are about a file at rest: on a file a sink is still writing, a transition can
arrive before its run's snapshot (different topics) and fail a relationship for a moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipeline.errors import JobstreamError
from pipeline.vendors import VENDOR_NAMES


class CheckError(JobstreamError, RuntimeError):
    """The file cannot be checked; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Check:
    kind: str  # unique | not_null | relationship | accepted | integrity | reconcile
    name: str
    sql: str
    """Counts the rows that break the check: 0 passes."""


@dataclass(frozen=True, slots=True)
class Outcome:
    check: Check
    count: int

    @property
    def passed(self) -> bool:
        return self.count == 0

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'}  {self.check.kind:<12}  {self.check.name:<62}  {self.count}"


STATES = ("PENDING", "RUNNING", "STALE", "SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
CAUSES = ("vendor", "retry", "reactivation", "stale_timeout")
ALERT_STATUSES = ("fired", "delivered", "suppressed", "failed")
ENDED_BY = ("reactivated", "retried", "drained", "finished", "still_stale")
OUTCOMES = (*STATES, "RETRIED")


def _values(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _unique(table: str, key: str) -> Check:
    return Check("unique", f"{table}.{key.replace(', ', '+')}", f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}")


def _not_null(table: str, *columns: str) -> list[Check]:
    return [Check("not_null", f"{table}.{c}", f'SELECT count(*) FROM {table} WHERE "{c}" IS NULL') for c in columns]


def _accepted(table: str, column: str, values: tuple[str, ...]) -> Check:
    return Check(
        "accepted", f"{table}.{column} in {len(values)} values",
        f'SELECT count(*) FROM {table} WHERE "{column}" IS NOT NULL AND "{column}" NOT IN {_values(values)}',
    )


def _equal(name: str, left: str, right: str) -> Check:
    """Two numbers that must agree: the check counts how far apart they are."""
    return Check("reconcile", name, f"SELECT abs(coalesce(({left}), 0) - coalesce(({right}), 0))::BIGINT")


_UNFLAGGED = "NOT coalesce(late OR duplicate OR illegal, false)"

CHECKS: tuple[Check, ...] = (
    _unique("job_events", "event_id"),
    _unique("job_transitions", "transition_id"),
    _unique("job_runs", "run_key"),
    _unique("dead_letters", "dead_letter_id"),
    _unique("alerts", "alert_id"),
    _unique("jobs", "job_key"),
    _unique("job_attempts", "run_key, attempt"),
    *_not_null("job_events", "event_id", "vendor", "job_key", "run_key", "state", "occurred_at"),
    *_not_null("job_transitions", "transition_id", "run_key", "attempt", "to_state", "at", "cause"),
    *_not_null("job_runs", "run_key", "job_key", "vendor", "state", "attempt"),
    *_not_null("dead_letters", "dead_letter_id", "stage", "error_type", "reason", "reason_code"),
    *_not_null("alerts", "alert_id", "rule", "status"),
    Check("relationship", "job_transitions.run_key -> job_runs",
          "SELECT count(*) FROM job_transitions t WHERE NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.run_key = t.run_key)"),
    Check("relationship", "job_runs.run_key -> job_transitions",
          "SELECT count(*) FROM job_runs r WHERE NOT EXISTS (SELECT 1 FROM job_transitions t WHERE t.run_key = r.run_key)"),
    Check("relationship", "job_runs.parent_run_key -> job_runs",
          "SELECT count(*) FROM job_runs c WHERE c.parent_run_key IS NOT NULL "
          "AND NOT EXISTS (SELECT 1 FROM job_runs p WHERE p.run_key = c.parent_run_key)"),
    Check("relationship", "job_runs.job_key in one vendor",
          "SELECT count(*) FROM (SELECT job_key FROM job_runs GROUP BY job_key HAVING count(DISTINCT vendor) > 1)"),
    _accepted("job_events", "state", STATES),
    _accepted("job_events", "vendor", VENDOR_NAMES),
    _accepted("job_transitions", "to_state", STATES),
    _accepted("job_transitions", "from_state", STATES),
    _accepted("job_transitions", "cause", CAUSES),
    _accepted("job_runs", "state", STATES),
    _accepted("job_runs", "vendor", VENDOR_NAMES),
    _accepted("alerts", "status", ALERT_STATUSES),
    _accepted("stale_episodes", "ended_by", ENDED_BY),
    _accepted("job_attempts", "outcome", OUTCOMES),
    Check("integrity", "job_runs: terminal without finished_at, or open with it",
          f"SELECT count(*) FROM job_runs WHERE (state IN {_values(TERMINAL)}) = (finished_at IS NULL)"),
    Check("integrity", "job_runs: finished before started or negative duration",
          "SELECT count(*) FROM job_runs WHERE finished_at < started_at OR duration_s < 0 OR queue_s < 0"),
    Check("integrity", "job_runs: duration_s != finished_at - started_at",
          "SELECT count(*) FROM job_runs WHERE abs(duration_s - epoch(finished_at - started_at)) > 0.001"),
    Check("integrity", "job_runs: retries != attempt - 1", "SELECT count(*) FROM job_runs WHERE retries <> attempt - 1"),
    Check("integrity", "job_attempts: negative duration or queue time",
          "SELECT count(*) FROM job_attempts WHERE duration_s < 0 OR queue_s < 0"),
    Check("reconcile", "job_runs.state = its last unflagged transition",
          "SELECT count(*) FROM job_runs r JOIN (SELECT run_key, arg_max(to_state, kafka_offset) AS last_state "
          f"FROM job_transitions WHERE {_UNFLAGGED} GROUP BY run_key) t USING (run_key) WHERE r.state <> t.last_state"),
    Check("reconcile", "job_runs.attempt = its highest transition attempt",
          "SELECT count(*) FROM job_runs r JOIN (SELECT run_key, max(attempt) AS attempt FROM job_transitions "
          "GROUP BY run_key) t USING (run_key) WHERE r.attempt <> t.attempt"),
    _equal("sum(jobs.runs) = rows of job_runs", "SELECT sum(runs) FROM jobs", "SELECT count(*) FROM job_runs"),
    _equal("sum(jobs.failed) = FAILED runs", "SELECT sum(failed) FROM jobs", "SELECT count(*) FROM job_runs WHERE state = 'FAILED'"),
    _equal("sum(failure_rates.failed) = FAILED runs", "SELECT sum(failed) FROM failure_rates",
           "SELECT count(*) FROM job_runs WHERE state = 'FAILED'"),
    _equal("sum(failure_rates.finished) = terminal runs", "SELECT sum(finished) FROM failure_rates",
           f"SELECT count(*) FROM job_runs WHERE state IN {_values(TERMINAL)}"),
    # A run that ended without ever being seen waiting or running (skipped before its start,
    # or first polled after it ended) has no duration: run_durations leaves it out.
    _equal("sum(run_durations.runs) = terminal runs with a known time", "SELECT sum(runs) FROM run_durations",
           "SELECT count(*) FROM job_runs r WHERE r.state IN " + _values(TERMINAL) + " AND r.finished_at IS NOT NULL"
           " AND (r.duration_s IS NOT NULL OR EXISTS (SELECT 1 FROM job_events e WHERE e.run_key = r.run_key"
           " AND e.state = 'PENDING'))"),
    _equal("sum(job_runs.stale_episodes) = rows of stale_episodes", "SELECT sum(stale_episodes) FROM job_runs",
           "SELECT count(*) FROM stale_episodes"),
    _equal("sum(job_runs.reactivations) = episodes ended reactivated", "SELECT sum(reactivations) FROM job_runs",
           "SELECT count(*) FROM stale_episodes WHERE ended_by = 'reactivated'"),
    # Compared run by run, not as sums: a poller that starts late first sees a run at its
    # second try, and the attempts before are then in neither table.
    _equal("runs whose attempt is not their last row in job_attempts", "SELECT 0",
           "SELECT count(*) FROM job_runs r WHERE r.attempt IS DISTINCT FROM"
           " (SELECT max(a.attempt) FROM job_attempts a WHERE a.run_key = r.run_key)"),
    _equal("sum(jobs.failed_attempts) = sum(failure_rates.failed_attempts)", "SELECT sum(failed_attempts) FROM jobs",
           "SELECT sum(failed_attempts) FROM failure_rates"),
    _equal("sum(dead_letter_reasons.dead_letters) = rows of dead_letters", "SELECT sum(dead_letters) FROM dead_letter_reasons",
           "SELECT count(*) FROM dead_letters"),
)


def run_checks(con: duckdb.DuckDBPyConnection, checks: tuple[Check, ...] = CHECKS) -> list[Outcome]:
    """Every check's count of offending rows, in order."""
    return [Outcome(check, int(con.execute(check.sql).fetchone()[0])) for check in checks]


def check_file(db_path: Path) -> list[Outcome]:
    """Run the checks on a file, opened read-only (stop the sink first, or check a copy)."""
    if not Path(db_path).is_file():
        raise CheckError(f"no database at {db_path}: pass --db")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())
        if "lock" in text.lower():
            raise CheckError(f"{db_path} is held by a running sink: stop it, or check a copy of the file") from None
        raise CheckError(f"cannot open {db_path}: {text}") from None
    try:
        missing = [v for v in ("job_attempts", "dead_letter_reasons") if not con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [v]).fetchone()[0]]
        if missing:
            raise CheckError(f"{db_path} has an older schema (no {', '.join(missing)}): open it once with `pipeline sink` to migrate it")
        return run_checks(con)
    except duckdb.Error as exc:
        raise CheckError(f"{db_path}: {' '.join(str(exc).split())}") from None
    finally:
        con.close()


def report(outcomes: list[Outcome], source: str) -> str:
    failed = sum(not o.passed for o in outcomes)
    lines = [o.line() for o in outcomes]
    lines.append(f"{len(outcomes) - failed} of {len(outcomes)} checks passed on {source}" + (f"; {failed} failed" if failed else ""))
    return "\n".join(lines) + "\n"
