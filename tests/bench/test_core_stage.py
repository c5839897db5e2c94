"""The bench stage of the worker's own work: it times what the worker really does to the
records the loader really writes (not its speed: the shape of its input and output)."""

from __future__ import annotations

import itertools

from pipeline import catalog
from pipeline.bench import core_stage, worker_stages
from pipeline.bench.workload import documents
from pipeline.settings import Settings
from pipeline.stream.core import StreamCore


def test_the_stage_feeds_the_core_every_raw_record_and_gets_every_expected_event():
    docs = list(itertools.islice(documents(600, seed=3), 600))
    messages = core_stage.raw_messages(docs)
    raw_records, events = worker_stages.expected_events(docs)
    assert len(messages) == raw_records
    table: dict[bytes, bytes] = {}
    core = StreamCore(Settings(), lookup=table.get, entries=table.items)
    batch = core.process(messages)
    assert sum(1 for output in batch.outputs if output.topic == catalog.EVENTS) == events
    assert not [output for output in batch.outputs if output.topic == catalog.DEADLETTER]
    assert core_stage.core_rate(messages) > 0
