"""Alert messages as people read them in Slack, Teams or an inbox: what ran, where, what
happened and when, the error, the duration, and the SQL that shows the run's history.
Plain text, so every Apprise channel shows it the same way."""

from __future__ import annotations

from datetime import datetime

from pipeline.alerts.logic import Firing, human_seconds

DIGEST_LINES = 20


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.isoformat().replace("+00:00", "Z")


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _error(firing: Firing) -> str:
    run = firing.run
    if run is None:
        return ""
    return " ".join(part for part in (run.last_error_code, run.last_error_message) if part)


def history_sql(firing: Firing) -> list[str]:
    """Queries against the sink's ``job_transitions`` / ``job_runs`` tables."""
    if firing.run_key is None:
        return ["SELECT * FROM dead_letters ORDER BY at DESC LIMIT 20;"] if firing.kind == "dead_letters" else []
    lines = [
        "SELECT at, attempt, from_state, to_state, cause FROM job_transitions "
        f"WHERE run_key = {_sql_text(firing.run_key)} ORDER BY at;",
    ]
    if firing.job_key is not None:
        lines.append(
            "SELECT run_key, state, attempt, started_at, duration_s, last_error_message FROM job_runs "
            f"WHERE job_key = {_sql_text(firing.job_key)} ORDER BY started_at DESC LIMIT 20;"
        )
    return lines


def title(firing: Firing) -> str:
    where = firing.job_key or firing.vendor or "pipeline"
    return f"[jobstream] {firing.headline}: {where}"


def body(firing: Firing) -> str:
    run = firing.run
    lines = []
    if firing.run_key is not None:
        lines.append(f"What:     {firing.headline}")
        lines.append(
            f"Where:    vendor {firing.vendor} | source {firing.source or '-'} | job {firing.job_key} | "
            f"run {firing.run_key} | attempt {firing.attempt}"
        )
    else:
        lines.append(f"What:     {firing.headline}")
    lines.append(f"When:     {_time(firing.at)}")
    if run is not None:
        error = _error(firing)
        if error:
            lines.append(f"Error:    {error}")
        if run.duration_s is not None:
            lines.append(f"Duration: {human_seconds(run.duration_s)} ({_time(run.started_at)} -> {_time(run.finished_at)})")
        elif run.started_at is not None:
            lines.append(f"Duration: running since {_time(run.started_at)} ({human_seconds((firing.at - run.started_at).total_seconds())} at alert time)")
        lines.append(f"Run now:  {run.state} (vendor: {run.native_state or '-'}), retries {run.retries}")
    for label, value in firing.facts:
        lines.append(f"{label + ':':<9} {value}")
    sql = history_sql(firing)
    if sql:
        lines.append("History (DuckDB):")
        lines.extend(f"  {query}" for query in sql)
    lines.append(f"Alert id: {firing.alert_id} (rule {firing.rule})")
    return "\n".join(lines)


def digest_title(rule: str, firings: list[Firing]) -> str:
    return f"[jobstream] {len(firings)} alerts from rule {rule}"


def digest_body(rule: str, firings: list[Firing]) -> str:
    """One message instead of a flood: a line per alert (ids included, so a receiver can
    match a repeat), the first few in full detail left to the history queries."""
    jobs = sorted({f.job_key for f in firings if f.job_key})
    lines = [f"Rule {rule} fired {len(firings)} times at once, for {len(jobs)} jobs:"]
    for firing in firings[:DIGEST_LINES]:
        error = _error(firing)
        lines.append(
            f"- {_time(firing.at)} {firing.headline} | {firing.job_key or '-'} | run {firing.run_key or '-'} "
            f"| attempt {firing.attempt if firing.attempt is not None else '-'}"
            + (f" | {error[:100]}" if error else "") + f" | alert {firing.alert_id}"
        )
    if len(firings) > DIGEST_LINES:
        lines.append(f"... and {len(firings) - DIGEST_LINES} more (SELECT * FROM alerts WHERE rule = {_sql_text(rule)})")
    lines.append(f"History (DuckDB): SELECT * FROM alerts WHERE rule = {_sql_text(rule)} ORDER BY at DESC;")
    return "\n".join(lines)
