"""Contract-v1 records (docs/records.md) -> rows for the sink's tables. Pure, no I/O.

``decode_batch`` turns the Kafka records of one batch into a ``Rows`` per table, already
deduplicated within the batch: events by ``event_id``, transitions by ``transition_id``,
dead letters by ``dead_letter_id`` (first wins: re-sent records are identical), runs by
``run_key`` keeping the highest ``version`` whatever the order, alerts by ``alert_id``
keeping the latest status (a final status beats ``fired``; then the later offset wins).
Deduplication against rows already in the database is the writer's job.

A record that does not decode, lacks ``schema_version`` or carries a version newer than
``SCHEMA_VERSION`` becomes a dead letter (stage ``sink``) naming its topic, partition,
offset and the reason; it never stops the batch.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec
import pyarrow as pa

from pipeline import catalog

SCHEMA_VERSION = 1
"""The contract version this sink reads; records.md says readers refuse higher ones."""

MAX_DEAD_VALUE = 256 * 1024


class _Versioned(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int


class RawRef(msgspec.Struct, kw_only=True, gc=False):
    topic: str
    partition: int
    offset: int


class EventRecord(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int
    event_id: str
    vendor: str
    source: str
    job_key: str
    run_key: str
    native_state: str
    state: str
    occurred_at: datetime
    attempt: int | None = None
    received_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = None
    rows: int | None = None
    counts: msgspec.Raw = msgspec.Raw(b"{}")
    error_code: str | None = None
    error_message: str | None = None
    parent_run_key: str | None = None
    raw_ref: RawRef | None = None
    attrs: msgspec.Raw = msgspec.Raw(b"{}")
    late: bool = False
    skewed: bool = False


class TransitionRecord(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int
    transition_id: str
    vendor: str
    job_key: str
    run_key: str
    attempt: int
    from_state: str | None
    to_state: str
    at: datetime
    cause: str
    event_id: str | None = None
    late: bool = False
    duplicate: bool = False
    illegal: bool = False


class RunRecord(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int
    run_key: str
    job_key: str
    vendor: str
    version: int
    state: str
    attempt: int
    source: str | None = None
    parent_run_key: str | None = None
    retries: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    current_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    queue_s: float | None = None
    native_state: str | None = None
    progress: float | None = None
    rows: int | None = None
    stale_episodes: int = 0
    reactivations: int = 0
    events: int = 0
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_error_at: datetime | None = None
    deadline: datetime | None = None


class DeadLetterRecord(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int
    dead_letter_id: str
    at: datetime | None
    stage: str
    error_type: str
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    vendor: str | None = None
    key_b64: str | None = None
    value_b64: str | None = None
    value_size: int | None = None
    value_preview: str | None = None


class AlertRecord(msgspec.Struct, kw_only=True, gc=False):
    schema_version: int
    alert_id: str
    rule: str
    status: str
    at: datetime | None = None
    reason: str | None = None
    vendor: str | None = None
    source: str | None = None
    job_key: str | None = None
    run_key: str | None = None
    attempt: int | None = None
    transition_id: str | None = None
    state: str | None = None
    delivered_at: datetime | None = None
    channels: list[str] = []
    message: str | None = None


_TS = pa.timestamp("us", tz="UTC")
_S, _I32, _I64, _F, _B = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()

# Arrow column types per table, in table column order (schema.py holds the same tables).
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "job_events": pa.schema([
        ("event_id", _S), ("vendor", _S), ("source", _S), ("job_key", _S), ("run_key", _S),
        ("attempt", _I32), ("native_state", _S), ("state", _S), ("occurred_at", _TS),
        ("received_at", _TS), ("started_at", _TS), ("finished_at", _TS), ("progress", _F),
        ("rows", _I64), ("counts", _S), ("error_code", _S), ("error_message", _S),
        ("parent_run_key", _S), ("raw_topic", _S), ("raw_partition", _I32), ("raw_offset", _I64),
        ("attrs", _S), ("late", _B), ("skewed", _B), ("schema_version", _I32),
    ]),
    "job_transitions": pa.schema([
        ("transition_id", _S), ("vendor", _S), ("job_key", _S), ("run_key", _S), ("attempt", _I32),
        ("from_state", _S), ("to_state", _S), ("at", _TS), ("cause", _S), ("event_id", _S),
        ("late", _B), ("duplicate", _B), ("illegal", _B), ("schema_version", _I32),
    ]),
    "job_runs": pa.schema([
        ("run_key", _S), ("job_key", _S), ("vendor", _S), ("source", _S), ("parent_run_key", _S),
        ("version", _I64), ("state", _S), ("attempt", _I32), ("retries", _I32),
        ("first_event_at", _TS), ("last_event_at", _TS), ("current_at", _TS), ("queued_at", _TS),
        ("started_at", _TS), ("finished_at", _TS), ("duration_s", _F), ("queue_s", _F),
        ("native_state", _S), ("progress", _F), ("rows", _I64), ("stale_episodes", _I32),
        ("reactivations", _I32), ("events", _I64), ("last_error_code", _S),
        ("last_error_message", _S), ("last_error_at", _TS), ("deadline", _TS), ("schema_version", _I32),
    ]),
    "dead_letters": pa.schema([
        ("dead_letter_id", _S), ("at", _TS), ("stage", _S), ("error_type", _S), ("reason", _S),
        ("topic", _S), ("partition", _I32), ("offset", _I64), ("vendor", _S), ("key_b64", _S),
        ("value_b64", _S), ("value_size", _I64), ("value_preview", _S), ("schema_version", _I32),
    ]),
    "alerts": pa.schema([
        ("alert_id", _S), ("rule", _S), ("status", _S), ("reason", _S), ("vendor", _S),
        ("source", _S), ("job_key", _S), ("run_key", _S), ("attempt", _I32), ("transition_id", _S),
        ("state", _S), ("at", _TS), ("delivered_at", _TS), ("channels", pa.list_(_S)),
        ("message", _S), ("schema_version", _I32), ("status_rank", _I32),
        ("kafka_partition", _I32), ("kafka_offset", _I64),
    ]),
}

TOPIC_TABLES: dict[str, str] = {
    catalog.EVENTS: "job_events",
    catalog.TRANSITIONS: "job_transitions",
    catalog.RUNS: "job_runs",
    catalog.DEADLETTER: "dead_letters",
    catalog.ALERTS: "alerts",
}
"""Which table each consumed topic fills."""

_DECODERS = {
    catalog.EVENTS: msgspec.json.Decoder(EventRecord),
    catalog.TRANSITIONS: msgspec.json.Decoder(TransitionRecord),
    catalog.RUNS: msgspec.json.Decoder(RunRecord),
    catalog.DEADLETTER: msgspec.json.Decoder(DeadLetterRecord),
    catalog.ALERTS: msgspec.json.Decoder(AlertRecord),
}
_version_decoder = msgspec.json.Decoder(_Versioned)

_FINAL_ALERT_STATUSES = frozenset({"delivered", "suppressed", "failed"})


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What the sink needs of one consumed record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Batch:
    """One batch decoded: Arrow tables per table name, and the next offset per partition."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


