"""The bench workload: deterministic, every document accepted by its vendor's normalizer,
every vendor with retries, stale episodes and drains in it."""

from __future__ import annotations

import itertools
from collections import Counter

import orjson

from pipeline import vendors
from pipeline.bench.workload import VENDORS, documents
from pipeline.model import State
from pipeline.vendors import Context


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not():
    def first(seed: int) -> list[bytes]:
        return [orjson.dumps(d.payload) for d in itertools.islice(documents(500, seed=seed), 500)]

    assert first(3) == first(3)
    assert first(3) != first(4)


def test_every_document_normalizes_and_every_scenario_is_there():
    docs = list(documents(6000, seed=1, jobs_per_vendor=20))
    assert len(docs) == 6000
    assert all(a.at <= b.at for a, b in zip(docs, docs[1:])), "documents arrive in time order"
    states: Counter = Counter()
    natives: Counter = Counter()
    errors: Counter = Counter()
    for doc in docs:
        events = vendors.normalize(doc.vendor, doc.payload, Context(source=doc.source, received_at=doc.at))
        assert events, f"a {doc.vendor} document gave no event"
        for event in events:
            states[(doc.vendor, event.state)] += 1
            natives[(doc.vendor, event.native_state)] += 1
            errors[(doc.vendor, event.error_code)] += 1
    assert {vendor for vendor, _ in states} == set(VENDORS)
    assert states[("zuora", State.STALE)] > 0 and natives[("zuora", "SCANNING-PAGE-3")] > 0  # stale, then back
    assert errors[("zuora", "DRAINED_STALE")] > 0  # stale, then drained
    assert states[("qlik_qrs", State.FAILED)] > 0 and states[("qlik_qrs", State.SUCCEEDED)] > 0  # retries
    assert states[("truenas", State.CANCELED)] > 0 and states[("truenas", State.PENDING)] > 0
    assert states[("informatica", State.FAILED)] > 0  # a child subscription in error
    assert states[("qlik_cloud", State.FAILED)] > 0
