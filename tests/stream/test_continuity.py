"""The worker's check that each raw partition's records follow on (pipeline/stream/gaps.py):
found by `pipeline chaos --soak 12 --seed 7`, where a worker restarted twice within seconds
skipped raw.truenas offsets 1413-1429 (Faust had committed past them as a gap). A skip is
only found here; whether it is a hole or a loss is read from the broker (test_worker_gaps)."""

from __future__ import annotations

from faust.types import TP

from pipeline.stream.gaps import Continuity, Skip, Verdict

P1 = TP("raw.truenas", 1)
P2 = TP("raw.truenas", 2)


def test_records_that_follow_on_from_the_committed_offset_pass_and_redeliveries_too():
    continuity = Continuity({P1: 1413, P2: 7}.get)
    assert continuity.first_skip([(P1, 1413), (P1, 1414), (P2, 7)]) is None
    assert continuity.first_skip([(P1, 1413), (P1, 1415), (P2, 8)]) is None  # a re-delivery, then on


def test_a_record_prefetched_before_a_rebalance_that_comes_first_is_found():
    continuity = Continuity({P1: 1413}.get)
    assert continuity.first_skip([(P1, 1413)]) is None
    continuity.reset()  # an assignment: the position is the committed offset again
    index, skip = continuity.first_skip([(P1, 1430), (P1, 1431)])
    assert (index, skip) == (0, Skip(P1, 1413, 1430))
    assert str(skip) == "raw.truenas partition 1: record 1430 came when 1413 was next"


def test_a_gap_inside_a_batch_is_found_at_its_index_and_a_hole_accepted_goes_on():
    continuity = Continuity({P2: 10}.get)
    records = [(P2, 10), (P2, 12), (P2, 13)]
    index, skip = continuity.first_skip(records)
    assert (index, skip) == (1, Skip(P2, 11, 12))
    continuity.accept(skip)
    assert continuity.first_skip(records[index:]) is None
    assert continuity.holes == 1


def test_after_a_seek_back_the_prefetched_leftovers_are_known_without_asking_again():
    continuity = Continuity({P1: 5}.get)
    _, skip = continuity.first_skip([(P1, 8)])
    continuity.rewind(skip, 5)
    _, leftover = continuity.first_skip([(P1, 9)])
    assert leftover == Skip(P1, 5, 9, leftover=True)
    assert continuity.first_skip([(P1, 5), (P1, 6), (P1, 7), (P1, 8), (P1, 9)]) is None
    _, later = continuity.first_skip([(P1, 11)])
    assert not later.leftover  # the partition came back: a new skip is asked about again


def test_nothing_committed_or_a_committed_zero_is_checked_from_the_log_start():
    """Faust's perform_seek stores a committed 0 as None: a first record beyond 0 is
    a skip to check (it used to pass unchecked), from the log start."""
    continuity = Continuity(lambda tp: None)
    index, skip = continuity.first_skip([(P2, 4)])
    assert skip == Skip(P2, None, 4) and str(skip).endswith("came when the log start was next")
    assert continuity.first_skip([(P1, 0), (P1, 1)]) is None


def test_retention_deleted_range_is_the_part_below_the_log_start():
    assert Verdict(None, 20).deleted(Skip(P1, 10, 25)) == range(10, 20)
    assert Verdict(None, 0).deleted(Skip(P1, 10, 25)) == range(10, 10)
    assert Verdict(None, 20).deleted(Skip(P1, None, 25)) == range(0)
