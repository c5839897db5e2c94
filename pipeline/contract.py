"""The wire contract, version 1: one struct per topic record, as docs/records.md describes it.

The worker writes ``jobs.events``, ``jobs.transitions``, ``jobs.runs`` and ``jobs.deadletter``
(``pipeline/stream/records.py``, by fast byte paths for the first three; a test decodes
what it writes with these structs), the alerter writes ``jobs.alerts`` and its own dead
letters; the sink reads every ``jobs.*`` record with these structs (``SinkEvent`` keeps
``counts`` and ``attrs`` as raw JSON), the alerter reads through the narrow views at the
end of this module. ``raw.<vendor>`` holds ``RawEnvelope`` (``pipeline/model.py``).

Readers are strict about types and the version, lenient about fields a record lacks that
have a default here, and ignore fields they do not know (a newer writer may add some).
Integers are bounded like the DuckDB columns they fill and times must carry their zone,
so a record these structs accept always casts. Pure: no I/O.

To add a field: give it a default (older writers omit it), add it to docs/records.md
(``tests/test_contract.py`` checks that the page and the structs agree) and, if the sink
keeps it, to its table and ``sink/records.py``'s column list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from pipeline import catalog
from pipeline.model import RawEnvelope, State

__all__ = [
    "SCHEMA_VERSION", "DEAD_LETTER_MAX_BYTES", "Int32", "Int64", "Time", "Versioned", "RawRef", "Event",
    "SinkEvent", "Transition", "Run", "DeadLetter", "Alert", "RawEnvelope", "RECORDS",
    "TransitionView", "RunView", "DeadLetterView",
]

SCHEMA_VERSION = 1
"""The contract version writers write and readers know; a reader dead-letters a higher one."""

DEAD_LETTER_MAX_BYTES = 256 * 1024
"""The largest key or value a dead letter carries (base64): a dead letter must fit in one
produce request (1 MB by default) or it would stop the partition it was meant to unblock;
beyond this the original bytes stay in their topic, found by topic/partition/offset."""

Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Time = Annotated[datetime, msgspec.Meta(tz=True)]


class Versioned(msgspec.Struct, kw_only=True, gc=False):
    """Any ``jobs.*`` record, read only for its version."""

    schema_version: int


class RawRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where a raw vendor record sits in Kafka."""

    topic: str
    partition: Int32
    offset: Int64


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``jobs.events``: one canonical ``JobEvent`` plus the worker's flags."""

    event_id: str
    vendor: str
    source: str
    job_key: str
    run_key: str
    native_state: str
    state: str
    occurred_at: Time
    attempt: Int32 | None = None
    received_at: Time | None = None
    started_at: Time | None = None
    finished_at: Time | None = None
    progress: float | None = None
    rows: Int64 | None = None
    counts: dict[str, Int64] = {}
    error_code: str | None = None
    error_message: str | None = None
    parent_run_key: str | None = None
    raw_ref: RawRef | None = None
    attrs: dict[str, object] = {}
    late: bool = False
    skewed: bool = False
    schema_version: int


class SinkEvent(Event, frozen=True, kw_only=True, gc=False):
    """``jobs.events`` as the sink reads it: ``counts`` and ``attrs`` stay JSON text (DuckDB
    parses them; decoding them in Python would cost the sink's hot path for nothing)."""

    counts: msgspec.Raw = msgspec.Raw(b"{}")
    attrs: msgspec.Raw = msgspec.Raw(b"{}")


