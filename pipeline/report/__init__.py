"""``pipeline report``: one self-contained HTML page about the analytics database.

``data`` holds the SQL and the bounds, ``page`` draws it (Plotly, its script embedded),
``serve`` serves it locally, made again from the live database on every request.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from dataclasses import replace
from typing import Any

from pipeline.analytics import AnalyticsError, Database
from pipeline.model import UTC
from pipeline.report import data, page

__all__ = ["ReportError", "build", "render"]


class ReportError(RuntimeError):
    """The report cannot be made (no database, a query refused); one line for the user."""


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo is not None else value


def build(db: Database, *, since: timedelta | None, now: datetime | None = None) -> data.ReportData:
    """Every section's rows, from the live sink when it serves the file, else the file."""
    sources: list[str] = []

    def query(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            result = db.query(sql)
        except AnalyticsError as exc:
            raise ReportError(str(exc)) from None
        sources.append(result.source)
        return result.columns, [tuple(_utc(v) for v in row) for row in result.rows]

    loaded = data.load(query, now=now or datetime.now(UTC), since=since, source=str(db.db_path))
    return replace(loaded, source=sources[0] if sources else str(db.db_path))


def render(report: data.ReportData, *, refresh_s: int | None = None) -> str:
    return page.render(report, refresh_s=refresh_s)
