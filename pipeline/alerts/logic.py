"""The rules as pure functions: a transition (or a run snapshot, a wake-up, a dead
letter) and a small per-job memory in, the new memory, the alerts that fire and the
wake-ups wanted out. No I/O and no clock: the caller passes ``now`` where it matters.

Like bytewax's ``StatefulLogic.notify_at``, a rule that must act on silence (a run
still going after k times its usual duration) asks to be woken at an instant; the
shell calls ``on_wake`` then, with the run's latest snapshot.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from pipeline.alerts.records import alert_id
from pipeline.alerts.rules import Rule
from pipeline.contract import DeadLetterView, RunView, TransitionView
from pipeline.model import TERMINAL_STATES, State

DURATIONS_KEPT = 20  # successful durations per job behind "usual"
RETRIES_KEPT = 200  # retry instants per job (bounds the "job" retry window by count too)
STALE_RUNS_KEPT = 50  # runs per job whose stale start is remembered


@dataclass(frozen=True, slots=True)
class JobMemory:
    """What the alerter remembers of one job: small and bounded, whatever its history."""

    durations: tuple[tuple[str, float], ...] = ()  # (run_key, seconds) of recent successful runs
    retry_times: tuple[datetime, ...] = ()  # event times of recent retries
    stale_since: tuple[tuple[str, datetime], ...] = ()  # (run_key, when it went STALE)

    def usual_duration(self, *, exclude: str | None = None, min_runs: int = 1) -> float | None:
        """Median of the recent successful durations (the run being judged left out)."""
        values = [seconds for run_key, seconds in self.durations if run_key != exclude]
        return statistics.median(values) if len(values) >= min_runs else None

    def stale_start(self, run_key: str) -> datetime | None:
        return next((since for key, since in self.stale_since if key == run_key), None)


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule fired: everything an alert record and its message need."""

    alert_id: str
    rule: str
    kind: str
    headline: str  # what happened, one line ("run FAILED")
    at: datetime
    vendor: str | None
    source: str | None
    job_key: str | None
    run_key: str | None
    attempt: int | None
    transition_id: str | None
    state: str | None
    facts: tuple[tuple[str, str], ...] = ()  # rule-specific lines: ("Stale for", "12 min")
    run: RunView | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, order=True)
class Wake:
    """A rule asks to look at a run again at ``when``."""

    when: datetime
    rule: str
    run_key: str
    attempt: int


def source_of(job_key: str, run: RunView | None) -> str | None:
    if run is not None and run.source is not None:
        return run.source
    parts = job_key.split(":", 2)
    return parts[1] if len(parts) == 3 else None


def _firing(rule: Rule, t: TransitionView, run: RunView | None, headline: str, *facts: tuple[str, str]) -> Firing:
    return Firing(
        alert_id=alert_id(rule.name, t.transition_id), rule=rule.name, kind=rule.kind, headline=headline,
        at=t.at, vendor=t.vendor, source=source_of(t.job_key, run), job_key=t.job_key, run_key=t.run_key,
        attempt=t.attempt, transition_id=t.transition_id, state=t.to_state.value, facts=tuple(facts), run=run,
    )


def human_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def remember_run(memory: JobMemory, run: RunView, *, stale_after: timedelta) -> JobMemory:
    """A run snapshot from ``jobs.runs``: successful durations feed "usual"; a STALE run
    whose start is not known yet gets an estimate (last activity + stale_after)."""
    if run.state == State.SUCCEEDED and run.duration_s is not None and run.duration_s >= 0:
        kept = tuple(item for item in memory.durations if item[0] != run.run_key)
        memory = replace(memory, durations=(kept + ((run.run_key, run.duration_s),))[-DURATIONS_KEPT:])
    if run.state == State.STALE and memory.stale_start(run.run_key) is None and run.last_event_at is not None:
        memory = replace(
            memory, stale_since=(memory.stale_since + ((run.run_key, run.last_event_at + stale_after),))[-STALE_RUNS_KEPT:],
        )
    return memory


