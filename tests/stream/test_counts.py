"""Issue 26: counts an analyst can trust, case by case, through the worker's in-memory
harness (vendor documents in raw envelopes -> StreamCore -> table entries and outputs).

Each test reads the vendor's documents the way a person would and asserts what that
person counts: runs, attempts, retries, outcomes, stale episodes. The numbers before the
fix are in each docstring. Case 1 (a re-polled finished run) needs the evicted-run memory
of the stream-core issue and is tested in tests/vendors/test_repolled_runs.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipeline import catalog, vendors
from pipeline.lifecycle import JobState
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.stream.core import Message, decode_entry
from pipeline.vendors import Context
from tests.support.stream import Harness

NOON = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NODATE = "1753-01-01T00:00:00.000Z"


class Feed:
    """Raw messages for one vendor, keyed and split as an ingestor does
    (``vendors.keyed_documents``), offsets counted per partition 0."""

    def __init__(self, vendor: str, source: str) -> None:
        self.vendor = vendor
        self.source = source
        self.topic = catalog.raw_topic(vendor)
        self.offset = 0

    def messages(self, doc: Any, received_at: datetime) -> list[Message]:
        out = []
        ctx = Context(source=self.source, received_at=received_at)
        for key, piece in vendors.keyed_documents(self.vendor, doc, ctx):
            envelope = RawEnvelope(vendor=self.vendor, source=self.source, received_at=received_at, payload=piece)
            out.append(Message(self.topic, 0, self.offset, key.encode(), encode_envelope(envelope)))
            self.offset += 1
        return out


def job_state(harness: Harness, job_key: str) -> JobState:
    return decode_entry(harness.store[job_key.encode()]).job


def counts(job: JobState) -> dict[str, int]:
    names = ("runs_seen", "succeeded", "failed", "canceled", "skipped", "retries", "stale_episodes", "reactivations")
    return {name: getattr(job, name) for name in names}


def transitions_of(outputs: list, run_suffix: str) -> list[tuple[str | None, str, str, bool]]:
    return [
        (t["from_state"], t["to_state"], t["cause"], t["duplicate"])
        for topic, _key, t in outputs
        if topic == catalog.TRANSITIONS and t["run_key"].endswith(run_suffix)
    ]


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- QRS documents ---------------------------------------------------------------------------

TASK, EXECUTION = "task-1", "exec-1"
QRS_JOB = f"qlik_qrs:qs1:{TASK}"


def qrs_result(result_id: str, status: int, start: datetime, stop: datetime | None, *,
               execution: str = EXECUTION, task: str = TASK) -> dict:
    modified = stop or start
    return {"id": result_id, "taskID": task, "executionID": execution, "status": status, "startTime": iso(start),
            "stopTime": iso(stop) if stop else NODATE, "modifiedDate": iso(modified)}


def qrs_session(retries: int, result_id: str, status: int, start: datetime, stop: datetime | None) -> dict:
    modified = stop or start
    return {"id": EXECUTION, "reloadTask": {"id": TASK, "name": "Reload Sales"}, "retries": retries,
            "createdDate": iso(NOON), "modifiedDate": iso(modified),
            "executionResult": {"id": result_id, "status": status, "startTime": iso(start),
                                "stopTime": iso(stop) if stop else NODATE}}


def at(seconds: float) -> datetime:
    return NOON + timedelta(seconds=seconds)


# --- case 2: attempts do not depend on how a poller windows its reads ------------------------


def test_case2_qrs_attempts_do_not_depend_on_the_pollers_windows():
    """Three modifiedDate polls [r1 failed], [r2 failed, r3 started], [r3 succeeded].
    Before: windowed retries 1, failed 1 (r2 was called attempt 1); one by one retries 2,
    failed 2. A person counts 3 attempts: 2 failed, 1 succeeded."""
    r1 = qrs_result("r1", 8, at(0), at(40))
    r2 = qrs_result("r2", 8, at(60), at(70))
    r3_started = qrs_result("r3", 2, at(90), None)
    r3_done = qrs_result("r3", 7, at(90), at(180))
    polls = [[r1], [r2, r3_started], [r3_done]]
    expected = {"runs_seen": 1, "succeeded": 1, "failed": 2, "canceled": 0, "skipped": 0, "retries": 2,
                "stale_episodes": 0, "reactivations": 0}

    windowed, feed = Harness(), Feed("qlik_qrs", "qs1")
    for poll, received in zip(polls, (at(41), at(91), at(181))):
        windowed.feed(feed.messages(poll, received))
    one_by_one, feed = Harness(), Feed("qlik_qrs", "qs1")
    for doc in (r1, r2, r3_started, r3_done):
        one_by_one.feed(feed.messages(doc, at(200)))
    reversed_window, feed = Harness(), Feed("qlik_qrs", "qs1")  # QRS lists in no particular order
    for poll in ([r1], [r3_started, r2], [r3_done]):
        reversed_window.feed(feed.messages(poll, at(200)))

    for harness in (windowed, one_by_one, reversed_window):
        job = job_state(harness, QRS_JOB)
        assert counts(job) == expected
        assert job.runs[f"qlik_qrs:qs1:{EXECUTION}"].attempt == 3


# --- case 3: one execution, one run key, whichever endpoint shows it ------------------------


def test_case3_one_qrs_execution_seen_by_result_and_by_reload_task_is_one_run():
    """The same execution result as an ExecutionResult (keyed by executionID) and as a
    reload task's operational.lastExecutionResult (only the result id). Before:
    runs_seen 2, succeeded 2. A person counts one run that succeeded."""
    result = qrs_result("c0ffee00-0000-4000-8000-000000000001", 7, at(0), at(300))
    task = {"id": TASK, "name": "Reload Sales", "operational": {"id": "op-1", "lastExecutionResult": {
        "id": "c0ffee00-0000-4000-8000-000000000001", "executingNodeName": "qlik-sched-01", "status": 7,
        "startTime": iso(at(0)), "stopTime": iso(at(300)), "duration": 300000, "details": []}}}
    session = qrs_session(0, "c0ffee00-0000-4000-8000-000000000001", 2, at(0), None)
    for order in ([session, result, task], [task, result, session], [task, session, result]):
        harness, feed = Harness(), Feed("qlik_qrs", "qs1")
        for doc in order:
            harness.feed(feed.messages(doc, at(310)))
        job = job_state(harness, QRS_JOB)
        assert (job.runs_seen, job.succeeded, job.failed, len(job.runs)) == (1, 1, 0, 1), order
        run = next(iter(job.runs.values()))
        assert run.state == "SUCCEEDED" and run.duration == timedelta(seconds=300)


# --- case 4: outcome counts do not depend on arrival order -----------------------------------


def test_case4_each_attempts_outcome_counts_once_in_any_arrival_order():
    """QRS sessions carry explicit attempts (retries + 1): attempt 1 runs and fails,
    attempt 2 runs and succeeds. Before: in the orders [0,2,1,3] and [2,3,0,1] the late
    attempt-1 failure was never counted (failed 0). A person counts failed 1, succeeded 1,
    retries 1, whatever order the polls arrive in."""
    history = [
        qrs_session(0, "r1", 2, at(0), None),
        qrs_session(0, "r1", 8, at(0), at(10)),
        qrs_session(1, "r2", 2, at(20), None),
        qrs_session(1, "r2", 7, at(20), at(30)),
    ]
    for order in ([0, 1, 2, 3], [0, 2, 1, 3], [2, 3, 0, 1], [3, 2, 1, 0]):
        harness, feed = Harness(), Feed("qlik_qrs", "qs1")
        for index in order:
            harness.feed(feed.messages(history[index], at(40)))
        job = job_state(harness, QRS_JOB)
        assert (job.runs_seen, job.failed, job.succeeded, job.retries) == (1, 1, 1, 1), order
        run = job.runs[f"qlik_qrs:qs1:{EXECUTION}"]
        assert (run.state, run.attempt) == ("SUCCEEDED", 2), order


# --- case 5: a healthy long run confirmed by polls never goes STALE --------------------------


def test_case5_an_unchanged_live_session_polled_every_30s_stays_running_without_flooding():
    """A QRS execution session unchanged for 10 minutes, polled every 30 s, then
    FinishedSuccess; another task's results move event time on the same partition.
    Before: RUNNING -> STALE at minute 4 (each identical poll was a dropped duplicate),
    one stale episode and 19 duplicate rows. A person counts one run, no stale episode."""
    live = qrs_session(0, "r1", 2, at(0), None)
    harness, feed = Harness(), Feed("qlik_qrs", "qs1")
    outputs = []
    for poll in range(20):
        now = at(30 * poll)
        clock = qrs_result(f"other-{poll}", 7, now - timedelta(seconds=5), now, execution=f"x{poll}", task="task-2")
        outputs += harness.feed(feed.messages(clock, now) + feed.messages(live, now))
    done = qrs_result("r1", 7, at(0), at(600))
    outputs += harness.feed(feed.messages(done, at(601)))
    job = job_state(harness, QRS_JOB)
    assert counts(job) == {"runs_seen": 1, "succeeded": 1, "failed": 0, "canceled": 0, "skipped": 0,
                           "retries": 0, "stale_episodes": 0, "reactivations": 0}
    assert transitions_of(outputs, EXECUTION) == [
        (None, "RUNNING", "vendor", False),
        ("RUNNING", "SUCCEEDED", "vendor", False),
    ]


def test_case5_a_run_whose_polls_stop_still_goes_stale_at_its_last_confirmation_plus_stale_after():
    """Liveness is what the polls confirm: when they stop, the timer runs from the last one."""
    live = qrs_session(0, "r1", 2, at(0), None)
    harness, feed = Harness(), Feed("qlik_qrs", "qs1")
    outputs = []
    for poll in range(5):  # confirmed until 120 s
        outputs += harness.feed(feed.messages(live, at(30 * poll)))
    later = qrs_result("other", 7, at(500), at(600), execution="x", task="task-2")
    outputs += harness.feed(feed.messages(later, at(600)))
    stale = [t for topic, _k, t in outputs if topic == catalog.TRANSITIONS and t["cause"] == "stale_timeout"]
    assert [(t["run_key"], t["at"]) for t in stale] == [(f"qlik_qrs:qs1:{EXECUTION}", "2026-11-20T09:06:00Z")]
    assert job_state(harness, QRS_JOB).stale_episodes == 1


# --- case 6: TrueNAS durations exclude the queue time ----------------------------------------


def truenas_update(state: str, **fields: Any) -> dict:
    created_ms = int(NOON.timestamp() * 1000)
    return {"msg": "changed", "collection": "core.get_jobs", "id": 5,
            "fields": {"id": 5, "method": "replication.run", "state": state, "time_started": {"$date": created_ms},
                       **fields}}


def test_case6_a_truenas_job_that_waited_reports_its_queue_time_apart_from_its_duration():
    """WAITING 09:00, RUNNING 09:10, SUCCESS 09:11 (middlewared sets time_started once,
    at creation). Before: duration 11 min. A person reads 10 min queued, 1 min running."""
    finished_ms = int(at(660).timestamp() * 1000)
    harness, feed = Harness(), Feed("truenas", "nas1")
    outputs = []
    for doc, received in ((truenas_update("WAITING"), at(0)), (truenas_update("RUNNING"), at(600)),
                          (truenas_update("SUCCESS", time_finished={"$date": finished_ms}), at(660))):
        outputs += harness.feed(feed.messages(doc, received))
    [snapshot] = [v for topic, _k, v in outputs if topic == catalog.RUNS][-1:]
    assert (snapshot["queued_at"], snapshot["started_at"], snapshot["finished_at"]) == (
        "2026-11-20T09:00:00Z", "2026-11-20T09:10:00Z", "2026-11-20T09:11:00Z")
    assert (snapshot["queue_s"], snapshot["duration_s"]) == (600.0, 60.0)
    assert not {"recent_event_ids", "outcomes", "alive_at", "running_at", "aliases"} & snapshot.keys()


# --- case 7: normalizers raise nothing but Rejected ------------------------------------------


def test_case7_documents_that_broke_a_conversion_are_dead_letters_with_the_vendors_reason():
    """Before: "unexpected ValueError/OverflowError" dead letters. Now the vendor's own reason."""
    harness = Harness()
    qrs, zuora = catalog.raw_topic("qlik_qrs"), catalog.raw_topic("zuora")

    def raw(topic: str, vendor: str, offset: int, payload: dict) -> Message:
        envelope = RawEnvelope(vendor=vendor, source="s", received_at=NOON, payload=payload)
        return Message(topic, 0, offset, b"k", encode_envelope(envelope))

    outputs = harness.feed([
        raw(qrs, "qlik_qrs", 0, {"executionSessionId": "e1", "taskId": "t1", "httpStatus": "²", "time": iso(NOON)}),
        raw(zuora, "zuora", 0, {"active": [{"task_id": "x", "status": "SCANNING-PAGE-1",
                                            "query_config": {"object_name": "V"},
                                            "activity_tracker": {"last_activity": "2026-01-01 00:00:00",
                                                                 "elapsed_time": "99999999999:00:00"}}]}),
    ])
    dead = [v for topic, _k, v in outputs if topic == catalog.DEADLETTER]
    assert [(d["stage"], d["error_type"]) for d in dead] == [("normalize", "Rejected")] * 2
    assert "httpStatus" in dead[0]["reason"] and "elapsed_time is out of range" in dead[1]["reason"]
    assert not any("unexpected" in d["reason"] for d in dead)


