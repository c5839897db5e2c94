"""How fast is the lifecycle, and how big is its stored state?

Builds a realistic event mix up front (not timed), then times ``apply_job`` (and
``apply_job`` + ``evict``, as the stream layer calls them) on one core, and prints the
msgpack size of a JobState with 1 open run and with 10 runs.

Mix, per run (~5 events): PENDING, RUNNING, 1-2 RUNNING progress updates, a terminal
state; 10 % of runs fail and retry once (FAILED, RUNNING again with attempt None,
SUCCEEDED); 5 % of events are re-delivered (duplicates); 5 % of adjacent pairs arrive
swapped (late events). 2,000 jobs each start a run every 10 minutes; their events
interleave (each job's in event-time order), evict keeps 1 h of finished runs.

    /work/venv/bin/python scripts/bench_lifecycle.py [--events 400000] [--repeat 5]

Prints wall-clock and CPU-time rates: on a shared machine the CPU-time one is closer to
what one dedicated core does (cache contention still slows both).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import uuid
from datetime import datetime, timedelta

from pipeline import lifecycle
from pipeline.lifecycle import JobState
from pipeline.model import UTC, JobEvent, State, decode_event, encode_event, make_event_id

VENDOR = "qlik_qrs"
SOURCE = "qrs-prod-01.example.com"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_events(rng: random.Random, job_id: str, start: datetime) -> list[JobEvent]:
    """One run's events in event-time order, with realistic keys and native states."""
    run_id = str(uuid.UUID(int=rng.getrandbits(128)))
    job_key = f"{VENDOR}:{SOURCE}:{job_id}"
    run_key = f"{VENDOR}:{SOURCE}:{run_id}"
    at = start
    plan: list[tuple[State, str, float | None]] = [(State.PENDING, "Queued", None), (State.RUNNING, "Started", 0.0)]
    plan += [(State.RUNNING, "Started", float(p)) for p in sorted(rng.sample(range(5, 95), rng.randint(1, 2)))]
    if rng.random() < 0.10:
        plan += [(State.FAILED, "Retry", None), (State.RUNNING, "Started", 0.0)]
    plan.append((State.SUCCEEDED, "FinishedSuccess", 100.0) if rng.random() < 0.9 else (State.FAILED, "Error", None))
    events = []
    started = None
    for state, native, progress in plan:
        at += timedelta(seconds=rng.randint(1, 30))
        if state is State.RUNNING and progress == 0.0:
            started = at
        failed = state is State.FAILED
        events.append(JobEvent(
            event_id=make_event_id(VENDOR, run_id, native, at.isoformat(), progress),
            vendor=VENDOR, source=SOURCE, job_key=job_key, run_key=run_key,
            native_state=native, state=state, occurred_at=at, received_at=at,
            started_at=started, finished_at=at if state.terminal else None, progress=progress,
            rows=12_345 if state is State.SUCCEEDED else None,
            error_code="RELOAD_FAILED" if failed else None,
            error_message="Connector error: timeout after 300 s" if failed else None,
        ))
    return events


