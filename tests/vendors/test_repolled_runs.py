"""Issue 26 case 1: a finished run that a vendor keeps listing is one run, not one per poll.

Folded the way the worker does it (``vendors.normalize`` -> ``lifecycle.apply_job``, then
``evict`` with the default retention after every event). Before: QRS runs_seen 24,
succeeded 24 for one reload; TrueNAS runs_seen 2. The mechanism (a bounded memory of
evicted runs, so a re-listed finished run is flagged late instead of reopened) belongs to
the stream-core issue; until it lands these tests are expected to fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline import lifecycle, vendors
from pipeline.lifecycle import JobState
from pipeline.model import UTC
from pipeline.settings import Settings
from pipeline.vendors import Context

SETTINGS = Settings()


RELOAD_TASK = {
    "id": "9a8b7c6d-5e4f-4321-8fed-cba987654321",
    "name": "Reload Sales",
    "operational": {
        "id": "op-1",
        "lastExecutionResult": {
            "id": "c0ffee00-0000-4000-8000-000000000001", "executingNodeName": "qlik-sched-01", "status": 7,
            "startTime": "2026-11-20T09:00:00.000Z", "stopTime": "2026-11-20T09:05:00.000Z", "duration": 300000,
            "details": [],
        },
        "nextExecution": "2026-11-21T09:00:00.000Z",
    },
}

FINISHED_JOB = {"id": 42, "method": "pool.scrub", "state": "SUCCESS", "time_started": {"$date": 1763629200000},
                "time_finished": {"$date": 1763629500000}, "progress": {"percent": 100}}


def polled(vendor: str, docs_at: list[tuple[object, datetime]], source: str) -> JobState:
    job = None
    for doc, now in docs_at:
        for event in vendors.normalize(vendor, doc, Context(source=source, received_at=now)):
            job, _ = lifecycle.apply_job(job, event, stale_after=SETTINGS.stale_after(vendor))
            job = lifecycle.evict(
                job, now, retention=SETTINGS.run_retention, stale_retention=SETTINGS.stale_retention
            )
    assert job is not None
    return job


def test_case1_a_reload_task_polled_every_5_minutes_for_3_hours_is_one_run():
    start = datetime(2026, 11, 20, 9, 6, tzinfo=UTC)
    job = polled("qlik_qrs", [(RELOAD_TASK, start + timedelta(minutes=5 * i)) for i in range(36)], "qs1")
    assert (job.runs_seen, job.succeeded, job.failed) == (1, 1, 0)


def test_case1_a_finished_truenas_job_listed_again_by_each_resync_is_one_run():
    start = datetime(2025, 11, 20, 9, 5, tzinfo=UTC)
    resync = {"jsonrpc": "2.0", "id": 9, "result": [FINISHED_JOB]}
    docs = [(FINISHED_JOB, start)] + [(resync, start + timedelta(hours=2 * k)) for k in (1, 2, 3)]
    job = polled("truenas", docs, "nas1")
    assert (job.runs_seen, job.succeeded) == (1, 1)


def test_case1_within_the_retention_the_repolls_are_already_one_run():
    """What works without the core branch: while the run is still in the table."""
    start = datetime(2026, 11, 20, 9, 6, tzinfo=UTC)
    job = polled("qlik_qrs", [(RELOAD_TASK, start + timedelta(minutes=5 * i)) for i in range(12)], "qs1")
    assert (job.runs_seen, job.succeeded, job.events) == (1, 1, 1)
