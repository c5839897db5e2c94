"""Valid contract-v1 records (docs/records.md) for the sink's tests, built directly:
the sink is tested without the worker, from records produced straight to ``jobs.*``.

A ``Story`` names one test's world (its own source), so tests sharing the session
broker only ever look at their own rows.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter

UTC = timezone.utc
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def iso(at: datetime | None) -> str | None:
    """A time as records.md writes it (RFC 3339, UTC, ``Z``), or None."""
    return None if at is None else at.isoformat().replace("+00:00", "Z")


@dataclass
class Story:
    """Records of one test's jobs, keyed like the worker keys them."""

    vendor: str = "zuora"
    source: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")

    def job_key(self, job: str) -> str:
        return f"{self.vendor}:{self.source}:{job}"

    def run_key(self, job: str, run: str) -> str:
        return f"{self.vendor}:{self.source}:{job}/{run}"

    def event(self, job: str, run: str, n: int, state: str, *, at: datetime = T0, **extra: Any) -> dict[str, Any]:
        return {
            "schema_version": 1, "event_id": f"{self.source}-{job}-{run}-e{n}", "vendor": self.vendor,
            "source": self.source, "job_key": self.job_key(job), "run_key": self.run_key(job, run),
            "attempt": None, "native_state": state.lower(), "state": state, "occurred_at": iso(at),
            "received_at": iso(at), "started_at": None, "finished_at": None, "progress": None,
            "rows": None, "counts": {}, "error_code": None, "error_message": None,
            "parent_run_key": None, "raw_ref": {"topic": f"raw.{self.vendor}", "partition": 0, "offset": n},
            "attrs": {}, "late": False, "skewed": False, **extra,
        }

    def transition(
        self, job: str, run: str, n: int, from_state: str | None, to_state: str, *,
        at: datetime = T0, cause: str = "vendor", event_id: str | None = "auto", **flags: bool,
    ) -> dict[str, Any]:
        return {
            "schema_version": 1, "transition_id": f"{self.source}-{job}-{run}-t{n}", "vendor": self.vendor,
            "job_key": self.job_key(job), "run_key": self.run_key(job, run), "attempt": 1,
            "from_state": from_state, "to_state": to_state, "at": iso(at), "cause": cause,
            "event_id": f"{self.source}-{job}-{run}-e{n}" if event_id == "auto" else event_id,
            "late": False, "duplicate": False, "illegal": False, **flags,
        }

    def run(self, job: str, run: str, version: int, state: str, *, at: datetime = T0, **extra: Any) -> dict[str, Any]:
        return {
            "schema_version": 1, "run_key": self.run_key(job, run), "job_key": self.job_key(job),
            "vendor": self.vendor, "source": self.source, "parent_run_key": None, "version": version,
            "state": state, "attempt": 1, "retries": 0, "first_event_at": iso(T0), "last_event_at": iso(at),
            "current_at": iso(at), "queued_at": None, "started_at": iso(T0), "finished_at": None,
            "duration_s": None, "queue_s": None, "native_state": state.lower(), "progress": None,
            "rows": None, "stale_episodes": 0, "reactivations": 0, "events": version,
            "last_error_code": None, "last_error_message": None, "last_error_at": None,
            "deadline": None, **extra,
        }

    def dead_letter(self, n: int, *, stage: str = "normalize", reason: str = "bad document") -> dict[str, Any]:
        return {
            "schema_version": 1, "dead_letter_id": f"raw.{self.vendor}:0:{self.source}-{n}", "at": iso(T0),
            "stage": stage, "error_type": "Rejected", "reason": reason, "topic": f"raw.{self.vendor}",
            "partition": 0, "offset": n, "vendor": self.vendor, "key_b64": None, "value_b64": "e30=",
            "value_size": 2, "value_preview": "{}",
        }

    def alert(self, n: int, status: str, *, rule: str = "run_failed") -> dict[str, Any]:
        return {
            "schema_version": 1, "alert_id": f"{self.source}-a{n}", "rule": rule, "status": status,
            "reason": None, "vendor": self.vendor, "source": self.source, "job_key": self.job_key("j"),
            "run_key": self.run_key("j", "r"), "attempt": 1, "transition_id": None, "state": "FAILED",
            "at": iso(T0), "delivered_at": iso(T0) if status == "delivered" else None,
            "channels": ["slack"], "message": "run failed",
        }


KEY_FIELDS = {
    catalog.EVENTS: "job_key", catalog.TRANSITIONS: "job_key", catalog.RUNS: "run_key",
    catalog.DEADLETTER: "dead_letter_id", catalog.ALERTS: "alert_id",
}


async def produce(bootstrap: str, records: list[tuple[str, dict[str, Any] | bytes]], *, key: bytes | None = None) -> None:
    """Send ``(topic, record)`` pairs in order, keyed as records.md says; bytes go as they are."""
    producer = clients.producer(bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for topic, record in records:
            if isinstance(record, bytes):
                sent.append(await producer.send(topic, record, key=key))
            else:
                sent.append(await producer.send(topic, orjson.dumps(record), key=str(record[KEY_FIELDS[topic]]).encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

def write(writer: DuckDBWriter, records: list[tuple[str, dict]]) -> None:
    writer.write(decode_batch([
        KafkaRecord(topic, 0, offset, 0, b"k", orjson.dumps(value)) for offset, (topic, value) in enumerate(records)
    ]))


def qrs_retried_run(s: Story) -> list[tuple[str, dict]]:
    """A QRS task that fails after 10 s and succeeds on retry in 28 s (the simulator's 'Reload HR')."""
    at = [T0 + timedelta(seconds=n) for n in (0, 10, 12, 40)]
    attempt2 = {"attempt": 2}
    return [
        (catalog.EVENTS, s.event("hr", "r", 1, "RUNNING", at=at[0], attempt=1, started_at=iso(at[0]))),
        (catalog.EVENTS, s.event("hr", "r", 2, "FAILED", at=at[1], attempt=1, started_at=iso(at[0]), finished_at=iso(at[1]),
                                 error_code="TaskFailed", error_message="reload failed")),
        (catalog.EVENTS, s.event("hr", "r", 3, "RUNNING", at=at[2], attempt=2, started_at=iso(at[2]))),
        (catalog.EVENTS, s.event("hr", "r", 4, "SUCCEEDED", at=at[3], attempt=2, started_at=iso(at[2]), finished_at=iso(at[3]))),
        (catalog.TRANSITIONS, s.transition("hr", "r", 1, None, "RUNNING", at=at[0])),
        (catalog.TRANSITIONS, s.transition("hr", "r", 2, "RUNNING", "FAILED", at=at[1])),
        (catalog.TRANSITIONS, {**s.transition("hr", "r", 3, "FAILED", "RUNNING", at=at[2], cause="retry"), **attempt2}),
        (catalog.TRANSITIONS, {**s.transition("hr", "r", 4, "RUNNING", "SUCCEEDED", at=at[3]), **attempt2}),
        (catalog.RUNS, s.run("hr", "r", 4, "SUCCEEDED", at=at[3], attempt=2, retries=1, started_at=iso(at[0]),
                             finished_at=iso(at[3]), duration_s=40.0, last_error_code="TaskFailed")),
    ]
