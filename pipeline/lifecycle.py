"""The job-lifecycle state machine: pure functions from (state, event) to (state, transitions).

No I/O, no clock: time is the events' own ``occurred_at`` and the watermark the stream
layer passes to ``expire``, so a replay gives the same answer as the live run.

Run state (``RunState``) is one execution of a job. ``apply`` folds a ``JobEvent`` into
it; ``expire`` turns a silent run STALE. ``JobState`` holds a job's open and recently
finished runs plus counts over all its runs; ``apply_job``/``expire_job``/``evict`` are
what the stream layer calls. Words used below: an event's *attempt* is its own
``attempt`` or, when None, the one the rules infer; the *current attempt* is
``run.attempt``; ``run.current_at`` is the event time of the newest event applied to the
current attempt.

Rules (tests in tests/test_lifecycle.py carry the rule number in their names):

R1  Open. The first event of a run opens it in the event's state, at the event's
    attempt (1 when None); retries = attempt - 1. One transition from None, cause VENDOR.
R2  Duplicates. An event whose id is among the run's last ``RECENT_EVENT_IDS`` (8)
    distinct event ids changes nothing (not even counts) and emits one flagged record
    (duplicate=True). Ids are remembered as their first 64 bits (a make_event_id hex id)
    or a 64-bit BLAKE2b of the id, to keep the state small. A re-delivery older than that
    memory is not recognised: it is handled as a late event (R4), which only moves the
    event count. Liveness: a repeated poll (same id) that shows a PENDING/RUNNING run in
    its current state, received (``received_at``) after the run's last activity, is the
    vendor confirming the run is alive: it moves ``alive_at`` and the deadline (R10)
    and nothing else; no record, no count, no reactivation. Identical polls share one
    event id, so their event time cannot say this; ``received_at`` is in the log, so a
    replay still gives the same answer.
R3  Facts. Every other event counts (``events``) and merges the facts that do not
    depend on arrival order: first/last event time (min/max of occurred_at),
    ``queued_at`` (the earliest PENDING event: when the vendor created or queued it),
    ``started_at`` (earliest of the events' started_at and of the occurred_at of RUNNING
    events, over all attempts: the run's start; a reported start at or before
    queued_at is the vendor's creation time, as TrueNAS's ``time_started`` is, and is
    not a start) and the last error (the error of the event with the latest occurred_at
    that reported one; ties go to the greater (code, message)). Queue time =
    started_at - queued_at. An in-order PENDING/RUNNING event also moves ``alive_at``
    to its received_at.
R4  Late events. An event of an older attempt, or of the current attempt with
    occurred_at < run.current_at, never changes the state or the latest-value facts
    (native_state, progress, rows, finished_at). It is kept: counted and merged (R3),
    and when its state differs from the current one it emits one flagged record
    (late=True). Events with the same occurred_at as current_at are not late: they
    apply in arrival order.
R5  Updates. An in-order event in the current state (a RUNNING progress update, a
    repeated snapshot) updates native_state, progress, rows, current_at and the deadline,
    and emits nothing.
R6  Vendor transitions. An in-order event of the current attempt in another state moves
    the run there (cause VENDOR). Entering a terminal state sets finished_at (the
    event's finished_at, else its occurred_at); finished_at is set exactly while the run
    is terminal. duration = finished_at - started_at.
R7  Attempts. An event with attempt > run.attempt opens that attempt, whatever its time
    (cause RETRY). An event with attempt None opens attempt n+1 only when the run is
    FAILED and the event is in order and shows a new execution: its started_at is after
    the failure's finished_at, or it has no started_at and is PENDING or RUNNING.
    Anything else stays in the current attempt. A new attempt clears finished_at (then
    R6 applies to its state); retries = attempt - 1, so it depends only on the highest
    attempt seen.
R8  Illegal moves. An in-order event of the current attempt that would leave a terminal
    state (SUCCEEDED -> RUNNING, FAILED -> SUCCEEDED without a new execution...) does not
    change the state: it emits one flagged record (illegal=True), still counts and merges
    facts (R3), never raises. An attempt has one outcome.
R9  Stale episodes. Every entry into STALE counts one episode: from the vendor (a Zuora
    stale queue), from a timeout (R10), or a run that opens or retries in STALE.
R10 Stale timeout. ``expire(run, watermark)``: a PENDING or RUNNING run whose
    activity_at (the later of last_event_at and alive_at, R2) + stale_after <= watermark
    becomes STALE (cause STALE_TIMEOUT, event_id None): STALE means the vendor stopped
    confirming the run, not that its state stopped changing. The transition's ``at`` is
    activity_at + stale_after, not the watermark, so replay == live. ``run.deadline``
    is that instant while the run is PENDING/RUNNING, else None (STALE and terminal
    runs cannot time out).
R11 Reactivation. STALE -> PENDING/RUNNING within the same attempt is a REACTIVATION,
    counted; STALE -> terminal is an ordinary vendor transition; a run that is never
    heard from again stays STALE.
R12 Flagged records (duplicate, late, illegal) have from_state == to_state == the
    current state: folding ``to_state`` over all records always gives the run's state.
    ``transition_id`` = make_event_id("transition", run key, event id (or the stale
    instant, ISO), from_state, to_state, cause, flags), so re-emitting a record gives
    the same id and two records that differ in any of these never share one.
    Every change of a run adds 1 to its ``version`` (what ``jobs.runs`` readers keep
    the highest of).
R13 Jobs. ``JobState`` counts over every run it has seen: runs, outcomes per attempt
    (succeeded/failed/canceled/skipped: each attempt's terminal state, counted once),
    retries, stale episodes, reactivations, events. A run remembers which attempts'
    outcomes it counted (``outcomes``, the last ``MAX_OUTCOMES`` attempts): an attempt's
    outcome is its first terminal state, in order (R6) or from a late event of an older,
    explicitly numbered attempt (R4), so a late attempt-1 FAILED that arrives after
    attempt 2 opened still counts, once, in any arrival order. Its deadline is the
    earliest of its runs' deadlines.
R14 Eviction. ``evict`` drops terminal runs whose last event is at least ``retention``
    before the watermark (and, only if ``stale_retention`` is given, STALE runs silent
    for that long: at the instant ``next_due`` names, so an index makes progress), and
    bounds what a job keeps by count too: at most ``max_finished`` terminal runs (the
    most recent) and ``max_runs`` runs in all (beyond that the quietest open runs leave
    as well); counts stay. An evicted run's 64-bit key hashes (its key and its aliases,
    R17) and final state go to a fixed-size memory (``max_evicted``, oldest out first);
    an event of a remembered run never reopens it: ``apply_job`` leaves the job as it is
    and emits one flagged record (late=True) in the remembered state
    (``evicted_state``). Time never evicts a job's most recent run: a job with no
    PENDING/RUNNING run that was silent for ``forget_after`` is forgotten whole
    (``forgettable``, one write instead of two); the stream layer deletes its entry (a
    tombstone).
R15 Order. (a) Re-deliveries of already-seen events, interleaved anywhere, leave exactly
    the same final state while the duplicate memory holds them; beyond it (R2) every
    count but ``events`` stays exact: runs, attempts, retries, outcomes, stale episodes
    and reactivations are what a person reads in the history, also with inferred
    attempts (attempt None) delivered in time order. (b) For a consistent history
    (explicit attempts, or a single attempt; distinct event times), every arrival order
    gives the same state, attempt, retries, times, finished/started/queued, latest-value
    facts, event count, last error and the job's outcome counts (R13); stale_episodes
    and reactivations count the episodes seen in arrival order, so a STALE report that
    arrives after the run moved on is not one. With attempt None, retries are inferred
    from arrival order (R7). (c) Counts never decrease. (d) A terminal run stays in its
    terminal state unless a new attempt opens.
R16 Serialization. ``encode_job`` is msgpack of array-like structs (no field names;
    datetimes as msgpack timestamps); transitions are JSON with field names.
R17 One run, several names. Some vendors name one execution differently in different
    documents (QRS: executionID in results and sessions, only the result id in a reload
    task's last result). An event may list keys of its run in ``attrs["same_run_as"]``
    (its own key too, to be looked up by it); a run answers to those and to every key
    its events used (``aliases``, the last ``MAX_ALIASES``). ``apply_job`` applies an
    event that lists names and whose run key the job does not hold to the run that
    answers to its key or one of its names, under that run's key (the first name
    seen), so the execution counts once in either arrival order. A run that left the
    job is remembered under all its names (R14), so a late event under any of them is
    flagged late; two runs already opened under names nothing had connected are not
    merged afterwards.
R19 Skewed times. An event whose occurred_at lies beyond the time its receipt lets the
    stream trust (``received_at + max_clock_skew``) is applied as ``trusted`` makes it:
    at its ``received_at``, with no start or finish beyond the trusted bound. So it
    never orders the run ahead of the vendor's later true events (a later FAILED still
    applies) nor puts a deadline beyond activity the stream can trust; its event record
    keeps the vendor's time, flagged ``skewed``. The stream layer moves event time
    before each event, to that event's trusted time, so a message of several events
    has the effects of the same events one message each.
R20 The past at a fixed size. A job's ``seen_until`` is an event time up to which the
    runs it no longer holds have left it: when the memory of evicted runs (R14)
    overflows, the last event of the quietest run leaving then; when the job is
    forgotten (``forget``: no runs, counts and ``seen_until`` kept, the stream layer
    stores it in place of a tombstone, so the applied offset stays too), its last
    event. An event of a run the job does not hold, not in the memory, and no newer
    than ``seen_until`` is late: one flagged record in its own state, nothing
    counted. Not covered: a run never seen whose every event is older than
    ``seen_until`` (a backfill delivered out of order by more than the memory) is
    taken for a past one.
R21 Runs that leave open. A PENDING/RUNNING/STALE run that leaves (R14: a STALE one by
    time, any open one by count or size) leaves with one record, cause EVICTED, from_state == to_state == its state,
    and a last ``jobs.runs`` snapshot with ``left_open`` set and no deadline (``left_open``),
    so readers stop showing it active. Its memory keeps that open state: a later terminal event of it is its
    outcome, counted once (one transition from the remembered state, cause VENDOR,
    and the memory then holds the outcome); any other event of it is late (R14).
R18 Deadlines follow the current setting: ``deadline(job, stale_after)`` is the earliest
    activity_at + stale_after of its PENDING/RUNNING runs, whatever ``stale_after``
    was when the runs were stored; ``next_due`` adds when ``evict`` or forgetting is
    next due. ``expire_job`` with that ``stale_after`` turns every due run STALE, so
    after it every deadline lies beyond the watermark: a deadline fires at most once.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime, timedelta

import msgspec
from msgspec.structs import replace

from pipeline.model import JobEvent, State, iso_time

DEFAULT_STALE_AFTER = timedelta(seconds=240)
RECENT_EVENT_IDS = 8
"""How many distinct event ids a run remembers for duplicate detection (R2)."""
MAX_OUTCOMES = 32
"""How many attempts' counted outcomes a run remembers (R13), by attempt; the lowest go first."""
MAX_ALIASES = 8
"""How many other run keys a run answers to (R17); the oldest go first."""
INTERNAL_RUN_FIELDS = ("recent_event_ids", "running_at", "alive_at", "outcomes", "aliases")
"""RunState fields that are the worker's bookkeeping, not part of a ``jobs.runs`` snapshot."""



