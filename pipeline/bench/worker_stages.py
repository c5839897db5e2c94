"""The worker's stages of ``pipeline bench``: its throughput (stage 5), the same with two
workers in one consumer group (stage 5b), and its size and restart time with a large
table (stage 9).

Both run the real ``pipeline worker`` as a subprocess, exactly as deployed (uvloop, the
Tansu workarounds on, since the broker is the embedded one), and watch its output topic
``jobs.events`` from this process with a plain consumer:

- stage 5 (``worker_rate``): the worker over the raw topics the loader filled, timed from
  the first ``jobs.events`` record this process sees to the last one expected, so start-up,
  group join and recovery are not counted (as the bare Faust loop is timed after its
  first batch). The records seen in that first fetch are not counted either; the rate is
  given in raw records per second, like the baselines: output events counted, scaled by
  raw records per output event of the whole input.
- stage 5b (``worker_rate`` with ``workers=2``): two ``pipeline worker`` processes with
  one app id (one consumer group, each its own data directory) started together over
  the same raw topics, timed the same way: how a user scales before anything else. The
  group's first join and any rebalance while the second worker comes up are inside the
  timing, as they are for a user who starts a second worker.
- stage 9 (``state_stage``): on a broker of its own, ``runs`` distinct RUNNING runs (20
  per job) go through a worker with the RocksDB store; then the worker is stopped and
  started again. It reports the worker's peak RSS (the kernel's high-water mark,
  ``VmHWM``, of both processes) and restart-to-ready: from launching the second process
  to the first output of a new event sent at its launch, so the store, the changelog
  recovery and the rebuild of the due index are all inside it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from aiokafka import TopicPartition

from pipeline import catalog, vendors
from pipeline.bench.stages import BenchError, log_tail as _tail, stop_process
from pipeline.bench.workload import T0, Document
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients
from pipeline.model import RawEnvelope, encode_envelope
from pipeline.settings import Settings
from pipeline.sources import records_for
from pipeline.vendors import Context

RUNS_PER_JOB = 20
"""Stage 9 spreads its runs over jobs this many at a time: table entries of a realistic
size, well below ``max_runs_per_job``, so every run stays in the table."""


def expected_events(docs: Iterable[Document]) -> tuple[int, int]:
    """(raw records, jobs.events records) the loader's records of ``docs`` give: the
    worker normalizes each raw record as the ingestors cut it."""
    raw = events = 0
    for doc in docs:
        ctx = Context(source=doc.source, received_at=doc.at)
        for record in records_for(doc.vendor, doc.payload, ctx):
            raw += 1
            events += len(vendors.normalize(doc.vendor, record.payload, ctx)) if record.key is not None else 0
    return raw, events


class Outputs:
    """A consumer of every ``jobs.events`` partition from its start, counting what arrives.

    One instance serves all repeats of a stage: each repeat waits for the count to grow
    by what it expects, so earlier repeats' records are never counted twice. A stage that
    follows another on the same broker first reads past what is there (``skip_existing``):
    the earlier stage's records would otherwise arrive as its first fetch."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = clients.consumer(
            bootstrap, max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=50,
        )
        self.seen = 0

    async def start(self) -> "Outputs":
        await self._consumer.start()
        partitions = [TopicPartition(catalog.EVENTS, p) for p in range(catalog.topic(catalog.EVENTS).partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._partitions = partitions
        return self

    async def skip_existing(self, timeout_s: float = 120) -> int:
        """Read every record already in ``jobs.events`` (not counted): until a fetch
        brings nothing and each partition's position has reached the fetch highwater
        (``end_offsets`` is wrong on Tansu for batches of several records)."""
        skipped = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=300, max_records=20_000)
            arrived = sum(len(records) for records in batches.values())
            skipped += arrived
            if not arrived and await self._caught_up():
                return skipped
        raise BenchError(f"could not read past the {skipped:,} jobs.events records already there within {timeout_s:.0f} s")

    async def _caught_up(self) -> bool:
        for tp in self._partitions:
            high = self._consumer.highwater(tp)
            if high is None or await self._consumer.position(tp) < high:
                return False
        return True

    async def stop(self) -> None:
        await self._consumer.stop()

    async def until(self, count: int, workers: list[subprocess.Popen], deadline: float,
                    key: bytes | None = None) -> tuple[float, int, float]:
        """Read until ``count`` records arrived in total (or one with ``key``); returns
        (time of the first fetch that brought any, records in it, time of the last)."""
        first_at: float | None = None
        first_count = 0
        last_at = time.perf_counter()
        while self.seen < count:
            for worker in workers:
                if worker.poll() is not None:
                    raise BenchError(f"a worker exited with status {worker.returncode} after {self.seen:,} events")
            if time.monotonic() > deadline:
                raise BenchError(f"the worker gave {self.seen:,} of {count:,} events before the deadline")
            batches = await self._consumer.getmany(timeout_ms=200, max_records=20_000)
            arrived = sum(len(records) for records in batches.values())
            if not arrived:
                continue
            last_at = time.perf_counter()
            if first_at is None:
                first_at, first_count = last_at, arrived
            self.seen += arrived
            if key is not None and any(r.key == key for records in batches.values() for r in records):
                break
        return (first_at if first_at is not None else last_at), first_count, last_at


def start_worker(bootstrap: str, app_id: str, datadir: Path, store: str, log: Path) -> subprocess.Popen:
    """``pipeline worker`` as deployed, its output into ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", store,
             "--tansu", "--app-id", app_id, "--datadir", str(datadir), "--loglevel", "warning"],
            stdout=output, stderr=output,
        )




def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MB, or None where /proc has none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _worker_rate_once(bootstrap: str, outputs: Outputs, raw_records: int, events: int,
                            timeout_s: float, folder: Path, workers: int) -> float:
    app_id = f"jobstream-bench-worker-{uuid.uuid4().hex[:8]}"
    logs = [folder / f"{app_id}-{number}.log" for number in range(workers)]
    target = outputs.seen + events
    processes = [start_worker(bootstrap, app_id, folder / f"{app_id}-{number}", "memory://", log)
                 for number, log in enumerate(logs)]
    try:
        first_at, first_count, last_at = await outputs.until(target, processes, time.monotonic() + timeout_s)
    except BenchError as exc:
        raise BenchError(f"{exc}; the workers' logs end: {' | '.join(_tail(log) for log in logs)}") from None
    finally:
        for process in processes:
            stop_process(process)
    counted = events - first_count
    if counted <= 0 or last_at <= first_at:
        raise BenchError(f"too few events to time the worker (all came in one fetch; its batches hold up to "
                         f"{Settings.from_env().batch_max:,} records): use more --events, a few batches' worth")
    return counted / (last_at - first_at) * raw_records / events


def worker_rate(bootstrap: str, raw_records: int, events: int, *, repeats: int = 3, workers: int = 1,
                timeout_s: float = 900) -> list[float]:
    """Stage 5 (5b with ``workers=2``): raw records per second through ``workers``
    ``pipeline worker`` processes in one group, once per repeat, each with a new app id
    (a new consumer group and table: the whole input again)."""
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-worker-"))

    async def measure() -> list[float]:
        outputs = await Outputs(bootstrap).start()
        try:
            await outputs.skip_existing()
            return [await _worker_rate_once(bootstrap, outputs, raw_records, events, timeout_s, folder, workers)
                    for _ in range(repeats)]
        finally:
            await outputs.stop()

    try:
        return asyncio.run(measure())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def running_run(number: int) -> tuple[bytes, bytes]:
    """One TrueNAS job update: run ``number`` RUNNING, in job ``number // RUNS_PER_JOB``.

    Event time moves 0.1 ms per run, so a million runs span 100 s of event time and none
    goes STALE (240 s) while the table fills."""
    at = T0 + timedelta(microseconds=100 * number)
    method = f"bench.state{number // RUNS_PER_JOB}"
    started = {"$date": int(at.timestamp() * 1000)}
    fields = {"id": number, "method": method, "state": "RUNNING", "time_started": started,
              "progress": {"percent": 10, "description": None, "extra": None}}
    doc = {"msg": "changed", "collection": "core.get_jobs", "id": number, "fields": fields}
    envelope = RawEnvelope(vendor="truenas", source="bench", received_at=at, payload=doc)
    return f"truenas:bench:{method}".encode(), encode_envelope(envelope)


async def _load_runs(bootstrap: str, runs: int, progress: Callable[[int], None]) -> None:
    producer = clients.producer(bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    topic = catalog.raw_topic("truenas")
    try:
        for begin in range(0, runs, 50_000):
            futures = []
            for number in range(begin, min(runs, begin + 50_000)):
                key, value = running_run(number)
                futures.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*futures)
            progress(min(runs, begin + 50_000))
    finally:
        await producer.stop()


async def _state_stage(bootstrap: str, runs: int, folder: Path, say: Callable[[str], None],
                       timeout_s: float) -> dict[str, float | None]:
    await catalog.apply(bootstrap)
    say(f"  loading {runs:,} RUNNING runs ({RUNS_PER_JOB} per job) into raw.truenas ...")
    await _load_runs(bootstrap, runs, lambda n: say(f"    {n:,} raw records sent"))
    app_id = f"jobstream-bench-state-{uuid.uuid4().hex[:8]}"
    datadir, log = folder / "data", folder / "worker.log"
    outputs = await Outputs(bootstrap).start()
    try:
        say(f"  worker (RocksDB) filling its table with {runs:,} runs ...")
        began = time.perf_counter()
        worker = start_worker(bootstrap, app_id, datadir, "rocksdb://", log)
        try:
            step = max(runs // 10, 1)
            for target in [*range(step, runs, step), runs]:
                if outputs.seen < target:
                    await outputs.until(target, [worker], time.monotonic() + timeout_s)
                    say(f"    {outputs.seen:,} of {runs:,} runs out ({time.perf_counter() - began:.0f} s)")
            first_rss = peak_rss_mb(worker.pid)
            fill_eps = runs / (time.perf_counter() - began)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log ends: {_tail(log)}") from None
        finally:
            stop_process(worker)
        say("  restarting the worker ...")
        # The next run in line: its event time follows the table's, so it moves event time
        # by 0.1 ms (a probe from far in the future would make every run STALE at once).
        probe_key, probe_value = running_run(runs)
        launched = time.perf_counter()
        worker = start_worker(bootstrap, app_id, datadir, "rocksdb://", log)
        try:
            producer = clients.producer(bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(catalog.raw_topic("truenas"), probe_value, key=probe_key)
            finally:
                await producer.stop()
            _, _, ready_at = await outputs.until(runs + 1, [worker], time.monotonic() + timeout_s, key=probe_key)
            second_rss = peak_rss_mb(worker.pid)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log ends: {_tail(log)}") from None
        finally:
            stop_process(worker)
    finally:
        await outputs.stop()
    peaks = [rss for rss in (first_rss, second_rss) if rss is not None]
    return {
        "worker_peak_rss_mb": max(peaks) if peaks else None,
        "restart_to_ready_s": ready_at - launched,
        "state_fill_eps": fill_eps,
    }


def state_stage(runs: int, *, say: Callable[[str], None] = print, timeout_s: float = 900) -> dict[str, float | None]:
    """Stage 9, on a broker of its own (its input must not mix with the workload's)."""
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-state-"))
    try:
        with EmbeddedBroker() as broker:
            return asyncio.run(_state_stage(broker.bootstrap, runs, folder, say, timeout_s))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
