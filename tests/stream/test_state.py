"""The stored entry's due (issue 39): a restart indexes entries from the due each one
carries, without decoding its job, and falls back to decoding where that due cannot be
trusted (entries from before, other settings, other rules)."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from datetime import timedelta
from pathlib import Path

import msgspec

import pipeline.lifecycle
from pipeline.bench.core_stage import raw_messages
from pipeline.bench.workload import documents
from pipeline.model import RawEnvelope, decode_envelope, encode_envelope, heartbeat_key
from pipeline.stream import state
from pipeline.stream.records import Message
from pipeline.stream.state import DUE_RULES_VERSION, decode_entry, decode_head, due_rules, encode_entry
from tests.support.stream import T0, Harness, message, transitions, truenas_job

DUE_RULES_FINGERPRINT = "f0357fef838f1c97"
"""The syntax trees of the functions ``lifecycle.next_due`` is made of, as of
``DUE_RULES_VERSION`` 1."""


def _without_stored_dues(store: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The store as a worker before issue 39 wrote it: five fields, no due."""
    old = {}
    for key, value in store.items():
        entry = decode_entry(value)
        old[key] = msgspec.msgpack.encode([entry.partition, entry.offset, entry.job, entry.watermark, entry.source])
    return old


def _restarted(harness: Harness, store: dict[bytes, bytes]) -> Harness:
    again = Harness()
    again.settings = harness.settings
    again.store = dict(store)
    again.restart()
    return again


def _heartbeats_far_ahead(messages: list[Message], hours: int) -> list[Message]:
    """A heartbeat of each source on each raw partition the workload used, ``hours`` past
    its last receipt: every run left RUNNING goes STALE, what is due is evicted or forgotten."""
    last: dict[tuple[str, int, str], tuple[Message, RawEnvelope]] = {}
    for m in messages:
        envelope = decode_envelope(m.value)
        last[(m.topic, m.partition, envelope.source)] = (m, envelope)
    offsets = {(m.topic, m.partition): m.offset for m in messages}
    beats = []
    for (topic, partition, source), (_m, envelope) in sorted(last.items()):
        offsets[(topic, partition)] += 1
        value = encode_envelope(RawEnvelope(vendor=envelope.vendor, source=source, heartbeat=True,
                                            received_at=envelope.received_at + timedelta(hours=hours)))
        beats.append(Message(topic, partition, offsets[(topic, partition)], heartbeat_key(source), value))
    return beats


def test_a_restart_indexes_every_entry_from_its_stored_due_with_the_outputs_of_decoding_them():
    """The bench workload's six vendors: half of it, a restart, the rest and event time far
    ahead. A restart over the entries as they are decodes none of them; over the same
    entries without their due (as an older worker wrote them) it decodes every one; both
    then give the same outputs (expiries included) and the same entries."""
    messages = raw_messages(documents(1500))
    half = len(messages) // 2
    harness = Harness(stale_after_s=900, run_retention_s=3600, forget_after_s=7200)
    harness.feed(messages[:half])
    assert len(harness.store) > 50

    kept = _restarted(harness, harness.store)
    older = _restarted(harness, _without_stored_dues(harness.store))
    rest = messages[half:]
    later = _heartbeats_far_ahead(messages, hours=5)
    outputs = [kept.feed(rest), kept.feed(later)]
    assert (kept.core.index_read, kept.core.index_decoded) == (len(harness.store), 0)
    assert [older.feed(rest), older.feed(later)] == outputs
    assert (older.core.index_read, older.core.index_decoded) == (len(harness.store), len(harness.store))
    assert any(t["cause"] == "stale_timeout" for topic, _key, t in outputs[1] if topic == "jobs.transitions")
    assert {k: decode_entry(v).job for k, v in kept.store.items()} == {k: decode_entry(v).job for k, v in older.store.items()}


def test_other_settings_at_a_restart_decode_every_job_and_expire_by_the_new_ones():
    """A stored due is computed under the settings of its writer: a restart with a shorter
    stale timeout must not wait for the stored (later) due."""
    harness = Harness(stale_after_s=3600)
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0)])
    assert decode_entry(harness.store[b"truenas:nas1:pool.scrub"]).due == T0 + timedelta(seconds=3600)
    harness.settings = dataclasses.replace(harness.settings, stale_after_s=60)
    harness.restart()
    outputs = harness.feed([message(1, truenas_job(2, "RUNNING", method="other"), at=T0 + timedelta(seconds=61),
                                    key=b"truenas:nas1:other")])
    assert harness.core.index_decoded == 1
    assert ("1", "RUNNING", "STALE", "stale_timeout") in transitions(outputs)


def test_the_due_rules_tag_names_vendor_settings_and_version(monkeypatch):
    tags = {due_rules(vendor, timedelta(seconds=240)) for vendor in ("truenas", "zuora", "airflow")}
    assert len(tags) == 3 and 0 not in tags
    tag = due_rules("truenas", timedelta(seconds=240))
    assert tag == due_rules("truenas", timedelta(seconds=240)) != due_rules("truenas", timedelta(seconds=241))
    monkeypatch.setattr(state, "DUE_RULES_VERSION", DUE_RULES_VERSION + 1)
    assert due_rules("truenas", timedelta(seconds=240)) != tag


def test_the_head_reads_an_entry_as_decode_entry_does_but_leaves_the_job_encoded():
    harness = Harness()
    harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0)])
    data = harness.store[b"truenas:nas1:pool.scrub"]
    entry, head = decode_entry(data), decode_head(data)
    assert (head.partition, head.offset, head.watermark, head.source, head.due, head.due_rules) == (
        entry.partition, entry.offset, entry.watermark, entry.source, entry.due, entry.due_rules)
    assert isinstance(head.job, msgspec.Raw) and encode_entry(entry) == data


def _due_rules_fingerprint() -> str:
    """What ``next_due`` computes from: its own body and the helpers it calls."""
    tree = ast.parse(Path(pipeline.lifecycle.__file__).with_suffix(".py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for function in functions.values():  # its docstring is not a rule
        if ast.get_docstring(function) is not None:
            function.body = function.body[1:]
    dumped = "".join(ast.dump(functions[name]) for name in ("next_due", "deadline", "_last_activity"))
    return hashlib.sha256(dumped.encode()).hexdigest()[:16]


def test_the_rules_of_next_due_are_those_stored_dues_were_computed_with():
    """Changed ``lifecycle.next_due`` (or a helper of it)? Move ``state.DUE_RULES_VERSION``
    on, so restarts decode entries whose due the old rules computed, and record the new
    fingerprint here."""
    assert (DUE_RULES_VERSION, _due_rules_fingerprint()) == (1, DUE_RULES_FINGERPRINT)
