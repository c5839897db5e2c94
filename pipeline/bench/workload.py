"""A realistic, seeded stream of raw vendor documents for ``pipeline bench``.

Every vendor, in the shapes their APIs send (the same shapes as the bundled samples),
with the cardinality of a real estate: each vendor has ``jobs`` jobs; each job starts a
run every few minutes; a run is several documents (QRS results and retries, Zuora
polls that go stale and come back or drain, TrueNAS progress updates, Informatica
publications with a subscription child, one Qlik Cloud reload.finished). Documents of
different runs interleave in event time, as they would arrive.

``documents(count, seed)`` yields ``Document``s lazily (memory does not grow with
``count``); the same seed always gives the same stream, so two benchmark runs (and a
faulty run against its reference) read identical input.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.model import UTC
from pipeline.vendors import registry

T0 = datetime(2026, 11, 1, tzinfo=UTC)
VENDORS = tuple(vendor.name for vendor in registry.vendors() if vendor.bench)


@dataclass(frozen=True, slots=True)
class Document:
    vendor: str
    source: str
    at: datetime  # when the ingestor would have received it (the envelope's received_at)
    payload: Any


def documents(count: int, *, seed: int = 1, jobs_per_vendor: int = 200) -> Iterator[Document]:
    """``count`` documents in arrival order, from runs that start one after another per job."""
    rng = random.Random(seed)
    makers = {vendor.name: registry.load(vendor.bench) for vendor in registry.vendors() if vendor.bench}
    # A heap of (time, tiebreak, document) for runs in flight; new runs start per job.
    pending: list[tuple[datetime, int, Document]] = []
    next_start: list[tuple[datetime, str, int]] = [
        (T0 + timedelta(seconds=rng.uniform(0, 600)), vendor, job)
        for vendor in VENDORS for job in range(jobs_per_vendor)
    ]
    heapq.heapify(next_start)
    tiebreak = 0
    emitted = 0
    run_number = 0
    while emitted < count:
        # Open runs until the earliest pending document precedes the next run start.
        while next_start and (not pending or next_start[0][0] <= pending[0][0]):
            start, vendor, job = heapq.heappop(next_start)
            run_number += 1
            for doc in makers[vendor](rng, job, run_number, start):
                tiebreak += 1
                heapq.heappush(pending, (doc.at, tiebreak, doc))
            heapq.heappush(next_start, (start + timedelta(seconds=rng.uniform(300, 1800)), vendor, job))
        _, _, doc = heapq.heappop(pending)
        yield doc
        emitted += 1


def _steps(rng: random.Random, start: datetime, count: int, low: float = 5, high: float = 60) -> list[datetime]:
    out, at = [], start
    for _ in range(count):
        at += timedelta(seconds=rng.uniform(low, high))
        out.append(at)
    return out


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _qlik_cloud_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    tenant = f"tenant-{job % 3}"
    failed = rng.random() < 0.1
    duration = rng.uniform(10, 600)
    end = start + timedelta(seconds=duration)
    data = {
        "id": f"reload-{run}", "appId": f"app-{job}", "userId": f"user-{job % 17}",
        "succeeded": not failed, "status": "FAILED" if failed else "SUCCEEDED", "type": "chronos",
        "partial": False, "startTime": _iso(start), "durationSeconds": round(duration, 3),
    }
    if failed:
        data |= {"errorCode": "ReloadScriptError", "errorMessage": "Unexpected token: ')'"}
    doc = {
        "id": f"ce-{run}", "specversion": "1.0", "type": "com.qlik.v1.reload.finished",
        "source": "com.qlik/reloads", "time": _iso(end), "tenantid": tenant,
        "datacontenttype": "application/json", "data": data,
    }
    docs = [Document("qlik_cloud", tenant, end + timedelta(seconds=1), doc)]
    if rng.random() < 0.05:  # a webhook delivered twice
        docs.append(Document("qlik_cloud", tenant, end + timedelta(seconds=3), doc))
    return docs


def _qrs_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    """One execution: a result per attempt (Started, then FinishedFail/Retry or Success)."""
    host = "qrs-prod-01"
    task = str(uuid.UUID(int=job + 1))
    execution = _uuid(rng)
    attempts = 1 + (rng.random() < 0.15) + (rng.random() < 0.05)
    docs = []
    at = start
    for attempt in range(1, attempts + 1):
        result_id = _uuid(rng)
        started, finished = _steps(rng, at, 2, 5, 240)
        last = attempt == attempts
        final = (7 if rng.random() < 0.9 else 8) if last else 8
        base = {
            "id": result_id, "taskID": task, "executionID": execution, "appID": str(uuid.UUID(int=job + 10_000)),
            "executingNodeName": "qlik-sched-01", "details": [],
        }
        docs.append(Document("qlik_qrs", host, started + timedelta(seconds=2), base | {
            "status": 2, "startTime": _iso(started), "stopTime": "1753-01-01T00:00:00.000Z",
            "modifiedDate": _iso(started),
        }))
        details = [] if final == 7 else [
            {"detailsType": 0, "message": "Script error: Field 'Amount' not found", "detailCreatedDate": _iso(finished)}
        ]
        docs.append(Document("qlik_qrs", host, finished + timedelta(seconds=2), base | {
            "status": final, "startTime": _iso(started), "stopTime": _iso(finished),
            "modifiedDate": _iso(finished), "details": details,
        }))
        at = finished
    return docs


def _zuora_task(task_id: str, view: str, status: str, started: datetime, last: datetime, rows: int) -> dict[str, Any]:
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    return {
        "accumulate": rows, "message": None, "metric": 10, "status": status, "task_id": task_id,
        "activity_tracker": {
            "elapsed_time": str(last - started), "initated_time": started.strftime(fmt), "last_activity": last.strftime(fmt),
        },
        "query_config": {"filter_params": {"fromDate": "2026-01-01 00:00:00", "toDate": "2026-11-01 00:00:00"},
                         "object_name": view},
    }


def _zuora_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    """A continuation token: pages in `active`, sometimes `stale` (then back, or draining)."""
    tenant = "acme.revpro.example"
    view = f"RPRO_BI3_VIEW_{job}_V"
    token = _uuid(rng)
    docs = []
    rows = 0
    times = _steps(rng, start, 4, 5, 40)
    plan = ["ADDED-TO-QUEUE", "SCANNING-PAGE-1", "COMMITING-PAGE-1", "SCANNING-PAGE-2"]
    for status, at in zip(plan, times):
        rows += 10 if status.startswith("COMMITING") else 0
        docs.append(Document("zuora", tenant, at + timedelta(seconds=1), {
            "active": [_zuora_task(token, view, status, start, at, rows)], "completed": [], "draining": [], "stale": [],
        }))
    at = times[-1]
    roll = rng.random()
    if roll < 0.10:  # stale, then draining: never resumes
        quiet = at + timedelta(seconds=250)
        docs.append(Document("zuora", tenant, quiet, {"active": [], "completed": [], "draining": [],
                                                      "stale": [_zuora_task(token, view, "SCANNING-PAGE-2", start, at, rows)]}))
        docs.append(Document("zuora", tenant, quiet + timedelta(seconds=60), {
            "active": [], "completed": [], "stale": [],
            "draining": [_zuora_task(token, view, "SCANNING-PAGE-2", start, at, rows)]}))
        return docs
    if roll < 0.25:  # stale, then active again (a reactivation)
        quiet = at + timedelta(seconds=250)
        docs.append(Document("zuora", tenant, quiet, {"active": [], "completed": [], "draining": [],
                                                      "stale": [_zuora_task(token, view, "SCANNING-PAGE-2", start, at, rows)]}))
        at = quiet + timedelta(seconds=rng.uniform(5, 60))
        docs.append(Document("zuora", tenant, at + timedelta(seconds=1), {
            "active": [_zuora_task(token, view, "SCANNING-PAGE-3", start, at, rows)], "completed": [], "draining": [], "stale": []}))
    at += timedelta(seconds=rng.uniform(5, 60))
    rows += 10
    docs.append(Document("zuora", tenant, at + timedelta(seconds=1), {
        "active": [], "draining": [], "stale": [], "completed": [_zuora_task(token, view, "COMPLETED", start, at, rows)]}))
    return docs


def _truenas_job(job_id: int, method: str, state: str, percent: int | None, started: datetime,
                 finished: datetime | None, error: str | None) -> dict[str, Any]:
    return {
        "id": job_id, "method": method, "arguments": [], "transient": False, "description": method,
        "abortable": True, "logs_path": None, "logs_excerpt": None,
        "progress": {"percent": percent, "description": method, "extra": None},
        "result": None, "result_encoding_error": None, "error": error, "exception": None, "exc_info": None,
        "state": state, "time_started": {"$date": int(started.timestamp() * 1000)},
        "time_finished": None if finished is None else {"$date": int(finished.timestamp() * 1000)},
        "credentials": None,
    }


def _truenas_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    host = f"nas-{job % 4}"
    method = ("pool.scrub.scrub", "cloudsync.sync", "replication.run", "pool.snapshottask.run")[job % 4] + f".{job}"
    job_id = run
    times = _steps(rng, start, 4, 5, 90)
    outcome = rng.choices(["SUCCESS", "FAILED", "ABORTED"], [0.85, 0.1, 0.05])[0]
    updates = [("added", "WAITING", None, None), ("changed", "RUNNING", 10, None), ("changed", "RUNNING", 60, None),
               ("changed", outcome, 100 if outcome == "SUCCESS" else 60, "[EFAULT] target unreachable" if outcome == "FAILED" else None)]
    docs = []
    for (msg, state, percent, error), at in zip(updates, times):
        finished = at if state in ("SUCCESS", "FAILED", "ABORTED") else None
        fields = _truenas_job(job_id, method, state, percent, start, finished, error)
        docs.append(Document("truenas", host, at, {
            "jsonrpc": "2.0", "method": "collection_update",
            "params": {"msg": msg, "collection": "core.get_jobs", "id": job_id, "fields": fields},
        }))
    return docs


def _informatica_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    """A publication and its subscription child, polled twice: processing, then done."""
    pod = "usw3.dih.example"
    event_id = 100_000 + run * 2
    publish_end, child_start, child_end = _steps(rng, start, 3, 10, 120)
    child_failed = rng.random() < 0.1

    def event(done: bool) -> dict[str, Any]:
        child_history = [{"eventId": event_id + 1, "timeStamp": _iso(child_start), "eventStatusName": "Processing", "comments": ""}]
        if done:
            child_history.append({"eventId": event_id + 1, "timeStamp": _iso(child_end),
                                  "eventStatusName": "Error" if child_failed else "Completed",
                                  "comments": "Subscription to topic failed." if child_failed else ""})
        child = {
            "eventId": event_id + 1, "createTime": _iso(child_start), "parentEventId": event_id,
            "eventType": "SUBSCRIPTION", "eventStatus": child_history[-1]["eventStatusName"],
            "applicationName": f"App{job}", "pubSubName": f"Sub{job}", "topicName": f"Topic{job}",
            "sourceSuccessCount": 0, "sourceFailedCount": 0, "targetSuccessCount": 0 if child_failed else 100,
            "targetFailedCount": 1 if child_failed else 0, "runId": str(run), "eventHistory": child_history,
        }
        if done:
            child["completionTime"] = _iso(child_end)
        return {
            "eventId": event_id, "createTime": _iso(start), "completionTime": _iso(publish_end),
            "eventType": "PUBLICATION", "eventStatus": "Completed", "applicationName": f"App{job}",
            "pubSubName": f"Pub{job}", "topicName": f"Topic{job}", "sourceSuccessCount": 100, "sourceFailedCount": 0,
            "targetSuccessCount": 100, "targetFailedCount": 0, "runId": str(run),
            "childEvents": [child],
            "eventHistory": [
                {"eventId": event_id, "timeStamp": _iso(start), "eventStatusName": "Processing", "comments": ""},
                {"eventId": event_id, "timeStamp": _iso(publish_end), "eventStatusName": "Completed", "comments": ""},
            ],
        }

    return [Document("informatica", pod, child_start + timedelta(seconds=5), event(False)),
            Document("informatica", pod, child_end + timedelta(seconds=5), event(True))]
