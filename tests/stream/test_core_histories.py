"""Event time and state on real histories (issue 32, cases 3, 5, 6, 7, 8): forgotten jobs,
packed polls, skewed clocks, the bounds' edges, heartbeats. QRS execution results with
vendor times through an in-memory StreamCore (a dict is the table)."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import catalog
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.stream.records import Message
from pipeline.stream.state import decode_entry
from tests.support.stream import Harness

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
QRS = catalog.raw_topic("qlik_qrs")
KEY = b"qlik_qrs:qs1:task-1"
DAY = 86400
STATUS = {"RUNNING": 2, "SUCCEEDED": 7, "FAILED": 8}
NEVER = "1753-01-01T00:00:00Z"


def secs(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def result(execution: str, state: str, at: float, *, start: float = 0, rid: str | None = None,
           task: str = "task-1") -> dict:
    """One QRS execution result: ``rid`` (the result id) makes the event id distinct."""
    return {"id": rid or f"res-{execution}", "taskID": task, "executionID": execution, "appID": "app-1",
            "executingNodeName": "n1", "status": STATUS[state], "startTime": iso(secs(start)),
            "stopTime": iso(secs(at)) if state != "RUNNING" else NEVER, "modifiedDate": iso(secs(at)), "details": []}


def raw(offset: int, payload: object, received: float, *, ts: float | None = None, key: bytes | None = KEY,
        heartbeat: bool = False, source: str = "qs1") -> Message:
    envelope = RawEnvelope(vendor="qlik_qrs", source=source, received_at=secs(received), payload=payload,
                           heartbeat=heartbeat)
    return Message(QRS, 0, offset, key, encode_envelope(envelope), None if ts is None else int(secs(ts).timestamp() * 1000))


def beat(offset: int, at: float, *, source: str = "qs1") -> Message:
    return raw(offset, None, at, key=None, heartbeat=True, source=source)


def of(outputs: list, topic: str) -> list[dict]:
    return [value for t, _key, value in outputs if t == topic]


def moves(outputs: list) -> list[tuple[str, str | None, str, str, bool]]:
    return [(t["run_key"].rsplit(":", 1)[-1], t["from_state"], t["to_state"], t["cause"], t["late"])
            for t in of(outputs, catalog.TRANSITIONS)]


def job(harness: Harness, key: bytes = KEY):
    data = harness.store.get(key)
    return None if data is None else decode_entry(data).job


def processed(harness: Harness, messages: list[Message]) -> tuple[list, dict]:
    """Process without storing (a crash before the writes or offsets are durable)."""
    batch = harness.core.process(messages)
    outputs = [(o.topic, o.key, msgspec.json.decode(o.value)) for o in batch.outputs]
    return outputs, batch.writes


# --- case 3: forgetting keeps what recognises the past (R20) ----------------------------


def test_r20_a_batch_that_forgets_a_job_and_is_redelivered_after_a_crash_emits_nothing_twice():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0)])
    batch = [raw(1, result("e1", "SUCCEEDED", 60), 60), beat(2, 8 * DAY)]  # 8 days later: forgotten
    first = harness.feed(batch)
    assert moves(first) == [("e1", "RUNNING", "SUCCEEDED", "vendor", False)]
    harness.restart()  # killed after the table writes, before the offset commit
    again = harness.feed(batch)
    assert of(again, catalog.TRANSITIONS) == [] and of(again, catalog.RUNS) == []
    assert job(harness).runs_seen == 1 and job(harness).succeeded == 1


def test_r20_a_late_event_after_the_job_was_forgotten_does_not_reopen_its_finished_run():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0)])
    harness.feed([raw(1, result("e1", "SUCCEEDED", 60), 60)])
    harness.feed([beat(2, 8 * DAY)])
    late = harness.feed([raw(3, result("e1", "RUNNING", 0), 8 * DAY + 5)])  # a re-send of the past
    assert moves(late) == [("e1", "RUNNING", "RUNNING", "vendor", True)]
    assert of(late, catalog.RUNS) == []
    assert moves(harness.feed([beat(4, 8 * DAY + 600)])) == []  # never STALE
    forgotten = job(harness)
    assert forgotten.runs == {} and (forgotten.runs_seen, forgotten.succeeded, forgotten.events) == (1, 1, 2)
    assert len(harness.store[KEY]) < 200  # what is kept has a fixed size
    fresh = harness.feed([raw(5, result("e2", "RUNNING", 8 * DAY + 700, start=8 * DAY + 700), 8 * DAY + 700)])
    assert moves(fresh) == [("e2", None, "RUNNING", "vendor", False)]  # a new run still opens


# --- case 5: packing does not change the answer (R19) -----------------------------------


def test_r19_one_poll_of_two_runs_gives_what_two_messages_give():
    packed, apart = Harness(), Harness()
    for harness in (packed, apart):
        harness.feed([raw(0, result("e1", "RUNNING", 0), 0)])
    one = packed.feed([raw(1, [result("e1", "RUNNING", 100, rid="r1b"), result("e2", "RUNNING", 300, start=300)], 300)])
    two = apart.feed([raw(1, result("e1", "RUNNING", 100, rid="r1b"), 100)])
    two += apart.feed([raw(2, result("e2", "RUNNING", 300, start=300), 300)])
    assert moves(one) == moves(two) == [("e2", None, "RUNNING", "vendor", False)]
    assert job(packed).stale_episodes == job(apart).stale_episodes == 0


EVENTS = st.lists(
    st.tuples(st.sampled_from(["e1", "e2", "e3"]), st.sampled_from(["RUNNING", "SUCCEEDED", "FAILED"]),
              st.integers(0, 1500)),
    min_size=1, max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.lists(st.booleans(), min_size=12, max_size=12))
def test_r19_final_state_and_transitions_do_not_depend_on_how_events_are_packed(events, cuts):
    """The same events, one message each or packed into fewer messages (received when
    the earliest event of the message happened, so no receipt time moves a deadline).
    A poll holds one result per execution (the QRS normalizer reads several results of
    one execution in one poll as its attempts)."""
    docs = [(result(execution, state, at, start=0, rid=f"r{n}"), at) for n, (execution, state, at) in enumerate(events)]
    groups: list[list[tuple[dict, int]]] = [[]]
    for n, doc in enumerate(docs):
        if n and (cuts[n] or any(other["executionID"] == doc[0]["executionID"] for other, _ in groups[-1])):
            groups.append([])
        groups[-1].append(doc)
    alone, packed = Harness(max_clock_skew_s=DAY), Harness(max_clock_skew_s=DAY)
    single = []
    for offset, (doc, at) in enumerate(docs):
        single += alone.feed([raw(offset, doc, at)])
    together = []
    for offset, group in enumerate(groups):
        together += packed.feed([raw(offset, [doc for doc, _ in group], min(at for _, at in group))])
    assert [t["transition_id"] for t in of(together, catalog.TRANSITIONS)] == [
        t["transition_id"] for t in of(single, catalog.TRANSITIONS)]
    assert comparable(job(packed)) == comparable(job(alone))


def comparable(state):
    """The job without the receipt times that packing changes by design and that move
    nothing here (``alive_at`` stays at or before the run's last event)."""
    runs = {key: msgspec.structs.replace(run, alive_at=None) for key, run in state.runs.items()}
    return msgspec.structs.replace(state, runs=runs, evicted_at=None)


# --- case 6: a skewed clock does not freeze a run (R19) ---------------------------------


def test_r19_a_skewed_event_does_not_hide_a_later_true_outcome_nor_push_the_deadline():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0, ts=0)])
    skewed = harness.feed([raw(1, result("e1", "RUNNING", DAY, start=1), 30, ts=30)])  # a day ahead
    assert [e["skewed"] for e in of(skewed, catalog.EVENTS)] == [True]
    run = next(iter(job(harness).runs.values()))
    assert run.deadline <= secs(30 + 240)  # no later than trusted activity allows
    failed = harness.feed([raw(2, result("e1", "FAILED", 90), 90, ts=90)])
    assert moves(failed) == [("e1", "RUNNING", "FAILED", "vendor", False)]
    assert job(harness).failed == 1


