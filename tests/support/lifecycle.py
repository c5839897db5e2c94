"""Canonical events for the pure lifecycle's tests: times are seconds after ``T0``, an
event is named by its run and a number (same name, same id)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.model import UTC, JobEvent, State, make_event_id

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    n: object,
    state: State,
    seconds: float,
    *,
    attempt: int | None = None,
    run: str = "run-1",
    job: str = "job-1",
    started: float | None = None,
    finished: float | None = None,
    progress: float | None = None,
    rows: int | None = None,
    error: str | None = None,
    message: str | None = None,
    native: str | None = None,
    received: float | None = None,
    same_run_as: list[str] | None = None,
) -> JobEvent:
    """An event named ``n`` (its id is derived from run and n: same n, same id)."""
    return JobEvent(
        event_id=make_event_id("test", run, n),
        vendor="test",
        source="src",
        job_key=f"test:src:{job}",
        run_key=f"test:src:{run}",
        native_state=native if native is not None else state.value.lower(),
        state=state,
        occurred_at=at(seconds),
        attempt=attempt,
        started_at=None if started is None else at(started),
        finished_at=None if finished is None else at(finished),
        progress=progress,
        rows=rows,
        error_code=error,
        error_message=message,
        received_at=None if received is None else at(received),
        attrs={} if same_run_as is None else {"same_run_as": same_run_as},
    )
