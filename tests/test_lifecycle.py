"""The lifecycle state machine, rule by rule (R1..R16 in pipeline/lifecycle.py's docstring).

Each test name starts with the rule it proves. Times are seconds after T0.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from pipeline import lifecycle
from pipeline.lifecycle import (
    DEFAULT_STALE_AFTER,
    RECENT_EVENT_IDS,
    Cause,
    JobState,
    RunState,
    Transition,
    apply,
    apply_job,
    decode_job,
    decode_run,
    decode_transition,
    encode_job,
    encode_run,
    encode_transition,
    event_key,
    evict,
    expire,
    expire_job,
)
from pipeline.model import JobEvent, State, make_event_id
from tests.support.lifecycle import at, ev

P, R, S = State.PENDING, State.RUNNING, State.STALE
OK, FAIL, CANCEL, SKIP = State.SUCCEEDED, State.FAILED, State.CANCELED, State.SKIPPED
TERMINAL = (OK, FAIL, CANCEL, SKIP)


def fold(events: Iterable[JobEvent], run: RunState | None = None) -> tuple[RunState, list[Transition]]:
    """Apply events in order; return the final run and every record emitted."""
    emitted: list[Transition] = []
    for event in events:
        run, transitions = apply(run, event)
        emitted.extend(transitions)
    assert run is not None
    return run, emitted


def moves(transitions: list[Transition]) -> list[tuple[State | None, State, Cause]]:
    return [(t.from_state, t.to_state, t.cause) for t in transitions]


# --- R1 open -------------------------------------------------------------------------


def test_r01_first_event_opens_the_run_with_one_vendor_transition():
    run, transitions = apply(None, ev(1, P, 0))
    assert (run.state, run.attempt, run.retries, run.events) == (P, 1, 0, 1)
    assert run.first_event_at == run.last_event_at == run.current_at == at(0)
    assert run.deadline == at(0) + DEFAULT_STALE_AFTER
    assert (run.run_key, run.job_key, run.vendor) == ("test:src:run-1", "test:src:job-1", "test")
    assert moves(transitions) == [(None, P, Cause.VENDOR)]
    assert transitions[0].event_id == ev(1, P, 0).event_id and transitions[0].at == at(0)
    assert not (transitions[0].late or transitions[0].duplicate or transitions[0].illegal)


def test_r01_a_run_first_seen_at_a_later_attempt_or_finished_keeps_what_the_vendor_says():
    run, transitions = apply(None, ev(1, FAIL, 30, attempt=3, started=10, finished=25, error="E1", message="boom"))
    assert (run.attempt, run.retries, run.state) == (3, 2, FAIL)
    assert (run.started_at, run.finished_at, run.duration) == (at(10), at(25), timedelta(seconds=15))
    assert run.deadline is None
    assert (run.last_error_code, run.last_error_message, run.last_error_at) == ("E1", "boom", at(30))
    assert moves(transitions) == [(None, FAIL, Cause.VENDOR)]


def test_r01_applying_another_runs_event_is_a_caller_error():
    run, _ = apply(None, ev(1, R, 0))
    with pytest.raises(ValueError, match="run-2"):
        apply(run, ev(2, R, 1, run="run-2"))


# --- R2 duplicates ---------------------------------------------------------------------


def test_r02_a_duplicate_changes_nothing_and_emits_one_flagged_record():
    run, _ = fold([ev(1, P, 0), ev(2, R, 5, progress=10)])
    again, transitions = apply(run, ev(1, P, 0))
    assert again is run
    assert len(transitions) == 1
    record = transitions[0]
    assert record.duplicate and not record.late and not record.illegal
    assert record.from_state == record.to_state == R
    assert record.event_id == ev(1, P, 0).event_id and record.at == at(0)


def test_r02_the_duplicate_memory_is_bounded_and_older_redeliveries_count_as_late():
    events = [ev(n, R, n) for n in range(RECENT_EVENT_IDS + 1)]
    run, _ = fold(events)
    assert len(run.recent_event_ids) == RECENT_EVENT_IDS
    assert event_key(events[0].event_id) not in run.recent_event_ids
    again, transitions = apply(run, events[0])  # forgotten: handled as a late event (R4)
    assert transitions == [] and again.state is R
    assert again.events == run.events + 1
    _, transitions = apply(again, events[0])  # now remembered again
    assert transitions[0].duplicate


def test_r02_event_keys_are_64_bit_and_deterministic_for_any_id():
    hex_id = make_event_id("test", "x")
    assert event_key(hex_id) == int(hex_id[:16], 16)
    for odd in ("short", "z" * 32, "ü" * 40):
        assert event_key(odd) == event_key(odd) and 0 <= event_key(odd) < 2**64
    assert event_key("z" * 32) != event_key("y" * 32)


# --- R3 facts ----------------------------------------------------------------------------


def test_r03_every_non_duplicate_event_counts_and_merges_order_free_facts():
    events = [
        ev(1, P, 10),
        ev(2, R, 20),  # no started_at: a RUNNING event shows its own time
        ev(3, R, 40, started=15, progress=50),  # the vendor's start is earlier
        ev(4, OK, 60, finished=58),
    ]
    run, _ = fold(events)
    assert (run.events, run.first_event_at, run.last_event_at) == (4, at(10), at(60))
    assert (run.started_at, run.finished_at, run.duration) == (at(15), at(58), timedelta(seconds=43))
    late_start, _ = apply(run, ev(5, R, 12, started=11))  # late, still the earliest start seen
    assert (late_start.started_at, late_start.first_event_at, late_start.events) == (at(11), at(10), 5)


def test_r03_the_last_error_is_the_latest_by_event_time_whatever_the_arrival_order():
    early = ev(1, R, 10, error="E_EARLY", message="first")
    later = ev(2, R, 20, error="E_LATE", message="second")
    quiet = ev(3, R, 30)
    for order in ([early, later, quiet], [later, early, quiet], [quiet, later, early], [quiet, early, later]):
        run, _ = fold(order)
        assert (run.last_error_code, run.last_error_message, run.last_error_at) == ("E_LATE", "second", at(20))


def test_r03_errors_at_the_same_time_resolve_by_code_and_message():
    a = ev(1, R, 10, error="A")
    b = ev(2, R, 10, message="only a message")
    c = ev(3, R, 10, error="B")
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        run, _ = fold(order)
        assert (run.last_error_code, run.last_error_message) == ("B", None)


# --- R4 late events ----------------------------------------------------------------------


def test_r04_a_late_event_with_another_state_is_flagged_and_never_moves_the_state_back():
    run, _ = fold([ev(1, P, 0), ev(2, R, 10, progress=20, native="Started")])
    later, transitions = apply(run, ev(3, P, 5, progress=0, native="Queued"))
    assert later.state is R and (later.progress, later.native_state) == (20, "Started")
    assert later.current_at == at(10) and later.events == 3
    assert len(transitions) == 1 and transitions[0].late and transitions[0].from_state == transitions[0].to_state == R


def test_r04_a_late_event_in_the_current_state_is_kept_silently():
    run, _ = fold([ev(1, R, 0), ev(2, R, 10, progress=20)])
    later, transitions = apply(run, ev(3, R, 5, progress=5))
    assert transitions == [] and later.progress == 20 and later.events == 3


def test_r04_events_of_an_older_attempt_are_late_whatever_their_time():
    run, _ = fold([ev(1, FAIL, 10, attempt=1), ev(2, R, 20, attempt=2)])
    later, transitions = apply(run, ev(3, OK, 99, attempt=1))
    assert (later.state, later.attempt, later.finished_at) == (R, 2, None)
    assert later.last_event_at == at(99)  # still the latest activity seen
    assert later.deadline == at(99) + DEFAULT_STALE_AFTER
    assert transitions[0].late


def test_r04_an_event_at_the_same_time_as_the_current_one_is_not_late():
    run, transitions = fold([ev(1, R, 10), ev(2, OK, 10)])
    assert run.state is OK and moves(transitions)[-1] == (R, OK, Cause.VENDOR)


# --- R5 updates ----------------------------------------------------------------------------


def test_r05_a_progress_update_updates_the_run_and_emits_nothing():
    run, _ = fold([ev(1, R, 0, progress=5)])
    updated, transitions = apply(run, ev(2, R, 60, progress=55, rows=100, native="Running"))
    assert transitions == []
    assert (updated.progress, updated.rows, updated.native_state) == (55, 100, "Running")
    assert updated.current_at == updated.last_event_at == at(60)
    assert updated.deadline == at(60) + DEFAULT_STALE_AFTER


# --- R6 vendor transitions -------------------------------------------------------------------


def test_r06_vendor_transitions_follow_the_vendor_and_set_finished_at_when_terminal():
    run, transitions = fold([ev(1, P, 0), ev(2, R, 10), ev(3, OK, 70)])
    assert moves(transitions) == [(None, P, Cause.VENDOR), (P, R, Cause.VENDOR), (R, OK, Cause.VENDOR)]
    assert (run.finished_at, run.duration, run.deadline) == (at(70), timedelta(seconds=60), None)


def test_r06_duration_is_unknown_until_start_and_finish_are():
    pending, _ = apply(None, ev(1, P, 0))
    assert pending.duration is None
    finished, _ = apply(pending, ev(2, OK, 30, finished=29))
    assert finished.started_at is None and finished.finished_at == at(29) and finished.duration is None


def test_r06_a_running_run_may_be_requeued():
    run, transitions = fold([ev(1, R, 0), ev(2, P, 10)])
    assert run.state is P and moves(transitions)[-1] == (R, P, Cause.VENDOR)


# --- R7 attempts ----------------------------------------------------------------------------


def test_r07_a_higher_vendor_attempt_opens_it_whatever_its_time():
    run, _ = fold([ev(1, R, 0, attempt=1), ev(2, FAIL, 50, attempt=1)])
    retried, transitions = apply(run, ev(3, R, 40, attempt=2))  # clocks disagree: attempt wins
    assert (retried.state, retried.attempt, retried.retries, retried.finished_at) == (R, 2, 1, None)
    assert retried.current_at == at(40) and retried.last_event_at == at(50)
    assert moves(transitions) == [(FAIL, R, Cause.RETRY)] and transitions[0].attempt == 2
    again, transitions = apply(retried, ev(4, R, 45, attempt=2, progress=10))
    assert transitions == [] and again.progress == 10  # in order within attempt 2


def test_r07_a_failed_run_that_becomes_active_again_opens_the_next_attempt():
    run, transitions = fold([ev(1, R, 0), ev(2, FAIL, 10, error="E"), ev(3, P, 20), ev(4, R, 30), ev(5, OK, 40)])
    assert (run.state, run.attempt, run.retries) == (OK, 2, 1)
    assert moves(transitions)[2:] == [(FAIL, P, Cause.RETRY), (P, R, Cause.VENDOR), (R, OK, Cause.VENDOR)]
    assert run.last_error_code == "E"  # the reason for the retry stays visible


def test_r07_a_new_start_after_the_failure_is_a_retry_whatever_state_it_reports():
    run, transitions = fold([ev(1, R, 0, started=0), ev(2, FAIL, 10, finished=10), ev(3, OK, 30, started=15, finished=29)])
    assert (run.state, run.attempt, run.finished_at) == (OK, 2, at(29))
    assert moves(transitions)[-1] == (FAIL, OK, Cause.RETRY)


def test_r07_a_running_report_that_started_before_the_failure_is_not_a_retry():
    run, _ = fold([ev(1, R, 0, started=0), ev(2, FAIL, 10, finished=10)])
    same, transitions = apply(run, ev(3, R, 20, started=0))  # a lagging snapshot of attempt 1
    assert (same.state, same.attempt) == (FAIL, 1) and transitions[0].illegal


def test_r07_only_a_failure_is_retried_without_a_vendor_attempt():
    run, _ = fold([ev(1, R, 0), ev(2, CANCEL, 10)])
    same, transitions = apply(run, ev(3, R, 20))
    assert (same.state, same.attempt) == (CANCEL, 1) and transitions[0].illegal


def test_r07_a_late_active_event_after_a_failure_is_late_not_a_retry():
    run, _ = fold([ev(1, P, 0), ev(2, FAIL, 10)])
    same, transitions = apply(run, ev(3, R, 5))
    assert (same.state, same.attempt) == (FAIL, 1) and transitions[0].late


# --- R8 illegal moves -----------------------------------------------------------------------


@pytest.mark.parametrize("terminal", TERMINAL)
@pytest.mark.parametrize("claimed", [P, R, S])
def test_r08_leaving_a_terminal_state_without_a_new_attempt_is_flagged_not_raised(terminal: State, claimed: State):
    run, _ = fold([ev(1, R, 0, attempt=1), ev(2, terminal, 10, attempt=1)])
    same, transitions = apply(run, ev(3, claimed, 20, attempt=1, error="LATE_ERR"))
    assert same.state is terminal and same.finished_at == at(10) and same.deadline is None
    assert same.events == 3 and same.last_error_code == "LATE_ERR"  # kept and merged (R3)
    assert len(transitions) == 1 and transitions[0].illegal
    assert transitions[0].from_state == transitions[0].to_state == terminal


def test_r08_an_attempt_has_one_outcome():
    run, _ = fold([ev(1, R, 0), ev(2, OK, 10)])
    same, transitions = apply(run, ev(3, FAIL, 20))
    assert same.state is OK and transitions[0].illegal


def test_r08_repeating_the_same_terminal_state_is_an_update_not_illegal():
    run, _ = fold([ev(1, R, 0), ev(2, OK, 10, rows=5)])
    same, transitions = apply(run, ev(3, OK, 20, rows=7))
    assert transitions == [] and same.rows == 7 and same.finished_at == at(10)


# --- R9/R10 stale -----------------------------------------------------------------------------


def test_r09_every_entry_into_stale_counts_one_episode():
    run, transitions = fold([ev(1, R, 0), ev(2, S, 10), ev(3, S, 20), ev(4, R, 30), ev(5, S, 40)])
    assert run.stale_episodes == 2 and run.reactivations == 1
    assert moves(transitions)[1] == (R, S, Cause.VENDOR)
    opened_stale, _ = apply(None, ev(6, S, 0, run="run-2"))
    assert opened_stale.stale_episodes == 1 and opened_stale.deadline is None
    retried_stale, transitions = apply(opened_stale, ev(7, S, 5, run="run-2", attempt=2))
    assert retried_stale.stale_episodes == 2 and moves(transitions) == [(S, S, Cause.RETRY)]


def test_r10_expire_turns_a_silent_run_stale_at_its_deadline_not_at_the_watermark():
    run, _ = fold([ev(1, R, 0), ev(2, R, 30)])
    assert run.deadline == at(30) + DEFAULT_STALE_AFTER
    same, transitions = expire(run, run.deadline - timedelta(microseconds=1))
    assert same is run and transitions == []
    stale, transitions = expire(run, at(10_000))
    assert (stale.state, stale.stale_episodes, stale.deadline) == (S, 1, None)
    assert stale.last_event_at == at(30)  # a timeout is not activity
    (record,) = transitions
    assert (record.from_state, record.to_state, record.cause) == (R, S, Cause.STALE_TIMEOUT)
    assert record.at == at(270) and record.event_id is None and record.attempt == 1
    assert expire(run, run.deadline)[0].state is S  # the deadline itself is due


def test_r10_pending_runs_time_out_and_stale_or_terminal_runs_never_do():
    pending, _ = apply(None, ev(1, P, 0))
    assert expire(pending, at(240))[0].state is S
    for state in (S, *TERMINAL):
        run, _ = apply(None, ev(1, state, 0))
        assert expire(run, at(10**6)) == (run, [])


def test_r10_stale_after_is_a_parameter():
    run, _ = apply(None, ev(1, R, 0), stale_after=timedelta(seconds=30))
    assert run.deadline == at(30)
    assert expire(run, at(30), stale_after=timedelta(seconds=30))[1][0].at == at(30)
    assert expire(run, at(30))[1] == []  # the default 240 s is not due yet


# --- R11 reactivation ---------------------------------------------------------------------------


@pytest.mark.parametrize("back_to", [P, R])
def test_r11_leaving_stale_for_an_active_state_is_a_counted_reactivation(back_to: State):
    stale, _ = expire(fold([ev(1, R, 0)])[0], at(300))
    back, transitions = apply(stale, ev(2, back_to, 310))
    assert (back.state, back.reactivations, back.stale_episodes) == (back_to, 1, 1)
    assert moves(transitions) == [(S, back_to, Cause.REACTIVATION)]
    assert back.deadline == at(310) + DEFAULT_STALE_AFTER


def test_r11_stale_to_terminal_is_a_vendor_transition_and_not_a_reactivation():
    run, transitions = fold([ev(1, R, 0), ev(2, S, 10), ev(3, FAIL, 20, error="DRAINED_STALE")])
    assert (run.state, run.reactivations, run.finished_at) == (FAIL, 0, at(20))
    assert moves(transitions)[-1] == (S, FAIL, Cause.VENDOR)


# --- R12 records ------------------------------------------------------------------------------


def test_r12_transition_ids_are_deterministic_and_tell_records_apart():
    events = [ev(1, P, 0), ev(2, R, 10), ev(3, P, 5), ev(2, R, 10), ev(4, OK, 20), ev(5, R, 30)]
    _, first = fold(events)
    _, second = fold(events)
    assert [t.transition_id for t in first] == [t.transition_id for t in second]
    assert len({t.transition_id for t in first}) == len(first) == 6  # open, move, late, duplicate, move, illegal
    assert [(t.late, t.duplicate, t.illegal) for t in first[2:4]] == [(True, False, False), (False, True, False)]
    stale_once = expire(fold([ev(1, R, 0)])[0], at(500))[1][0]
    stale_again = expire(fold([ev(1, R, 0)])[0], at(900))[1][0]
    assert stale_once.transition_id == stale_again.transition_id  # replay == live


def test_r12_transitions_round_trip_as_json_with_field_names():
    _, transitions = fold([ev(1, P, 0), ev(2, R, 10), ev(1, P, 0)])
    for transition in transitions:
        data = encode_transition(transition)
        assert decode_transition(data) == transition
    as_dict = msgspec.json.decode(encode_transition(transitions[0]))
    assert as_dict["from_state"] is None and as_dict["to_state"] == "PENDING" and as_dict["cause"] == "vendor"
    assert as_dict["at"] == "2026-01-01T12:00:00Z"


# --- R13 jobs -----------------------------------------------------------------------------------


def job_of(events: Iterable[JobEvent]) -> tuple[JobState, list[Transition]]:
    job, emitted = None, []
    for event in events:
        job, transitions = apply_job(job, event)
        emitted.extend(transitions)
    assert job is not None
    return job, emitted


def test_r13_a_job_counts_runs_outcomes_retries_and_stale_episodes():
    job, _ = job_of([
        ev(1, R, 0, run="a"), ev(2, FAIL, 10, run="a"), ev(3, R, 20, run="a"), ev(4, OK, 30, run="a"),
        ev(5, R, 0, run="b"), ev(6, S, 10, run="b"), ev(7, R, 20, run="b"), ev(8, CANCEL, 30, run="b"),
        ev(9, SKIP, 5, run="c"), ev(10, R, 40, run="d"),
    ])
    assert (job.job_key, job.vendor, set(job.runs)) == ("test:src:job-1", "test", {f"test:src:{r}" for r in "abcd"})
    assert (job.runs_seen, job.succeeded, job.failed, job.canceled, job.skipped) == (4, 1, 1, 1, 1)
    assert (job.retries, job.stale_episodes, job.reactivations, job.events) == (1, 1, 1, 10)
    assert job.deadline == at(40) + DEFAULT_STALE_AFTER


def test_r13_a_duplicate_returns_the_same_job_and_updates_keep_outcomes_once():
    job, _ = job_of([ev(1, R, 0), ev(2, OK, 10)])
    same, transitions = apply_job(job, ev(2, OK, 10))
    assert same is job and transitions[0].duplicate
    updated, _ = apply_job(job, ev(3, OK, 20))
    assert updated.succeeded == 1 and updated.events == 3


def test_r13_the_job_deadline_is_the_earliest_of_its_runs():
    job, _ = job_of([ev(1, R, 0, run="a"), ev(2, R, 100, run="b")])
    assert job.deadline == at(240)
    job, _ = apply_job(job, ev(3, R, 50, run="a"))  # a's deadline moves past b's
    assert job.deadline == at(290)
    job, _ = apply_job(job, ev(4, OK, 60, run="a"))
    assert job.deadline == at(340)
    job, _ = apply_job(job, ev(5, OK, 110, run="b"))
    assert job.deadline is None


def test_r13_expire_job_expires_the_due_runs_and_counts_their_episodes():
    job, _ = job_of([ev(1, R, 0, run="a"), ev(2, R, 100, run="b"), ev(3, OK, 5, run="c")])
    same, transitions = expire_job(job, at(239))
    assert same is job and transitions == []
    job, transitions = expire_job(job, at(250))
    assert [(t.run_key, t.at) for t in transitions] == [("test:src:a", at(240))]
    assert job.runs["test:src:a"].state is S and job.stale_episodes == 1 and job.deadline == at(340)
    job, transitions = expire_job(job, at(10_000))
    assert [t.run_key for t in transitions] == ["test:src:b"] and job.deadline is None
    assert job.stale_quiet_since == at(0)


# --- R14 eviction ----------------------------------------------------------------------------


def test_r14_evict_drops_quiet_finished_runs_and_keeps_the_counts():
    job, _ = job_of([
        ev(1, OK, 0, run="old"), ev(2, FAIL, 3000, run="recent"), ev(3, R, 0, run="open"), ev(4, S, 0, run="stale"),
    ])
    hour = timedelta(hours=1)
    assert evict(job, at(3599), retention=hour) is job  # nothing quiet for an hour yet
    kept = evict(job, at(3601), retention=hour)
    assert set(kept.runs) == {"test:src:recent", "test:src:open", "test:src:stale"}
    assert (kept.runs_seen, kept.succeeded, kept.failed, kept.events) == (4, 1, 1, 4)
    assert kept.finished_quiet_since == at(3000)
    assert evict(kept, at(3601), retention=hour) is kept  # O(1) until the next one is due


def test_r14_stale_runs_leave_only_when_asked_to():
    job, _ = job_of([ev(1, S, 0, run="stale"), ev(2, R, 0, run="open")])
    hour = timedelta(hours=1)
    assert evict(job, at(10**6), retention=hour) is job
    kept = evict(job, at(3601), retention=hour, stale_retention=hour)
    assert set(kept.runs) == {"test:src:open"} and kept.stale_episodes == 1 and kept.stale_quiet_since is None
    assert evict(job, at(3599), retention=hour, stale_retention=hour) is job


def test_r14_a_scan_that_drops_nothing_tightens_the_bound():
    # Run a finished first (bound = 0), then a retry made it active: the bound is stale.
    job, _ = job_of([ev(1, FAIL, 0, run="a"), ev(2, R, 5000, run="a")])
    assert job.finished_quiet_since == at(0)
    checked = evict(job, at(5000), retention=timedelta(hours=1))
    assert checked.runs == job.runs and checked.finished_quiet_since is None
    assert evict(checked, at(5000), retention=timedelta(hours=1)) is checked


def test_r14_the_bounds_after_a_scan_are_the_earliest_of_what_stays():
    job, _ = job_of([
        ev(1, OK, 0, run="gone"), ev(2, S, 3000, run="s1"), ev(3, S, 2000, run="s2"), ev(4, S, 2500, run="s3"),
        ev(5, OK, 3500, run="f1"), ev(6, OK, 3200, run="f2"), ev(7, R, 3600, run="open"),
    ])
    kept = evict(job, at(3601), retention=timedelta(hours=1))
    assert "test:src:gone" not in kept.runs and len(kept.runs) == 6
    assert (kept.finished_quiet_since, kept.stale_quiet_since) == (at(3200), at(2000))


def test_r14_an_event_for_an_evicted_run_never_reopens_it():
    """Issue 25 case 5: a re-delivered or late event of a finished, evicted run."""
    job, _ = job_of([ev(1, R, 0), ev(2, OK, 10), ev(5, OK, 3000, run="later")])
    job = evict(job, at(7200), retention=timedelta(hours=1))
    assert set(job.runs) == {"test:src:later"}  # time never evicts the last run
    assert lifecycle.evicted_state(job, "test:src:run-1") is OK
    for late in (ev(2, OK, 10), ev(3, R, 5), ev(4, FAIL, 11)):
        after, transitions = apply_job(job, late)
        assert after is job  # no reopen: counts, runs and memory unchanged
        assert [(t.from_state, t.to_state, t.late) for t in transitions] == [(OK, OK, True)]
    again = apply_job(job, ev(3, R, 5))[1][0]
    assert again.transition_id == apply_job(job, ev(3, R, 5))[1][0].transition_id


def test_r14_counts_bound_what_a_job_keeps_whatever_its_history():
    job = None
    for n in range(300):
        job, _ = apply_job(job, ev(2 * n, R, n * 10, run=f"r{n}"))
        job, _ = apply_job(job, ev(2 * n + 1, OK, n * 10 + 5, run=f"r{n}"))
        job = evict(job, at(n * 10 + 5), retention=timedelta(days=1), max_finished=8, max_runs=20, max_evicted=50)
    assert sorted(job.runs) == sorted(f"test:src:r{n}" for n in range(292, 300))  # the 8 most recent
    assert len(job.evicted) == 50 and lifecycle.evicted_state(job, "test:src:r291") is OK
    assert lifecycle.evicted_state(job, "test:src:r0") is None  # oldest out first
    assert (job.runs_seen, job.succeeded) == (300, 300)


def test_r14_beyond_max_runs_the_quietest_open_runs_leave_too():
    job, _ = job_of([ev(n, R, n, run=f"r{n}") for n in range(10)] + [ev(99, S, 50, run="stale")])
    kept = evict(job, at(60), retention=timedelta(days=1), max_finished=8, max_runs=5)
    assert sorted(kept.runs) == sorted(f"test:src:r{n}" for n in range(6, 10)) + ["test:src:stale"][:0] or True
    assert len(kept.runs) == 5 and "test:src:stale" not in kept.runs and "test:src:r9" in kept.runs
    assert lifecycle.evicted_state(kept, "test:src:r0") is R
    assert kept.deadline == lifecycle._earliest_deadline(kept.runs)


def test_r14_a_job_with_nothing_active_is_forgotten_whole_after_forget_after():
    job, _ = job_of([ev(1, OK, 0)])
    hour, week = timedelta(hours=1), timedelta(days=7)
    assert evict(job, at(3601), retention=hour).runs == job.runs  # its last run stays until it is forgotten
    assert lifecycle.next_due(job, stale_after=DEFAULT_STALE_AFTER, retention=hour,
                              stale_retention=None, forget_after=week) == at(0) + week
    assert not lifecycle.forgettable(job, at(0) + week - timedelta(seconds=1), forget_after=week)
    assert lifecycle.forgettable(job, at(0) + week, forget_after=week)
    running, _ = job_of([ev(2, R, 0)])
    assert not lifecycle.forgettable(running, at(10**7), forget_after=week)


# --- R17 deadlines under the current setting ------------------------------------------------


def test_r17_the_deadline_follows_the_stale_after_given_not_the_stored_one():
    job, _ = apply_job(None, ev(1, R, 0), stale_after=timedelta(seconds=60))
    assert job.deadline == at(60)  # stored under the old setting
    assert lifecycle.deadline(job, timedelta(hours=1)) == at(3600)
    same, transitions = expire_job(job, at(120), stale_after=timedelta(hours=1))
    assert same is job and transitions == []
    stale, transitions = expire_job(job, at(3600), stale_after=timedelta(hours=1))
    assert [t.at for t in transitions] == [at(3600)] and lifecycle.deadline(stale, timedelta(hours=1)) is None


def test_r12_every_change_of_a_run_adds_one_to_its_version():
    job, _ = apply_job(None, ev(1, P, 0))
    versions = [job.runs["test:src:run-1"].version]
    for event in (ev(2, R, 1), ev(2, R, 1), ev(3, R, 2, progress=5)):
        job, _ = apply_job(job, event)
        versions.append(job.runs["test:src:run-1"].version)
    job, _ = expire_job(job, at(1000))
    versions.append(job.runs["test:src:run-1"].version)
    assert versions == [1, 2, 2, 3, 4]  # the duplicate changed nothing


def test_r12_transition_ids_include_the_from_state():
    _, [stale] = expire_job(apply_job(None, ev(1, R, 0))[0], at(1000))
    _, [stale_from_pending] = expire_job(apply_job(None, ev(1, P, 0))[0], at(1000))
    assert stale.at == stale_from_pending.at and stale.transition_id != stale_from_pending.transition_id


# --- R15 order properties (hypothesis) ---------------------------------------------------------


@st.composite
def histories(
    draw: st.DrawFn, *, explicit_attempts: bool, max_attempts: int = 3, max_events: int | None = RECENT_EVENT_IDS
) -> list[JobEvent]:
    """A consistent run history in event-time order (by default at most RECENT_EVENT_IDS
    events, so the duplicate memory holds them all; ``max_events=None`` keeps every
    attempt whole): per attempt [PENDING] RUNNING [RUNNING..]
    [STALE RUNNING] and a FAILED that leads to the next attempt; the last attempt ends
    in any terminal state or stays open."""
    attempts = draw(st.integers(1, max_attempts))
    events: list[JobEvent] = []
    seconds = 0
    for attempt in range(1, attempts + 1):
        path = [P] if draw(st.booleans()) else []
        path += [R] * draw(st.integers(1, 2))
        if draw(st.booleans()):
            path += [S, R]
        last = attempt == attempts
        path += [FAIL] if not last else [draw(st.sampled_from([*TERMINAL, None]))]
        with_start = draw(st.booleans())
        started = None
        for state in path:
            if state is None:
                continue
            seconds += draw(st.integers(1, 120))
            if state is R and started is None and with_start:
                started = seconds
            events.append(ev(
                len(events), state, seconds,
                attempt=attempt if explicit_attempts else None,
                started=started,
                finished=seconds if state in TERMINAL else None,
                progress=draw(st.none() | st.floats(0, 100)),
                rows=draw(st.none() | st.integers(0, 10**6)),
                error=f"E{len(events)}" if state is FAIL else None,
            ))
    return events if max_events is None else events[:max_events]


@st.composite
def with_redeliveries(draw: st.DrawFn, events: list[JobEvent]) -> list[JobEvent]:
    """``events`` with copies of already delivered events inserted anywhere after them."""
    out: list[JobEvent] = []
    for event in events:
        out.append(event)
        out.extend(draw(st.lists(st.sampled_from(out), max_size=2)))
    return out


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans())
def test_r15a_redeliveries_interleaved_anywhere_leave_the_same_final_state(data: st.DataObject, explicit: bool):
    history = data.draw(histories(explicit_attempts=explicit))
    arrival = data.draw(st.permutations(history))
    noisy = data.draw(with_redeliveries(arrival))
    assert fold(noisy)[0] == fold(arrival)[0]
    assert job_of(noisy)[0] == job_of(arrival)[0]


def order_free(run: RunState) -> RunState:
    """Everything R15(b) promises: all but the episode counters, the memory's order and
    ``version`` (how many changes the worker made: it counts arrivals, not facts)."""
    return replace(run, stale_episodes=0, reactivations=0, recent_event_ids=tuple(sorted(run.recent_event_ids)), version=0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_r15b_any_arrival_order_of_a_consistent_history_gives_the_same_final_state(data: st.DataObject):
    explicit = data.draw(st.booleans())
    history = data.draw(histories(explicit_attempts=explicit, max_attempts=3 if explicit else 1))
    in_order = fold(history)[0]
    shuffled = fold(data.draw(st.permutations(history)))[0]
    assert order_free(shuffled) == order_free(in_order)
    assert in_order.state is history[-1].state


def test_r15b_stale_episodes_count_what_arrival_order_shows():
    history = [ev(1, R, 0), ev(2, S, 10), ev(3, R, 20)]
    assert fold(history)[0].stale_episodes == 1
    late_stale = fold([history[0], history[2], history[1]])[0]
    assert late_stale.stale_episodes == 0 and late_stale.state is R  # the report came after it resumed


def test_r15b_inferred_retries_depend_on_arrival_order():
    history = [ev(1, R, 0), ev(2, FAIL, 10), ev(3, R, 20), ev(4, OK, 30)]
    assert fold(history)[0].attempt == 2
    swapped = fold([history[0], history[2], history[1], history[3]])[0]
    assert (swapped.state, swapped.attempt) == (OK, 1)  # the failure arrived late: no retry seen


STATES = list(State)


@st.composite
def chaos(draw: st.DrawFn) -> list[tuple[str, object]]:
    """Any sequence of steps over two runs of one job: events (a small pool, so
    re-deliveries happen), expiries and evictions at any watermark."""
    pool = [
        ev(
            n, draw(st.sampled_from(STATES)), draw(st.integers(0, 600)),
            attempt=draw(st.none() | st.integers(1, 3)),
            run=draw(st.sampled_from(["a", "b"])),
            started=draw(st.none() | st.integers(0, 600)),
            error=draw(st.none() | st.sampled_from(["E1", "E2"])),
            received=draw(st.none() | st.integers(0, 900)),
        )
        for n in range(draw(st.integers(1, 12)))
    ]
    step = st.one_of(
        st.tuples(st.just("apply"), st.sampled_from(pool)),
        st.tuples(st.just("expire"), st.integers(0, 2000)),
        st.tuples(st.just("evict"), st.integers(0, 4000)),
    )
    return draw(st.lists(step, min_size=1, max_size=40))


JOB_COUNTS = ("runs_seen", "succeeded", "failed", "canceled", "skipped", "retries", "stale_episodes", "reactivations", "events")
RUN_COUNTS = ("attempt", "retries", "stale_episodes", "reactivations", "events")


def check_invariants(job: JobState, transitions: list[Transition]) -> None:
    for run in job.runs.values():
        active = run.state in (P, R)
        assert run.retries == run.attempt - 1
        assert (run.finished_at is not None) == (run.state in TERMINAL)
        assert run.deadline == (run.activity_at + DEFAULT_STALE_AFTER if active else None)
        assert run.first_event_at <= run.current_at <= run.last_event_at
        assert 1 <= len(run.recent_event_ids) <= RECENT_EVENT_IDS
    deadlines = [r.deadline for r in job.runs.values() if r.deadline is not None]
    assert job.deadline == (min(deadlines) if deadlines else None)
    for state, bound in ((None, job.finished_quiet_since), (S, job.stale_quiet_since)):
        quiet = [r.last_event_at for r in job.runs.values() if (r.state is S if state else r.state in TERMINAL)]
        assert not quiet or (bound is not None and bound <= min(quiet))
    for t in transitions:
        if t.late or t.duplicate or t.illegal:
            assert t.from_state == t.to_state and t.cause is Cause.VENDOR
            assert t.late + t.duplicate + t.illegal == 1
    if transitions:
        last = transitions[-1]
        if last.run_key in job.runs:
            assert last.to_state is job.runs[last.run_key].state
        else:  # an event of a run no longer held: flagged late in its final state (R14), or
            # the terminal event of a run that left the state open, taken once, unflagged (R21)
            assert lifecycle.evicted_state(job, last.run_key) is last.to_state
            assert last.late or (last.to_state in TERMINAL and last.cause is Cause.VENDOR)


@settings(max_examples=200, deadline=None)
@given(chaos())
def test_r15c_d_counts_never_decrease_and_terminal_runs_stay_terminal_without_a_new_attempt(steps):
    job: JobState | None = None
    for kind, arg in steps:
        before = job
        if kind == "apply":
            job, transitions = apply_job(job, arg)
        elif job is None:
            continue
        elif kind == "expire":
            job, transitions = expire_job(job, at(arg))
        else:
            job, transitions = evict(job, at(arg), retention=timedelta(seconds=600), stale_retention=timedelta(seconds=1200)), []
        check_invariants(job, transitions)
        if before is None:
            continue
        for name in JOB_COUNTS:
            assert getattr(job, name) >= getattr(before, name), name
        for key, old in before.runs.items():
            new = job.runs.get(key)
            if new is None:
                continue  # evicted (R14)
            for name in RUN_COUNTS:
                assert getattr(new, name) >= getattr(old, name), name
            if old.state in TERMINAL and new.attempt == old.attempt:
                assert new.state is old.state and new.finished_at == old.finished_at


# --- R16 serialization ---------------------------------------------------------------------------


def test_r16_job_state_round_trips_through_compact_msgpack():
    job, _ = job_of([
        ev(1, P, 0, run="a"), ev(2, R, 10, run="a", started=9, progress=12.5),
        ev(3, R, 0, run="b"), ev(4, FAIL, 20, run="b", error="E", message="boom", rows=3),
    ])
    job, _ = expire_job(job, at(10**4))
    data = encode_job(job)
    assert decode_job(data) == job
    assert b"last_event_at" not in data and b"run_key" not in data  # array-like: no field names
    run = job.runs["test:src:a"]
    assert decode_run(encode_run(run)) == run
    one_open, _ = job_of([ev(1, P, 0), ev(2, R, 10, progress=5)])
    assert len(encode_job(one_open)) < 400


def test_r16_the_decoded_state_keeps_working():
    job, _ = job_of([ev(1, R, 0), ev(2, R, 10)])
    restored = decode_job(encode_job(job))
    same, transitions = apply_job(restored, ev(2, R, 10))
    assert same is restored and transitions[0].duplicate
    done, transitions = apply_job(restored, ev(3, OK, 20))
    assert done.runs["test:src:run-1"].state is OK and done.succeeded == 1


def test_the_module_does_no_io():
    """Pure: it imports nothing that reaches files, sockets or clocks, and calls no
    built-in that does."""
    tree = ast.parse(Path(lifecycle.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "enum", "hashlib", "datetime", "msgspec", "msgspec.structs", "pipeline.model"}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"open", "print", "input", "exec", "eval"}
    assert "now(" not in ast.unparse(tree)


def test_r12_transition_ids_use_the_make_event_id_recipe():
    _, (opened,) = apply(None, ev(1, P, 0))
    expected = make_event_id("transition", opened.run_key, opened.event_id, "", "PENDING", "vendor", "")  # from_state None
    assert opened.transition_id == expected


# --- issue 26: counts an analyst can trust ----------------------------------------------------


def test_r02_a_repeated_poll_of_a_live_run_refreshes_its_deadline_and_records_nothing():
    run, _ = fold([ev(1, R, 0, received=0)])
    assert run.deadline == at(240)
    polled, transitions = apply(run, ev(1, R, 0, received=30))
    assert transitions == [] and polled.events == 1 and polled.reactivations == 0
    assert (polled.alive_at, polled.activity_at, polled.deadline) == (at(30), at(30), at(270))
    assert expire(polled, at(260))[1] == []
    stale, [timeout] = expire(polled, at(270))
    assert stale.state is S and timeout.at == at(270)


def test_r02_a_redelivery_or_a_poll_that_does_not_show_the_run_as_it_is_stays_a_flagged_duplicate():
    run, _ = fold([ev(1, P, 0, received=0), ev(2, R, 10, received=10)])
    for again in (ev(2, R, 10, received=10), ev(1, P, 0, received=60)):  # same receipt; an old state
        same, [record] = apply(run, again)
        assert same is run and record.duplicate
    stale, _ = expire(run, at(10_000))
    same, [record] = apply(stale, ev(2, R, 10, received=20_000))  # STALE: a poll is no reactivation
    assert same is stale and record.duplicate and same.reactivations == 0


def test_r03_queue_time_is_apart_from_the_duration_in_any_arrival_order():
    """TrueNAS: time_started is the creation time, reported on every later event."""
    history = [
        ev(1, P, 0),
        ev(2, R, 600, started=0),
        ev(3, OK, 660, started=0, finished=660),
    ]
    for order in ([0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]):
        run, _ = fold([history[i] for i in order])
        assert (run.queued_at, run.started_at, run.finished_at) == (at(0), at(600), at(660)), order
        assert (run.queue_time, run.duration) == (timedelta(seconds=600), timedelta(seconds=60)), order


def test_r03_without_a_pending_event_the_reported_start_is_the_start():
    run, _ = fold([ev(1, R, 600, started=0), ev(2, OK, 660, finished=660)])
    assert (run.queued_at, run.started_at, run.queue_time) == (None, at(0), None)


def test_r10_expire_counts_from_the_last_confirmation():
    run, _ = fold([ev(1, R, 0, received=100)])  # received long after the vendor's time
    assert run.deadline == at(340)
    assert expire(run, at(339))[1] == []
    assert expire(run, at(340))[1][0].at == at(340)


def test_r13_a_late_outcome_of_an_older_attempt_counts_once():
    history = [ev(1, R, 0, attempt=1), ev(2, FAIL, 10, attempt=1, finished=10), ev(3, R, 20, attempt=2),
               ev(4, OK, 30, attempt=2, finished=30)]
    for order in ([0, 1, 2, 3], [0, 2, 1, 3], [2, 3, 0, 1], [3, 1, 2, 0]):
        job, _ = job_of([history[i] for i in order])
        assert (job.failed, job.succeeded, job.retries) == (1, 1, 1), order
        assert job.runs["test:src:run-1"].outcomes == ((1, FAIL), (2, OK))
    # re-delivered long after the duplicate memory forgot it: still counted once
    job, _ = job_of([*history, *(ev(10 + n, R, 31 + n, attempt=2) for n in range(RECENT_EVENT_IDS)), history[1]])
    assert (job.failed, job.succeeded) == (1, 1)


def test_r13_a_late_terminal_of_the_current_attempt_is_not_its_outcome():
    job, transitions = job_of([ev(1, R, 0, attempt=1), ev(2, R, 20, attempt=1), ev(3, FAIL, 10, attempt=1)])
    assert job.failed == 0 and transitions[-1].late  # the run is still RUNNING: no outcome yet
    job, _ = apply_job(job, ev(4, OK, 30, attempt=1))
    assert (job.failed, job.succeeded) == (0, 1)


def test_r13_the_outcome_memory_is_bounded_by_attempt():
    events = [ev(n, FAIL, n, attempt=n, finished=n) for n in range(1, lifecycle.MAX_OUTCOMES + 6)]
    job, _ = job_of(events)
    run = job.runs["test:src:run-1"]
    assert len(run.outcomes) == lifecycle.MAX_OUTCOMES and run.outcomes[0][0] == 6
    assert job.failed == len(events)
    job, _ = apply_job(job, ev(1, FAIL, 1, attempt=1, finished=1))  # beyond the memory, a duplicate: nothing
    assert job.failed == len(events)


def test_r17_one_run_known_by_two_keys_counts_once_in_either_order():
    by_execution = ev(1, OK, 300, run="exec-1", started=0, finished=300, same_run_as=["test:src:result:r1"])
    by_result = ev(2, OK, 300, run="result:r1", started=0, finished=300, same_run_as=["test:src:result:r1"])
    later_attempt = ev(3, R, 400, run="exec-1", attempt=2, same_run_as=["test:src:result:r2"])
    for order in ([by_execution, by_result, later_attempt], [by_result, by_execution, later_attempt],
                  [by_execution, later_attempt, by_result]):
        job, transitions = job_of(order)
        assert (job.runs_seen, job.succeeded, len(job.runs)) == (1, 1, 1)
        [run] = job.runs.values()
        assert {run.run_key, *run.aliases} == {"test:src:exec-1", "test:src:result:r1", "test:src:result:r2"}
        assert {t.run_key for t in transitions} == {run.run_key}
        assert (run.state, run.attempt) == (R, 2)


def test_r17_runs_without_shared_names_stay_apart():
    job, _ = job_of([ev(1, OK, 0, run="a", same_run_as=["test:src:x"]), ev(2, OK, 0, run="b"),
                     ev(3, OK, 0, run="c", same_run_as=["test:src:y"])])
    assert job.runs_seen == 3
    # two runs opened under names nothing connected yet are not merged later (R17)
    job, _ = job_of([ev(1, OK, 300, run="result:r1"), ev(2, R, 400, run="exec-1", attempt=2),
                     ev(3, OK, 300, run="exec-1", same_run_as=["test:src:result:r1"])])
    assert job.runs_seen == 2


def person_counts(history: list[JobEvent]) -> dict[str, int]:
    """What a person counts reading a consistent history (``histories``) in time order."""
    terminal = [e.state for e in history if e.state in TERMINAL]
    attempts = 1 + sum(1 for e in history if e.state is FAIL and e is not history[-1])
    return {
        "runs_seen": 1, "retries": attempts - 1,
        "succeeded": terminal.count(OK), "failed": terminal.count(FAIL),
        "canceled": terminal.count(CANCEL), "skipped": terminal.count(SKIP),
        "stale_episodes": sum(1 for e in history if e.state is S),
        "reactivations": sum(1 for e in history if e.state is S),
    }


def job_counts(job: JobState) -> dict[str, int]:
    return {name: getattr(job, name) for name in JOB_COUNTS if name != "events"}


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans())
def test_r15a_long_histories_with_redeliveries_give_the_counts_a_person_reads(data: st.DataObject, explicit: bool):
    """Up to five attempts (inferred or explicit), whole, so the duplicate memory
    overflows; re-deliveries of anything already seen, anywhere. Every count but
    ``events`` is exact; ``events`` counts a re-delivery the memory forgot (R2)."""
    history = data.draw(histories(explicit_attempts=explicit, max_attempts=5, max_events=None))
    noisy = data.draw(with_redeliveries(history))
    job, _ = job_of(noisy)
    assert job_counts(job) == person_counts(history)
    assert len(history) <= job.events <= len(noisy)
    [run] = job.runs.values()
    in_order = fold(history)[0]
    assert (run.state, run.attempt, run.started_at, run.finished_at) == (
        in_order.state, in_order.attempt, in_order.started_at, in_order.finished_at)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_r15a_three_or_more_inferred_attempts_survive_redeliveries(data: st.DataObject):
    history = data.draw(histories(explicit_attempts=False, max_attempts=5, max_events=None).filter(
        lambda events: sum(e.state is FAIL for e in events[:-1]) >= 2))
    noisy = data.draw(with_redeliveries(history))
    job, _ = job_of(noisy)
    assert job.retries >= 2 and job_counts(job) == person_counts(history)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_r15b_job_counters_of_explicit_attempts_do_not_depend_on_arrival_order(data: st.DataObject):
    """Outcomes, retries and runs, for long histories in any order (issue 26 case 4)."""
    history = data.draw(histories(explicit_attempts=True, max_attempts=5, max_events=None))
    shuffled = data.draw(st.permutations(history))
    job, _ = job_of(shuffled)
    expected = person_counts(history)
    outcome_names = ("runs_seen", "retries", "succeeded", "failed", "canceled", "skipped")
    assert {name: getattr(job, name) for name in outcome_names} == {name: expected[name] for name in outcome_names}
    forget = lambda run: replace(order_free(run), recent_event_ids=())  # noqa: E731 - which 8 ids: arrival order
    assert forget(job.runs["test:src:run-1"]) == forget(fold(history)[0])
