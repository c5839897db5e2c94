"""The wire contract (pipeline/contract.py) against its page (docs/records.md), its readers'
views, and what the writers really emit over a full story of every vendor."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import orjson
import pytest

from pipeline import catalog, contract, vendors
from pipeline.alerts import logic, rules
from pipeline.alerts.records import decode_dead_letter, decode_run, decode_transition, encode
from pipeline.alerts.service import alert_record
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key
from pipeline.vendors import registry
from pipeline.normalize_cli import documents
from pipeline.sink.records import TOPIC_TABLES, BatchBuilder, KafkaRecord
from pipeline.stream.records import Message
from tests.support.stream import Harness

DOC = Path(__file__).parent.parent / "docs" / "records.md"

# Backticked words in a topic's section of records.md that are values or other topics, not
# field names (a value that is also a field's name, as the cause `vendor`, counts as the field).
VALUES = {
    catalog.EVENTS: {"jobs.transitions", "jobs.runs", "JobEvent", "max_clock_skew", "received_at + max_clock_skew", "attrs.same_run_as",
                     'qlik_qrs:<host>:result:<result id>', '{"topic", "partition", "offset"}'},
    catalog.TRANSITIONS: {"stale_timeout", "retry", "reactivation", "evicted", "left_open: true", "from_state == to_state",
                          "late: true", "from_state == to_state =="},
    catalog.RUNS: set(),
    catalog.DEADLETTER: {'"<topic>:<partition>:<offset>"', "decode", "normalize", "lifecycle", "expiry", "size",
                         "sink", "pipeline/reason_codes.py", "<error_type>.<stable words>",
                         "rejected.not_valid_json_unexpected_end_of_data_line"},  # the stage `partition` is also a field's name
    catalog.ALERTS: {"fired", "delivered", "suppressed", "failed", "; "},
}


def doc_fields(topic: str) -> set[str]:
    text = DOC.read_text()
    section = text.split(f"## `{topic}`", 1)[1].split("\n## ", 1)[0]
    heading, body = section.split("\n", 1)
    return set(re.findall(r"`([^`]+)`", body))


def field_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


@pytest.mark.parametrize("topic", sorted(contract.RECORDS))
def test_records_md_lists_every_field_of_the_struct_and_nothing_else(topic):
    listed = doc_fields(topic) - VALUES[topic]
    assert listed == field_names(contract.RECORDS[topic])


def test_records_md_lists_every_field_of_the_raw_envelope():
    section = DOC.read_text().split("## `raw.<vendor>`", 1)[1]
    value = section.split("Value: ", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`([^`]+)`", value)) - {"RawEnvelope", "pipeline/model.py", "false"}
    assert listed == field_names(contract.RawEnvelope)


@pytest.mark.parametrize("view", list(contract.VIEWS), ids=lambda v: v.__name__)
def test_every_reader_view_reads_fields_of_its_record(view):
    assert field_names(view) <= field_names(contract.VIEWS[view])


def test_schema_version_and_the_dead_letter_limit_are_defined_once():
    from pipeline.alerts import records as alert_records
    from pipeline.sink import records as sink_records
    from pipeline.stream import records as stream_records

    for module in (stream_records, sink_records, alert_records):
        assert module.SCHEMA_VERSION is contract.SCHEMA_VERSION
    assert stream_records.DEAD_LETTER_MAX_BYTES is contract.DEAD_LETTER_MAX_BYTES
    assert stream_records.DeadLetter is contract.DeadLetter


def test_a_worker_dead_letter_without_a_time_is_read_by_the_alerter():
    """The writer may leave ``at`` null (a record without a timestamp); the alerter's
    reader required it, so it dead-lettered the worker's dead letter."""
    letter = contract.DeadLetter(
        dead_letter_id="raw.zuora:0:7", at=None, stage="decode", error_type="DecodeError", reason="not json",
        topic="raw.zuora", partition=0, offset=7, schema_version=contract.SCHEMA_VERSION,
    )
    assert decode_dead_letter(msgspec.json.encode(letter)).at is None


# --- the full story ------------------------------------------------------------------