# --- from the ingestor issues: TrueNAS restarts, Zuora polls --------------------------------


def test_a_truenas_job_id_reused_after_a_middleware_restart_is_a_second_run():
    """Boot 1: job 7 runs and is never heard of again (STALE). Boot 2: a new job gets id 7
    and succeeds. Before: one run, 'reactivated' by the other job. A person counts two
    runs: one went stale, one succeeded, no reactivation."""
    def update(state: str, created: datetime, **fields: Any) -> dict:
        return {"msg": "changed", "collection": "core.get_jobs", "id": 7,
                "fields": {"id": 7, "method": "replication.run", "state": state,
                           "time_started": {"$date": int(created.timestamp() * 1000)}, **fields}}

    boot2 = at(7200)
    harness, feed = Harness(), Feed("truenas", "nas1")
    harness.feed(feed.messages(update("RUNNING", NOON, progress={"percent": 30}), NOON))
    harness.feed(feed.messages(update("RUNNING", boot2, progress={"percent": 1}), boot2))
    done = update("SUCCESS", boot2, time_finished={"$date": int(at(7380).timestamp() * 1000)})
    harness.feed(feed.messages(done, at(7380)))
    job = job_state(harness, "truenas:nas1:replication.run")
    assert counts(job) == {"runs_seen": 2, "succeeded": 1, "failed": 0, "canceled": 0, "skipped": 0,
                           "retries": 0, "stale_episodes": 1, "reactivations": 0}


