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
from pipeline import catalog
from tests.support.kafka import collect, dead_letters_of, decode, produce, send_documents, transitions_of

pytestmark = pytest.mark.integration

POISON = b"\x00\xffnot an envelope"


async def produce_rejected(bootstrap: str, vendor: str, key: str, payload: dict) -> None:
    """A well-formed envelope whose document the vendor module rejects."""
    await produce(bootstrap, vendor, [(key, payload)])


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


async def test_informatica_publication_with_child_subscriptions_one_in_error(broker, worker):
    source = fresh_source("org")
    t0 = datetime.now(UTC)
    iso = lambda n: (t0 + timedelta(seconds=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731

    def history(event_id: int, *steps: tuple[str, int, str]) -> list[dict]:
        return [{"eventId": event_id, "timeStamp": iso(n), "eventStatusName": status, "comments": comment}
                for status, n, comment in steps]

    def child(event_id: int, name: str, status: str, end: int, comment: str) -> dict:
        return {"eventId": event_id, "parentEventId": 5000, "eventType": "SUBSCRIPTION", "eventStatus": status,
                "createTime": iso(40), "completionTime": iso(end), "descendantState": "NONE",
                "applicationName": "DI_App", "pubSubName": name, "topicName": "DI_Topic",
                "sourceSuccessCount": 0, "sourceFailedCount": 0, "targetSuccessCount": 5, "targetFailedCount": 0,
                "runId": str(event_id),
                "eventHistory": history(event_id, ("Processing", 41, ""), (status, end, comment))}

    publication = {
        "eventId": 5000, "eventType": "PUBLICATION", "eventStatus": "Complete", "descendantState": "ERROR",
        "createTime": iso(0), "completionTime": iso(40), "applicationName": "DI_App", "pubSubName": "DSS_Pub",
        "topicName": "DI_Topic", "sourceSuccessCount": 5, "sourceFailedCount": 0, "targetSuccessCount": 5,
        "targetFailedCount": 0, "runId": "28",
        "childEvents": [
            child(5001, "DSS_Sub_A", "Completed", 60, "done"),
            child(5002, "DSS_Sub_B", "Error", 65, "Subscription to topic failed. The job failed."),
        ],
        "eventHistory": history(5000, ("Processing", 1, ""), ("Complete", 40, "Publishing completed")),
    }
    await send_documents(broker.bootstrap, "informatica", [publication, POISON], source=source)
    runs = await transitions_of(broker.bootstrap, "informatica", source, count=6)
    assert runs == {
        "5000": [(None, "RUNNING", "vendor", 1), ("RUNNING", "SUCCEEDED", "vendor", 1)],
        "5001": [(None, "RUNNING", "vendor", 1), ("RUNNING", "SUCCEEDED", "vendor", 1)],
        "5002": [(None, "RUNNING", "vendor", 1), ("RUNNING", "FAILED", "vendor", 1)],
    }
    prefix = f"informatica:{source}:".encode()
    events = [decode(v) for _k, v in await collect(
        broker.bootstrap, catalog.EVENTS, lambda k, v: k is not None and k.startswith(prefix), count=6,
    )]
    parents = {e["run_key"].rsplit(":", 1)[1]: e["parent_run_key"] for e in events}
    assert parents == {"5000": None, "5001": f"informatica:{source}:5000", "5002": f"informatica:{source}:5000"}
    failed = [e for e in events if e["state"] == "FAILED"]
    assert failed[0]["error_message"] == "Subscription to topic failed. The job failed."
    dead = await dead_letters_of(broker.bootstrap, "informatica", source=source, count=1)
    assert [d["stage"] for d in dead] == ["decode"]


async def test_qlik_cloud_event_delivered_twice_is_one_run_and_a_flagged_duplicate(broker, worker):
    tenant = fresh_source("tenant")
    t0 = datetime.now(UTC)
    event = {
        "id": f"ce-{tenant}", "specversion": "1.0", "type": "com.qlik.v1.reload.finished",
        "source": "com.qlik/reloads", "time": t0.isoformat().replace("+00:00", "Z"), "tenantid": tenant,
        "datacontenttype": "application/json",
        "data": {"id": "reload-1", "appId": "app-1", "userId": "user-1", "succeeded": False, "status": "FAILED",
                 "type": "chronos", "errorCode": "EngineReloadFailed", "errorMessage": "script error",
                 "startTime": (t0 - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")},
    }
    broken = {**event, "id": f"ce-broken-{tenant}", "data": {"appId": "app-1"}}  # data.id missing
    await send_documents(broker.bootstrap, "qlik_cloud", [event, POISON, event], source="unused")
    await produce_rejected(broker.bootstrap, "qlik_cloud", f"qlik_cloud:{tenant}:app-1", broken)
    runs = await transitions_of(broker.bootstrap, "qlik_cloud", tenant, count=2)
    assert runs == {"reload-1": [(None, "FAILED", "vendor", 1), ("FAILED", "FAILED", "vendor", 1, "duplicate")]}
    dead = await dead_letters_of(broker.bootstrap, "qlik_cloud", source=tenant, count=2)
    assert sorted(d["stage"] for d in dead) == ["decode", "normalize"]
    assert [d["reason"] for d in dead if d["stage"] == "normalize"] == ["missing required field 'data.id'"]


async def test_qrs_session_with_two_retries_ending_in_success(broker, worker):
    host = fresh_source("qs")
    t0 = datetime.now(UTC)
    iso = lambda n: (t0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    session, task = str(uuid.uuid4()), str(uuid.uuid4())

    def result(number: int, status: int, start: int, stop: int | None = None) -> dict:
        return {"id": f"a0000000-0000-4000-8000-00000000000{number}", "taskID": task, "executionID": session,
                "appID": "app-1", "status": status, "startTime": iso(start),
                "stopTime": iso(stop) if stop is not None else "1753-01-01T00:00:00.000Z",
                "modifiedDate": iso(stop if stop is not None else start), "details": []}

    vanished = {"executionSessionId": session, "taskId": task, "httpStatus": 404, "time": iso(51)}
    await send_documents(broker.bootstrap, "qlik_qrs", [
        result(1, 2, 0), result(1, 8, 0, 10),      # Started, FinishedFail
        POISON,
        result(2, 2, 20), result(2, 10, 20, 30),   # Started, Retry
        result(3, "Started", 40), result(3, "FinishedSuccess", 40, 50),
    ], source=host)
    await produce(broker.bootstrap, "qlik_qrs", [(f"qlik_qrs:{host}:{task}", vanished)], source=host)
    runs = await transitions_of(broker.bootstrap, "qlik_qrs", host, count=6)
    assert runs == {session: [
        (None, "RUNNING", "vendor", 1), ("RUNNING", "FAILED", "vendor", 1),
        ("FAILED", "RUNNING", "retry", 2), ("RUNNING", "FAILED", "vendor", 2),
        ("FAILED", "RUNNING", "retry", 3), ("RUNNING", "SUCCEEDED", "vendor", 3),
    ]}
    dead = await dead_letters_of(broker.bootstrap, "qlik_qrs", source=host, count=1)
    assert [d["stage"] for d in dead] == ["decode"]
