"""The rules as pure functions, over known transitions."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from pipeline.alerts import logic
from pipeline.alerts.records import decode_dead_letter, decode_run, decode_transition
from pipeline.alerts.rules import parse
from tests.support.alerts import T0, dead_letter_record, minutes, run_snapshot, transition

JOB = "zuora:acme:bi-export"

RULES = parse(
    """
    [defaults]
    urls = ["json://127.0.0.1:9/hook"]
    [[rules]]
    name = "failed"
    kind = "failed"
    [[rules]]
    name = "stale"
    kind = "stale"
    [[rules]]
    name = "back"
    kind = "reactivated"
    stale_minutes = 10
    [[rules]]
    name = "run-retries"
    kind = "retries"
    retries = 2
    [[rules]]
    name = "job-retries"
    kind = "retries"
    scope = "job"
    retries = 3
    window_s = 600
    [[rules]]
    name = "slow"
    kind = "slow"
    factor = 3
    min_runs = 3
    [[rules]]
    name = "dead"
    kind = "dead_letters"
    per_minute = 2
    """,
    source="test",
)


def t(*args, **kwargs):
    return decode_transition(msgspec.json.encode(transition(*args, **kwargs)))


def r(*args, **kwargs):
    return decode_run(msgspec.json.encode(run_snapshot(*args, **kwargs)))


def fired(memory, transition_record, run=None):
    memory, firings, wakes = logic.on_transition(RULES.rules, memory, transition_record, run)
    return memory, sorted(f.rule for f in firings), firings, wakes


def test_a_failed_run_fires_once_with_its_error_and_a_deterministic_id() -> None:
    run = r(JOB, "tok-1", "FAILED", started_at=T0, finished_at=T0 + timedelta(seconds=125), error=("E42", "Page is not cached"))
    failed = t(JOB, "tok-1", "RUNNING", "FAILED", T0 + timedelta(seconds=125))
    _memory, rules, firings, _wakes = fired(logic.JobMemory(), failed, run)
    assert rules == ["failed"]
    again = fired(logic.JobMemory(), failed, run)[2]
    assert firings[0].alert_id == again[0].alert_id
    assert firings[0].source == "acme" and firings[0].attempt == 1 and firings[0].state == "FAILED"
    other = fired(logic.JobMemory(), t(JOB, "tok-2", "RUNNING", "FAILED", T0), None)[2]
    assert other[0].alert_id != firings[0].alert_id


def test_flagged_transitions_fire_nothing() -> None:
    for flag in ("duplicate", "late", "illegal"):
        record = t(JOB, "tok-1", "FAILED", "FAILED", T0, **{flag: True})
        assert fired(logic.JobMemory(), record)[1] == []


def test_stale_then_reactivation_after_long_enough() -> None:
    memory = logic.JobMemory()
    memory, rules, _f, _w = fired(memory, t(JOB, "tok-1", "RUNNING", "STALE", T0, cause="stale_timeout"))
    assert rules == ["stale"]
    short = t(JOB, "tok-1", "STALE", "RUNNING", T0 + minutes(5), cause="reactivation")
    assert fired(memory, short)[1] == []
    _m, rules, firings, _w = fired(memory, t(JOB, "tok-1", "STALE", "RUNNING", T0 + minutes(12), cause="reactivation"))
    assert rules == ["back"]
    assert dict(firings[0].facts)["Stale for"] == "12m 00s"


def test_reactivation_after_restart_uses_the_run_snapshot_estimate() -> None:
    stale_run = r(JOB, "tok-9", "STALE", started_at=T0, last_event_at=T0)
    memory = logic.remember_run(logic.JobMemory(), stale_run, stale_after=timedelta(seconds=240))
    assert memory.stale_start(stale_run.run_key) == T0 + timedelta(seconds=240)
    back = t(JOB, "tok-9", "STALE", "RUNNING", T0 + minutes(20), cause="reactivation")
    assert fired(memory, back)[1] == ["back"]


def test_retries_of_one_run_fire_when_crossing_the_limit_only() -> None:
    memory = logic.JobMemory()
    results = []
    for attempt in range(2, 7):
        memory, rules, _f, _w = fired(memory, t(JOB, "tok-1", "FAILED", "RUNNING", T0 + minutes(attempt), attempt=attempt, cause="retry"))
        results.append("run-retries" in rules)
    assert results == [False, False, True, False, False]  # retries 1, 2, 3 (> 2: fires), 4, 5


def test_retries_of_one_job_within_the_window() -> None:
    memory = logic.JobMemory()
    hits = []
    for n, offset in enumerate([0, 1, 2, 20, 21, 22, 23]):  # minutes; window 10 min, limit 3
        memory, rules, _f, _w = fired(memory, t(JOB, f"run-{n}", "FAILED", "RUNNING", T0 + minutes(offset), attempt=2, cause="retry"))
        hits.append("job-retries" in rules)
    assert hits == [False, False, False, False, False, False, True]


def test_slow_run_wakes_and_fires_only_if_still_running() -> None:
    memory = logic.JobMemory()
    for n in range(3):
        memory = logic.remember_run(memory, r(JOB, f"ok-{n}", "SUCCEEDED", started_at=T0, finished_at=T0 + timedelta(seconds=60)), stale_after=timedelta(seconds=240))
    assert memory.usual_duration(min_runs=3) == 60
    running = r(JOB, "slow-1", "RUNNING", started_at=T0 + minutes(10))
    memory, _rules, _f, wakes = fired(memory, t(JOB, "slow-1", "PENDING", "RUNNING", T0 + minutes(10)), running)
    assert wakes == [logic.Wake(T0 + minutes(13), "slow", running.run_key, 1)]
    firing = logic.on_wake(RULES.by_name("slow"), memory, wakes[0], running)
    assert firing is not None and firing.alert_id == logic.alert_id("slow", running.run_key, 1)
    finished = r(JOB, "slow-1", "SUCCEEDED", version=2, started_at=T0 + minutes(10), finished_at=T0 + minutes(12))
    assert logic.on_wake(RULES.by_name("slow"), memory, wakes[0], finished) is None
    stale = r(JOB, "slow-1", "STALE", version=2, started_at=T0 + minutes(10))
    assert logic.on_wake(RULES.by_name("slow"), memory, wakes[0], stale) is None


def test_slow_run_noticed_at_its_end_has_the_same_id_as_its_wake_up() -> None:
    memory = logic.JobMemory()
    for n in range(3):
        memory = logic.remember_run(memory, r(JOB, f"ok-{n}", "SUCCEEDED", started_at=T0, finished_at=T0 + timedelta(seconds=60)), stale_after=timedelta(seconds=240))
    done = r(JOB, "slow-2", "SUCCEEDED", started_at=T0, finished_at=T0 + minutes(5))
    _m, rules, firings, _w = fired(memory, t(JOB, "slow-2", "RUNNING", "SUCCEEDED", T0 + minutes(5)), done)
    assert rules == ["slow"]
    assert firings[0].alert_id == logic.alert_id("slow", done.run_key, 1)


def test_slow_needs_enough_history() -> None:
    memory = logic.remember_run(logic.JobMemory(), r(JOB, "ok", "SUCCEEDED", started_at=T0, finished_at=T0 + timedelta(seconds=1)), stale_after=timedelta(0))
    done = r(JOB, "slow-3", "SUCCEEDED", started_at=T0, finished_at=T0 + minutes(50))
    assert fired(memory, t(JOB, "slow-3", "RUNNING", "SUCCEEDED", T0), done)[1] == []


def test_dead_letters_fire_once_per_minute_over_the_limit() -> None:
    counts = logic.DeadLetterCounts()
    fired_at = []
    for n, second in enumerate([1, 2, 3, 4, 61, 62, 63]):
        letter = decode_dead_letter(msgspec.json.encode(dead_letter_record(n, T0 + timedelta(seconds=second))))
        counts, firings = logic.on_dead_letter(RULES.rules, counts, letter)
        fired_at.extend(second for _ in firings)
    assert fired_at == [3, 63]


def test_job_memory_stays_bounded() -> None:
    memory = logic.JobMemory()
    for n in range(500):
        memory = logic.remember_run(memory, r(JOB, f"ok-{n}", "SUCCEEDED", started_at=T0, finished_at=T0 + timedelta(seconds=n)), stale_after=timedelta(0))
        memory = logic.remember_transition(memory, t(JOB, f"ok-{n}", "FAILED", "RUNNING", T0 + timedelta(seconds=n), attempt=2, cause="retry"))
    assert len(memory.durations) == logic.DURATIONS_KEPT
    assert len(memory.retry_times) == logic.RETRIES_KEPT


def test_a_snapshot_without_source_and_version_still_gives_context() -> None:
    older = run_snapshot(JOB, "tok-1", "FAILED", started_at=T0, finished_at=T0 + timedelta(seconds=5))
    del older["source"], older["version"]
    run = decode_run(msgspec.json.encode(older))
    firing = fired(logic.JobMemory(), t(JOB, "tok-1", "RUNNING", "FAILED", T0), run)[2][0]
    assert firing.source == "acme" and firing.run is run
