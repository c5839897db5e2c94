"""The pure refold behind ``pipeline explain`` (issue 38 case 3): the rule named per step,
stale timeouts taken from the stored history, and the comparison with a stored row."""

from __future__ import annotations

from datetime import timedelta

from msgspec.structs import asdict, replace

from pipeline import lifecycle
from pipeline.explain.refold import refold
from pipeline.model import State
from tests.support.lifecycle import at, ev


def _stored(events, timeouts=()):
    """What the worker would have stored: the run folded with the same watermarks."""
    result = refold([(e, False) for e in events], list(timeouts), None, [])
    return asdict(result.run), [t.transition_id for s in result.steps for t in s.transitions]


def test_a_silent_run_goes_stale_at_the_stored_instant_then_reactivates():
    events = [ev(1, State.RUNNING, 0), ev(2, State.RUNNING, 300), ev(3, State.SUCCEEDED, 310)]
    row, ids = _stored(events, [at(240)])
    result = refold([(e, False) for e in events], [at(240)], row, ids)
    assert [s.rule for s in result.steps] == ["R1", "R10", "R11", "R6"]
    assert result.steps[1].event is None and result.steps[1].at == at(240)
    assert result.agrees and result.run.stale_episodes == 1 and result.run.reactivations == 1


def test_duplicates_late_events_updates_retries_and_illegal_moves_are_named():
    events = [ev(1, State.RUNNING, 10), ev(2, State.RUNNING, 20, progress=50), ev(1, State.RUNNING, 10),
              ev(3, State.PENDING, 5), ev(4, State.FAILED, 30, finished=30), ev(5, State.RUNNING, 40, started=40),
              ev(6, State.SUCCEEDED, 50), ev(7, State.RUNNING, 60)]
    result = refold([(e, False) for e in events], [], None, [])
    assert [s.rule for s in result.steps] == ["R1", "R5", "R2", "R4", "R6", "R7", "R6", "R8"]


def test_a_stored_row_the_events_do_not_give_is_each_field_named():
    events = [ev(1, State.RUNNING, 0), ev(2, State.FAILED, 10, finished=10)]
    row, ids = _stored(events)
    result = refold([(e, False) for e in events], [], {**row, "state": "SUCCEEDED", "events": 9}, [*ids, "lost-id"])
    assert not result.agrees
    assert {(d.field, d.stored, d.refolded) for d in result.differences} == {("state", "SUCCEEDED", "FAILED"), ("events", 9, 2)}
    assert result.missing_transitions == ("lost-id",)


def test_a_stale_timeout_the_refold_cannot_reach_is_a_disagreement():
    events = [ev(1, State.RUNNING, 0), ev(2, State.SUCCEEDED, 100)]
    row, ids = _stored(events)
    stale_id = lifecycle._transition_id("run-1", at(240).isoformat(), State.RUNNING, State.STALE, lifecycle.Cause.STALE_TIMEOUT, "")
    result = refold([(e, False) for e in events], [at(240)], row, [*ids, stale_id], stale_after=timedelta(seconds=240))
    assert result.missing_transitions == (stale_id,) and not result.agrees


def test_a_redelivered_event_kept_once_in_job_events_is_applied_again_where_its_record_says():
    """A webhook delivered twice: one ``job_events`` row, but the worker stored the R2 record."""
    first, done = ev(1, State.RUNNING, 0), ev(2, State.SUCCEEDED, 10, finished=10)
    run, stored = None, []
    for event in (first, done, first):
        before = run
        run, records = lifecycle.apply(run, event)
        if run is not before:
            run = replace(run, version=(0 if before is None else before.version) + 1)
        stored.extend(records)
    flagged = [(t.transition_id, t.event_id, t.from_state.value) for t in stored if t.duplicate]
    assert len(flagged) == 1
    without = refold([(first, False), (done, False)], [], asdict(run), [t.transition_id for t in stored])
    assert without.missing_transitions == (flagged[0][0],)
    result = refold([(first, False), (done, False)], [], asdict(run), [t.transition_id for t in stored], redeliveries=flagged)
    assert result.agrees and [s.rule for s in result.steps] == ["R1", "R6", "R2"]
    assert result.steps[-1].action.startswith("re-delivered: duplicate")


def test_an_event_late_the_first_time_is_not_replayed_as_a_redelivery():
    events = [ev(1, State.RUNNING, 10, attempt=2), ev(2, State.FAILED, 5, attempt=1, finished=5)]
    row, ids = _stored(events)
    first = refold([(e, False) for e in events], [], None, [])
    late = [(t.transition_id, t.event_id, t.from_state.value) for s in first.steps for t in s.transitions if t.late]
    result = refold([(e, False) for e in events], [], row, ids, redeliveries=late)
    assert result.agrees and [s.rule for s in result.steps] == ["R1", "R4"]
