"""The pure refold behind ``pipeline explain`` (issue 38 case 3): the rule named per step,
stale timeouts taken from the stored history, and the comparison with a stored row."""

from __future__ import annotations

from datetime import timedelta

from msgspec.structs import asdict

from pipeline import lifecycle
from pipeline.explain.refold import refold
from pipeline.model import State
from tests.test_lifecycle import at, ev


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
