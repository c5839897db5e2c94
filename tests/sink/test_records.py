"""Decoding one batch: dedupe within it, highest version wins, bad records dead-lettered."""

from __future__ import annotations

import base64

import orjson

from pipeline import catalog
from pipeline.sink.records import KafkaRecord, decode_batch
from tests.support.records import Story


def kept(batch, table: str) -> list[dict]:
    """The records a batch keeps for a table, as JSON objects."""
    return [orjson.loads(v) for v in batch.tables[table].column("value").to_pylist()]


def rec(topic: str, offset: int, value: dict | bytes | None, partition: int = 0) -> KafkaRecord:
    data = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return KafkaRecord(topic, partition, offset, 1_764_493_200_000, b"key", data)


def test_events_and_transitions_keep_one_row_per_id():
    s = Story()
    e = s.event("j", "r", 1, "RUNNING")
    t = s.transition("j", "r", 1, None, "RUNNING")
    batch = decode_batch([
        rec(catalog.EVENTS, 0, e), rec(catalog.EVENTS, 1, e), rec(catalog.EVENTS, 2, s.event("j", "r", 2, "SUCCEEDED")),
        rec(catalog.TRANSITIONS, 0, t), rec(catalog.TRANSITIONS, 1, t),
    ])
    assert [r["event_id"] for r in kept(batch, "job_events")] == [e["event_id"], s.event("j", "r", 2, "x")["event_id"]]
    assert kept(batch, "job_transitions") == [t]
    assert batch.next_offsets == {(catalog.EVENTS, 0): 3, (catalog.TRANSITIONS, 0): 2}


def test_a_run_changed_many_times_in_one_batch_keeps_its_highest_version_whatever_the_order():
    s = Story()
    versions = [3, 1, 5, 2, 4]
    batch = decode_batch([
        rec(catalog.RUNS, i, s.run("j", "r", v, "SUCCEEDED" if v == 5 else "RUNNING")) for i, v in enumerate(versions)
    ])
    assert [(r["version"], r["state"]) for r in kept(batch, "job_runs")] == [(5, "SUCCEEDED")]


def test_alerts_keep_the_final_status_over_a_later_fired():
    s = Story()
    batch = decode_batch([
        rec(catalog.ALERTS, 0, s.alert(1, "fired")), rec(catalog.ALERTS, 1, s.alert(1, "delivered")),
        rec(catalog.ALERTS, 2, s.alert(1, "fired")),
    ])
    assert [a["status"] for a in kept(batch, "alerts")] == ["delivered"]
    assert batch.tables["alerts"].select(["status_rank", "kafka_offset"]).to_pylist() == [{"status_rank": 1, "kafka_offset": 1}]


def test_records_that_do_not_decode_become_dead_letters_with_their_position_and_reason():
    s = Story()
    good = s.event("j", "r", 1, "RUNNING")
    missing = {k: v for k, v in good.items() if k != "schema_version"}
    newer = {**good, "schema_version": 2, "renamed_field": 1}
    newer_shape = {"schema_version": 2, "event": {"id": "x"}}
    batch = decode_batch([
        rec(catalog.EVENTS, 10, b"\xff not json", partition=3), rec(catalog.EVENTS, 11, missing, partition=3),
        rec(catalog.EVENTS, 12, newer, partition=3), rec(catalog.EVENTS, 13, newer_shape, partition=3),
        rec(catalog.EVENTS, 14, None, partition=3), rec(catalog.EVENTS, 15, {**good, "occurred_at": "yesterday"}, partition=3),
        rec(catalog.EVENTS, 16, {**good, "occurred_at": "2026-11-30T09:00:01"}, partition=3),
        rec(catalog.EVENTS, 17, {**good, "attempt": 2**40}, partition=3),
    ])
    letters = {r["offset"]: r for r in batch.tables["sink_dead_letters"].to_pylist()}
    assert "job_events" not in batch.tables
    assert sorted(letters) == [10, 11, 12, 13, 14, 15, 16, 17]
    assert all(r["topic"] == catalog.EVENTS and r["partition"] == 3 and r["stage"] == "sink" for r in letters.values())
    assert letters[10]["error_type"] == "DecodeError"
    assert base64.b64decode(letters[10]["value_b64"]) == b"\xff not json"
    assert "schema_version" in letters[11]["reason"] and letters[11]["error_type"] == "ValidationError"
    assert letters[12]["error_type"] == letters[13]["error_type"] == "UnknownSchemaVersion"
    assert letters[13]["reason"] == "schema_version 2 is not 1, the version this sink reads"
    assert "tombstone" in letters[14]["reason"]
    assert "occurred_at" in letters[15]["reason"]
    assert letters[16]["reason"] == "Expected `datetime` with a timezone component - at `$.occurred_at`"
    assert "attempt" in letters[17]["reason"]
    assert letters[10]["dead_letter_id"] == f"{catalog.EVENTS}:3:10"
    assert batch.next_offsets == {(catalog.EVENTS, 3): 18}


def test_invalid_utf8_where_msgspec_does_not_look_is_a_dead_letter_and_the_batch_goes_on():
    s = Story()
    good = s.event("j", "r", 1, "RUNNING")
    text = orjson.dumps({**good, "attrs": {"note": "caf\u00e9"}})
    broken_attrs = orjson.dumps({**good, "attrs": {"note": "X"}}).replace(b'"X"', b'"\xff"')
    broken_unknown_field = orjson.dumps({**good, "extra": "X"}).replace(b'"X"', b'"\xfe"')
    batch = decode_batch([
        rec(catalog.EVENTS, 0, broken_attrs), rec(catalog.EVENTS, 1, broken_unknown_field), rec(catalog.EVENTS, 2, text),
    ])
    letters = batch.tables["sink_dead_letters"].to_pylist()
    assert [(r["offset"], r["error_type"]) for r in letters] == [(0, "UnicodeDecodeError"), (1, "UnicodeDecodeError")]
    assert kept(batch, "job_events") == [orjson.loads(text)]
