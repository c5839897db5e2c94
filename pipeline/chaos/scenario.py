"""What one chaos run does and when: its options and its fault plan, drawn from the seed.

The plan is pure (seed and duration in, a sorted list of faults out), so the same
``--seed`` kills the same roles at the same instants of the run. Which records those
kills hit still depends on the machine's speed, which is why the verdict never compares
two runs (see ``oracle``): it compares one run with a recomputation of itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.vendors import registry

WORKER = "worker"
SECOND_WORKER = "worker-2"
SINK = "sink"
ALERTER = "alerter"
INGESTORS = tuple(vendor.ingestor_role for vendor in registry.vendors())
SIMULATORS = tuple(vendor.simulator_role for vendor in registry.vendors())


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    seed: int = 1
    duration_s: float = 75.0
    """How long faults are injected (the soak's minutes); catching up and checking follow."""
    run_dir: Path = Path("jobstream-chaos")
    bad_inputs: int = 10_000
    """Generated hostile records produced straight into the raw topics (receivers get more)."""
    catch_up_s: float = 240.0
    """How long the sink may take, after the sources stop, to hold every expected row."""
    broker_restart: bool = True
    lake: bool = False
    """Two sinks of one group write a DuckLake (a scratch PostgreSQL catalog, as ``pipeline
    demo --lake``) instead of one sink the file; the verdict is read from the lake."""

    @property
    def db_path(self) -> Path:
        return self.run_dir / "jobstream.duckdb"


@dataclass(frozen=True, slots=True, order=True)
class Fault:
    """At ``at_s`` seconds into the run, SIGKILL ``role``; start it again ``down_s``
    later (never, when ``down_s`` is None: the second worker's partitions must move)."""

    at_s: float
    role: str
    down_s: float | None
    why: str


def plan(seed: int, duration_s: float, *, lake_sinks: tuple[str, ...] = ()) -> list[Fault]:
    """The kills of one run (issue 22 points 1, 2, 3 and 6), sorted by time.

    Scaled with the duration: the worker every ~20 s (at least 3 times), the sink every
    ~30 s (at least twice), each ingestor and the alerter every ~90 s (at least once);
    the second worker once, for good, in the first half. Kills land in the first 85% of
    the run so every restarted role has time to catch up while faults still happen.

    With ``lake_sinks`` (the lake demo's role names), the sink kills are of them instead, in turn, every ~8 s
    (at least 4): one is killed while the other goes on (``runner`` never has both down),
    so its partitions move to the survivor mid-batch and back when it returns.
    """
    rng = random.Random(seed)
    start, end = 0.1 * duration_s, 0.85 * duration_s

    def times(count: int) -> list[float]:
        return sorted(round(rng.uniform(start, end), 1) for _ in range(count))

    faults = [Fault(at, WORKER, round(rng.uniform(0.5, 3.0), 1), "worker killed at a random point")
              for at in times(max(3, int(duration_s / 20)))]
    if lake_sinks:
        faults += [Fault(at, lake_sinks[n % len(lake_sinks)], round(rng.uniform(0.5, 3.0), 1),
                         "a lake sink killed mid-batch; the other takes its partitions")
                   for n, at in enumerate(times(max(4, int(duration_s / 8))))]
    else:
        faults += [Fault(at, SINK, round(rng.uniform(0.5, 3.0), 1), "sink killed mid-batch")
                   for at in times(max(2, int(duration_s / 30)))]
    for role in (*INGESTORS, ALERTER):
        faults += [Fault(at, role, round(rng.uniform(0.5, 4.0), 1), f"{role} killed; restarts from its cursor or offsets")
                   for at in times(max(1, int(duration_s / 90)))]
    faults.append(Fault(round(rng.uniform(start, 0.5 * duration_s), 1), SECOND_WORKER, None,
                        "one of two workers killed for good: the survivor takes its partitions"))
    return sorted(faults)
