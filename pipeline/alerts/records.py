"""The records the alerter reads and writes, as ``docs/records.md`` (contract version 1)
describes them. Decoding is strict about types and the schema version, lenient about
fields it does not use (a newer writer may add some)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import msgspec

from pipeline import reason_codes
from pipeline.model import State
from pipeline.stream.records import DeadLetter  # the one jobs.deadletter record, as the worker writes it

SCHEMA_VERSION = 1
DEAD_LETTER_MAX_BYTES = 256 * 1024


class RecordError(ValueError):
    """A record the alerter cannot use; the message is the dead letter's reason."""


class TransitionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``jobs.transitions``."""

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


class RunSnapshot(msgspec.Struct, frozen=True, kw_only=True):
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


class DeadLetterRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a ``jobs.deadletter`` record the dead-letter rule counts."""

    dead_letter_id: str
    at: datetime
    stage: str
    reason: str
    vendor: str | None = None
    schema_version: int = SCHEMA_VERSION


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One ``jobs.alerts`` record: an alert and one of its statuses."""

    alert_id: str
    rule: str
    status: str  # fired | delivered | suppressed | failed
    reason: str | None
    vendor: str | None
    source: str | None
    job_key: str | None
    run_key: str | None
    attempt: int | None
    transition_id: str | None
    state: str | None
    at: datetime
    delivered_at: datetime | None
    channels: list[str]
    message: str
    schema_version: int = SCHEMA_VERSION


_encoder = msgspec.json.Encoder()
_transition = msgspec.json.Decoder(TransitionRecord)
_run = msgspec.json.Decoder(RunSnapshot)
_dead_letter = msgspec.json.Decoder(DeadLetterRecord)


def _decode(decoder: msgspec.json.Decoder, data: bytes | None, what: str):
    if data is None:
        raise RecordError(f"{what} record without a value")
    try:
        record = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RecordError(f"not a {what} record: {exc}") from None
    if record.schema_version > SCHEMA_VERSION:
        raise RecordError(
            f"{what} record has schema_version {record.schema_version}; "
            f"this alerter knows up to {SCHEMA_VERSION}"
        )
    return record


def decode_transition(data: bytes | None) -> TransitionRecord:
    return _decode(_transition, data, "jobs.transitions")


def decode_run(data: bytes | None) -> RunSnapshot:
    return _decode(_run, data, "jobs.runs")


def decode_dead_letter(data: bytes | None) -> DeadLetterRecord:
    return _decode(_dead_letter, data, "jobs.deadletter")


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def alert_id(rule: str, *parts: object) -> str:
    """Deterministic: the same rule over the same transition (or window) gives the same
    id after any crash or re-delivery, so a receiver and the sink can drop repeats."""
    text = "\x1f".join(["alert", rule, *("" if p is None else str(p) for p in parts)])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def dead_letter(
    *, topic: str, partition: int, offset: int, timestamp: datetime,
    key: bytes | None, value: bytes | None, error_type: str, reason: str,
) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"{topic}:{partition}:{offset}", at=timestamp, stage="alerts",
        error_type=error_type, reason=reason, topic=topic, partition=partition, offset=offset,
        vendor=None,
        key_b64=None if key is None else base64.b64encode(key[:DEAD_LETTER_MAX_BYTES]).decode("ascii"),
        value_b64=(
            None if value is None or len(value) > DEAD_LETTER_MAX_BYTES
            else base64.b64encode(value).decode("ascii")
        ),
        value_size=None if value is None else len(value),
        value_preview=None if value is None else value[:200].decode("utf-8", "replace"),
        reason_code=reason_codes.derive(error_type, reason),
    )