def decode_batch(records: Iterable[KafkaRecord]) -> Batch:
    """Decode, dead-letter and deduplicate one batch of records from the ``jobs.*`` topics."""
    events: dict[str, EventRecord] = {}
    transitions: dict[str, TransitionRecord] = {}
    runs: dict[str, RunRecord] = {}
    letters: dict[str, list[Any]] = {}
    alerts: dict[str, tuple[tuple[int, int], AlertRecord, KafkaRecord]] = {}
    batch = Batch()
    for record in records:
        batch.records += 1
        position = (record.topic, record.partition)
        if record.offset + 1 > batch.next_offsets.get(position, -1):
            batch.next_offsets[position] = record.offset + 1
        decoder = _DECODERS.get(record.topic)
        if decoder is None:
            raise ValueError(f"the sink does not read topic {record.topic!r}")
        try:
            if record.value is None:
                raise msgspec.DecodeError("the record has no value (a tombstone)")
            value = decoder.decode(record.value)
            if value.schema_version != SCHEMA_VERSION:
                raise _UnknownVersion(value.schema_version)
        except (msgspec.DecodeError, msgspec.ValidationError, _UnknownVersion) as exc:
            letter = sink_dead_letter(record, exc)
            letters.setdefault(letter[0], letter)
            continue
        if record.topic == catalog.EVENTS:
            events.setdefault(value.event_id, value)
        elif record.topic == catalog.TRANSITIONS:
            transitions.setdefault(value.transition_id, value)
        elif record.topic == catalog.RUNS:
            held = runs.get(value.run_key)
            if held is None or value.version > held.version:
                runs[value.run_key] = value
        elif record.topic == catalog.DEADLETTER:
            letters.setdefault(value.dead_letter_id, _dead_letter_row(value))
        else:
            rank = (1 if value.status in _FINAL_ALERT_STATUSES else 0, record.offset)
            held_alert = alerts.get(value.alert_id)
            if held_alert is None or rank > held_alert[0]:
                alerts[value.alert_id] = (rank, value, record)
    if events:
        batch.tables["job_events"] = _events_table(events.values())
    if transitions:
        batch.tables["job_transitions"] = _table("job_transitions", [_transition_row(t) for t in transitions.values()])
    if runs:
        batch.tables["job_runs"] = _table("job_runs", [_run_row(r) for r in runs.values()])
    if letters:
        batch.tables["dead_letters"] = _table("dead_letters", list(letters.values()))
    if alerts:
        batch.tables["alerts"] = _table("alerts", [_alert_row(a, rank[0], rec) for rank, a, rec in alerts.values()])
    return batch


