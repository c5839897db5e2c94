"""What the report shows, read from the analytics database by SQL over its views.

Every number on the page comes from one of the queries below (so a test can run the same
SQL on the file and compare). Large histories stay usable: the timeline shows the
``MAX_TIMELINE_JOBS`` jobs with the most recent attempts and at most ``MAX_TIMELINE_BARS``
attempts (the most recent), and says how many it left out; the
per-job charts show the ``MAX_JOBS`` jobs with the most runs (or failures); failure rates
are bucketed so that a chart has at most about ``MAX_BUCKETS`` points per vendor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

MAX_TIMELINE_BARS = 2000
"""The most recent attempts drawn on the timeline; older ones are counted, not drawn."""
MAX_TIMELINE_JOBS = 40
"""Jobs on the timeline: those with the most recent attempts; the others are counted."""
MAX_JOBS = 25
"""Jobs per per-job chart (durations, top failing)."""
MAX_BUCKETS = 24
"""Failure-rate points per vendor at most: the bucket width grows with the time span."""
BUCKETS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
           timedelta(hours=6), timedelta(days=1), timedelta(days=7))

Query = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]
"""Runs one read-only SQL statement, gives (column names, rows)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One block of rows, with the SQL that produced it (shown on the page, used by tests)."""

    name: str
    sql: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one report page shows, as of ``generated_at``."""

    generated_at: datetime
    since: datetime | None
    source: str
    summary: Table
    timeline: Table
    timeline_total: int
    timeline_jobs: int
    stale: Table
    durations: Table
    failure_rates: Table
    bucket: timedelta
    top_failing: Table
    dead_letters: Table
    alerts: Table
    recent_alerts: Table


def _since(column: str, since: datetime | None) -> str:
    return f"{column} >= TIMESTAMPTZ '{since.isoformat()}'" if since is not None else "true"


def bucket_for(span: timedelta) -> timedelta:
    """The narrowest bucket that keeps a span within ``MAX_BUCKETS`` points."""
    for width in BUCKETS:
        if span / width <= MAX_BUCKETS:
            return width
    return BUCKETS[-1]