def remember_transition(memory: JobMemory, t: TransitionView) -> JobMemory:
    if t.flagged:
        return memory
    if t.cause == "retry":
        memory = replace(memory, retry_times=(memory.retry_times + (t.at,))[-RETRIES_KEPT:])
    if t.to_state == State.STALE and t.from_state != State.STALE:
        kept = tuple(item for item in memory.stale_since if item[0] != t.run_key)
        memory = replace(memory, stale_since=(kept + ((t.run_key, t.at),))[-STALE_RUNS_KEPT:])
    elif t.from_state == State.STALE and t.to_state != State.STALE:
        memory = replace(memory, stale_since=tuple(item for item in memory.stale_since if item[0] != t.run_key))
    return memory


def on_transition(
    rules: tuple[Rule, ...], memory: JobMemory, t: TransitionView, run: RunView | None,
) -> tuple[JobMemory, list[Firing], list[Wake]]:
    """Every rule over one transition; ``run`` is the run's snapshot if known."""
    if t.flagged:
        return memory, [], []
    after = remember_transition(memory, t)
    firings: list[Firing] = []
    wakes: list[Wake] = []
    for rule in rules:
        if rule.kind == "dead_letters" or not rule.matches(t.vendor, t.job_key, t.to_state):
            continue
        if rule.kind in ("failed", "stale"):
            if t.from_state != t.to_state:
                firings.append(_entered(rule, t, run))
        elif rule.kind == "reactivated":
            firing = _reactivated(rule, memory, t, run)
            if firing is not None:
                firings.append(firing)
        elif rule.kind == "retries":
            firing = _retries(rule, after, t, run)
            if firing is not None:
                firings.append(firing)
        elif rule.kind == "slow":
            firing, wake = _slow(rule, after, t, run)
            firings.extend([firing] if firing is not None else [])
            wakes.extend([wake] if wake is not None else [])
    return after, firings, wakes


def _entered(rule: Rule, t: TransitionView, run: RunView | None) -> Firing:
    facts = [("Transition", f"{t.from_state or '(new)'} -> {t.to_state} (cause {t.cause})")]
    if t.to_state == State.STALE:
        facts.append(("Why", "the vendor said so" if t.cause == "vendor" else "no activity within its stale timeout"))
    return _firing(rule, t, run, f"run {t.to_state}", *facts)


def _reactivated(rule: Rule, memory: JobMemory, t: TransitionView, run: RunView | None) -> Firing | None:
    if t.from_state != State.STALE or t.to_state == State.STALE:
        return None
    since = memory.stale_start(t.run_key)
    if since is None:
        return None
    stale_s = (t.at - since).total_seconds()
    if stale_s < rule.stale_minutes * 60:
        return None
    return _firing(
        rule, t, run, f"run reactivated after {human_seconds(stale_s)} STALE",
        ("Transition", f"{t.from_state} -> {t.to_state} (cause {t.cause})"),
        ("Stale since", since.isoformat()), ("Stale for", human_seconds(stale_s)),
    )


def _retries(rule: Rule, memory: JobMemory, t: TransitionView, run: RunView | None) -> Firing | None:
    if t.cause != "retry":
        return None
    if rule.scope == "run":
        retries = t.attempt - 1
        if retries != rule.retries + 1:  # fire once, when the run crosses the limit
            return None
        return _firing(rule, t, run, f"run retried {retries} times", ("Limit", f"more than {rule.retries} retries of one run"))
    window_start = t.at - timedelta(seconds=rule.window_s)
    count = sum(1 for when in memory.retry_times if window_start < when <= t.at)
    if count != rule.retries + 1:
        return None
    return _firing(
        rule, t, run, f"job retried {count} times in {human_seconds(rule.window_s)}",
        ("Limit", f"more than {rule.retries} retries of one job within {human_seconds(rule.window_s)}"),
    )


def _slow(rule: Rule, memory: JobMemory, t: TransitionView, run: RunView | None) -> tuple[Firing | None, Wake | None]:
    usual = memory.usual_duration(exclude=t.run_key, min_runs=rule.min_runs)
    if usual is None:
        return None, None
    limit = rule.factor * usual
    if t.to_state in TERMINAL_STATES:
        duration = run.duration_s if run is not None and run.run_key == t.run_key else None
        if duration is None or duration <= limit:
            return None, None
        firing = _slow_firing(rule, t.vendor, t.job_key, t.run_key, t.attempt, t.at, duration, usual, run)
        return replace(firing, transition_id=t.transition_id, state=t.to_state.value), None
    if t.to_state == State.RUNNING:
        started = run.started_at if run is not None and run.started_at is not None else t.at
        return None, Wake(started + timedelta(seconds=limit), rule.name, t.run_key, t.attempt)
    return None, None


