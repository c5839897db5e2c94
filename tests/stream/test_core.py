"""The worker's logic in an in-memory harness: a dict is the table, lists are topics."""

from __future__ import annotations

import pathlib
from datetime import timedelta

import msgspec
import orjson

from pipeline import catalog
from pipeline.model import RawEnvelope, encode_envelope
from pipeline.stream.records import Message
from pipeline.stream.state import decode_entry
from tests.support.stream import T0, TOPIC, Harness, message, transitions, truenas_job


INFORMATICA_SEED = pathlib.Path(__file__).parents[1] / "vendors/fixtures/informatica/seed_publication_with_child.json"


def story() -> list[Message]:
    """Job 1 runs, goes quiet for 300 s (stale), comes back and succeeds; job 2 fails."""
    return [
        message(0, truenas_job(1, "WAITING"), at=T0),
        message(1, truenas_job(1, "RUNNING", percent=10), at=T0 + timedelta(seconds=5)),
        message(2, truenas_job(2, "RUNNING", method="pool.scrub"), at=T0 + timedelta(seconds=305)),
        message(3, truenas_job(1, "RUNNING", percent=50), at=T0 + timedelta(seconds=310)),
        Message(TOPIC, 0, 4, b"truenas:nas1:pool.scrub", b"{not json"),
        message(5, truenas_job(1, "SUCCESS", finished=T0 + timedelta(seconds=320)), at=T0 + timedelta(seconds=321)),
        message(6, truenas_job(2, "FAILED", finished=T0 + timedelta(seconds=330)), at=T0 + timedelta(seconds=331)),
    ]


def test_story_gives_stale_reactivation_and_terminal_transitions():
    outputs = Harness().feed(story())
    assert transitions(outputs) == [
        ("1", None, "PENDING", "vendor"),
        ("1", "PENDING", "RUNNING", "vendor"),
        ("1", "RUNNING", "STALE", "stale_timeout"),
        ("2", None, "RUNNING", "vendor"),
        ("1", "STALE", "RUNNING", "reactivation"),
        ("1", "RUNNING", "SUCCEEDED", "vendor"),
        ("2", "RUNNING", "FAILED", "vendor"),
    ]
    stale = [t for topic, _k, t in outputs if topic == catalog.TRANSITIONS and t["cause"] == "stale_timeout"]
    assert stale[0]["at"].startswith("2026-01-01T12:04:05")  # last activity + 240 s, not the watermark
    assert sum(1 for topic, *_ in outputs if topic == catalog.EVENTS) == 6


def test_poison_message_goes_to_the_dead_letter_topic_and_the_rest_goes_on():
    outputs = Harness().feed(story())
    dead = [v for topic, _k, v in outputs if topic == catalog.DEADLETTER]
    assert len(dead) == 1
    assert dead[0]["stage"] == "decode" and dead[0]["offset"] == 4 and dead[0]["topic"] == TOPIC
    assert dead[0]["value_preview"] == "{not json"


def test_normalize_rejections_are_dead_letters_with_the_vendor_reason():
    bad = message(0, {"msg": "changed", "collection": "core.get_jobs", "id": 9, "fields": {"state": "RUNNING"}}, at=T0)
    wrong_vendor = Message(TOPIC, 0, 1, b"k", encode_envelope(RawEnvelope(vendor="zuora", source="x", received_at=T0, payload={})))
    unknown_topic = Message("raw.nobody", 0, 0, b"k", b"{}")
    empty = Message(TOPIC, 0, 2, b"k", None)
    outputs = Harness().feed([bad, wrong_vendor, unknown_topic, empty])
    dead = [v for topic, _k, v in outputs if topic == catalog.DEADLETTER]
    assert [d["stage"] for d in dead] == ["normalize", "decode", "decode", "decode"]
    assert "method" in dead[0]["reason"]
    assert "zuora" in dead[1]["reason"]
    assert all(d["reason"] for d in dead)


def test_batching_does_not_change_the_outputs():
    """The consistency oracle: one batch, or one message a batch, gives the same records."""
    whole = Harness().feed(story())
    one_by_one_harness = Harness()
    one_by_one = [o for m in story() for o in one_by_one_harness.feed([m])]
    assert transitions(whole) == transitions(one_by_one)
    events = lambda outs: [v["event_id"] for t, _k, v in outs if t == catalog.EVENTS]  # noqa: E731
    assert events(whole) == events(one_by_one)


def test_killed_after_storing_before_committing_skips_what_was_applied_and_emits_nothing_twice():
    """Failure table, row 3: state stored, offsets not committed; Kafka re-delivers."""
    harness = Harness()
    messages = story()
    first = harness.feed(messages[:4])  # offsets 0-3 applied and stored, not committed
    harness.restart()  # same store: the changelog-recovered table
    again = harness.feed(messages)  # Kafka redelivers from the last committed offset
    assert transitions(again) == [
        ("1", "RUNNING", "SUCCEEDED", "vendor"),
        ("2", "RUNNING", "FAILED", "vendor"),
    ]
    assert transitions(first) + transitions(again) == transitions(Harness().feed(messages))