def queries(since: datetime | None, bucket: timedelta) -> dict[str, str]:
    """The report's SQL, by section. Only views and tables the README documents."""
    runs = _since("last_event_at", since)
    attempts = _since("coalesce(finished_at, started_at, queued_at)", since)
    seconds = int(bucket.total_seconds())
    return {
        "summary": f"""
SELECT vendor, count(*) AS runs,
       count(*) FILTER (state = 'SUCCEEDED') AS succeeded, count(*) FILTER (state = 'FAILED') AS failed,
       count(*) FILTER (state IN ('CANCELED', 'SKIPPED')) AS canceled_or_skipped,
       count(*) FILTER (state IN ('PENDING', 'RUNNING') AND NOT coalesce(left_open, false)) AS active,
       count(*) FILTER (state = 'STALE' AND NOT coalesce(left_open, false)) AS stale,
       sum(retries)::BIGINT AS retries
FROM job_runs WHERE {runs} GROUP BY vendor ORDER BY vendor""",
        "timeline": f"""
WITH recent_jobs AS (
    SELECT job_key FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL AND {attempts}
    GROUP BY job_key ORDER BY max(coalesce(started_at, queued_at)) DESC, job_key LIMIT {MAX_TIMELINE_JOBS}
)
SELECT a.vendor, a.job_key, coalesce(j.job_name, a.job_key) AS job_name, a.run_key, a.attempt, a.outcome,
       coalesce(a.started_at, a.queued_at) AS bar_start, a.finished_at AS bar_end, a.duration_s, a.error_message
FROM job_attempts a JOIN recent_jobs USING (job_key) LEFT JOIN jobs j USING (job_key)
WHERE coalesce(a.started_at, a.queued_at) IS NOT NULL AND {attempts}
ORDER BY coalesce(a.started_at, a.queued_at) DESC, a.run_key, a.attempt LIMIT {MAX_TIMELINE_BARS}""",
        "timeline_jobs": f"""
SELECT count(DISTINCT job_key) FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL AND {attempts}""",
        "timeline_total": f"SELECT count(*) FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL AND {attempts}",
        "stale": f"""
SELECT s.vendor, r.job_key, coalesce(j.job_name, r.job_key) AS job_name, s.run_key, s.stale_at, s.ended_at, s.ended_by
FROM stale_episodes s JOIN job_runs r USING (run_key) LEFT JOIN jobs j ON j.job_key = r.job_key
WHERE {_since('s.stale_at', since)} AND r.job_key IN (
    SELECT job_key FROM job_attempts WHERE coalesce(started_at, queued_at) IS NOT NULL AND {attempts}
    GROUP BY job_key ORDER BY max(coalesce(started_at, queued_at)) DESC, job_key LIMIT {MAX_TIMELINE_JOBS})
ORDER BY s.stale_at DESC LIMIT {MAX_TIMELINE_BARS}""",
        "durations": f"""
WITH finished AS (
    SELECT vendor, job_key, duration_s, finished_at FROM job_runs
    WHERE duration_s IS NOT NULL AND state = 'SUCCEEDED' AND {runs}
)
SELECT f.vendor, f.job_key, coalesce(j.job_name, f.job_key) AS job_name, count(*) AS runs,
       quantile_cont(f.duration_s, 0.5) AS p50_s, quantile_cont(f.duration_s, 0.95) AS p95_s,
       arg_max(f.duration_s, f.finished_at) AS last_s
FROM finished f LEFT JOIN jobs j USING (job_key)
GROUP BY f.vendor, f.job_key, j.job_name ORDER BY runs DESC, f.job_key LIMIT {MAX_JOBS}""",
        "failure_rates": f"""
SELECT vendor, time_bucket(INTERVAL '{seconds} seconds', finished_at) AS bucket,
       count(*) FILTER (state = 'SUCCEEDED') AS succeeded, count(*) FILTER (state = 'FAILED') AS failed,
       count(*) FILTER (state = 'FAILED') / nullif(count(*) FILTER (state IN ('SUCCEEDED', 'FAILED')), 0) AS failure_rate
FROM job_runs WHERE finished_at IS NOT NULL AND {_since('finished_at', since)}
GROUP BY ALL ORDER BY vendor, bucket""",
        "top_failing": f"""
SELECT a.vendor, a.job_key, coalesce(j.job_name, a.job_key) AS job_name,
       count(*) FILTER (a.outcome = 'FAILED') AS failed_attempts, count(*) AS attempts,
       arg_max(a.error_message, a.finished_at) FILTER (a.outcome = 'FAILED') AS last_error,
       max(a.finished_at) FILTER (a.outcome = 'FAILED') AS last_failed_at
FROM job_attempts a LEFT JOIN jobs j USING (job_key)
WHERE {attempts}
GROUP BY a.vendor, a.job_key, j.job_name HAVING count(*) FILTER (a.outcome = 'FAILED') > 0
ORDER BY failed_attempts DESC, a.job_key LIMIT {MAX_JOBS}""",
        "dead_letters": f"""
SELECT coalesce(vendor, '(unknown)') AS vendor, stage, reason_code, count(*) AS dead_letters,
       arg_max(reason, "at") AS reason, max("at") AS last_at
FROM dead_letters WHERE {_since('"at"', since)}
GROUP BY ALL ORDER BY dead_letters DESC, reason_code""",
        "alerts": f"""
SELECT rule, status, count(*) AS alerts FROM alerts WHERE {_since('"at"', since)} GROUP BY ALL ORDER BY alerts DESC, rule, status""",
        "recent_alerts": f"""
SELECT "at", rule, status, vendor, run_key, message FROM alerts WHERE {_since('"at"', since)}
ORDER BY "at" DESC, alert_id LIMIT 20""",
    }


def _table(name: str, sql: str, query: Query) -> Table:
    columns, rows = query(sql)
    return Table(name, " ".join(sql.split()), tuple(columns), tuple(tuple(row) for row in rows))


def load(query: Query, *, now: datetime, since: timedelta | None, source: str) -> ReportData:
    """Run every section's SQL through ``query`` (a file or the live sink)."""
    start = now - since if since is not None else None
    _, span_rows = query(
        f"SELECT min(finished_at), max(finished_at) FROM job_runs WHERE finished_at IS NOT NULL AND {_since('finished_at', start)}")
    first, last = span_rows[0] if span_rows else (None, None)
    bucket = bucket_for(last - first) if first is not None and last is not None else BUCKETS[0]
    sql = queries(start, bucket)
    counts = ("timeline_total", "timeline_jobs")
    tables = {name: _table(name, text, query) for name, text in sql.items() if name not in counts}
    totals = {name: int(query(sql[name])[1][0][0]) for name in counts}
    return ReportData(generated_at=now, since=start, source=source, bucket=bucket, **totals, **tables)


def parse_since(text: str | None) -> timedelta | None:
    """``7d``, ``12h``, ``30m``, ``90s`` or ``all`` (None)."""
    if text is None or text == "all":
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        number, unit = float(text[:-1]), text[-1]
        if unit not in units or number <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"--since must be like 7d, 12h, 30m, 90s or all, not {text!r}") from None
    return timedelta(seconds=number * units[unit])

