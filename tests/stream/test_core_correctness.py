"""Issues 23 and 25 through the in-memory harness: each failure the review reproduced,
and the output contract of docs/records.md field by field."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key
from pipeline.stream.records import Message
from pipeline.stream.state import CLOCK_KEY_PREFIX, decode_entry
from tests.support.stream import T0, TOPIC, Harness, message, transitions, truenas_job

KEY = b"truenas:nas1:pool.scrub"
ZUORA = catalog.raw_topic("zuora")

T0_MS = int(T0.timestamp() * 1000)  # TrueNAS run keys: host, time_started (ms), id


def of(outputs: list, topic: str) -> list[dict]:
    return [value for t, _key, value in outputs if t == topic]


def heartbeat(offset: int, at: datetime, *, partition: int = 0, source: str = "nas1", vendor: str = "truenas") -> Message:
    value = encode_envelope(RawEnvelope(vendor=vendor, source=source, received_at=at, heartbeat=True))
    return Message(catalog.raw_topic(vendor), partition, offset, heartbeat_key(source), value)


# --- 25.1 deadlines follow the current stale_after --------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("before, after, stale_at", [(60, 3600, 3600), (3600, 60, 60)])
def test_a_changed_stale_after_between_restarts_neither_hangs_nor_fires_twice(before, after, stale_at):
    harness = Harness(stale_after_s=before)
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0)])
    harness.settings = dataclasses.replace(harness.settings, stale_after_s=after)
    harness.restart()
    outputs = harness.feed([message(1, truenas_job(2, "RUNNING"), at=T0 + timedelta(seconds=120))])
    outputs += harness.feed([heartbeat(2, T0 + timedelta(seconds=4000))])
    outputs += harness.feed([heartbeat(3, T0 + timedelta(seconds=9000))])
    stale = [t for t in of(outputs, catalog.TRANSITIONS) if t["cause"] == "stale_timeout"]
    assert [(t["run_key"], t["at"]) for t in stale if t["run_key"].endswith(":1")] == [
        (f"truenas:nas1:{T0_MS}:1", (T0 + timedelta(seconds=stale_at)).isoformat().replace("+00:00", "Z"))
    ]


# --- 25.3 bounded state -----------------------------------------------------------------


def _finished_runs(harness: Harness, first: int, count: int, *, per_batch: int = 1000) -> None:
    for start in range(first, first + count, per_batch):
        harness.feed([
            message(n, truenas_job(n, "SUCCESS", finished=T0 + timedelta(seconds=n)), at=T0 + timedelta(seconds=n))
            for n in range(start, min(start + per_batch, first + count))
        ])


def test_after_100000_runs_of_one_job_the_entry_is_as_small_as_after_100():
    # Time never evicts here: only the counts bound the entry (8 recent runs, 64 remembered).
    harness = Harness(run_retention_s=10**9, evicted_memory=64)
    _finished_runs(harness, 0, 100)
    small = len(harness.store[KEY])
    _finished_runs(harness, 100, 99_900)
    entry = harness.store[KEY]
    assert len(entry) <= small * 1.05  # the same shape; only the run numbers in it grew longer
    job = decode_entry(entry).job
    assert (job.runs_seen, job.succeeded, len(job.runs)) == (100_000, 100_000, 8)


def test_no_entry_exceeds_max_entry_bytes_whatever_its_runs_carry():
    harness = Harness(max_entry_bytes=8 * 1024, max_runs_per_job=1000)
    long_method = "m" * 200
    harness.feed([
        message(n, truenas_job(n, "RUNNING", method=long_method), at=T0 + timedelta(seconds=n),
                key=f"truenas:nas1:{long_method}".encode())
        for n in range(200)
    ])
    assert max(len(value) for value in harness.store.values()) <= 8 * 1024


def test_a_job_with_nothing_left_is_forgotten_without_another_event_of_its_own():
    """Forgotten, not deleted (R20): the entry keeps counts, the applied offset and
    seen_until at a fixed size, and is not written again by later event time."""
    harness = Harness(run_retention_s=60, forget_after_s=600)
    harness.feed([message(0, truenas_job(1, "SUCCESS", finished=T0), at=T0)])
    assert KEY not in harness.core.process([heartbeat(1, T0 + timedelta(seconds=599))]).writes  # one write, not two
    batch = harness.core.process([heartbeat(2, T0 + timedelta(seconds=600))])
    assert [key for key in batch.writes if not key.startswith(CLOCK_KEY_PREFIX)] == [KEY]
    entry = decode_entry(batch.writes[KEY][1])
    assert entry.offset == 0 and entry.job.runs == {} and entry.job.succeeded == 1 and entry.job.seen_until == T0
    assert len(batch.writes[KEY][1]) < 200
    harness.store[KEY] = batch.writes[KEY][1]
    assert KEY not in harness.core.process([heartbeat(3, T0 + timedelta(days=30))]).writes


# --- 25.4 event time: skewed clocks and heartbeats --------------------------------------


def zuora_task(token: str, status: str, last: datetime) -> dict:
    return {"task_id": token, "status": status, "accumulate": 1, "metric": 1, "message": None,
            "activity_tracker": {"elapsed_time": "0:00:01.000000", "initated_time": "2026-11-30 09:00:00",
                                 "last_activity": last.strftime("%Y-%m-%d %H:%M:%S")},
            "query_config": {"object_name": "RPRO_BI3_RC_SCHD_V"}}


def zuora_poll(offset: int, received: datetime, **queues: list) -> Message:
    doc = {"active": [], "completed": [], "draining": [], "stale": [], **queues}
    value = encode_envelope(RawEnvelope(vendor="zuora", source="tenant", received_at=received, payload=doc))
    return Message(ZUORA, 0, offset, b"zuora:tenant:RPRO_BI3_RC_SCHD_V", value)


def test_one_skewed_clock_does_not_make_other_runs_stale():
    """Issue 25 case 4: poll 2 shows task B a year ahead; A still completes cleanly."""
    nine = datetime(2026, 11, 30, 9, 0, 1, tzinfo=UTC)
    harness = Harness()
    outputs = harness.feed([zuora_poll(0, nine + timedelta(seconds=4), active=[zuora_task("A", "SCANNING-PAGE-1", nine)])])
    outputs += harness.feed([zuora_poll(1, nine + timedelta(seconds=34),
                                        active=[zuora_task("B", "SCANNING-PAGE-1", nine + timedelta(days=365))])])
    outputs += harness.feed([zuora_poll(2, nine + timedelta(seconds=64),
                                        completed=[zuora_task("A", "COMPLETED", nine + timedelta(seconds=60))])])
    assert [(k, f, t) for k, f, t, _c in transitions(outputs) if k == "A"] == [
        ("A", None, "RUNNING"), ("A", "RUNNING", "SUCCEEDED"),
    ]
    skewed = {e["run_key"].rsplit(":", 1)[1]: e["skewed"] for e in of(outputs, catalog.EVENTS)}
    assert skewed == {"A": False, "B": True}
    harness.restart()  # event time is rebuilt from trusted times, not from B's
    assert harness.core.process([]).outputs == []
    assert harness.core.watermark(ZUORA, 0) == nine + timedelta(seconds=60)


def test_received_at_is_trusted_no_further_than_the_record_timestamp():
    harness = Harness(stale_after_s=60)
    record_time = int(T0.timestamp() * 1000)
    early = Message(*message(0, truenas_job(1, "RUNNING"), at=T0)[:5], record_time)
    liar = Message(*heartbeat(1, T0 + timedelta(days=1))[:5], record_time)
    outputs = harness.feed([early, liar])
    assert harness.core.watermark(TOPIC, 0) == T0 + timedelta(minutes=5)  # record time + max_clock_skew
    assert [t for t in of(outputs, catalog.TRANSITIONS) if t["cause"] == "stale_timeout"] != []


def test_heartbeats_make_a_silent_run_stale_on_a_quiet_partition_and_emit_nothing():
    harness = Harness(stale_after_s=60)
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0, partition=5)])
    assert harness.feed([heartbeat(1, T0 + timedelta(seconds=59), partition=5)]) == []
    outputs = harness.feed([heartbeat(2, T0 + timedelta(seconds=61), partition=5)])
    assert transitions(outputs) == [("1", "RUNNING", "STALE", "stale_timeout")]
    assert of(outputs, catalog.EVENTS) == []
    assert harness.core.last_heartbeats() == {("truenas", "nas1"): T0 + timedelta(seconds=61)}


# --- 25.5 late data -----------------------------------------------------------------------


def test_a_late_event_of_an_evicted_run_never_reopens_it():
    """Issue 25 case 5: a webhook retry after the finished run left the state."""
    harness = Harness(run_retention_s=60)
    done = message(0, truenas_job(1, "SUCCESS", finished=T0), at=T0)
    first = harness.feed([done, message(1, truenas_job(2, "RUNNING"), at=T0 + timedelta(seconds=100))])
    before = decode_entry(harness.store[KEY]).job
    assert f"truenas:nas1:{T0_MS}:1" not in before.runs
    retry = Message(TOPIC, 0, 2, done.key, done.value)  # the same document, re-delivered
    outputs = harness.feed([retry])
    after = decode_entry(harness.store[KEY]).job
    assert (after.runs_seen, after.succeeded, set(after.runs)) == (before.runs_seen, before.succeeded, set(before.runs))
    [event] = of(outputs, catalog.EVENTS)
    assert event["late"] is True and event["skewed"] is False
    [flagged] = of(outputs, catalog.TRANSITIONS)
    assert (flagged["from_state"], flagged["to_state"], flagged["late"]) == ("SUCCEEDED", "SUCCEEDED", True)
    assert of(outputs, catalog.RUNS) == []  # no snapshot regresses
    original = [t for t in of(first, catalog.TRANSITIONS) if t["run_key"] == f"truenas:nas1:{T0_MS}:1"]
    assert flagged["transition_id"] not in {t["transition_id"] for t in original}


# --- 23.2 nothing is sent that cannot fit ----------------------------------------------


def test_a_message_whose_outputs_cannot_fit_is_dead_lettered_and_the_partition_moves_on():
    harness = Harness(max_record_bytes=4000)
    huge = truenas_job(1, "RUNNING")
    huge["progress"]["description"], huge["error"] = "d" * 3000, "e" * 3000  # an event of ~4.5 KB
    outputs = harness.feed([
        message(0, huge, at=T0, key=b"k" * 10_000),
        message(1, truenas_job(2, "RUNNING"), at=T0),
    ])
    [letter] = of(outputs, catalog.DEADLETTER)
    assert letter["stage"] == "size" and "4000" in letter["reason"]
    assert transitions(outputs) == [("2", None, "RUNNING", "vendor")]
    assert set(decode_entry(harness.store[KEY]).job.runs) == {f"truenas:nas1:{T0_MS}:2"}


def test_dead_letters_are_keyed_by_their_id_and_a_restart_resends_them_identical():
    harness = Harness()
    poison = Message(TOPIC, 2, 7, b"x" * 900_000, b"{not json", 1_700_000_000_000)
    batch = harness.core.process([poison])
    [output] = batch.outputs
    assert output.key == f"{TOPIC}:2:7".encode()
    harness.restart()
    assert harness.core.process([poison]).outputs == [output]


# --- 25.6 the output contract, field by field -------------------------------------------

RECORDS_MD = Path(__file__).parents[2] / "docs" / "records.md"


NOT_FIELDS = {  # backticked words of records.md that are values or topics, not fields
    "vendor_", "stale_timeout", "retry", "reactivation", "decode", "normalize", "lifecycle", "expiry", "size",
    "sink", "fired", "delivered", "suppressed", "failed", "max_clock_skew", "evicted",
}


def documented_fields(section: str) -> set[str]:
    """The backticked field names of one ``## `topic` `` section of docs/records.md."""
    body = RECORDS_MD.read_text().split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([a-z_]+)`", body)) - NOT_FIELDS
    assert len(names) > 10, names
    return names


def contract_outputs() -> list:
    harness = Harness(run_retention_s=60)
    outputs = harness.feed(story_with_everything())
    return outputs


def story_with_everything() -> list[Message]:
    return [
        message(0, truenas_job(1, "RUNNING"), at=T0),
        message(1, truenas_job(1, "FAILED", finished=T0 + timedelta(seconds=5)), at=T0 + timedelta(seconds=5)),
        Message(TOPIC, 0, 2, KEY, b"{not json", 1_700_000_000_000),
    ]


def test_jobs_events_carry_every_documented_field():
    [event, *_] = of(contract_outputs(), catalog.EVENTS)
    expected = documented_fields("jobs.events") - {"topic", "partition", "offset"}
    assert expected <= set(event), expected - set(event)
    assert event["schema_version"] == 1 and event["late"] is False and event["skewed"] is False
    assert event["raw_ref"] == {"topic": TOPIC, "partition": 0, "offset": 0}


def test_jobs_transitions_carry_every_documented_field():
    [first, *_] = of(contract_outputs(), catalog.TRANSITIONS)
    assert documented_fields("jobs.transitions") <= set(first), documented_fields("jobs.transitions") - set(first)
    assert first["schema_version"] == 1 and first["from_state"] is None


def test_jobs_runs_carry_every_documented_field_and_a_growing_version():
    harness = Harness()
    outputs = []
    for m in story_with_everything()[:2]:
        outputs += harness.feed([m])
    snapshots = of(outputs, catalog.RUNS)
    assert documented_fields("jobs.runs") <= set(snapshots[0]), documented_fields("jobs.runs") - set(snapshots[0])
    assert [s["version"] for s in snapshots] == [1, 2]
    last = snapshots[-1]
    assert (last["source"], last["parent_run_key"], last["schema_version"]) == ("nas1", None, 1)
    assert last["queue_s"] is None and "queued_at" in last
    assert last["duration_s"] == 5.0


def test_jobs_deadletter_carries_every_documented_field():
    [letter] = of(contract_outputs(), catalog.DEADLETTER)
    assert documented_fields("jobs.deadletter") <= set(letter), documented_fields("jobs.deadletter") - set(letter)
    assert letter["dead_letter_id"] == f"{TOPIC}:0:2"
    assert letter["at"] == "2023-11-14T22:13:20Z"  # the record's Kafka timestamp
    assert letter["schema_version"] == 1 and letter["value_size"] == 9


# --- 25.7 a recreated raw topic is detected ------------------------------------------------


def test_a_raw_topic_whose_end_lies_below_an_applied_offset_is_reported_as_recreated():
    harness = Harness()
    harness.feed([message(n, truenas_job(n, "RUNNING"), at=T0) for n in range(5)])
    harness.restart()
    harness.core.process([])  # the index rebuild reads the stored offsets
    assert harness.core.recreated({(TOPIC, 0): 5}) == []
    [line] = harness.core.recreated({(TOPIC, 0): 2, (TOPIC, 1): 0})
    assert line == f"{TOPIC} partition 0 ends at offset 2 but the table already applied offset 4: the topic was recreated"


@pytest.mark.timeout(60)
def test_eviction_and_forgetting_due_exactly_at_a_watermark_make_progress():
    """Event time in whole seconds meets due instants exactly (retention 60 s after a
    run's last event): each due job is handled once, then forgotten (R20: no runs left,
    a small entry that keeps its offset and seen_until)."""
    harness = Harness(run_retention_s=60, forget_after_s=120)
    harness.feed([
        message(n, truenas_job(n, "SUCCESS", method=f"m{n}", finished=T0 + timedelta(seconds=n)),
                at=T0 + timedelta(seconds=n), key=f"truenas:nas1:m{n}".encode())
        for n in range(3000)
    ])
    holding = [key for key, value in harness.store.items() if decode_entry(value).job.runs]
    assert len(holding) <= 120 + 2  # only the last two minutes of jobs hold runs
    harness.feed([heartbeat(3000, T0 + timedelta(seconds=4000))])
    assert all(not decode_entry(value).job.runs and len(value) < 100 for value in harness.store.values())


def test_a_run_that_leaves_the_state_at_once_still_ends_complete_in_jobs_runs():
    """A run that goes STALE when event time jumps past its stale retention leaves in
    the same step: its last jobs.runs snapshot must say STALE, not its earlier RUNNING,
    and that it left the state open (R21: one version after the STALE one)."""
    harness = Harness(stale_retention_s=86400)
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0)])
    outputs = harness.feed([message(1, truenas_job(2, "RUNNING"), at=T0 + timedelta(days=2))])
    assert f"truenas:nas1:{T0_MS}:1" not in decode_entry(harness.store[KEY]).job.runs
    [snapshot] = [r for r in of(outputs, catalog.RUNS) if r["run_key"] == f"truenas:nas1:{T0_MS}:1"]
    assert (snapshot["state"], snapshot["stale_episodes"], snapshot["version"], snapshot["left_open"]) == (
        "STALE", 1, 3, True)


def test_a_rebalance_rebuilds_only_the_partitions_gained():
    harness = Harness(stale_after_s=60)
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0, partition=0)])
    harness.feed([message(0, truenas_job(2, "RUNNING", method="other"), at=T0, partition=1,
                          key=b"truenas:nas1:other")])
    harness.core.assign({0, 2})  # kept 0, lost 1, gained 2
    assert harness.core.watermark(TOPIC, 0) == T0 and harness.core.watermark(TOPIC, 1) is None
    scanned = list(harness.core.index_steps(chunk=1))
    assert len(scanned) == 2  # every stored entry is read once, but only partition 2's are indexed
    assert harness.core.watermark(TOPIC, 1) is None  # partition 1's entry was not taken in
    outputs = harness.feed([heartbeat(1, T0 + timedelta(seconds=61), partition=0)])
    assert transitions(outputs) == [("1", "RUNNING", "STALE", "stale_timeout")]


def test_json_nested_10000_deep_is_a_dead_letter_and_the_partition_moves_on():
    """Found by `pipeline chaos`: msgspec raises RecursionError (not DecodeError) on
    deep nesting, which used to escape the decode stage and end the worker, again at
    every restart on the same record."""
    harness = Harness()
    deep = b'{"vendor":"truenas","source":"nas1","received_at":"2026-11-30T09:00:00Z","payload":' \
        + b"[" * 10_000 + b"]" * 10_000 + b"}"
    outputs = harness.feed([
        Message(TOPIC, 0, 0, KEY, deep, 1_700_000_000_000),
        message(1, truenas_job(1, "RUNNING"), at=T0),
    ])
    [letter] = of(outputs, catalog.DEADLETTER)
    assert (letter["stage"], letter["error_type"], letter["offset"]) == ("decode", "RecursionError", 0)
    assert transitions(outputs) == [("1", None, "RUNNING", "vendor")]


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
def test_invalid_utf8_inside_an_envelope_is_a_dead_letter_and_the_partition_moves_on(bad):
    """Found by `pipeline chaos`: msgspec raises UnicodeDecodeError (not DecodeError)
    for invalid UTF-8 in a string; it used to end the worker like deep nesting did."""
    harness = Harness()
    value = b'{"vendor":"truenas","source":"nas' + bad + b'1","received_at":"2026-11-30T09:00:00Z","payload":null}'
    outputs = harness.feed([
        Message(TOPIC, 0, 0, KEY, value, 1_700_000_000_000),
        message(1, truenas_job(1, "RUNNING"), at=T0),
    ])
    [letter] = of(outputs, catalog.DEADLETTER)
    assert (letter["stage"], letter["offset"]) == ("decode", 0)
    assert transitions(outputs) == [("1", None, "RUNNING", "vendor")]