def test_r19_a_skewed_run_with_no_true_outcome_goes_stale_on_trusted_time():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0, ts=0)])
    harness.feed([raw(1, result("e1", "RUNNING", DAY, start=1), 30, ts=30)])
    assert moves(harness.feed([beat(2, 3600)])) == [("e1", "RUNNING", "STALE", "stale_timeout", False)]


# --- case 7: the bounds' edges ------------------------------------------------------------


def test_r20_a_resent_run_older_than_the_memory_of_evicted_runs_is_not_counted_again():
    harness = Harness()
    for n in range(300):
        harness.feed([raw(n, result(f"f{n:03}", "SUCCEEDED", 60 * n + 30, start=60 * n), 60 * n + 30)])
    assert len(job(harness).evicted) == 256
    resent = harness.feed([raw(300, result("f000", "SUCCEEDED", 30, start=0), 300 * 60)])
    assert moves(resent) == [("f000", "SUCCEEDED", "SUCCEEDED", "vendor", True)]
    assert (job(harness).runs_seen, job(harness).succeeded) == (300, 300)
    new = harness.feed([raw(301, result("f300", "SUCCEEDED", 300 * 60 + 30, start=300 * 60), 300 * 60 + 30)])
    assert moves(new) == [("f300", None, "SUCCEEDED", "vendor", False)]


