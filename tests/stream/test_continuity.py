"""The worker's check that each raw partition's records follow on (pipeline/stream/app.py):
found by `pipeline chaos --soak 12 --seed 7`, where a worker restarted twice within seconds
skipped raw.truenas offsets 1413-1429 (Faust had committed past them as a gap)."""

from __future__ import annotations

import pytest
from faust.types import TP

from pipeline.stream.app import Continuity, SkippedRecords

P1 = TP("raw.truenas", 1)
P2 = TP("raw.truenas", 2)


def test_records_that_follow_on_from_the_committed_offset_pass_and_redeliveries_too():
    continuity = Continuity({P1: 1413}.get)
    continuity.check([(P1, 1413), (P1, 1414), (P2, 7)])  # P2: nothing committed yet
    continuity.check([(P1, 1413), (P1, 1415), (P2, 8)])  # a re-delivery, then on


def test_a_record_prefetched_before_a_rebalance_that_comes_first_is_refused():
    continuity = Continuity({P1: 1413}.get)
    continuity.check([(P1, 1413)])
    continuity.reset()  # an assignment: the position is the committed offset again
    with pytest.raises(SkippedRecords, match="raw.truenas partition 1: record 1430 came when 1413 was next"):
        continuity.check([(P1, 1430), (P1, 1431)])


def test_a_gap_inside_a_batch_is_refused():
    continuity = Continuity(lambda tp: None)
    with pytest.raises(SkippedRecords, match="record 12 came when 11 was next"):
        continuity.check([(P2, 10), (P2, 12)])
