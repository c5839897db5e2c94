"""Gather one run's story: its rows from the analytics database, its raw records from Kafka.

The database is read through ``pipeline.analytics.Database``: live over the Quack
endpoint of the sink that serves the file, else the file opened read-only. Each event row
keeps the coordinates of the raw record it came from (``raw_topic``, ``raw_partition``,
``raw_offset``), so the raw record is fetched from exactly there, or reported as removed
by retention when the log no longer starts before it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.analytics import AnalyticsError, Database
from pipeline.model import UTC, JobEvent, RawRef, State


class ExplainError(RuntimeError):
    """The story cannot be told (no such run, no database); one line for the user."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One raw Kafka record as the story shows it: where it sits and what it held, or why
    it is not there any more (``missing``)."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None = None
    key: str | None = None
    value: bytes | None = None
    missing: str | None = None

    @property
    def envelope(self) -> Any:
        if self.value is None:
            return None
        try:
            return orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class StoredRun:
    """What the database holds about one run (rows as mappings of column to value)."""

    run_key: str
    run: Mapping[str, Any] | None
    events: tuple[Mapping[str, Any], ...]
    transitions: tuple[Mapping[str, Any], ...]
    alerts: tuple[Mapping[str, Any], ...]
    source: str


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows(result: Any) -> tuple[dict[str, Any], ...]:
    return tuple(dict(zip(result.columns, row)) for row in result.rows)


def _query(db: Database, sql: str) -> Any:
    try:
        return db.query(sql)
    except AnalyticsError as exc:
        raise ExplainError(str(exc)) from None


def load_run(db: Database, run_key: str) -> StoredRun:
    """The run's row, events (in the order the worker read them), transitions and alerts.
    Events under another name of the run (R17: they list it in ``same_run_as``, or one of
    the run's transitions names them) are the run's too."""
    key = _quote(run_key)
    runs = _rows(_query(db, f"SELECT * FROM job_runs WHERE run_key = {key}"))
    names = "CAST(json_extract(attrs, '$.same_run_as') AS VARCHAR[])"
    events = _rows(_query(db, (
        f"WITH names AS (SELECT {key} AS name UNION SELECT unnest({names}) FROM job_events WHERE run_key = {key}) "
        "SELECT * FROM job_events WHERE run_key IN (SELECT name FROM names) "
        f"OR list_has_any({names}, (SELECT list(name) FROM names)) "
        f"OR event_id IN (SELECT event_id FROM job_transitions WHERE run_key = {key} AND event_id IS NOT NULL) "
        "ORDER BY raw_topic, raw_partition, raw_offset, occurred_at, event_id")))
    transitions = _query(db,
                         f'SELECT * FROM job_transitions WHERE run_key = {key} ORDER BY "at", transition_id')
    alerts = _rows(_query(db,
                          f'SELECT alert_id, rule, status, "at", delivered_at, channels, message FROM alerts '
                          f'WHERE run_key = {key} ORDER BY "at", alert_id'))
    if not runs and not events:
        raise ExplainError(f"no run {run_key!r} in {transitions.source} (see: pipeline sql \"SELECT run_key FROM job_runs\")")
    return StoredRun(run_key, runs[0] if runs else None, events, _rows(transitions), alerts, transitions.source)


def load_dead_letter(db: Database, dead_letter_id: str) -> Mapping[str, Any]:
    rows = _rows(_query(db,
                        f"SELECT * FROM dead_letters WHERE dead_letter_id = {_quote(dead_letter_id)}"))
    if not rows:
        raise ExplainError(f"no dead letter {dead_letter_id!r} (see: pipeline sql \"SELECT dead_letter_id, reason FROM dead_letters\")")
    return rows[0]


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value


def _json(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):
        return orjson.loads(value)
    return value


def event_of(row: Mapping[str, Any], run_key: str | None = None) -> JobEvent:
    """A ``job_events`` row as the canonical event the worker applied: under ``run_key``
    when it named the run otherwise (R17: ``apply_job`` applies it to the run that answers
    to that name, under the run's key)."""
    raw_ref = None
    if row.get("raw_topic") is not None:
        raw_ref = RawRef(row["raw_topic"], int(row["raw_partition"]), int(row["raw_offset"]))
    return JobEvent(
        event_id=row["event_id"], vendor=row["vendor"], source=row["source"], job_key=row["job_key"],
        run_key=run_key or row["run_key"], native_state=row["native_state"] or "", state=State(row["state"]),
        occurred_at=_utc(row["occurred_at"]), attempt=row["attempt"], received_at=_utc(row["received_at"]),
        started_at=_utc(row["started_at"]), finished_at=_utc(row["finished_at"]), progress=row["progress"],
        rows=row["rows"], counts=_json(row.get("counts")), error_code=row["error_code"],
        error_message=row["error_message"], parent_run_key=row["parent_run_key"], raw_ref=raw_ref,
        attrs=_json(row.get("attrs")),
    )