# --- case 8: event time per source, heartbeats stored ------------------------------------


def test_event_time_moved_by_heartbeats_survives_a_restart():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0)])
    harness.feed([beat(1, 100), beat(2, 200)])
    harness.restart()
    harness.core.process([])  # the index rebuild
    assert harness.core.watermark(QRS, 0) == secs(200)
    assert moves(harness.feed([beat(3, 239)])) == []  # 200 -> 239 s: not yet due (240 s)


def test_one_source_with_a_fast_clock_does_not_make_another_sources_runs_stale():
    harness = Harness()
    harness.feed([raw(0, result("e1", "RUNNING", 0), 0)])
    other = b"qlik_qrs:qs2:task-9"
    ahead = harness.feed([raw(1, result("x1", "RUNNING", 3600, task="task-9"), 3600, key=other, source="qs2"),
                          beat(2, 7200, source="qs2")])
    assert [m for m in moves(ahead) if m[0] == "e1"] == []  # qs1's run hears nothing of qs2's time
    assert harness.core.watermark(QRS, 0, "qs1") == secs(0)
    assert harness.core.watermark(QRS, 0) == secs(0)  # the partition's progress: every source reached it
    assert moves(harness.feed([beat(3, 240)])) == [("e1", "RUNNING", "STALE", "stale_timeout", False)]


def test_r21_a_run_evicted_open_leaves_with_a_record_and_its_outcome_still_counts_once():
    harness = Harness()
    for n in range(100):
        harness.feed([raw(n, result(f"e{n:03}", "RUNNING", n), n)])
    opened = harness.feed([raw(100, result("e100", "RUNNING", 100), 100)])  # the 101st open run
    assert [m for m in moves(opened) if m[0] == "e000"] == [("e000", "RUNNING", "RUNNING", "evicted", False)]
    [last] = [r for r in of(opened, catalog.RUNS) if r["run_key"].endswith("e000")]
    assert last["left_open"] is True and last["deadline"] is None and last["state"] == "RUNNING"
    done = harness.feed([raw(101, result("e000", "SUCCEEDED", 150), 150)])
    assert moves(done) == [("e000", "RUNNING", "SUCCEEDED", "vendor", False)]
    assert [e["late"] for e in of(done, catalog.EVENTS)] == [False]
    assert (job(harness).succeeded, job(harness).runs_seen) == (1, 101)
    again = harness.feed([raw(102, result("e000", "SUCCEEDED", 150, rid="again"), 160)])
    assert moves(again) == [("e000", "SUCCEEDED", "SUCCEEDED", "vendor", True)] and job(harness).succeeded == 1
    expired = harness.feed([beat(103, 100000)])
    assert "e000" not in {m[0] for m in moves(expired)}
