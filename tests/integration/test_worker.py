"""One scenario per vendor through the real worker on the embedded broker.

All tests share the session's worker; each uses its own source, so its jobs (and their
keys) are its own. Event times are "now" plus offsets, so no scenario's stale deadlines
are overtaken by another's later event times.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from pipeline.model import UTC
from tests.integration.kafka import dead_letters_of, send_documents, transitions_of

pytestmark = pytest.mark.integration

POISON = b"\x00\xffnot an envelope"


def fresh_source(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def ms(at: datetime) -> dict:
    return {"$date": int(at.timestamp() * 1000)}


async def test_truenas_progress_then_failed_and_aborted(broker, worker):
    source = fresh_source("nas")
    t0 = datetime.now(UTC)
    started = ms(t0)

    def job(job_id: int, state: str, percent: float | None, finished: datetime | None = None, **extra) -> dict:
        fields = {"id": job_id, "method": "pool.scrub", "state": state, "time_started": started,
                  "progress": {"percent": percent, "description": f"{percent}%", "extra": None},
                  "arguments": ["secret-pool"], "credentials": {"type": "TOKEN", "data": {"token": "s3cr3t"}}}
        if finished:
            fields["time_finished"] = ms(finished)
        fields.update(extra)
        return {"jsonrpc": "2.0", "method": "collection_update",
                "params": {"msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields}}

    await send_documents(broker.bootstrap, "truenas", [
        job(11, "WAITING", None),
        job(11, "RUNNING", 20),
        POISON,
        job(11, "RUNNING", 60),
        job(11, "FAILED", 60, t0 + timedelta(seconds=3), error="[EFAULT] disk gone",
            exc_info={"repr": "CallError()", "type": "CallError", "errno": 14, "extra": None}),
        job(12, "RUNNING", 5),
        job(12, "ABORTED", 5, t0 + timedelta(seconds=4)),
    ], source=source)
    runs = await transitions_of(broker.bootstrap, "truenas", source, count=5)
    assert runs == {
        "11": [(None, "PENDING", "vendor", 1), ("PENDING", "RUNNING", "vendor", 1), ("RUNNING", "FAILED", "vendor", 1)],
        "12": [(None, "RUNNING", "vendor", 1), ("RUNNING", "CANCELED", "vendor", 1)],
    }
    dead = await dead_letters_of(broker.bootstrap, "truenas", source=source, count=1)
    assert len(dead) == 1 and dead[0]["stage"] == "decode"


async def test_zuora_token_goes_stale_and_returns_and_one_drains(broker, worker):
    source = fresh_source("tenant")
    t0 = datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    def task(token: str, view: str, status: str, last: datetime, rows: int) -> dict:
        return {"task_id": token, "status": status, "accumulate": rows, "metric": 10, "message": None,
                "activity_tracker": {"elapsed_time": "0:00:01.000000", "initated_time": str(t0),
                                     "last_activity": str(last)},
                "query_config": {"filter_params": {"fromDate": "2026-01-01 00:00:00", "toDate": "2026-02-01 00:00:00"},
                                 "object_name": view}}

    def status(**queues: list) -> dict:
        return {"active": [], "completed": [], "draining": [], "stale": [], **queues}

    a, b = "aaaa-token", "bbbb-token"
    s = lambda n: t0 + timedelta(seconds=n)  # noqa: E731
    await send_documents(broker.bootstrap, "zuora", [
        status(active=[task(a, "RPRO_BI3_RC_SCHD_V", "SCANNING-PAGE-1", s(1), 10),
                       task(b, "RPRO_BI3_LN_V", "SCANNING-PAGE-1", s(1), 10)]),
        status(stale=[task(a, "RPRO_BI3_RC_SCHD_V", "SCANNING-PAGE-1", s(1), 10),
                      task(b, "RPRO_BI3_LN_V", "SCANNING-PAGE-1", s(1), 10)]),
        POISON,
        status(active=[task(a, "RPRO_BI3_RC_SCHD_V", "COMMITING-PAGE-2", s(250), 20)],
               draining=[task(b, "RPRO_BI3_LN_V", "SCANNING-PAGE-1", s(1), 10)]),
        status(completed=[task(a, "RPRO_BI3_RC_SCHD_V", "COMPLETED", s(260), 25)]),
    ], source=source)
    runs = await transitions_of(broker.bootstrap, "zuora", source, count=7)
    assert runs == {
        a: [(None, "RUNNING", "vendor", 1), ("RUNNING", "STALE", "vendor", 1),
            ("STALE", "RUNNING", "reactivation", 1), ("RUNNING", "SUCCEEDED", "vendor", 1)],
        b: [(None, "RUNNING", "vendor", 1), ("RUNNING", "STALE", "vendor", 1), ("STALE", "FAILED", "vendor", 1)],
    }
    dead = await dead_letters_of(broker.bootstrap, "zuora", source=source, count=1)
    assert [d["stage"] for d in dead] == ["decode"]