RECEIVED = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def sample_messages() -> list[Message]:
    """Every vendor's sample documents as the ingestors would send them, then a poison
    record, a document the vendor refuses, and heartbeats a day later (the runs still
    open go STALE)."""
    messages: list[Message] = []
    offsets: Counter[str] = Counter()

    def send(vendor: str, key: bytes | None, value: bytes | None, at: datetime) -> None:
        topic = catalog.raw_topic(vendor)
        messages.append(Message(topic, 0, offsets[topic], key, value, int(at.timestamp() * 1000)))
        offsets[topic] += 1

    for vendor in vendors.VENDOR_NAMES:
        source = f"{vendor}-contract"
        ctx = vendors.Context(source=source, received_at=RECEIVED)
        for item in sorted(registry.by_name(vendor).sample_folder().iterdir(), key=lambda p: p.name):
            for _position, doc in documents(item.read_bytes()):
                for key, piece in vendors.keyed_documents(vendor, doc, ctx):
                    envelope = RawEnvelope(vendor=vendor, source=source, received_at=RECEIVED, payload=piece)
                    send(vendor, key.encode(), encode_envelope(envelope), RECEIVED)
        send(vendor, b"poison", b"{not json", RECEIVED)
        refused = RawEnvelope(vendor=vendor, source=source, received_at=RECEIVED, payload={"nothing": "known"})
        send(vendor, b"refused", encode_envelope(refused), RECEIVED)
        later = RECEIVED + timedelta(days=1)
        beat = RawEnvelope(vendor=vendor, source=source, received_at=later, heartbeat=True)
        send(vendor, heartbeat_key(source), encode_envelope(beat), later)
    return messages


def story_records() -> list[tuple[str, bytes, bytes | None]]:
    """What the worker writes for the story, re-sent once after a restart (as after a crash
    before commit), then the alerts the default rules fire on it."""
    harness = Harness()
    messages = sample_messages()
    outputs = list(harness.core.process(messages).outputs)
    harness.restart()
    outputs += harness.core.process(messages).outputs
    written = [(o.topic, o.key, o.value) for o in outputs]

    rule_set = rules.parse(rules.default_rules_text(), source="defaults", extra_urls=("json://localhost/alerts",))
    memory: dict[str, logic.JobMemory] = {}
    runs = {}
    counts = logic.DeadLetterCounts()
    firings: list[logic.Firing] = []
    for topic, _key, value in written:
        if topic == catalog.RUNS:
            run = decode_run(value)
            runs[run.run_key] = run
            memory[run.job_key] = logic.remember_run(memory.get(run.job_key, logic.JobMemory()), run,
                                                     stale_after=timedelta(minutes=4))
        elif topic == catalog.TRANSITIONS:
            t = decode_transition(value)
            if not t.flagged:
                job, fired, _wakes = logic.on_transition(rule_set.rules, memory.get(t.job_key, logic.JobMemory()), t,
                                                         runs.get(t.run_key))
                memory[t.job_key] = job
                firings += fired
        elif topic == catalog.DEADLETTER:
            counts, fired = logic.on_dead_letter(rule_set.rules, counts, decode_dead_letter(value))
            firings += fired
    for firing in firings:
        rule = rule_set.by_name(firing.rule)
        written.append((catalog.ALERTS, firing.alert_id.encode(), encode(alert_record(firing, rule, "fired", None, None))))
        written.append((catalog.ALERTS, firing.alert_id.encode(),
                        encode(alert_record(firing, rule, "delivered", None, firing.at))))
    return written


def test_every_record_of_a_full_story_is_read_by_every_reader():
    written = story_records()
    by_topic = Counter(topic for topic, _k, _v in written)
    transitions = [orjson.loads(v) for t, _k, v in written if t == catalog.TRANSITIONS]
    letters = [orjson.loads(v) for t, _k, v in written if t == catalog.DEADLETTER]
    alerts = [orjson.loads(v) for t, _k, v in written if t == catalog.ALERTS]
    # The story is the whole contract: every vendor, retries, stale, dead letters, alerts.
    assert {e["vendor"] for t, _k, v in written if t == catalog.EVENTS for e in [orjson.loads(v)]} == set(vendors.VENDOR_NAMES)
    assert {"vendor", "retry", "stale_timeout"} <= {t["cause"] for t in transitions}
    assert {"decode", "normalize"} <= {d["stage"] for d in letters}
    assert {"run-failed", "run-stale"} <= {a["rule"] for a in alerts}
    assert set(by_topic) == set(contract.RECORDS)

    # Every record is the contract's, field for field, nothing more, nothing less.
    for topic, _key, value in written:
        record = msgspec.json.decode(value, type=contract.RECORDS[topic])
        assert record.schema_version == contract.SCHEMA_VERSION
        assert set(orjson.loads(value)) == field_names(contract.RECORDS[topic]), topic

    # The sink keeps every one of them; none becomes its dead letter.
    builder = BatchBuilder()
    builder.add(KafkaRecord(topic, 0, offset, 0, key, value) for offset, (topic, key, value) in enumerate(written))
    assert builder.sink_letters == []
    assert set(builder.build().tables) == {TOPIC_TABLES[topic] for topic in by_topic}

    # The alerter reads every transition, run and dead letter.
    readers = {catalog.TRANSITIONS: decode_transition, catalog.RUNS: decode_run, catalog.DEADLETTER: decode_dead_letter}
    for topic, _key, value in written:
        if topic in readers:
            readers[topic](value)
