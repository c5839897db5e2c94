"""Contract-v1 records (``pipeline/contract.py``, docs/records.md) -> rows for the sink's
tables. Pure, no I/O.

``BatchBuilder`` validates the Kafka records of one batch as they are fetched (``add``)
and keeps, per table, the JSON of the records that count, deduplicated within the batch:
events by ``event_id``, transitions by ``transition_id``, dead letters by
``dead_letter_id`` (first wins: re-sent records are identical), runs by ``run_key``
keeping the highest ``version`` whatever the order, alerts by ``alert_id`` keeping the
latest status (a final status beats ``fired``; then the later offset wins).
``SELECT_ROWS`` is the SQL that turns that JSON into the table's columns inside DuckDB.
Deduplication against rows already in the database is the writer's job.

A record that does not decode (invalid JSON or UTF-8), lacks ``schema_version`` or carries
a version newer than ``SCHEMA_VERSION`` becomes a dead letter (stage ``sink``) naming its
topic, partition, offset and the reason; it never stops the batch.
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from pipeline import catalog, reason_codes
from pipeline.contract import DEAD_LETTER_MAX_BYTES, RECORDS, SCHEMA_VERSION, DeadLetter, SinkEvent, Versioned

TOPIC_TABLES: dict[str, str] = {
    catalog.EVENTS: "job_events",
    catalog.TRANSITIONS: "job_transitions",
    catalog.RUNS: "job_runs",
    catalog.DEADLETTER: "dead_letters",
    catalog.ALERTS: "alerts",
}
"""Which table each consumed topic fills."""

_DECODERS = {topic: msgspec.json.Decoder(record) for topic, record in {**RECORDS, catalog.EVENTS: SinkEvent}.items()}
_version_decoder = msgspec.json.Decoder(Versioned)

_FINAL_ALERT_STATUSES = frozenset({"delivered", "suppressed", "failed"})


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What the sink reads of one consumed record: aiokafka's ``ConsumerRecord`` has the
    same attributes and is passed as it is (no copy per record on the hot path)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch decoded: per table, an Arrow table of the kept records' JSON (``value``,
    plus ``status_rank``/``kafka_partition``/``kafka_offset`` for alerts), the sink's own
    dead letters as rows, and the next offset per partition."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


class BatchBuilder:
    """One batch being decoded: ``add`` the records as they are fetched, ``build`` the
    ``Batch`` when the writer is ready for it.

    msgspec validates each record against its Struct (the same work a bare
    ``orjson.loads`` does); only the raw JSON of the records kept goes on, and DuckDB
    turns it into columns (``SELECT_ROWS``) in its own threads, without the GIL.
    """

    def __init__(self) -> None:
        self.records = 0
        self.events: dict[str, bytes] = {}
        self.transitions: dict[str, tuple[bytes, int, int]] = {}
        self.runs: dict[str, tuple[int, bytes]] = {}
        self.letters: dict[str, bytes] = {}
        self.sink_letters: list[list[Any]] = []
        self.alerts: dict[str, tuple[tuple[int, int], bytes, int]] = {}
        self.next_offsets: dict[tuple[str, int], int] = {}

    def add(self, records: Iterable[KafkaRecord]) -> None:
        """Validate, dead-letter and deduplicate records into the batch."""
        events, transitions, runs, letters, alerts = self.events, self.transitions, self.runs, self.letters, self.alerts
        next_offsets = self.next_offsets
        for record in records:
            self.records += 1
            position = (record.topic, record.partition)
            if record.offset >= next_offsets.get(position, 0):
                next_offsets[position] = record.offset + 1
            decoder = _DECODERS.get(record.topic)
            if decoder is None:
                raise ValueError(f"the sink does not read topic {record.topic!r}")
            data = record.value
            try:
                if data is None:
                    raise msgspec.DecodeError("the record has no value (a tombstone)")
                value = decoder.decode(data)
                if value.schema_version != SCHEMA_VERSION:
                    raise _UnknownVersion(value.schema_version)
                if not data.isascii():
                    data.decode()  # msgspec does not check bytes it skips (unknown fields, raw attrs)
            except (msgspec.DecodeError, msgspec.ValidationError, _UnknownVersion, UnicodeDecodeError) as exc:
                self.sink_letters.append(sink_dead_letter(record, exc))
                continue
            topic = record.topic
            if topic == _EVENTS:
                events.setdefault(value.event_id, data)
            elif topic == _TRANSITIONS:
                # The first copy's place in Kafka is kept: transitions of one run share a
                # partition (keyed by job), so their offsets are the order the worker made them.
                transitions.setdefault(value.transition_id, (data, record.partition, record.offset))
            elif topic == _RUNS:
                held = runs.get(value.run_key)
                if held is None or value.version > held[0]:
                    runs[value.run_key] = (value.version, data)
            elif topic == _DEADLETTER:
                if value.dead_letter_id not in letters:
                    letters[value.dead_letter_id] = data if value.reason_code else _with_reason_code(value, data)
            else:
                rank = (1 if value.status in _FINAL_ALERT_STATUSES else 0, record.offset)
                held_alert = alerts.get(value.alert_id)
                if held_alert is None or rank > held_alert[0]:
                    alerts[value.alert_id] = (rank, data, record.partition)

    def build(self) -> Batch:
        """The batch so far as Arrow tables, one per table it fills."""
        tables: dict[str, pa.Table] = {}
        if self.events:
            tables["job_events"] = _values(list(self.events.values()))
        if self.transitions:
            kept_transitions = list(self.transitions.values())
            tables["job_transitions"] = _chunked(pa.table({
                "value": _text([data for data, _, _ in kept_transitions]),
                "kafka_partition": pa.array([partition for _, partition, _ in kept_transitions], pa.int32()),
                "kafka_offset": pa.array([offset for _, _, offset in kept_transitions], pa.int64()),
            }))
        if self.runs:
            tables["job_runs"] = _values([data for _, data in self.runs.values()])
        if self.letters:
            tables["dead_letters"] = _values(list(self.letters.values()))
        if self.sink_letters:
            tables["sink_dead_letters"] = pa.Table.from_arrays(
                [pa.array(column, type=f.type) for column, f in zip(zip(*self.sink_letters), SINK_DEAD_LETTER_SCHEMA)],
                schema=SINK_DEAD_LETTER_SCHEMA,
            )
        if self.alerts:
            kept = list(self.alerts.values())
            tables["alerts"] = pa.table({
                "value": _text([data for _, data, _ in kept]),
                "status_rank": pa.array([rank[0] for rank, _, _ in kept], pa.int32()),
                "kafka_partition": pa.array([partition for _, _, partition in kept], pa.int32()),
                "kafka_offset": pa.array([rank[1] for rank, _, _ in kept], pa.int64()),
            })
        return Batch(tables, dict(self.next_offsets), self.records)


def decode_batch(records: Iterable[KafkaRecord]) -> Batch:
    """Validate, dead-letter and deduplicate one batch of records from the ``jobs.*`` topics."""
    builder = BatchBuilder()
    builder.add(records)
    return builder.build()


ARROW_CHUNK = 8192
"""Rows per Arrow record batch: DuckDB parses the JSON of several batches in parallel."""


def _with_reason_code(letter: DeadLetter, data: bytes) -> bytes:
    """A dead letter from a writer that sets no ``reason_code`` (older than the field)
    gets the code the worker would have given it; dead letters are few, so the copy is cheap."""
    document = orjson.loads(data)
    document["reason_code"] = reason_codes.derive(letter.error_type, letter.reason)
    return orjson.dumps(document)


def _values(values: list[bytes]) -> pa.Table:
    return _chunked(pa.table({"value": _text(values)}))


def _text(values: list[bytes]) -> pa.Array:
    """UTF-8 bytes (checked in ``decode_batch``) as an Arrow string column, from one joined
    buffer and its offsets: ``pa.array(values, pa.string())`` took 2,000 ns a value (py-spy:
    43% of ``decode_batch``), this 150-250."""
    offsets = array("q", [0])
    offsets.extend(accumulate(map(len, values)))
    return pa.Array.from_buffers(pa.large_string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def _chunked(table: pa.Table) -> pa.Table:
    return pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_CHUNK))


_EVENTS, _TRANSITIONS, _RUNS, _DEADLETTER = catalog.EVENTS, catalog.TRANSITIONS, catalog.RUNS, catalog.DEADLETTER


class _UnknownVersion(Exception):
    def __init__(self, version: int) -> None:
        super().__init__(f"schema_version {version} is not {SCHEMA_VERSION}, the version this sink reads")


SINK_DEAD_LETTER_SCHEMA = pa.schema([
    ("dead_letter_id", pa.string()), ("at", pa.timestamp("us", tz="UTC")), ("stage", pa.string()),
    ("error_type", pa.string()), ("reason", pa.string()), ("topic", pa.string()), ("partition", pa.int32()),
    ("offset", pa.int64()), ("vendor", pa.string()), ("key_b64", pa.string()), ("value_b64", pa.string()),
    ("value_size", pa.int64()), ("value_preview", pa.string()), ("schema_version", pa.int32()),
    ("reason_code", pa.string()),
])


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
    reason = " ".join(str(exc).split())
    error_type = "UnknownSchemaVersion" if isinstance(exc, _UnknownVersion) else type(exc).__name__
    return [
        f"{record.topic}:{record.partition}:{record.offset}",
        datetime.fromtimestamp(record.timestamp / 1000, tz=timezone.utc) if record.timestamp >= 0 else None,
        "sink", error_type, reason, record.topic, record.partition, record.offset, None,
        None if record.key is None else base64.b64encode(record.key).decode(),
        base64.b64encode(value).decode() if len(value) <= DEAD_LETTER_MAX_BYTES else None,
        len(value), value[:200].decode("utf-8", "replace"), SCHEMA_VERSION, reason_codes.derive(error_type, reason),
    ]


def _structure(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode().replace("'", "''")


_S, _I, _L, _F, _B, _T, _J = "VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "TIMESTAMPTZ", "JSON"

# What DuckDB reads from each record's JSON (from_json never fails: a field it cannot
# cast is NULL, and msgspec's bounds above keep valid records castable).
_JSON_FIELDS: dict[str, dict[str, Any]] = {
    "job_events": {
        "event_id": _S, "vendor": _S, "source": _S, "job_key": _S, "run_key": _S, "attempt": _I,
        "native_state": _S, "state": _S, "occurred_at": _T, "received_at": _T, "started_at": _T,
        "finished_at": _T, "progress": _F, "rows": _L, "counts": _J, "error_code": _S,
        "error_message": _S, "parent_run_key": _S, "raw_ref": {"topic": _S, "partition": _I, "offset": _L},
        "attrs": _J, "late": _B, "skewed": _B, "schema_version": _I,
    },
    "job_transitions": {
        "transition_id": _S, "vendor": _S, "job_key": _S, "run_key": _S, "attempt": _I, "from_state": _S,
        "to_state": _S, "at": _T, "cause": _S, "event_id": _S, "late": _B, "duplicate": _B, "illegal": _B,
        "schema_version": _I,
    },
    "job_runs": {
        "run_key": _S, "job_key": _S, "vendor": _S, "source": _S, "parent_run_key": _S, "version": _L,
        "state": _S, "attempt": _I, "retries": _I, "first_event_at": _T, "last_event_at": _T,
        "current_at": _T, "queued_at": _T, "started_at": _T, "finished_at": _T, "duration_s": _F,
        "queue_s": _F, "native_state": _S, "progress": _F, "rows": _L, "stale_episodes": _I,
        "reactivations": _I, "events": _L, "last_error_code": _S, "last_error_message": _S,
        "last_error_at": _T, "deadline": _T, "schema_version": _I, "left_open": _B,
    },
    "dead_letters": {
        "dead_letter_id": _S, "at": _T, "stage": _S, "error_type": _S, "reason": _S, "topic": _S,
        "partition": _I, "offset": _L, "vendor": _S, "key_b64": _S, "value_b64": _S, "value_size": _L,
        "value_preview": _S, "schema_version": _I, "reason_code": _S,
    },
    "alerts": {
        "alert_id": _S, "rule": _S, "status": _S, "reason": _S, "vendor": _S, "source": _S, "job_key": _S,
        "run_key": _S, "attempt": _I, "transition_id": _S, "state": _S, "at": _T, "delivered_at": _T,
        "channels": [_S], "message": _S, "schema_version": _I,
    },
}

_EXTRA_COLUMNS = {
    "job_events": ", j.raw_ref.topic AS raw_topic, j.raw_ref.partition AS raw_partition, j.raw_ref.offset AS raw_offset",
    "job_transitions": ", b.kafka_partition, b.kafka_offset",
    "alerts": ", b.status_rank, b.kafka_partition, b.kafka_offset",
}

SELECT_ROWS: dict[str, str] = {
    table: (
        f"SELECT j.* {'EXCLUDE (raw_ref)' if table == 'job_events' else ''}{_EXTRA_COLUMNS.get(table, '')} "
        f"FROM (SELECT from_json(value, '{_structure(fields)}') AS j, * FROM b) AS b"
    )
    for table, fields in _JSON_FIELDS.items()
}
"""Per table: a SELECT over the registered Arrow table ``b`` giving the table's columns by name."""
SELECT_ROWS["sink_dead_letters"] = "SELECT * FROM b"
