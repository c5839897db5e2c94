"""Refold one run's canonical events through the pure lifecycle, naming the rule per step.

Pure: no I/O, no clock. The lifecycle (``pipeline/lifecycle.py``) is a function of the
events and of the watermark, so the run's stored events plus the instants at which the
worker's watermark made it STALE (its stored ``stale_timeout`` transitions, R10) are
enough to give, step by step, the state the worker held, and to check it against the
stored ``job_runs`` row and transitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from msgspec.structs import replace

from pipeline import lifecycle
from pipeline.lifecycle import Cause, RunState, Transition
from pipeline.model import JobEvent

COMPARED_FIELDS = (
    "state", "attempt", "retries", "first_event_at", "last_event_at", "current_at", "queued_at",
    "started_at", "finished_at", "native_state", "progress", "rows", "stale_episodes",
    "reactivations", "events", "last_error_code", "last_error_message", "version",
)
"""The ``job_runs`` columns a refold must reproduce (the deadline depends on the
``stale_after`` setting in force, so it is shown, not compared)."""


@dataclass(frozen=True, slots=True)
class Step:
    """What the lifecycle did with one event (or one stale timeout): the rule by its
    R-number, a word for it, the transitions it emitted and the run after it."""

    rule: str
    action: str
    event: JobEvent | None
    at: datetime
    transitions: tuple[Transition, ...]
    after: RunState


@dataclass(frozen=True, slots=True)
class Difference:
    """One field where the refolded run and the stored row disagree."""

    field: str
    stored: Any
    refolded: Any


@dataclass(frozen=True, slots=True)
class Refold:
    """The steps, the run they end in, and how that compares with what was stored."""

    steps: tuple[Step, ...]
    run: RunState | None
    differences: tuple[Difference, ...]
    missing_transitions: tuple[str, ...]
    """Stored transition ids (other than R21's) the refold did not emit."""
    extra_transitions: tuple[str, ...]
    """Transition ids the refold emitted that were never stored."""

    @property
    def agrees(self) -> bool:
        return not (self.differences or self.missing_transitions or self.extra_transitions)


def classify(before: RunState | None, event: JobEvent, after: RunState, transitions: Sequence[Transition]) -> tuple[str, str]:
    """The lifecycle rule that applied to ``event`` (R-number) and a word for what it did,
    read from the run before and after and the records emitted."""
    if before is None:
        return "R1", "opened the run"
    if any(t.duplicate for t in transitions):
        return "R2", "duplicate: changed nothing"
    if not transitions and lifecycle.event_key(event.event_id) in before.recent_event_ids:
        return "R2", "liveness: the same poll again moved only the deadline"
    if any(t.late for t in transitions):
        return "R4", "late: recorded, the state did not move back"
    if any(t.illegal for t in transitions):
        return "R8", "illegal move out of a terminal state: recorded, not applied"
    causes = {t.cause for t in transitions}
    if Cause.RETRY in causes:
        return "R7", f"new attempt {after.attempt}"
    if Cause.REACTIVATION in causes:
        return "R11", "reactivation: back from STALE"
    if Cause.VENDOR in causes:
        return "R6", f"vendor transition to {after.state}"
    attempt = event.attempt
    if (attempt is not None and attempt < before.attempt) or event.occurred_at < before.current_at:
        return "R4", "late, same state: counted, nothing moved"
    return "R5", "update in the same state"


def _applied_event(event: JobEvent, skewed: bool, max_clock_skew: timedelta) -> JobEvent:
    """R19: a skewed event applies at its receipt time, as the worker applied it."""
    if not skewed or event.received_at is None:
        return event
    return lifecycle.trusted(event, event.received_at, event.received_at + max_clock_skew)


def refold(
    events: Sequence[tuple[JobEvent, bool]],
    stale_timeouts: Sequence[datetime],
    stored_run: Mapping[str, Any] | None,
    stored_transition_ids: Sequence[str],
    *,
    redeliveries: Sequence[tuple[str, str, str]] = (),
    stale_after: timedelta = lifecycle.DEFAULT_STALE_AFTER,
    max_clock_skew: timedelta = timedelta(minutes=5),
) -> Refold:
    """Fold ``events`` (in the order the worker read them, each with its ``skewed`` flag)
    into a run, expiring it (R10) at each stored stale-timeout instant once the watermark
    had passed it (before the first event at or after that instant), and compare the
    result with ``stored_run`` (a ``job_runs`` row as a mapping) and the stored ids.
    ``redeliveries``: (transition id, event id, state) of each stored duplicate or late
    record; one the refold has not emitted once the event was applied is a re-delivery,
    applied again in that state (``replay_redeliveries``)."""
    pending = sorted(stale_timeouts)
    run: RunState | None = None
    steps: list[Step] = []

    def expire_until(limit: datetime | None) -> None:
        nonlocal run
        while pending and (limit is None or pending[0] <= limit):
            due = pending.pop(0)
            if run is None:
                continue
            expired, records = lifecycle.expire(run, due, stale_after=stale_after)
            if records:
                run = _versioned(expired, run)
                steps.append(Step("R10", "stale timeout: no activity for stale_after", None, due, tuple(records), run))

    redelivered = list(redeliveries)
    applied_events: dict[str, tuple[JobEvent, bool]] = {}

    def step(event: JobEvent, skewed: bool, again: bool) -> None:
        nonlocal run
        applied = _applied_event(event, skewed, max_clock_skew)
        before = run
        after, records = lifecycle.apply(before, applied, stale_after=stale_after)
        if after is not before:
            after = _versioned(after, before)
        rule, action = classify(before, applied, after, records)
        if skewed:
            action += " (R19: skewed, applied at its receipt time)"
        if again:
            action = "re-delivered: " + action
        run = after
        steps.append(Step(rule, action, event, applied.occurred_at, tuple(records), after))
        applied_events.setdefault(event.event_id, (event, skewed))

    def replay_redeliveries() -> None:
        """A re-delivered event (same id) is one ``job_events`` row, but its flagged record
        (R2 duplicate, R4 late) was stored: apply it again where the run was in the state
        that record names (a re-delivery changes no state, so the exact place is moot)."""
        while run is not None:
            emitted = {t.transition_id for s in steps for t in s.transitions}
            redelivered[:] = [r for r in redelivered if r[0] not in emitted]
            due = next((r for r in redelivered if r[1] in applied_events and r[2] == run.state.value), None)
            if due is None:
                return
            redelivered.remove(due)
            step(*applied_events[due[1]], again=True)

    for event, skewed in events:
        expire_until(_applied_event(event, skewed, max_clock_skew).occurred_at)
        step(event, skewed, again=False)
        replay_redeliveries()
    expire_until(None)
    replay_redeliveries()

    emitted = [t.transition_id for step in steps for t in step.transitions]
    stored_ids = set(stored_transition_ids)
    return Refold(
        steps=tuple(steps),
        run=run,
        differences=compare(run, stored_run),
        missing_transitions=tuple(i for i in stored_transition_ids if i not in set(emitted)),
        extra_transitions=tuple(i for i in emitted if i not in stored_ids),
    )


def _versioned(run: RunState, before: RunState | None) -> RunState:
    """Each change of a run adds one to its version (R12), as ``apply_job`` does."""
    return replace(run, version=(0 if before is None else before.version) + 1)


def compare(run: RunState | None, stored: Mapping[str, Any] | None) -> tuple[Difference, ...]:
    """Fields of the stored row the refolded run does not reproduce. A run that left the
    worker's state open (R21) was stored once more, with ``left_open``: one version more."""
    if stored is None or run is None:
        if stored is None and run is None:
            return ()
        return (Difference("run", "absent" if stored is None else "present", "absent" if run is None else "present"),)
    differences = []
    left_open = bool(stored.get("left_open"))
    for name in COMPARED_FIELDS:
        mine = getattr(run, name)
        if name == "version" and left_open:
            mine += 1
        theirs = stored.get(name)
        if hasattr(mine, "value"):
            mine = mine.value
        if not _same(theirs, mine):
            differences.append(Difference(name, theirs, mine))
    return tuple(differences)


def _same(stored: Any, refolded: Any) -> bool:
    if isinstance(stored, datetime) and isinstance(refolded, datetime):
        return stored == refolded
    if isinstance(stored, float) or isinstance(refolded, float):
        return stored is not None and refolded is not None and abs(float(stored) - float(refolded)) < 1e-9
    return stored == refolded