def test_entries_remember_partition_offsets_and_jobs():
    harness = Harness()
    harness.feed(story())
    entry = decode_entry(harness.store[b"truenas:nas1:pool.scrub"])
    assert entry.partition == 0
    assert entry.offset == 6
    assert entry.job.job_key == "truenas:nas1:pool.scrub"


def test_unkeyed_messages_are_kept_under_their_job_key():
    harness = Harness()
    harness.feed([
        message(0, truenas_job(7, "RUNNING"), at=T0, key=b"", partition=2),
    ])
    assert list(harness.store) == [b"truenas:nas1:pool.scrub"]
    assert decode_entry(harness.store[b"truenas:nas1:pool.scrub"]).partition == 2


def test_finished_and_long_stale_runs_leave_the_table_but_counts_stay():
    harness = Harness(run_retention_s=60, stale_retention_s=600)
    harness.feed([
        message(0, truenas_job(1, "SUCCESS", finished=T0), at=T0),
        message(1, truenas_job(2, "RUNNING"), at=T0),
        message(2, truenas_job(3, "RUNNING"), at=T0 + timedelta(seconds=700)),  # 1 leaves; 2 went stale at 240
        message(3, truenas_job(4, "RUNNING"), at=T0 + timedelta(seconds=1000)),  # 2 silent > 600 s: leaves; 3 stale
    ])
    job = decode_entry(harness.store[b"truenas:nas1:pool.scrub"]).job
    runs = {key.rsplit(":", 1)[1]: run for key, run in job.runs.items()}  # keys: host, time_started, id
    assert set(runs) == {"3", "4"}
    assert runs["3"].state == "STALE"
    assert (job.runs_seen, job.succeeded, job.stale_episodes) == (4, 1, 2)


def test_a_lifecycle_failure_keeps_nothing_of_its_message_and_a_redelivery_changes_nothing(monkeypatch):
    """A message whose second job makes the lifecycle raise: nothing of it is applied or
    sent (not even its first job), one dead letter, and the same outputs after a restart."""
    from pipeline.stream import core as core_module

    real_apply_job = core_module.lifecycle.apply_job

    def apply_job(job, event, **kwargs):
        if event.run_key.endswith(":2"):
            raise RuntimeError("lifecycle bug")
        return real_apply_job(job, event, **kwargs)

    monkeypatch.setattr(core_module.lifecycle, "apply_job", apply_job)
    both = {"jsonrpc": "2.0", "id": 1, "result": [truenas_job(1, "RUNNING"), truenas_job(2, "RUNNING")]}
    harness = Harness()
    live = harness.feed([message(0, both, at=T0), message(1, truenas_job(3, "RUNNING"), at=T0)])
    assert [(t, v.get("stage")) for t, _k, v in live if t != catalog.RUNS] == [
        (catalog.DEADLETTER, "lifecycle"), (catalog.EVENTS, None), (catalog.TRANSITIONS, None),
    ]
    entry = decode_entry(harness.store[b"truenas:nas1:pool.scrub"])
    assert [key.rsplit(":", 1)[1] for key in entry.job.runs] == ["3"]
    assert entry.offset == 1
    harness.restart()
    assert harness.feed([message(0, both, at=T0), message(1, truenas_job(3, "RUNNING"), at=T0)]) == []


def test_an_oversized_poison_message_gets_a_dead_letter_that_fits_in_one_request():
    huge = b"{" + b"x" * 800_000
    [(topic, _key, letter)] = Harness().feed([Message(TOPIC, 0, 0, b"k", huge)])
    assert topic == catalog.DEADLETTER
    assert letter["value_b64"] is None and letter["value_size"] == len(huge)
    assert letter["value_preview"].startswith("{xxx")


def test_a_key_seen_on_another_partition_writes_nothing_and_is_dead_lettered():
    """Issue 25 case 2: the old entry must not be written to partition 0 while the
    batch processes partition 1 (with RocksDB that crash-looped the worker)."""
    harness = Harness()
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0, partition=0)])
    stored = dict(harness.store)
    batch = harness.core.process([message(0, truenas_job(1, "SUCCESS"), at=T0, partition=3)])
    assert batch.writes == {}
    [(topic, key, value, _partition)] = batch.outputs
    letter = msgspec.json.decode(value)
    assert topic == catalog.DEADLETTER and letter["stage"] == "partition" and letter["error_type"] == "PartitionMismatch"
    assert key == f"{TOPIC}:3:0".encode()
    assert harness.store == stored


