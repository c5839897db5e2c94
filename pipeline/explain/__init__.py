"""``pipeline explain``: the story of one run, from raw record to row, and of one dead letter.

``story`` reads (the database, Kafka); ``refold`` is pure (the lifecycle applied again,
the rule per step, the comparison with the stored row); ``render`` writes text or JSON.
``explain_run`` and ``explain_dead_letter`` put them together for the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.analytics import Database
from pipeline.explain import refold as refold_module
from pipeline.explain import story as story_module
from pipeline.explain.refold import Refold
from pipeline.explain.story import ExplainError, RawRecord, StoredRun
from pipeline.model import RawRef

__all__ = ["ExplainError", "RunStory", "DeadLetterStory", "explain_run", "explain_dead_letter"]


@dataclass(frozen=True, slots=True)
class RunStory:
    """Everything ``explain`` tells about one run."""

    stored: StoredRun
    raw: dict[RawRef, RawRecord]
    raw_note: str | None
    refold: Refold
    stale_after: timedelta


@dataclass(frozen=True, slots=True)
class DeadLetterStory:
    """A dead letter's row, its bytes as kept, and the record still in Kafka (if held)."""

    row: dict[str, Any]
    kept_bytes: bytes | None
    in_kafka: RawRecord | None
    raw_note: str | None


def explain_run(
    db: Database, run_key: str, *, bootstrap: str | None,
    stale_after_for: Any, max_clock_skew: timedelta,
) -> RunStory:
    """Read the run, fetch its raw records (when ``bootstrap`` is given), refold it."""
    stored = story_module.load_run(db, run_key)
    events = [(story_module.event_of(row, run_key), bool(row.get("skewed"))) for row in stored.events]
    vendor = (stored.run or stored.events[0])["vendor"]
    stale_after = stale_after_for(vendor)
    refs = list(dict.fromkeys(e.raw_ref for e, _ in events if e.raw_ref is not None))
    raw, note = ({}, "no --bootstrap given: raw records not fetched") if bootstrap is None else story_module.fetch_raw(bootstrap, refs)
    stored_ids = [t["transition_id"] for t in stored.transitions if t["cause"] != "evicted"]
    folded = refold_module.refold(
        events, story_module.stale_timeouts(stored.transitions), story_module.stored_run_fields(stored.run), stored_ids,
        redeliveries=story_module.redeliveries(stored.transitions),
        stale_after=stale_after, max_clock_skew=max_clock_skew,
    )
    return RunStory(stored, raw, note, folded, stale_after)


def explain_dead_letter(db: Database, dead_letter_id: str, *, bootstrap: str | None) -> DeadLetterStory:
    row = dict(story_module.load_dead_letter(db, dead_letter_id))
    in_kafka, note = None, None
    if bootstrap is None:
        note = "no --bootstrap given: the record in Kafka not fetched"
    elif row.get("topic") is not None and row.get("offset") is not None:
        ref = RawRef(row["topic"], int(row["partition"]), int(row["offset"]))
        found, note = story_module.fetch_raw(bootstrap, [ref])
        in_kafka = found.get(ref)
    return DeadLetterStory(row, story_module.raw_from_dead_letter(row), in_kafka, note)