class _UnknownVersion(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(f"schema_version {version} is not {SCHEMA_VERSION}, the version this sink reads")


def sink_dead_letter(record: KafkaRecord, exc: Exception) -> list[Any]:
    """A ``dead_letters`` row for a record the sink could not read."""
    value = record.value or b""
    if isinstance(exc, msgspec.ValidationError):
        # A newer record may fail v1 validation: name its version, not the field that broke.
        try:
            version = _version_decoder.decode(value).schema_version
        except (msgspec.DecodeError, msgspec.ValidationError):
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            exc = _UnknownVersion(version)
    reason = str(exc)
    error_type = "UnknownSchemaVersion" if isinstance(exc, _UnknownVersion) else type(exc).__name__
    return [
        f"{record.topic}:{record.partition}:{record.offset}",
        datetime.fromtimestamp(record.timestamp_ms / 1000, tz=timezone.utc) if record.timestamp_ms >= 0 else None,
        "sink", error_type, " ".join(reason.split()), record.topic, record.partition, record.offset, None,
        None if record.key is None else base64.b64encode(record.key).decode(),
        base64.b64encode(value).decode() if len(value) <= MAX_DEAD_VALUE else None,
        len(value), value[:200].decode("utf-8", "replace"), SCHEMA_VERSION,
    ]


def _raw_text(raw: msgspec.Raw) -> str | None:
    text = bytes(raw).decode()
    return None if text == "null" else text


def _events_table(events: Iterable[EventRecord]) -> pa.Table:
    rows = []
    for e in events:
        ref = e.raw_ref
        rows.append([
            e.event_id, e.vendor, e.source, e.job_key, e.run_key, e.attempt, e.native_state, e.state,
            e.occurred_at, e.received_at, e.started_at, e.finished_at, e.progress, e.rows,
            _raw_text(e.counts), e.error_code, e.error_message, e.parent_run_key,
            None if ref is None else ref.topic, None if ref is None else ref.partition,
            None if ref is None else ref.offset, _raw_text(e.attrs), e.late, e.skewed, e.schema_version,
        ])
    return _table("job_events", rows)


def _transition_row(t: TransitionRecord) -> list[Any]:
    return [
        t.transition_id, t.vendor, t.job_key, t.run_key, t.attempt, t.from_state, t.to_state, t.at,
        t.cause, t.event_id, t.late, t.duplicate, t.illegal, t.schema_version,
    ]


def _run_row(r: RunRecord) -> list[Any]:
    return [
        r.run_key, r.job_key, r.vendor, r.source, r.parent_run_key, r.version, r.state, r.attempt,
        r.retries, r.first_event_at, r.last_event_at, r.current_at, r.queued_at, r.started_at,
        r.finished_at, r.duration_s, r.queue_s, r.native_state, r.progress, r.rows, r.stale_episodes,
        r.reactivations, r.events, r.last_error_code, r.last_error_message, r.last_error_at,
        r.deadline, r.schema_version,
    ]


def _dead_letter_row(d: DeadLetterRecord) -> list[Any]:
    return [
        d.dead_letter_id, d.at, d.stage, d.error_type, d.reason, d.topic, d.partition, d.offset,
        d.vendor, d.key_b64, d.value_b64, d.value_size, d.value_preview, d.schema_version,
    ]


def _alert_row(a: AlertRecord, status_rank: int, record: KafkaRecord) -> list[Any]:
    return [
        a.alert_id, a.rule, a.status, a.reason, a.vendor, a.source, a.job_key, a.run_key, a.attempt,
        a.transition_id, a.state, a.at, a.delivered_at, a.channels, a.message, a.schema_version,
        status_rank, record.partition, record.offset,
    ]


def _table(name: str, rows: list[list[Any]]) -> pa.Table:
    """Rows (lists in column order) -> an Arrow table of the table's schema."""
    schema = ARROW_SCHEMAS[name]
    columns = list(zip(*rows))
    return pa.Table.from_arrays(
        [pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema,
    )