def test_a_raw_key_that_differs_from_the_job_key_still_gives_one_lifecycle():
    """Two raw keys carrying the same job's run: one run, one lifecycle, not two."""
    harness = Harness()
    outputs = harness.feed([
        message(0, truenas_job(1, "RUNNING"), at=T0, key=b"producer-a"),
        message(1, truenas_job(1, "SUCCESS", finished=T0 + timedelta(seconds=9)), at=T0 + timedelta(seconds=9),
                key=b"producer-b"),
    ])
    assert transitions(outputs) == [("1", None, "RUNNING", "vendor"), ("1", "RUNNING", "SUCCEEDED", "vendor")]
    assert list(harness.store) == [b"truenas:nas1:pool.scrub"]


def test_killed_after_sending_but_before_storing_gives_the_same_records_again():
    """Failure table, row 2: outputs were sent, the state was not stored. The batch is
    consumed again and gives records with the same ids, which downstream dedupes."""
    harness = Harness()
    batch = harness.core.process(story())  # steps 1-2 happened; step 3 (store) never did
    first = [(o.topic, o.key, o.value) for o in batch.outputs]
    harness.restart()
    again = harness.core.process(story())
    assert [(o.topic, o.key, o.value) for o in again.outputs] == first


def test_the_entry_cache_is_bounded_by_encoded_size_and_changes_no_output():
    """Entries that leave the cache are read back from the store: a worker with no
    cache at all gives the same records as one that keeps every entry decoded."""
    many_jobs = [
        message(n, truenas_job(n, "RUNNING", method=f"job{n % 40}"), at=T0 + timedelta(seconds=n),
                key=f"truenas:nas1:job{n % 40}".encode())
        for n in range(400)
    ]

    def run(cache_bytes: int) -> tuple[list, Harness]:
        harness = Harness(entry_cache_bytes=cache_bytes)
        outputs = [o for start in range(0, len(many_jobs), 25) for o in harness.feed(many_jobs[start:start + 25])]
        return outputs, harness

    cached, everything = run(100 * 1024**2)
    uncached, nothing = run(0)
    bounded, some = run(4096)
    assert cached == uncached == bounded
    assert len(everything.core._cache) == 40 and not nothing.core._cache
    assert 0 < some.core._cache_bytes <= 4096
    assert some.core._cache_bytes == sum(size for _entry, size in some.core._cache.values())


def test_an_event_applied_under_a_runs_other_name_sends_that_runs_snapshot():
    """R17: a QRS reload task names an execution by its result id; the execution result,
    under its executionID, is applied to that run. jobs.runs must get the run's new
    snapshot (two events, version 2), or the stored row stays behind the fold."""
    topic = catalog.raw_topic("qlik_qrs")
    iso = lambda n: (T0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    reload_task = {"id": "task-1", "name": "Reload Sales", "operational": {"id": "op-1", "lastExecutionResult": {
        "id": "result-1", "executingNodeName": "node-1", "status": 7, "startTime": iso(0), "stopTime": iso(30),
        "duration": 30000, "details": []}}}
    result = {"id": "result-1", "taskID": "task-1", "executionID": "exec-1", "appID": "app-3", "status": 7,
              "startTime": iso(0), "stopTime": iso(30), "modifiedDate": iso(30), "details": []}

    def raw(offset: int, payload: dict) -> Message:
        value = encode_envelope(RawEnvelope(vendor="qlik_qrs", source="qrs1", received_at=T0 + timedelta(seconds=40),
                                            payload=payload))
        return Message(topic, 0, offset, b"qlik_qrs:qrs1:task-1", value)

    harness = Harness()
    first = harness.feed([raw(0, reload_task)])
    second = harness.feed([raw(1, result)])
    [named] = [r for t, _k, r in first if t == catalog.RUNS]
    assert named["run_key"].endswith(":result:result-1") and named["events"] == 1
    snapshots = [r for t, _k, r in second if t == catalog.RUNS]
    assert [(r["run_key"], r["events"], r["version"]) for r in snapshots] == [(named["run_key"], 2, 2)]


def test_a_count_no_64_bit_integer_holds_is_a_dead_letter_and_the_worker_goes_on():
    """Chaos seed 3: ``targetSuccessCount: 1e308`` in an Informatica child event was accepted,
    then the state encoder raised OverflowError out of ``StreamCore.process`` (a crash loop)."""
    seed = orjson.loads(INFORMATICA_SEED.read_bytes())
    huge = {**seed, "targetSuccessCount": 1e308}
    topic = catalog.raw_topic("informatica")

    def raw(offset: int, payload: dict) -> Message:
        value = encode_envelope(RawEnvelope(vendor="informatica", source="org", received_at=T0, payload=payload))
        return Message(topic, 0, offset, b"informatica:org:app/pub", value)

    outputs = Harness().feed([raw(0, huge), raw(1, seed)])
    dead = [v for t, _k, v in outputs if t == catalog.DEADLETTER]
    assert [d["stage"] for d in dead] == ["normalize"] and "2**63-1" in dead[0]["reason"]
    assert any(t == catalog.EVENTS for t, *_ in outputs), "the good record after it was not applied"