def event_mix(count: int, seed: int = 7, jobs: int = 2_000) -> list[JobEvent]:
    """Each job starts a run every 10 minutes; jobs interleave, each job's events stay in
    event-time order apart from the injected duplicates and swaps."""
    rng = random.Random(seed)
    streams = []
    for job in range(jobs):
        job_id = str(uuid.UUID(int=rng.getrandbits(128)))
        offset = timedelta(seconds=rng.randint(0, 600))
        runs = [run_events(rng, job_id, T0 + offset + timedelta(minutes=10 * n)) for n in range(count // jobs // 5 + 1)]
        streams.append([e for run in runs for e in run])
    mixed: list[JobEvent] = []
    cursors = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        index = rng.randrange(len(live))
        stream = streams[live[index]]
        position = cursors[live[index]]
        mixed.append(stream[position])
        if rng.random() < 0.05:
            mixed.append(stream[position])
        cursors[live[index]] = position + 1
        if position + 1 == len(stream):
            live[index] = live[-1]
            live.pop()
    for i in range(len(mixed) - 1):
        if rng.random() < 0.05:
            mixed[i], mixed[i + 1] = mixed[i + 1], mixed[i]
    return mixed[:count]


def time_apply(encoded: list[bytes], *, with_evict: bool, chunk: int = 1_000) -> tuple[float, float, int]:
    """(wall s, CPU s, transitions) for applying every event once.

    Events are stored encoded and decoded a chunk at a time, untimed, right before they
    are applied: as in the worker, an event is fresh in the cache when applied (holding
    all events as objects would time cache misses the stream does not have)."""
    jobs: dict[str, JobState] = {}
    transitions = 0
    retention = timedelta(hours=1)
    apply_job, evict = lifecycle.apply_job, lifecycle.evict
    watermark = T0
    wall = cpu = 0.0
    gc.disable()
    for offset in range(0, len(encoded), chunk):
        events = [decode_event(data) for data in encoded[offset : offset + chunk]]
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        for event in events:
            job, emitted = apply_job(jobs.get(event.job_key), event)
            if with_evict:
                if event.occurred_at > watermark:
                    watermark = event.occurred_at
                job = evict(job, watermark, retention=retention)
            jobs[event.job_key] = job
            transitions += len(emitted)
        wall += time.perf_counter() - wall_started
        cpu += time.process_time() - cpu_started
    gc.enable()
    return wall, cpu, transitions


def time_apply_runs(encoded: list[bytes], *, chunk: int = 1_000) -> tuple[float, float]:
    """(wall s, CPU s) for ``apply`` alone, run by run: the state machine without the
    job-level bookkeeping of ``apply_job`` (counts, the runs dict, the deadline)."""
    runs: dict[str, lifecycle.RunState] = {}
    apply = lifecycle.apply
    wall = cpu = 0.0
    gc.disable()
    for offset in range(0, len(encoded), chunk):
        events = [decode_event(data) for data in encoded[offset : offset + chunk]]
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        for event in events:
            runs[event.run_key], _ = apply(runs.get(event.run_key), event)
        wall += time.perf_counter() - wall_started
        cpu += time.process_time() - cpu_started
    gc.enable()
    return wall, cpu


def state_sizes() -> dict[str, int]:
    rng = random.Random(1)
    one: JobState | None = None
    for event in run_events(rng, "job-one", T0)[:3]:  # PENDING, RUNNING, a progress update
        one, _ = lifecycle.apply_job(one, event)
    ten: JobState | None = None
    for n in range(10):
        for event in run_events(rng, "job-ten", T0 + timedelta(minutes=10 * n)):
            ten, _ = lifecycle.apply_job(ten, event)
    assert one is not None and ten is not None
    return {
        "job, 1 open run": len(lifecycle.encode_job(one)),
        "job, 10 finished runs": len(lifecycle.encode_job(ten)),
        "one run alone": len(lifecycle.encode_run(next(iter(one.runs.values())))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = event_mix(args.events)
    duplicates = len(events) - len({e.event_id for e in events})
    print(f"{len(events)} events ({duplicates} re-deliveries), {len({e.run_key for e in events})} runs, "
          f"{len({e.job_key for e in events})} jobs")
    encoded = [encode_event(e) for e in events]
    del events
    count = len(encoded)
    timings = [time_apply_runs(encoded) for _ in range(args.repeat)]
    wall, cpu = min(t[0] for t in timings), min(t[1] for t in timings)
    print(f"apply            : {count / wall:>9,.0f} events/s wall ({wall / count * 1e6:.2f} us/event), "
          f"{count / cpu:>9,.0f} events/s CPU time (best of {args.repeat})")
    for with_evict in (False, True):
        results = [time_apply(encoded, with_evict=with_evict) for _ in range(args.repeat)]
        wall = min(r[0] for r in results)
        cpu = min(r[1] for r in results)
        label = "apply_job + evict" if with_evict else "apply_job        "
        print(f"{label}: {count / wall:>9,.0f} events/s wall ({wall / count * 1e6:.2f} us/event), "
              f"{count / cpu:>9,.0f} events/s CPU time (best of {args.repeat})")
    transitions = results[0][2]
    print(f"transitions emitted: {transitions} ({transitions / count:.2f} per event)")
    for label, size in state_sizes().items():
        print(f"encoded {label}: {size} bytes")


if __name__ == "__main__":
    main()
