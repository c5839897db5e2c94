"""The worker's wire records: what goes in (``Message``), what comes out (``Output``) and
how each ``jobs.*`` value is encoded, as ``pipeline/contract.py`` declares them (fast byte
paths for events, transitions and runs; ``tests/test_contract.py`` decodes what they write
with the contract's structs). Pure: no Kafka, no state.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, NamedTuple

import msgspec

from pipeline import catalog, lifecycle, reason_codes
from pipeline.contract import DEAD_LETTER_MAX_BYTES, SCHEMA_VERSION, DeadLetter
from pipeline.model import JobEvent, encode_event

RECORD_OVERHEAD_BYTES = 512
"""What a record costs beyond its key and value in a produce request (a generous bound)."""


class Message(NamedTuple):
    """One consumed raw record, as the agent hands it over. ``timestamp_ms`` is the
    Kafka record timestamp (None in tests that do not care)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class Output(NamedTuple):
    """One record to produce (``value`` None: a tombstone).

    ``partition`` is the partition of the raw message that caused it: records about a
    job may go to that partition number of their topic (keyed by job, so one key always
    lands in one partition) and skip the partitioner; None lets the producer choose.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value or b"") + RECORD_OVERHEAD_BYTES


_json = msgspec.json.Encoder()
_FLAGS = {
    (late, skewed): f'{{"schema_version":{SCHEMA_VERSION},"late":{str(late).lower()},"skewed":{str(skewed).lower()},'.encode()
    for late in (False, True) for skewed in (False, True)
}


def event_record(event: JobEvent, *, late: bool = False, skewed: bool = False) -> bytes:
    """The ``jobs.events`` value: the JobEvent's JSON plus its flags and version."""
    return _FLAGS[late, skewed] + encode_event(event)[1:]


_TRANSITION_TAIL = f',"schema_version":{SCHEMA_VERSION}}}'.encode()


def transition_record(transition: lifecycle.Transition) -> bytes:
    """The ``jobs.transitions`` value."""
    return lifecycle.encode_transition(transition)[:-1] + _TRANSITION_TAIL


def run_record(run: lifecycle.RunState) -> bytes:
    """The ``jobs.runs`` value: a run's snapshot with named fields (docs/records.md).
    The one place that says what a snapshot holds."""
    snapshot = msgspec.structs.asdict(run)
    for name in lifecycle.INTERNAL_RUN_FIELDS:  # duplicate memory, liveness...: the worker's business
        del snapshot[name]
    duration, queue_time = run.duration, run.queue_time
    snapshot["duration_s"] = None if duration is None else duration.total_seconds()
    snapshot["queue_s"] = None if queue_time is None else queue_time.total_seconds()
    snapshot["schema_version"] = SCHEMA_VERSION
    return _json.encode(snapshot)


def dead_letter_id(message: Message) -> str:
    return f"{message.topic}:{message.partition}:{message.offset}"


def dead_letter(
    message: Message, stage: str, error_type: str, reason: str, vendor: str | None, *, reason_code: str | None = None,
) -> Output:
    """The ``jobs.deadletter`` record of ``message``: keyed by its stable id, so its key
    is small whatever the raw key was, and identical when re-sent after a restart."""
    value, key = message.value, message.key
    at = None if message.timestamp_ms is None else datetime.fromtimestamp(message.timestamp_ms / 1000, timezone.utc)
    record = DeadLetter(
        dead_letter_id=dead_letter_id(message), at=at, stage=stage, error_type=error_type,
        reason=reason, topic=message.topic, partition=message.partition, offset=message.offset, vendor=vendor,
        key_b64=_b64(key) if key is None or len(key) <= DEAD_LETTER_MAX_BYTES else None,
        value_b64=_b64(value) if value is None or len(value) <= DEAD_LETTER_MAX_BYTES else None,
        value_size=None if value is None else len(value),
        value_preview=None if value is None else value[:200].decode("utf-8", "replace"),
        reason_code=reason_code or reason_codes.derive(error_type, reason),
        schema_version=SCHEMA_VERSION,
    )
    return Output(catalog.DEADLETTER, record.dead_letter_id.encode(), _json.encode(record))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def decode_record(data: bytes) -> dict[str, Any]:
    return msgspec.json.decode(data)
