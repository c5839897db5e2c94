"""The sink's stages of ``pipeline bench``: end to end (7), freshness (8), the sink alone (6).

All three start from what the loader put in the raw topics and use the real processes:

- 7, end to end (``end_to_end_eps``): ``pipeline worker`` and ``pipeline sink`` (with
  Quack) as deployed, as subprocesses, and an analyst's Quack client in this process
  counting ``job_events`` rows every ``POLL_S``. Timed from the first poll that sees a row
  to the poll that sees the last expected one (the distinct event ids the workload
  normalizes to), so start-up and the group join are not counted, as the bare Faust loop
  is timed after its first batch. Given in raw records per second, like the baselines:
  rows counted, scaled by raw records per row of the whole input. Each repeat starts a
  new worker (a new consumer group: it reads the raw topics from the start) and a sink
  on a new file whose offsets are set to the current ends of the ``jobs.*`` topics, so
  it loads that worker's output and nothing older.
- 8, freshness (``freshness_p50_s``, ``freshness_p99_s``): in the first repeat, once the
  worker and the sink have caught up, raw records that continue the workload are sent
  at ``rate`` a second for ``seconds`` through the ingestors' producer (acks=all), each
  send's acknowledgement time recorded, while the Quack client polls for their event
  ids every ``POLL_S``. The freshness of one event is the first poll that sees its row
  minus the acknowledgement of the first raw record that carried it.
- 6, the sink alone (``sink_rows_per_s``): the ``jobs.*`` records the first repeat's
  worker wrote (stages 7 and 8), through the sink's own loop in this process (decode,
  Arrow, one DuckDB transaction with the offsets per batch) into a new file, timed from
  the start of the loop to the commit of the last record: ``jobs.*`` records committed
  per second (each one a row, or a version or copy of one: ``sink_stored_rows`` says
  how many rows the file holds). Against it, repeat by repeat, a bare aiokafka loop
  (``getmany`` + ``orjson.loads``) over exactly the same records (``bare_aiokafka_jobs_eps``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from pipeline import catalog, vendors
from pipeline.bench.stages import BenchError, log_tail as _tail, stop_process
from pipeline.bench.workload import Document, documents
from pipeline.ops import ports
from pipeline.kafka import clients
from pipeline.settings import Settings
from pipeline.sink import quack
from pipeline.sink.consumer import TOPICS, consume
from pipeline.sink.records import TOPIC_TABLES, Batch
from pipeline.sink.writer import DuckDBWriter
from pipeline.sources import RawProducer, Record, records_for
from pipeline.vendors import Context

POLL_S = 0.05
"""How often the Quack client asks the live sink: a visibility is known to within this.
Every 10 ms, the polls cost the sink and this process about a third of a core each,
taken from the worker they measure."""
READY_TIMEOUT_S = 60.0
SEND_TICK_S = 0.002
"""The paced producer sends what is due this often (a task per record cost more CPU than
the records themselves at 2,000 a second)."""
FRESHNESS_WAIT_S = 30.0
"""Freshness gives up when no new event became visible for this long; a pipeline slower
than the rate still gets its (large) numbers once its backlog drains."""

Position = tuple[str, int]


def workload_events(docs: Iterable[Document]) -> tuple[int, set[str]]:
    """(raw records, distinct event ids) the loader's records of ``docs`` give: the rows
    ``job_events`` holds once the worker and the sink went through them."""
    raw = 0
    ids: set[str] = set()
    for doc, record in _raw_records(docs):
        raw += 1
        ids.update(_event_ids(doc, record))
    return raw, ids


def _raw_records(docs: Iterable[Document]) -> Iterator[tuple[Document, Record]]:
    for doc in docs:
        for record in records_for(doc.vendor, doc.payload, Context(source=doc.source, received_at=doc.at)):
            yield doc, record


def _event_ids(doc: Document, record: Record) -> list[str]:
    if record.key is None:  # refused by its vendor module: a dead letter, no event
        return []
    ctx = Context(source=doc.source, received_at=record.received_at)
    return [event.event_id for event in vendors.normalize(doc.vendor, record.payload, ctx)]


def jobs_partitions() -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in TOPICS for p in range(catalog.topic(t).partitions)]


async def jobs_ends(bootstrap: str) -> dict[Position, int]:
    """The next offset of every ``jobs.*`` partition. Tansu's ListOffsets can answer short
    (docs/design.md, "Tansu"), so this reads on from there until each position meets the highwater
    that fetch responses report (which is right)."""
    consumer = clients.consumer(bootstrap, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = jobs_partitions()
        consumer.assign(partitions)
        for tp, offset in (await consumer.end_offsets(partitions)).items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            await consumer.getmany(timeout_ms=100, max_records=10_000)
            ends = {}
            for tp in partitions:
                highwater, position = consumer.highwater(tp), await consumer.position(tp)
                if highwater is not None and position >= highwater:
                    ends[(tp.topic, tp.partition)] = position
            if len(ends) == len(partitions):
                return ends
            if time.monotonic() > deadline:
                raise BenchError("could not find the ends of the jobs.* topics within a minute")
    finally:
        await consumer.stop()


def new_file(db: Path, offsets: dict[Position, int]) -> None:
    """A sink database that starts reading at ``offsets`` (one committed batch of no rows)."""
    writer = DuckDBWriter(db).open()
    try:
        writer.write(Batch(next_offsets=dict(offsets)))
    finally:
        writer.close()


@dataclass(frozen=True, slots=True)
class Live:
    """A worker and a sink running on the bench's broker, and an analyst's Quack client."""

    worker: subprocess.Popen
    sink: subprocess.Popen
    client: duckdb.DuckDBPyConnection
    address: str
    token: str
    logs: Path

    def rows(self, sql: str) -> list[tuple]:
        return quack.query(self.client, self.address, self.token, sql)

    def check(self) -> None:
        for name, process in (("worker", self.worker), ("sink", self.sink)):
            if process.poll() is not None:
                raise BenchError(f"the {name} exited with status {process.returncode}: {_tail(self.logs / f'{name}.log')}")


@contextmanager
def running(bootstrap: str, folder: Path, name: str) -> Iterator[Live]:
    """``pipeline sink`` (Quack on a free port) on a new file that starts at the current
    ends of the ``jobs.*`` topics, then ``pipeline worker`` with a new app id."""
    db = folder / f"{name}.duckdb"
    new_file(db, asyncio.run(jobs_ends(bootstrap)))
    token = uuid.uuid4().hex
    logs = folder / name
    reported = logs / "sink.ports"
    logs.mkdir()
    processes: list[subprocess.Popen] = []
    client = duckdb.connect()
    try:
        with open(logs / "sink.log", "wb") as log:
            sink = subprocess.Popen(
                [sys.executable, "-P", "-m", "pipeline", "sink", "--bootstrap", bootstrap, "--db", str(db),
                 "--quack-host", "localhost"],
                env={**os.environ, quack.TOKEN_ENV: token, ports.ANY_ENV: "quack", ports.REPORT_ENV: str(reported)},
                stdout=log, stderr=subprocess.STDOUT,
            )
        processes.append(sink)
        quack.load_extensions(client)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:  # the sink binds a Quack port of its choosing and reports it
                address = quack.uri("localhost", ports.reported(reported).get("quack", 0))
                quack.query(client, address, token, "SELECT 1")
                break
            except duckdb.Error:
                if sink.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the sink did not serve Quack: {_tail(logs / 'sink.log')}") from None
                time.sleep(0.1)
        with open(logs / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-P", "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", "memory://",
                 "--tansu", "--app-id", f"jobstream-bench-e2e-{uuid.uuid4().hex[:8]}", "--datadir", str(logs / "data"),
                 "--loglevel", "warning"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        processes.append(worker)
        yield Live(worker, sink, client, address, token, logs)
    finally:
        client.close()
        for process in reversed(processes):  # the worker first: the sink then has its last records
            stop_process(process)




def end_to_end_rate(live: Live, expected_rows: int, raw_records: int, timeout_s: float) -> float:
    """Raw records per second from the first row visible over Quack to the last expected."""
    deadline = time.monotonic() + timeout_s
    first_at: float | None = None
    first_rows = rows = 0
    while True:
        live.check()
        rows = live.rows("SELECT count(*) FROM job_events")[0][0]
        now = time.perf_counter()
        if rows and first_at is None:
            first_at, first_rows = now, rows
        if rows >= expected_rows:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"end to end: {rows:,} of {expected_rows:,} events visible over Quack after {timeout_s:.0f} s")
        time.sleep(POLL_S)
    if first_at is None or first_rows >= expected_rows:
        raise BenchError("too few events to time end to end (all appeared in one poll): use more --events")
    return (expected_rows - first_rows) * (raw_records / expected_rows) / (now - first_at)


def freshness(live: Live, bootstrap: str, docs: Iterable[Document], known: set[str], rate: int, seconds: float) -> dict[str, Any]:
    """Stage 8: send ``rate * seconds`` raw records continuing the workload, paced, and
    measure each new event's acknowledged -> visible over Quack. ``known`` (the event ids
    already visible) grows by the ones sent, for a next measurement on the same sink."""
    planned: list[tuple[Document, Record, list[str]]] = []
    fresh: set[str] = set()
    for doc, record in itertools.islice(_raw_records(docs), int(rate * seconds)):
        ids = [i for i in _event_ids(doc, record) if i not in known and i not in fresh]
        fresh.update(ids)
        planned.append((doc, record, ids))
    if not fresh:
        raise BenchError("freshness: the records to send carry no new events")
    known.update(fresh)
    received = {i: record.received_at for _, record, ids in planned for i in ids}  # job_events.received_at
    acked: dict[int, tuple[float, float]] = {}  # (perf_counter, wall clock) of the acknowledgement
    schedule = {"started": 0.0}  # record n is due at started + n / rate
    seen: dict[str, float] = {}
    done = threading.Event()
    failure: list[BaseException] = []

    def poll() -> None:
        # Ask only for rows from the oldest event not seen yet on: the answer stays small.
        # Gives up when nothing new became visible for FRESHNESS_WAIT_S.
        waiting = sorted((received[i], i) for i in fresh)
        lowest = 0
        progress_at = time.monotonic()
        try:
            while not done.is_set() and lowest < len(waiting) and time.monotonic() - progress_at < FRESHNESS_WAIT_S:
                since = waiting[lowest][0].isoformat()
                rows = live.rows(f"SELECT event_id FROM job_events WHERE received_at >= TIMESTAMPTZ '{since}'")
                now = time.perf_counter()
                before = len(seen)
                for (event_id,) in rows:
                    if event_id in fresh:
                        seen.setdefault(event_id, now)
                if len(seen) > before:
                    progress_at = time.monotonic()
                while lowest < len(waiting) and waiting[lowest][1] in seen:
                    lowest += 1
                time.sleep(POLL_S)
        except duckdb.Error as exc:
            failure.append(exc)

    def stamp(members: list[int]) -> None:
        now = (time.perf_counter(), time.time())
        for n in members:
            acked.setdefault(n, now)

    async def send() -> None:
        # Every SEND_TICK_S, the records now due go out, one send per producer; a send
        # ends when Kafka acknowledged its records.
        producers: dict[tuple[str, str], RawProducer] = {}
        try:
            for doc, _, _ in planned:
                if (doc.vendor, doc.source) not in producers:
                    producers[(doc.vendor, doc.source)] = await RawProducer(bootstrap, doc.vendor, doc.source).start()
            sends = []
            started = schedule["started"] = time.perf_counter()
            sent = 0
            while sent < len(planned):
                due = min(len(planned), int((time.perf_counter() - started) * rate) + 1)
                groups: dict[tuple[str, str], list[int]] = {}
                for n in range(sent, due):
                    groups.setdefault((planned[n][0].vendor, planned[n][0].source), []).append(n)
                for key, members in groups.items():
                    sending = asyncio.ensure_future(producers[key].send([planned[n][1] for n in members]))
                    sending.add_done_callback(lambda _, members=members: stamp(members))
                    sends.append(sending)
                sent = due
                await asyncio.sleep(SEND_TICK_S)
            reports = await asyncio.gather(*sends)
            if sum(report.sent for report in reports) != len(planned):
                raise BenchError("freshness: a raw record was refused by the producer")
        finally:
            for producer in producers.values():
                await producer.stop()

    before = asyncio.run(jobs_ends(bootstrap))
    poller = threading.Thread(target=poll, name="freshness-poll", daemon=True)
    poller.start()
    measured: dict[str, Any] = {"freshness_rate": rate, "freshness_seconds": seconds, "freshness_raw_records": len(planned)}
    try:
        asyncio.run(send())
        poller.join()  # until every event is visible, or none became visible for FRESHNESS_WAIT_S
    except KafkaError as exc:
        return measured | _not_measured(f"Kafka did not acknowledge the paced raw records ({type(exc).__name__}): "
                                        f"the broker fell behind at {rate:,} records/s")
    finally:
        done.set()
        poller.join()
    if failure:
        raise BenchError(f"freshness: the Quack client failed: {failure[0]}")
    live.check()
    ack_of = {i: acked[n] for n, (_, _, ids) in enumerate(planned) for i in ids}
    lags = sorted(seen[i] - ack_of[i][0] for i in seen)
    if len(lags) < len(fresh):
        return measured | _not_measured(f"only {len(lags):,} of {len(fresh):,} events became visible over Quack "
                                        f"(none more for {FRESHNESS_WAIT_S:.0f} s)")
    # The worker's share: acknowledged -> its jobs.events record created (Kafka CreateTime,
    # stamped by the worker's producer on the same clock); the rest is the sink's.
    created = asyncio.run(_events_created(bootstrap, before, fresh))
    worker_lags = sorted(created[i] - ack_of[i][1] for i in created)
    ack_lags = sorted(acked[n][0] - (schedule["started"] + n / rate) for n in acked)
    return measured | {
        "freshness_p50_s": statistics.median(lags),
        "freshness_p99_s": _p99(lags),
        "freshness_max_s": lags[-1],
        "freshness_worker_p50_s": statistics.median(worker_lags),
        "freshness_worker_p99_s": _p99(worker_lags),
        "freshness_ack_p99_s": _p99(ack_lags),
        "freshness_events": len(lags),
    }


def _not_measured(reason: str) -> dict[str, Any]:
    """Stage 8's keys when the pipeline could not keep up with the rate: the reason, no numbers."""
    return {"freshness_error": reason, "freshness_p50_s": None, "freshness_p99_s": None}