def test_a_zuora_token_polled_late_counts_only_the_vendors_stale_episode():
    """Polls at 09:15, 09:20, 09:25, 09:26 show a token active (last activity 09:00:10),
    in Zuora's stale queue, active again (09:04:50), completed. Before: 2 stale episodes
    (two timer timeouts measured from last_activity, although each poll confirmed the
    token). A person counts 1 stale episode (Zuora's) and 1 reactivation."""
    def token(queue: str, status: str, last: str, task: str = "tok-1", view: str = "RPRO_BI3_LN_V") -> dict:
        return {queue: [{"task_id": task, "status": status, "accumulate": 10, "metric": 10,
                         "query_config": {"object_name": view},
                         "activity_tracker": {"initated_time": "2026-11-20 09:00:00", "last_activity": last}}]}

    harness, feed = Harness(stale_after_by_vendor={"zuora": 600.0}), Feed("zuora", "tenant1")
    for doc, minute in ((token("active", "SCANNING-PAGE-1", "2026-11-20 09:00:10"), 15),
                        (token("stale", "SCANNING-PAGE-1", "2026-11-20 09:00:10"), 20),
                        (token("active", "SCANNING-PAGE-2", "2026-11-20 09:04:50"), 25),
                        (token("completed", "COMPLETED", "2026-11-20 09:05:00"), 26)):
        now = at(60 * minute)
        busy = token("active", f"SCANNING-PAGE-{minute}", now.strftime("%Y-%m-%d %H:%M:%S"), f"other-{minute}", "OTHER_V")
        harness.feed(feed.messages(busy, now) + feed.messages(doc, now))  # another query moves event time
    job = next(entry.job for entry in map(decode_entry, harness.store.values())
               if entry.job.job_key.endswith("RPRO_BI3_LN_V"))
    assert counts(job) == {"runs_seen": 1, "succeeded": 1, "failed": 0, "canceled": 0, "skipped": 0,
                           "retries": 0, "stale_episodes": 1, "reactivations": 1}