class Transition(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``jobs.transitions``: one lifecycle transition or flagged event."""

    transition_id: str
    vendor: str
    job_key: str
    run_key: str
    attempt: Int32
    from_state: str | None
    to_state: str
    at: Time
    cause: str  # vendor | stale_timeout | retry | reactivation | evicted
    event_id: str | None = None
    late: bool = False
    duplicate: bool = False
    illegal: bool = False
    schema_version: int


class Run(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``jobs.runs``: a run's snapshot after a change (readers keep the highest ``version``)."""

    run_key: str
    job_key: str
    vendor: str
    source: str | None = None
    parent_run_key: str | None = None
    version: Int64
    state: str
    attempt: Int32
    retries: Int32 = 0
    first_event_at: Time | None = None
    last_event_at: Time | None = None
    current_at: Time | None = None
    queued_at: Time | None = None
    started_at: Time | None = None
    finished_at: Time | None = None
    duration_s: float | None = None
    queue_s: float | None = None
    native_state: str | None = None
    progress: float | None = None
    rows: Int64 | None = None
    stale_episodes: Int32 = 0
    reactivations: Int32 = 0
    events: Int64 = 0
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_error_at: Time | None = None
    deadline: Time | None = None
    left_open: bool = False  # the worker's state evicted the run while it was open (lifecycle R21)
    schema_version: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``jobs.deadletter``: a refused record's bytes and why it was refused.

    ``at`` is the refused record's Kafka timestamp (None only when the writer was handed a
    record without one). A new field goes with a default, so older letters still decode.
    """

    dead_letter_id: str  # "<topic>:<partition>:<offset>"
    at: Time | None
    stage: str  # decode | normalize | lifecycle | expiry | size | partition | sink | alerts
    error_type: str
    reason: str
    topic: str | None = None
    partition: Int32 | None = None
    offset: Int64 | None = None
    vendor: str | None = None
    key_b64: str | None = None
    value_b64: str | None = None
    value_size: Int64 | None = None
    value_preview: str | None = None
    reason_code: str | None = None  # the cause without its variable parts (pipeline/reason_codes.py)
    schema_version: int


class Alert(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``jobs.alerts``: one alert and one of its statuses (readers keep the latest)."""

    alert_id: str
    rule: str
    status: str  # fired | delivered | suppressed | failed
    reason: str | None = None
    vendor: str | None = None
    source: str | None = None
    job_key: str | None = None
    run_key: str | None = None
    attempt: Int32 | None = None
    transition_id: str | None = None
    state: str | None = None
    at: Time | None = None
    delivered_at: Time | None = None
    channels: list[str] = []
    message: str | None = None
    schema_version: int


RECORDS: dict[str, type[msgspec.Struct]] = {
    catalog.EVENTS: Event,
    catalog.TRANSITIONS: Transition,
    catalog.RUNS: Run,
    catalog.DEADLETTER: DeadLetter,
    catalog.ALERTS: Alert,
}
"""The record struct of each ``jobs.*`` topic."""


# --- the alerter's narrow views: the fields its rules and messages use ------------------


class TransitionView(msgspec.Struct, frozen=True, kw_only=True):
    """The alerter's view of ``jobs.transitions`` (states as ``State``: rules match them)."""

    transition_id: str
    vendor: str
    job_key: str
    run_key: str
    attempt: int
    from_state: State | None
    to_state: State
    at: datetime
    cause: str
    event_id: str | None = None
    late: bool = False
    duplicate: bool = False
    illegal: bool = False
    schema_version: int = SCHEMA_VERSION

    @property
    def flagged(self) -> bool:
        """Duplicates, late and illegal events changed nothing: no rule looks at them."""
        return self.late or self.duplicate or self.illegal


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a ``jobs.runs`` snapshot an alert message and the rules need.

    ``source`` and ``version`` have defaults so snapshots of a worker older than
    contract version 1 still give context (source then comes from the job key).
    """

    run_key: str
    job_key: str
    vendor: str
    source: str | None = None
    version: int = 0
    state: State
    attempt: int
    retries: int = 0
    last_event_at: datetime | None = None
    current_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    native_state: str | None = None
    last_error_code: str | None = None
    last_error_message: str | None = None
    schema_version: int = SCHEMA_VERSION


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a ``jobs.deadletter`` record the dead-letter rule counts. ``at`` may be
    null as in ``DeadLetter``: the alerter then counts the letter at its Kafka timestamp."""

    dead_letter_id: str
    at: datetime | None
    stage: str
    reason: str
    vendor: str | None = None
    schema_version: int = SCHEMA_VERSION


VIEWS: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    SinkEvent: Event,
    TransitionView: Transition,
    RunView: Run,
    DeadLetterView: DeadLetter,
}
"""Each reader's view and the record it reads (a test checks the view's fields are the record's)."""