def _p99(values: list[float]) -> float:
    return values[math.ceil(len(values) * 0.99) - 1]


async def _events_created(bootstrap: str, since: dict[Position, int], ids: set[str]) -> dict[str, float]:
    """When the worker created the ``jobs.events`` record of each of ``ids`` (epoch seconds)."""
    ends = await jobs_ends(bootstrap)
    consumer = clients.consumer(bootstrap)
    await consumer.start()
    try:
        remaining = {TopicPartition(t, p): end for (t, p), end in ends.items() if t == catalog.EVENTS and end > since[(t, p)]}
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, since[(tp.topic, tp.partition)])
        created: dict[str, float] = {}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                for record in records:
                    event_id = orjson.loads(record.value).get("event_id")
                    if event_id in ids:
                        created.setdefault(event_id, record.timestamp / 1000)
                if tp in remaining and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
                    consumer.pause(tp)
        return created
    finally:
        await consumer.stop()


async def sink_alone(bootstrap: str, start: dict[Position, int], end: dict[Position, int], db: Path,
                     timeout_s: float) -> tuple[int, int, float]:
    """Stage 6 once: the sink's loop from ``start`` until every partition committed up to
    ``end``; returns (records committed, rows in the file, seconds)."""
    new_file(db, start)
    writer = DuckDBWriter(db).open()
    reached = dict(start)
    stop = asyncio.Event()
    counted = {"records": 0, "last": 0.0}

    def committed(batch: Batch) -> None:
        counted["records"] += batch.records
        counted["last"] = time.perf_counter()
        reached.update(batch.next_offsets)
        if all(reached.get(p, 0) >= offset for p, offset in end.items()):
            stop.set()

    try:
        began = time.perf_counter()
        await asyncio.wait_for(consume(Settings(bootstrap=bootstrap, db_path=db), writer, stop=stop, on_commit=committed), timeout_s)
        rows = sum(writer.connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in set(TOPIC_TABLES.values()))
    except asyncio.TimeoutError:
        raise BenchError(f"the sink committed {counted['records']:,} records in {timeout_s:.0f} s and had not reached the end") from None
    finally:
        writer.close()
    return counted["records"], rows, counted["last"] - began