def _slow_firing(
    rule: Rule, vendor: str, job_key: str, run_key: str, attempt: int, at: datetime,
    duration: float, usual: float, run: RunView | None,
) -> Firing:
    """One id per run attempt, whether the wake-up or the finish noticed it first."""
    return Firing(
        alert_id=alert_id(rule.name, run_key, attempt), rule=rule.name, kind=rule.kind,
        headline=f"run slow: {human_seconds(duration)}, {duration / usual:.1f}x its usual {human_seconds(usual)}",
        at=at, vendor=vendor, source=source_of(job_key, run), job_key=job_key, run_key=run_key, attempt=attempt,
        transition_id=None, state=None if run is None else run.state.value,
        facts=(("Usual duration", f"{human_seconds(usual)} (median of recent successful runs)"),
               ("Limit", f"{rule.factor:g} x usual = {human_seconds(rule.factor * usual)}")),
        run=run,
    )


def wake_for_run(rule: Rule, memory: JobMemory, run: RunView) -> Wake | None:
    """A running run seen in ``jobs.runs`` (at start, or while running): when to look again."""
    if rule.kind != "slow" or run.state != State.RUNNING or run.started_at is None:
        return None
    if not rule.matches(run.vendor, run.job_key, run.state):
        return None
    usual = memory.usual_duration(exclude=run.run_key, min_runs=rule.min_runs)
    if usual is None:
        return None
    return Wake(run.started_at + timedelta(seconds=rule.factor * usual), rule.name, run.run_key, run.attempt)


def on_wake(rule: Rule, memory: JobMemory, wake: Wake, run: RunView | None) -> Firing | None:
    """The run is still RUNNING at ``wake.when``: it is slow (unless it ended or went
    STALE meanwhile: the stale rule speaks for those; if it comes back, a new wake-up)."""
    if run is None or run.state != State.RUNNING or run.attempt != wake.attempt or run.started_at is None:
        return None
    usual = memory.usual_duration(exclude=run.run_key, min_runs=rule.min_runs)
    if usual is None:
        return None
    running = (wake.when - run.started_at).total_seconds()
    if running < rule.factor * usual:
        return None
    firing = _slow_firing(rule, run.vendor, run.job_key, run.run_key, run.attempt, wake.when, running, usual, run)
    return replace(firing, headline=f"run still {run.state} after {human_seconds(running)}, "
                                    f"{running / usual:.1f}x its usual {human_seconds(usual)}")


@dataclass(frozen=True, slots=True)
class DeadLetterCounts:
    """Dead letters per rule and minute (event time: the refused record's timestamp)."""

    minutes: tuple[tuple[str, datetime, int], ...] = ()  # (rule, minute start, count)


def on_dead_letter(
    rules: tuple[Rule, ...], counts: DeadLetterCounts, letter: DeadLetterView,
) -> tuple[DeadLetterCounts, list[Firing]]:
    """Count the letter; a rule fires once per minute, when that minute passes its limit."""
    minute = letter.at.replace(second=0, microsecond=0)
    kept = list(counts.minutes)
    firings = []
    for rule in rules:
        if rule.kind != "dead_letters" or not rule.matches(letter.vendor, None, None):
            continue
        index = next((i for i, (name, start, _n) in enumerate(kept) if name == rule.name and start == minute), None)
        count = 1 if index is None else kept[index][2] + 1
        if index is None:
            kept.append((rule.name, minute, count))
        else:
            kept[index] = (rule.name, minute, count)
        if count == rule.per_minute + 1:
            firings.append(Firing(
                alert_id=alert_id(rule.name, minute.isoformat()), rule=rule.name, kind=rule.kind,
                headline=f"more than {rule.per_minute} dead letters in one minute", at=letter.at,
                vendor=letter.vendor, source=None, job_key=None, run_key=None, attempt=None,
                transition_id=None, state=None,
                facts=(("Minute", minute.isoformat()), ("Latest", f"{letter.stage}: {letter.reason}"),
                       ("Dead letter", letter.dead_letter_id)),
            ))
    horizon = minute - timedelta(minutes=5)
    return DeadLetterCounts(tuple(item for item in kept if item[1] >= horizon)), firings