def stored_run_fields(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``job_runs`` row with its times in UTC, as the refold compares them."""
    if row is None:
        return None
    return {name: _utc(value) for name, value in row.items()}


def stale_timeouts(transitions: Sequence[Mapping[str, Any]]) -> list[datetime]:
    """The instants at which the worker's watermark made the run STALE (R10)."""
    return [_utc(t["at"]) for t in transitions if t["cause"] == "stale_timeout"]


def redeliveries(transitions: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(transition id, event id, state) of each stored duplicate or late record, oldest
    first: maybe an event the run saw again (``job_events`` keeps it once)."""
    return [(t["transition_id"], t["event_id"], t["from_state"]) for t in transitions
            if t["event_id"] is not None and (t["duplicate"] or t["late"])]


def fetch_raw(bootstrap: str, refs: Sequence[RawRef], timeout: float = 10.0) -> tuple[dict[RawRef, RawRecord], str | None]:
    """The raw records at ``refs`` from Kafka, each found, or said missing with why; the
    second value says why none could be read (no broker answered)."""
    if not refs:
        return {}, None
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(asyncio.wait_for(_fetch(bootstrap, refs), timeout * (1 + len(refs)))), None
    except (OSError, asyncio.TimeoutError, KafkaError) as exc:
        return {}, f"Kafka at {bootstrap} did not answer ({type(exc).__name__}): raw records not shown"


async def _fetch(bootstrap: str, refs: Sequence[RawRef]) -> dict[RawRef, RawRecord]:
    from aiokafka import TopicPartition

    from pipeline.kafka import clients

    consumer = clients.consumer(bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=10_000, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[RawRef, RawRecord] = {}
    try:
        partitions = {TopicPartition(r.topic, r.partition) for r in refs}
        known = {tp for tp in partitions if tp.partition in (consumer.partitions_for_topic(tp.topic) or set())}
        for ref in refs:
            if TopicPartition(ref.topic, ref.partition) not in known:
                found[ref] = RawRecord(ref.topic, ref.partition, ref.offset, missing="the topic or partition is not on this broker")
        if not known:
            return found
        consumer.assign(list(known))
        starts = await consumer.beginning_offsets(list(known))
        for ref in sorted((r for r in refs if r not in found), key=lambda r: (r.topic, r.partition, r.offset)):
            tp = TopicPartition(ref.topic, ref.partition)
            if ref.offset < starts[tp]:
                found[ref] = RawRecord(ref.topic, ref.partition, ref.offset,
                                       missing=f"removed by retention (the log now starts at offset {starts[tp]})")
                continue
            consumer.seek(tp, ref.offset)
            record = await _record_at(consumer, tp, ref.offset)
            if record is None:
                found[ref] = RawRecord(ref.topic, ref.partition, ref.offset,
                                       missing="not in the log (past its end: another broker, or its log was reset)")
                continue
            found[ref] = RawRecord(
                ref.topic, ref.partition, ref.offset,
                timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp is not None else None,
                key=record.key.decode("utf-8", "replace") if record.key is not None else None, value=record.value,
            )
    finally:
        await consumer.stop()
    return found


async def _record_at(consumer: Any, tp: Any, offset: int) -> Any:
    """The record at ``offset``, or None once the partition's end is passed without it."""
    while True:
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=50)
        records = batches.get(tp, [])
        for record in records:
            if record.offset == offset:
                return record
            if record.offset > offset:
                return None
        if not records:
            highwater = consumer.highwater(tp)
            if highwater is not None and offset >= highwater:
                return None


def raw_from_dead_letter(row: Mapping[str, Any]) -> bytes | None:
    """The refused record's bytes as the dead letter keeps them."""
    encoded = row.get("value_b64")
    return base64.b64decode(encoded) if encoded else None


def renormalize(record: RawRecord) -> tuple[list[JobEvent] | None, str | None]:
    """What today's normalizer makes of a raw record: (events, None) or (None, why not)."""
    from pipeline import vendors
    from pipeline.model import decode_envelope
    from pipeline.vendors import Context, Rejected

    if record.value is None:
        return None, record.missing
    try:
        envelope = decode_envelope(record.value)
        ctx = Context(source=envelope.source, received_at=envelope.received_at,
                      raw_ref=RawRef(record.topic, record.partition, record.offset))
        return vendors.normalize(envelope.vendor, envelope.payload, ctx), None
    except Rejected as exc:
        return None, f"the normalizer refuses it: {exc.reason}"
    except Exception as exc:  # a record that does not decode is what dead letters are for
        return None, f"{type(exc).__name__}: {exc}"