class Cause(enum.StrEnum):
    """Why a transition happened."""

    VENDOR = "vendor"
    STALE_TIMEOUT = "stale_timeout"
    RETRY = "retry"
    REACTIVATION = "reactivation"
    EVICTED = "evicted"


class Transition(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One change of a run's state, or one flagged event that did not change it (R12)."""

    transition_id: str
    vendor: str
    job_key: str
    run_key: str
    attempt: int
    from_state: State | None
    to_state: State
    at: datetime
    cause: Cause
    event_id: str | None
    late: bool = False
    duplicate: bool = False
    illegal: bool = False


class RunState(msgspec.Struct, frozen=True, gc=False, array_like=True, kw_only=True):
    """One run (execution) of a job, as far as its events tell.

    Array-like so the stored value carries no field names. ``recent_event_ids`` is the
    bounded duplicate memory (R2); it is left out of the ``jobs.runs`` snapshots.
    """

    run_key: str
    job_key: str
    vendor: str
    state: State
    attempt: int
    first_event_at: datetime
    last_event_at: datetime
    current_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    native_state: str = ""
    progress: float | None = None
    rows: int | None = None
    retries: int = 0
    stale_episodes: int = 0
    reactivations: int = 0
    events: int = 1
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_error_at: datetime | None = None
    deadline: datetime | None = None
    recent_event_ids: tuple[int, ...] = ()
    queued_at: datetime | None = None
    running_at: datetime | None = None
    alive_at: datetime | None = None
    outcomes: tuple[tuple[int, State], ...] = ()
    aliases: tuple[str, ...] = ()
    source: str = ""
    parent_run_key: str | None = None
    version: int = 0
    left_open: bool = False  # R21: its last snapshot, sent as it left the state open

    @property
    def duration(self) -> timedelta | None:
        """finished_at - started_at (across all attempts), None until both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def queue_time(self) -> timedelta | None:
        """started_at - queued_at: how long the run waited before it ran (R3)."""
        if self.queued_at is None or self.started_at is None:
            return None
        return self.started_at - self.queued_at

    @property
    def activity_at(self) -> datetime:
        """The last time the vendor showed the run alive: its newest event, or a later
        poll that showed it unchanged (R2, R10). Its deadline is this + stale_after."""
        alive = self.alive_at
        return alive if alive is not None and alive > self.last_event_at else self.last_event_at


class JobState(msgspec.Struct, frozen=True, gc=False, array_like=True, kw_only=True):
    """A job's open and recently finished runs, and counts over all its runs (R13)."""

    job_key: str
    vendor: str
    runs: dict[str, RunState] = {}
    runs_seen: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    skipped: int = 0
    retries: int = 0
    stale_episodes: int = 0
    reactivations: int = 0
    events: int = 0
    deadline: datetime | None = None
    finished_quiet_since: datetime | None = None  # lower bounds for evict's O(1) test
    stale_quiet_since: datetime | None = None
    evicted: dict[int, State] = {}  # run_hash(run key) -> final state, oldest first (R14)
    evicted_at: datetime | None = None  # the watermark of the last eviction
    seen_until: datetime | None = None  # R20: runs quiet since then that the job no longer holds left it


def run_hash(run_key: str) -> int:
    """The 64-bit form of a run key kept in the memory of evicted runs (R14)."""
    digest = hashlib.blake2b(run_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def event_key(event_id: str) -> int:
    """The 64-bit form of an event id kept in the duplicate memory (R2)."""
    if len(event_id) == 32:
        try:
            return int(event_id[:16], 16)
        except ValueError:
            pass
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def apply(
    run: RunState | None, event: JobEvent, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> tuple[RunState, list[Transition]]:
    """Fold one event into its run (None for a run not seen yet). Never raises for
    event content: odd events become flagged records (R2, R4, R8)."""
    if run is None:
        return _open(event, stale_after)
    if event.run_key != run.run_key:
        raise ValueError(f"event for run {event.run_key!r} applied to run {run.run_key!r}")
    key = event_key(event.event_id)
    if key in run.recent_event_ids:
        if _confirms_alive(run, event):
            return _refreshed(run, event.received_at, stale_after), []
        return run, [_flagged(run, event, duplicate=True)]

    old_state = run.state
    attempt = event.attempt
    if attempt is None:
        if event.occurred_at < run.current_at:
            return _late(run, event, key, stale_after)
        if old_state is _FAILED and _starts_new_execution(run, event):
            return _move(run, event, key, stale_after, run.attempt + 1, _RETRY)
    elif attempt > run.attempt:
        return _move(run, event, key, stale_after, attempt, _RETRY)
    elif attempt < run.attempt or event.occurred_at < run.current_at:
        return _late(run, event, key, stale_after)

    new_state = event.state
    if new_state is old_state:
        return _merge(run, event, key, stale_after, latest=True), []
    if _is_terminal(old_state):
        updated = _merge(run, event, key, stale_after, latest=False)
        return updated, [_flagged(updated, event, illegal=True)]
    reactivated = old_state is _STALE and (new_state is _RUNNING or new_state is _PENDING)
    cause = _REACTIVATION if reactivated else _VENDOR
    return _move(run, event, key, stale_after, run.attempt, cause)


def expire(
    run: RunState, watermark: datetime, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> tuple[RunState, list[Transition]]:
    """Make a PENDING/RUNNING run STALE once the watermark passed its silence limit (R10)."""
    state = run.state
    if state is not _RUNNING and state is not _PENDING:
        return run, []
    due = run.activity_at + stale_after
    if watermark < due:
        return run, []
    updated = replace(run, state=_STALE, stale_episodes=run.stale_episodes + 1, deadline=None)
    transition = Transition(
        transition_id=_transition_id(run.run_key, iso_time(due), state, _STALE, Cause.STALE_TIMEOUT, ""),
        vendor=run.vendor,
        job_key=run.job_key,
        run_key=run.run_key,
        attempt=run.attempt,
        from_state=state,
        to_state=_STALE,
        at=due,
        cause=Cause.STALE_TIMEOUT,
        event_id=None,
    )
    return updated, [transition]


def apply_job(
    job: JobState | None, event: JobEvent, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> tuple[JobState, list[Transition]]:
    """``apply`` on the event's run within its job, keeping the job's counts (R13); an
    event whose run the job knows by another name goes to that run (R17)."""
    if job is None:
        job = JobState(job_key=event.job_key, vendor=event.vendor)
    named = event.run_key
    old = job.runs.get(named)
    if old is None and job.runs and event.attrs and "same_run_as" in event.attrs:
        old = _run_also_named(job, event)
        if old is not None:
            event = replace(event, run_key=old.run_key)
    if old is None and (job.evicted or job.seen_until is not None):
        final = evicted_state(job, event)
        if final is not None:
            if not _is_terminal(final) and _is_terminal(event.state):
                return _closed_after_eviction(job, event, final)
            return job, [_late_for_evicted(event, final)]
    run, transitions = apply(old, event, stale_after=stale_after)
    if run is old:
        return job, transitions
    run = _with_aliases(run, named, event)
    return _with_run(job, old, replace(run, version=(0 if old is None else old.version) + 1)), transitions


def run_of(job: JobState, event: JobEvent) -> RunState | None:
    """The run of ``job`` that ``event`` was applied to: its own key, or (R17) the run
    that answers to the key or one of the names it gave (``apply_job`` filed it there)."""
    run = job.runs.get(event.run_key)
    if run is None and job.runs and event.attrs and "same_run_as" in event.attrs:
        return _run_also_named(job, event)
    return run


def evicted_state(job: JobState, event: JobEvent | str) -> State | None:
    """The final state of the event's run if it left the job's state (R14: under the
    event's key or another of its names), else, when the event is no newer than the
    job's ``seen_until`` (R20), the event's own state; None for a run not seen before.
    Given a run key alone, what the memory of evicted runs says."""
    if isinstance(event, str):
        return job.evicted.get(run_hash(event)) if job.evicted else None
    if job.evicted:
        evicted = job.evicted
        for name in (event.run_key, *_other_names(event)):
            final = evicted.get(run_hash(name))
            if final is not None:
                return final
    seen_until = job.seen_until
    if seen_until is not None and event.occurred_at <= seen_until:
        return event.state
    return None


def left_open(before: JobState, after: JobState, at: datetime) -> list[tuple[RunState, Transition]]:
    """R21: per PENDING/RUNNING/STALE run of ``before`` that ``after`` no longer holds,
    its last snapshot (``left_open``, no deadline, next version) and one record (cause
    EVICTED): it left the state open, so readers stop showing it active."""
    records = []
    for run_key, run in before.runs.items():
        if run_key in after.runs or _is_terminal(run.state):
            continue
        records.append((replace(run, left_open=True, deadline=None, version=run.version + 1), Transition(
            transition_id=_transition_id(run_key, "evicted", run.state, run.state, Cause.EVICTED, ""),
            vendor=run.vendor, job_key=run.job_key, run_key=run_key, attempt=run.attempt,
            from_state=run.state, to_state=run.state, at=at, cause=Cause.EVICTED, event_id=None,
        )))
    return records


def _closed_after_eviction(job: JobState, event: JobEvent, final: State) -> tuple[JobState, list[Transition]]:
    """R21: the outcome of a run that left the state open: counted once, remembered."""
    evicted = dict(job.evicted)
    for name in (event.run_key, *_other_names(event)):
        if run_hash(name) in evicted:
            evicted[run_hash(name)] = event.state
    state = event.state
    transition = Transition(
        transition_id=_transition_id(event.run_key, event.event_id, final, state, _VENDOR, ""),
        vendor=event.vendor, job_key=event.job_key, run_key=event.run_key, attempt=event.attempt or 1,
        from_state=final, to_state=state, at=event.occurred_at, cause=_VENDOR, event_id=event.event_id,
    )
    return replace(
        job, evicted=evicted, events=job.events + 1,
        succeeded=job.succeeded + (state is _SUCCEEDED), failed=job.failed + (state is _FAILED),
        canceled=job.canceled + (state is _CANCELED), skipped=job.skipped + (state is State.SKIPPED),
    ), [transition]


def forget(job: JobState) -> JobState:
    """R20: the job with nothing left but its counts and ``seen_until``, the last event
    time of every run it held or evicted: what recognises the past at a fixed size."""
    return replace(
        job, runs={}, deadline=None, finished_quiet_since=None, stale_quiet_since=None, evicted={},
        evicted_at=None, seen_until=_later(job.seen_until, _last_event(job)),
    )


def trusted(event: JobEvent, received: datetime, trusted_until: datetime) -> JobEvent:
    """R19: a skewed event (occurred_at beyond ``trusted_until``, the time its receipt
    lets the stream trust) as the lifecycle orders it: at ``received``, and with no
    start or finish time beyond ``trusted_until``."""
    started, finished = event.started_at, event.finished_at
    return replace(
        event, occurred_at=received,
        started_at=received if started is not None and started > trusted_until else started,
        finished_at=received if finished is not None and finished > trusted_until else finished,
    )


def deadline(job: JobState, stale_after: timedelta) -> datetime | None:
    """R18: when the job's first PENDING/RUNNING run goes STALE under ``stale_after``
    (measured from its activity: its last event or a later poll that showed it alive)."""
    earliest = None
    for run in job.runs.values():
        state = run.state
        if state is _RUNNING or state is _PENDING:
            alive, last = run.alive_at, run.last_event_at
            activity = alive if alive is not None and alive > last else last  # ``activity_at``, inlined
            if earliest is None or activity < earliest:
                earliest = activity
    return None if earliest is None else earliest + stale_after


def next_due(
    job: JobState, *, stale_after: timedelta, retention: timedelta, stale_retention: timedelta | None,
    forget_after: timedelta,
) -> datetime | None:
    """R18: the earliest event time at which expiry, eviction or forgetting may change
    the job (never later than the truth; possibly earlier, then nothing happens)."""
    due = earliest = deadline(job, stale_after)
    if len(job.runs) > 1:  # time never evicts a job's last run (it is forgotten whole)
        if job.finished_quiet_since is not None:
            at = job.finished_quiet_since + retention
            if earliest is None or at < earliest:
                earliest = at
        if stale_retention is not None and job.stale_quiet_since is not None:
            at = job.stale_quiet_since + stale_retention
            if earliest is None or at < earliest:
                earliest = at
    if due is None:
        last = _last_activity(job)
        if last is not None:
            at = last + forget_after
            if earliest is None or at < earliest:
                earliest = at
    return earliest


def forgettable(job: JobState, watermark: datetime, *, forget_after: timedelta) -> bool:
    """R14: nothing left to keep: no PENDING/RUNNING run, and nothing heard of the job
    (nor a run evicted) for ``forget_after``."""
    for run in job.runs.values():
        state = run.state
        if state is _RUNNING or state is _PENDING:
            return False
    last = _last_activity(job)
    return last is None or last + forget_after <= watermark


def _last_event(job: JobState) -> datetime | None:
    latest = None
    for run in job.runs.values():
        last = run.last_event_at
        if latest is None or last > latest:
            latest = last
    return latest


def _last_activity(job: JobState) -> datetime | None:
    latest = job.evicted_at
    for run in job.runs.values():
        last = run.last_event_at
        if latest is None or last > latest:
            latest = last
    return latest


def expire_job(
    job: JobState, watermark: datetime, *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> tuple[JobState, list[Transition]]:
    """``expire`` every run of the job that is due, in the order the job holds them."""
    transitions: list[Transition] = []
    for old in list(job.runs.values()):
        run, expired = expire(old, watermark, stale_after=stale_after)
        if expired:
            job = _with_run(job, old, replace(run, version=old.version + 1))
            transitions.extend(expired)
    return job, transitions


def evict(
    job: JobState,
    watermark: datetime,
    *,
    retention: timedelta,
    stale_retention: timedelta | None = None,
    max_finished: int | None = None,
    max_runs: int | None = None,
    max_evicted: int = 256,
) -> JobState:
    """Drop runs that can no longer change by themselves and went quiet, and keep the
    job within its counts (R14).

    O(1) when nothing is due by time and the job holds at most ``max_finished`` runs:
    no terminal run had its last event before ``job.finished_quiet_since``, no STALE
    run before ``job.stale_quiet_since`` (lower bounds, kept by ``_with_run`` and made
    exact here when passed)."""
    if not eviction_due(job, watermark, retention=retention, stale_retention=stale_retention, max_finished=max_finished):
        return job
    cutoff = watermark - retention
    stale_cutoff = None if stale_retention is None else watermark - stale_retention
    over_count = max_finished is not None and len(job.runs) > max_finished
    keep = {
        run_key: run
        for run_key, run in job.runs.items()
        if not (
            (_is_terminal(run.state) and run.last_event_at <= cutoff)
            or (stale_cutoff is not None and run.state is _STALE and run.last_event_at <= stale_cutoff)
        )
    }
    if not keep and job.runs:  # time never evicts a job's last run: it is forgotten whole
        last = max(job.runs.values(), key=_quietness)
        keep = {last.run_key: last}
    if over_count:
        finished = [run for run in keep.values() if _is_terminal(run.state)]
        if len(finished) > max_finished:  # type: ignore[operator]
            finished.sort(key=_quietness)
            for run in finished[: len(finished) - max_finished]:  # type: ignore[operator]
                del keep[run.run_key]
    if max_runs is not None and len(keep) > max_runs:
        # Beyond the count even open runs leave, the quietest first (STALE before active).
        rest = sorted(keep.values(), key=lambda run: (run.state is not _STALE, run.last_event_at, run.run_key))
        for run in rest[: len(keep) - max_runs]:
            del keep[run.run_key]
    return _without(job, keep, watermark, max_evicted)


def eviction_due(
    job: JobState, watermark: datetime, *, retention: timedelta, stale_retention: timedelta | None = None,
    max_finished: int | None = None,
) -> bool:
    """Whether ``evict`` would look at the job's runs at all (R14's O(1) test): a
    terminal run may be quiet for ``retention``, a STALE one for ``stale_retention``, or
    the job holds more than ``max_finished`` runs. False: ``evict`` returns the job as is."""
    quiet = job.finished_quiet_since
    if quiet is not None and quiet <= watermark - retention:
        return True
    quiet = job.stale_quiet_since
    if stale_retention is not None and quiet is not None and quiet <= watermark - stale_retention:
        return True
    return max_finished is not None and len(job.runs) > max_finished


def evict_oldest(job: JobState, count: int, watermark: datetime, *, max_evicted: int = 256) -> JobState:
    """Drop the ``count`` quietest runs, whatever their state: the last resort of a
    stream layer whose stored entry would not fit in one record (R14)."""
    ordered = sorted(job.runs.values(), key=lambda run: (not _is_terminal(run.state), run.state is not _STALE, *_quietness(run)))
    gone = {run.run_key for run in ordered[:count]}
    return _without(job, {k: r for k, r in job.runs.items() if k not in gone}, watermark, max_evicted)


def _quietness(run: RunState) -> tuple[datetime, str]:
    return run.last_event_at, run.run_key


def _without(job: JobState, keep: dict[str, RunState], watermark: datetime, max_evicted: int) -> JobState:
    """The job holding only ``keep``; the runs that left go to the memory (R14)."""
    evicted = job.evicted
    seen_until = job.seen_until
    gone = [run for key, run in job.runs.items() if key not in keep]
    if gone:
        evicted = dict(evicted)
        for run in gone:
            for name in (run.run_key, *run.aliases):
                evicted[run_hash(name)] = run.state
        if len(evicted) > max_evicted:
            # R20: runs leave the memory oldest first, quieter than the quietest run
            # leaving now (eviction goes by quietness): time answers for them.
            seen_until = _later(seen_until, min(run.last_event_at for run in gone))
        while len(evicted) > max_evicted:
            del evicted[next(iter(evicted))]
    finished_quiet_since, stale_quiet_since = _quiet_since(keep)
    deadline = _earliest_deadline(keep)
    return replace(
        job, runs=keep, finished_quiet_since=finished_quiet_since, stale_quiet_since=stale_quiet_since,
        evicted=evicted, evicted_at=watermark if gone else job.evicted_at, deadline=deadline,
        seen_until=seen_until,
    )


_job_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(JobState)
_run_decoder = msgspec.msgpack.Decoder(RunState)
_transition_encoder = msgspec.json.Encoder()
_transition_decoder = msgspec.json.Decoder(Transition)


def encode_job(job: JobState) -> bytes:
    return _job_encoder.encode(job)


def decode_job(data: bytes) -> JobState:
    return _job_decoder.decode(data)


def encode_run(run: RunState) -> bytes:
    return _job_encoder.encode(run)


def decode_run(data: bytes) -> RunState:
    return _run_decoder.decode(data)


def encode_transition(transition: Transition) -> bytes:
    return _transition_encoder.encode(transition)


def decode_transition(data: bytes) -> Transition:
    return _transition_decoder.decode(data)


# --- internals ---------------------------------------------------------------------


# Enum members as module names: State.X costs ~75 ns on 3.11, a global ~7 ns.
_PENDING, _RUNNING, _STALE = State.PENDING, State.RUNNING, State.STALE
_SUCCEEDED, _FAILED, _CANCELED = State.SUCCEEDED, State.FAILED, State.CANCELED
_VENDOR, _RETRY, _REACTIVATION = Cause.VENDOR, Cause.RETRY, Cause.REACTIVATION


def _is_terminal(state: State) -> bool:
    # Identity tests: a frozenset lookup hashes the enum in Python code (~0.2 us).
    return state is not _RUNNING and state is not _PENDING and state is not _STALE


def _open(event: JobEvent, stale_after: timedelta) -> tuple[RunState, list[Transition]]:
    """R1: a run's first event."""
    occurred = event.occurred_at
    state = event.state
    attempt = event.attempt or 1
    active = state is _RUNNING or state is _PENDING
    has_error = event.error_code is not None or event.error_message is not None
    queued_at, running_at, started_at = _start_facts(None, None, None, event)
    alive_at = event.received_at if active else None
    run = RunState(
        run_key=event.run_key,
        job_key=event.job_key,
        vendor=event.vendor,
        state=state,
        attempt=attempt,
        first_event_at=occurred,
        last_event_at=occurred,
        current_at=occurred,
        started_at=started_at,
        finished_at=_finish_time(event) if _is_terminal(state) else None,
        native_state=event.native_state,
        progress=event.progress,
        rows=event.rows,
        retries=attempt - 1,
        stale_episodes=1 if state is _STALE else 0,
        events=1,
        last_error_code=event.error_code,
        last_error_message=event.error_message,
        last_error_at=occurred if has_error else None,
        deadline=_later(occurred, alive_at) + stale_after if active else None,
        recent_event_ids=(event_key(event.event_id),),
        queued_at=queued_at,
        running_at=running_at,
        alive_at=alive_at,
        outcomes=((attempt, state),) if _is_terminal(state) else (),
        source=event.source,
        parent_run_key=event.parent_run_key,
    )
    return run, [_transition(run, event, None, _VENDOR)]


def _merge(run: RunState, event: JobEvent, key: int, stale_after: timedelta, *, latest: bool) -> RunState:
    """R3 facts of a non-duplicate event that leaves the state as it is; with ``latest``
    (an in-order event) also the R5 latest-value facts and the liveness (R2)."""
    occurred = event.occurred_at
    first = run.first_event_at
    last = run.last_event_at
    state = run.state
    active = state is _RUNNING or state is _PENDING
    error_code, error_message, error_at = _last_error(run, event)
    if last < occurred:
        last = occurred
    queued_at, running_at, started_at = _start_facts(run.queued_at, run.running_at, run.started_at, event)
    alive_at = _later(run.alive_at, event.received_at) if latest and active else run.alive_at
    return replace(
        run,
        first_event_at=occurred if occurred < first else first,
        last_event_at=last,
        current_at=occurred if latest else run.current_at,
        started_at=started_at,
        native_state=event.native_state if latest else run.native_state,
        progress=event.progress if latest else run.progress,
        rows=event.rows if latest else run.rows,
        events=run.events + 1,
        last_error_code=error_code,
        last_error_message=error_message,
        last_error_at=error_at,
        deadline=_later(last, alive_at) + stale_after if active else None,
        recent_event_ids=(*run.recent_event_ids[1 - RECENT_EVENT_IDS :], key),
        queued_at=queued_at,
        running_at=running_at,
        alive_at=alive_at,
    )


def _move(
    run: RunState, event: JobEvent, key: int, stale_after: timedelta, attempt: int, cause: Cause
) -> tuple[RunState, list[Transition]]:
    """R6, R7, R11: an in-order event (or a new attempt) moves the run to the event's state."""
    occurred = event.occurred_at
    first = run.first_event_at
    last = run.last_event_at
    state = event.state
    error_code, error_message, error_at = _last_error(run, event)
    if last < occurred:
        last = occurred
    active = state is _RUNNING or state is _PENDING
    queued_at, running_at, started_at = _start_facts(run.queued_at, run.running_at, run.started_at, event)
    alive_at = _later(run.alive_at, event.received_at) if active else run.alive_at
    terminal = not active and state is not _STALE
    updated = replace(
        run,
        state=state,
        attempt=attempt,
        first_event_at=occurred if occurred < first else first,
        last_event_at=last,
        current_at=occurred,
        started_at=started_at,
        finished_at=_finish_time(event) if terminal else None,
        native_state=event.native_state,
        progress=event.progress,
        rows=event.rows,
        retries=attempt - 1,
        stale_episodes=run.stale_episodes + 1 if state is _STALE else run.stale_episodes,
        reactivations=run.reactivations + 1 if cause is _REACTIVATION else run.reactivations,
        events=run.events + 1,
        last_error_code=error_code,
        last_error_message=error_message,
        last_error_at=error_at,
        deadline=_later(last, alive_at) + stale_after if active else None,
        recent_event_ids=(*run.recent_event_ids[1 - RECENT_EVENT_IDS :], key),
        queued_at=queued_at,
        running_at=running_at,
        alive_at=alive_at,
        outcomes=_with_outcome(run.outcomes, attempt, state) if terminal else run.outcomes,
    )
    return updated, [_transition(updated, event, run.state, cause)]


def _late(
    run: RunState, event: JobEvent, key: int, stale_after: timedelta
) -> tuple[RunState, list[Transition]]:
    """R4: kept and counted, never moves the state. R13: the outcome of an older,
    explicitly numbered attempt that arrives late is that attempt's outcome."""
    updated = _merge(run, event, key, stale_after, latest=False)
    attempt = event.attempt
    if attempt is not None and attempt < run.attempt and _is_terminal(event.state):
        outcomes = _with_outcome(run.outcomes, attempt, event.state)
        if outcomes is not run.outcomes:
            updated = replace(updated, outcomes=outcomes)
    if event.state is run.state:
        return updated, []
    return updated, [_flagged(updated, event, late=True)]


def _confirms_alive(run: RunState, event: JobEvent) -> bool:
    """R2: a repeated poll showing an active run as it is, received after the last
    confirmation (a re-delivery of the same record is received at the same time)."""
    state = run.state
    if event.state is not state or (state is not _RUNNING and state is not _PENDING):
        return False
    received = event.received_at
    return received is not None and received > run.activity_at


def _refreshed(run: RunState, received: datetime, stale_after: timedelta) -> RunState:
    """R2, R10: the run confirmed alive at ``received``: a later deadline, nothing else."""
    return replace(run, alive_at=received, deadline=received + stale_after)


Outcomes = tuple[tuple[int, State], ...]


def _with_outcome(outcomes: Outcomes, attempt: int, state: State) -> Outcomes:
    """R13: ``outcomes`` with ``attempt``'s outcome, unless it already has one."""
    for counted, _ in outcomes:
        if counted == attempt:
            return outcomes
    if len(outcomes) >= MAX_OUTCOMES and attempt < outcomes[0][0]:
        return outcomes  # older than the memory: counted long ago, or never will be
    merged = sorted((*outcomes, (attempt, state)))
    return tuple(merged[-MAX_OUTCOMES:])


def _start_facts(
    queued_at: datetime | None, running_at: datetime | None, started_at: datetime | None, event: JobEvent
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """R3: (queued_at, running_at, started_at) with ``event`` merged in, in any order.

    queued_at is the earliest PENDING event, unless the run began before it (then it
    queued a later attempt, and the run's own queue time is unknown); running_at the
    earliest RUNNING one;
    started_at the earliest of running_at and the start times the events report, except
    a reported start at or before queued_at: that is when the vendor created the run
    (TrueNAS ``time_started``), not when it began to run."""
    occurred = event.occurred_at
    state = event.state
    queued_moved = False
    if state is _PENDING and (queued_at is None or occurred < queued_at):
        queued_at = occurred
        queued_moved = True
    if state is _RUNNING and (running_at is None or occurred < running_at):
        running_at = occurred
        if started_at is None or occurred < started_at:
            started_at = occurred
    reported = event.started_at
    if reported is not None and (queued_at is None or reported > queued_at):
        if started_at is None or reported < started_at:
            started_at = reported
    if queued_moved and started_at is not None and started_at <= queued_at and started_at != running_at:
        started_at = running_at  # the reported start turned out to be the creation time
    if queued_at is not None and started_at is not None and queued_at > started_at:
        queued_at = None  # a PENDING after the run began queues a later attempt, not the run
    return queued_at, running_at, started_at


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    """The later of two times (None only when neither is given)."""
    if first is None:
        return second
    if second is None or second <= first:
        return first
    return second


def _starts_new_execution(run: RunState, event: JobEvent) -> bool:
    """R7 for attempt None on a FAILED run (finished_at is set while terminal, R6)."""
    if event.started_at is not None:
        return run.finished_at is not None and event.started_at > run.finished_at
    return event.state is _RUNNING or event.state is _PENDING


def _finish_time(event: JobEvent) -> datetime:
    return event.finished_at if event.finished_at is not None else event.occurred_at


def _last_error(run: RunState, event: JobEvent) -> tuple[str | None, str | None, datetime | None]:
    """R3: the error of the latest event (by event time) that reported one, whatever
    the arrival order; ties go to the greater (code, message)."""
    code, message = event.error_code, event.error_message
    if code is None and message is None:
        return run.last_error_code, run.last_error_message, run.last_error_at
    if run.last_error_at is not None and (event.occurred_at, code or "", message or "") <= (
        run.last_error_at, run.last_error_code or "", run.last_error_message or ""
    ):
        return run.last_error_code, run.last_error_message, run.last_error_at
    return code, message, event.occurred_at


_TRANSITION_HASH = hashlib.blake2b(b"transition\x1f", digest_size=16)


def _transition_id(run_key: str, basis: str, from_state: State | None, to_state: State, cause: Cause, flags: str) -> str:
    """R12: the make_event_id recipe (128-bit BLAKE2b of the parts joined by \\x1f,
    under the name "transition"), from a pre-seeded hasher: ~0.2 us cheaper."""
    digest = _TRANSITION_HASH.copy()
    digest.update("\x1f".join((run_key, basis, from_state or "", to_state, cause, flags)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _transition(run: RunState, event: JobEvent, from_state: State | None, cause: Cause) -> Transition:
    """A real state change (or a run opening) caused by ``event``; ``run`` is the new state."""
    return Transition(
        transition_id=_transition_id(run.run_key, event.event_id, from_state, run.state, cause, ""),
        vendor=run.vendor,
        job_key=run.job_key,
        run_key=run.run_key,
        attempt=run.attempt,
        from_state=from_state,
        to_state=run.state,
        at=event.occurred_at,
        cause=cause,
        event_id=event.event_id,
    )


def _flagged(
    run: RunState, event: JobEvent, *, late: bool = False, duplicate: bool = False, illegal: bool = False
) -> Transition:
    """R12: a record of an event that did not change the state."""
    flags = "duplicate" if duplicate else "late" if late else "illegal"
    return Transition(
        transition_id=_transition_id(run.run_key, event.event_id, run.state, run.state, _VENDOR, flags),
        vendor=run.vendor,
        job_key=run.job_key,
        run_key=run.run_key,
        attempt=run.attempt,
        from_state=run.state,
        to_state=run.state,
        at=event.occurred_at,
        cause=_VENDOR,
        event_id=event.event_id,
        late=late,
        duplicate=duplicate,
        illegal=illegal,
    )


def _late_for_evicted(event: JobEvent, final: State) -> Transition:
    """R14: the one record of an event whose run already left the state."""
    return Transition(
        transition_id=_transition_id(event.run_key, event.event_id, final, final, _VENDOR, "late"),
        vendor=event.vendor,
        job_key=event.job_key,
        run_key=event.run_key,
        attempt=event.attempt or 1,
        from_state=final,
        to_state=final,
        at=event.occurred_at,
        cause=_VENDOR,
        event_id=event.event_id,
        late=True,
    )


def _with_run(job: JobState, old: RunState | None, run: RunState) -> JobState:
    """R13: the job with ``run`` stored, its counts moved by what changed."""
    runs = dict(job.runs)
    runs[run.run_key] = run
    deadline = job.deadline
    due = run.deadline
    if old is not None and old.deadline is not None and old.deadline == deadline and (due is None or due > deadline):
        deadline = _earliest_deadline(runs)  # the run that held the earliest deadline moved on
    elif due is not None and (deadline is None or due < deadline):
        deadline = due
    finished_quiet_since, stale_quiet_since = job.finished_quiet_since, job.stale_quiet_since
    last = run.last_event_at
    state = run.state
    if state is _STALE:
        if stale_quiet_since is None or last < stale_quiet_since:
            stale_quiet_since = last
    elif due is None and (finished_quiet_since is None or last < finished_quiet_since):
        finished_quiet_since = last

    succeeded, failed, canceled, skipped = job.succeeded, job.failed, job.canceled, job.skipped
    old_outcomes = () if old is None else old.outcomes
    if run.outcomes is not old_outcomes:
        for outcome in run.outcomes:
            if outcome in old_outcomes:
                continue
            counted = outcome[1]
            if counted is _SUCCEEDED:
                succeeded += 1
            elif counted is _FAILED:
                failed += 1
            elif counted is _CANCELED:
                canceled += 1
            else:
                skipped += 1
    return replace(
        job,
        runs=runs,
        runs_seen=job.runs_seen + (old is None),
        succeeded=succeeded,
        failed=failed,
        canceled=canceled,
        skipped=skipped,
        retries=job.retries + run.retries - (0 if old is None else old.retries),
        stale_episodes=job.stale_episodes + run.stale_episodes - (0 if old is None else old.stale_episodes),
        reactivations=job.reactivations + run.reactivations - (0 if old is None else old.reactivations),
        events=job.events + run.events - (0 if old is None else old.events),
        deadline=deadline,
        finished_quiet_since=finished_quiet_since,
        stale_quiet_since=stale_quiet_since,
    )


def _other_names(event: JobEvent) -> tuple[str, ...]:
    """R17: the run keys the event's vendor says name the same run (``same_run_as``)."""
    names = event.attrs.get("same_run_as") if event.attrs else None
    if not isinstance(names, list):
        return ()
    return tuple(name for name in names if isinstance(name, str) and name)


def _run_also_named(job: JobState, event: JobEvent) -> RunState | None:
    """R17: the job's run that the event names under another key, if any."""
    names = {event.run_key, *_other_names(event)}
    for run in job.runs.values():
        if run.run_key in names or any(alias in names for alias in run.aliases):
            return run
    return None


def _with_aliases(run: RunState, named: str, event: JobEvent) -> RunState:
    """R17: ``run`` also answering to the key the event used and the names it gave."""
    if named == run.run_key and not (event.attrs and "same_run_as" in event.attrs):
        return run  # the common case: the run's own key and no other names
    new = [name for name in (named, *_other_names(event)) if name != run.run_key and name not in run.aliases]
    if not new:
        return run
    return replace(run, aliases=(*run.aliases, *dict.fromkeys(new))[-MAX_ALIASES:])


def _earliest_deadline(runs: dict[str, RunState]) -> datetime | None:
    earliest = None
    for run in runs.values():
        due = run.deadline
        if due is not None and (earliest is None or due < earliest):
            earliest = due
    return earliest


def _quiet_since(runs: dict[str, RunState]) -> tuple[datetime | None, datetime | None]:
    """The earliest last event of a terminal run and of a STALE run (what ``evict`` drops)."""
    finished = stale = None
    for run in runs.values():
        last = run.last_event_at
        if run.state is _STALE:
            if stale is None or last < stale:
                stale = last
        elif run.deadline is None and (finished is None or last < finished):
            finished = last
    return finished, stale
