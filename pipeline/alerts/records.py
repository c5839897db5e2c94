"""Decoding the records the alerter reads (through the contract's narrow views) and
building the ones it writes (``pipeline/contract.py``, docs/records.md). Decoding is
strict about types and the schema version, lenient about fields it does not use (a newer
writer may add some)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import msgspec

from pipeline import reason_codes
from pipeline.contract import (
    DEAD_LETTER_MAX_BYTES, SCHEMA_VERSION, DeadLetter, DeadLetterView, RunView, TransitionView,
)



class RecordError(ValueError):
    """A record the alerter cannot use; the message is the dead letter's reason."""


_encoder = msgspec.json.Encoder()
_transition = msgspec.json.Decoder(TransitionView)
_run = msgspec.json.Decoder(RunView)
_dead_letter = msgspec.json.Decoder(DeadLetterView)


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


def decode_transition(data: bytes | None) -> TransitionView:
    return _decode(_transition, data, "jobs.transitions")


def decode_run(data: bytes | None) -> RunView:
    return _decode(_run, data, "jobs.runs")


def decode_dead_letter(data: bytes | None) -> DeadLetterView:
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
        schema_version=SCHEMA_VERSION,
    )
