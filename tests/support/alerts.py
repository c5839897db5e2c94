"""Contract records (docs/records.md, version 1) for the alerter's tests."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from pipeline.model import UTC
from tests.support.records import iso

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def transition(
    job_key: str, run: str, from_state: str | None, to_state: str, at: datetime, *,
    attempt: int = 1, cause: str = "vendor", **flags: Any,
) -> dict[str, Any]:
    vendor = job_key.split(":", 1)[0]
    run_key = f"{job_key}:{run}"
    tid = hashlib.blake2b(f"{run_key}|{from_state}|{to_state}|{at}|{cause}|{attempt}".encode(), digest_size=16).hexdigest()
    return {
        "transition_id": tid, "vendor": vendor, "job_key": job_key, "run_key": run_key,
        "attempt": attempt, "from_state": from_state, "to_state": to_state, "at": iso(at),
        "cause": cause, "event_id": None if cause == "stale_timeout" else f"ev-{tid[:8]}",
        "late": flags.get("late", False), "duplicate": flags.get("duplicate", False),
        "illegal": flags.get("illegal", False), "schema_version": 1,
    }


def run_snapshot(
    job_key: str, run: str, state: str, *, version: int = 1, attempt: int = 1, retries: int = 0,
    started_at: datetime | None = None, finished_at: datetime | None = None,
    error: tuple[str | None, str | None] = (None, None), native_state: str | None = None,
    last_event_at: datetime | None = None,
) -> dict[str, Any]:
    vendor, source, _native = job_key.split(":", 2)
    duration = (finished_at - started_at).total_seconds() if started_at and finished_at else None
    last = last_event_at or finished_at or started_at or T0
    return {
        "run_key": f"{job_key}:{run}", "job_key": job_key, "vendor": vendor, "source": source,
        "parent_run_key": None, "version": version, "state": state, "attempt": attempt, "retries": retries,
        "first_event_at": iso(started_at or last), "last_event_at": iso(last), "current_at": iso(last),
        "queued_at": None, "started_at": iso(started_at), "finished_at": iso(finished_at),
        "duration_s": duration, "queue_s": None, "native_state": native_state or state, "progress": None,
        "rows": None, "stale_episodes": 0, "reactivations": 0, "events": version,
        "last_error_code": error[0], "last_error_message": error[1], "last_error_at": iso(finished_at) if error[1] else None,
        "deadline": None, "schema_version": 1,
    }


FAKE_OFFSETS = 1 << 40
"""Where the offsets of made-up dead letters start: far beyond any offset a test broker
reaches. A dead letter's id is its raw record's place (``raw.zuora:0:2``) and a sink keeps
the first row per id, so a made-up ``raw.zuora:0:2`` on the session broker once hid the real
dead letter of the record at that place from another test's sink (tests/integration/test_explain.py)."""


def dead_letter_record(n: int, at: datetime, vendor: str | None = "zuora") -> dict[str, Any]:
    offset = FAKE_OFFSETS + n
    return {
        "dead_letter_id": f"raw.zuora:0:{offset}", "at": iso(at), "stage": "normalize", "error_type": "InvalidDocument",
        "reason": "status field missing", "topic": "raw.zuora", "partition": 0, "offset": offset, "vendor": vendor,
        "key_b64": None, "value_b64": "e30=", "value_size": 2, "value_preview": "{}", "schema_version": 1,
    }


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