async def bare_jobs(bootstrap: str, start: dict[Position, int], end: dict[Position, int], timeout_s: float) -> tuple[int, float]:
    """The bare loop over the same records: ``getmany`` + ``orjson.loads``, fetch sizes as
    the sink's; returns (records, seconds), timed like ``sink_alone`` (client start included)."""
    began = time.perf_counter()
    consumer = clients.consumer(bootstrap, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        remaining = {TopicPartition(*p): offset for p, offset in end.items() if offset > start.get(p, 0)}
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, start.get((tp.topic, tp.partition), 0))
        count = 0
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise BenchError(f"the bare loop over jobs.* read {count:,} records in {timeout_s:.0f} s and had not reached the end")
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=50_000)).items():
                for record in records:
                    orjson.loads(record.value)
                count += len(records)
                if tp in remaining and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
                    consumer.pause(tp)
        return count, time.perf_counter() - began
    finally:
        await consumer.stop()


def run_stages(bootstrap: str, *, events: int, seed: int, repeats: int, rate: int, seconds: float,
               site_rate: int = 0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Stages 7 and 8, then 6, on a broker whose raw topics hold ``documents(events, seed)``;
    with ``site_rate``, freshness a second time at that rate (keys ``site_freshness_*``)."""
    results: dict[str, Any] = {}
    raw_records, ids = workload_events(documents(events, seed=seed))
    timeout_s = max(120.0, raw_records / 200)
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-sink-"))
    try:
        e2e = []
        say(f"end to end: worker + sink over {raw_records:,} raw records until {len(ids):,} events are visible over Quack ...")
        start = asyncio.run(jobs_ends(bootstrap))
        with running(bootstrap, folder, "e2e-1") as live:
            e2e.append(end_to_end_rate(live, len(ids), raw_records, timeout_s))
            say(f"freshness: {rate:,} raw records/s for {seconds:g} s while the worker and the sink run ...")
            # The workload's next documents: new runs and later events of runs under way. Each
            # measurement sends at most one document per raw record, the second goes on from
            # the document after the first one's last.
            later = itertools.islice(documents(events + int((rate + site_rate) * seconds), seed=seed), events, None)
            known = set(ids)
            results.update(freshness(live, bootstrap, later, known, rate, seconds))
            if site_rate:
                say(f"freshness again at {site_rate:,} raw records/s (a large site's rate) for {seconds:g} s ...")
                site = freshness(live, bootstrap, later, known, site_rate, seconds)
                results.update({f"site_{name}": value for name, value in site.items()})
        end = asyncio.run(jobs_ends(bootstrap))

        say(f"the sink alone over the {sum(end[p] - start.get(p, 0) for p in end):,} jobs.* records that worker wrote, "
            "against a bare aiokafka loop over them ...")
        sink_rates, bare_rates = [], []
        for n in range(repeats):
            read, bare_s = asyncio.run(bare_jobs(bootstrap, start, end, timeout_s))
            bare_rates.append(read / bare_s)
            records, rows, sink_s = asyncio.run(sink_alone(bootstrap, start, end, folder / f"sink-{n}.duckdb", timeout_s))
            sink_rates.append(records / sink_s)
            results["sink_stored_rows"] = rows
            results["sink_records"] = records
        results["sink_rows_per_s"] = statistics.median(sink_rates)
        results["bare_aiokafka_jobs_eps"] = statistics.median(bare_rates)
        from pipeline.bench import lake_stages

        results.update(lake_stages.run_stages(bootstrap, start, end, timeout_s, say, rate=rate, seconds=seconds))

        for n in range(2, repeats + 1):
            say(f"end to end, repeat {n} of {repeats} ...")
            with running(bootstrap, folder, f"e2e-{n}") as live:
                e2e.append(end_to_end_rate(live, len(ids), raw_records, timeout_s))
        results["end_to_end_eps"] = statistics.median(e2e)
        results["end_to_end_rows"] = len(ids)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results
