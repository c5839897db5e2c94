"""Sink numbers on the embedded broker: throughput, freshness, and the dedupe choice.

    python scripts/bench_sink.py [--records 200000] [--repeat 3] [--rate 2000] [--seconds 20] [--table-rows 2000000]

1. Throughput: pre-loads jobs.events / jobs.transitions / jobs.runs with ``--records``
   contract-v1 records (half events, a quarter each transitions and runs, no duplicates),
   then, in this process and over the same records, times (a) a bare aiokafka
   ``getmany`` + ``orjson.loads`` loop and (b) the sink's own loop (decode, Arrow, one
   DuckDB transaction with offsets per batch) until the last batch is committed, each
   ``--repeat`` times, alternately (the machine is shared: the ratio is per run).
2. Freshness: starts ``pipeline sink`` as its own process on the file the last throughput
   run left (so it starts caught up), produces events at ``--rate``
   per second for ``--seconds`` (acks=all), and a Quack client polls the live database
   every 10 ms; freshness = first seen by the client - acknowledged by Kafka. Also the
   sink's CPU meanwhile (``JOBSTREAM_SINK_COMMIT_INTERVAL_MS`` changes how often it commits).
3. Dedupe: one batch of 20,000 rows (1% already present) into a table of
   ``--table-rows`` rows: anti-join (what the writer does) vs PRIMARY KEY + INSERT OR
   IGNORE vs a plain INSERT (no dedupe, the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
from aiokafka import TopicPartition

from pipeline import catalog
from pipeline.broker import EmbeddedBroker, free_port
from pipeline.kafka import clients
from pipeline.settings import Settings
from pipeline.sink import quack
from pipeline.sink.consumer import TOPICS, consume
from pipeline.sink.writer import DuckDBWriter

T0 = datetime(2026, 11, 30, tzinfo=timezone.utc)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def event(source: str, n: int) -> dict:
    job, at = f"zuora:{source}:job{n % 500}", iso(T0 + timedelta(milliseconds=n))
    return {
        "schema_version": 1, "event_id": f"{source}-e{n}", "vendor": "zuora", "source": source, "job_key": job,
        "run_key": f"{job}/run{n // 5}", "attempt": None, "native_state": "SCANNING-PAGE-3", "state": "RUNNING",
        "occurred_at": at, "received_at": at, "started_at": at, "finished_at": None, "progress": 40.0, "rows": 1200,
        "counts": {"pages": 3}, "error_code": None, "error_message": None, "parent_run_key": None,
        "raw_ref": {"topic": "raw.zuora", "partition": n % 4, "offset": n}, "attrs": {"queue": "active"},
        "late": False, "skewed": False,
    }


def transition(source: str, n: int) -> dict:
    job = f"zuora:{source}:job{n % 500}"
    return {
        "schema_version": 1, "transition_id": f"{source}-t{n}", "vendor": "zuora", "job_key": job,
        "run_key": f"{job}/run{n // 2}", "attempt": 1, "from_state": "PENDING", "to_state": "RUNNING",
        "at": iso(T0 + timedelta(milliseconds=n)), "cause": "vendor", "event_id": f"{source}-e{n}",
        "late": False, "duplicate": False, "illegal": False,
    }


def run(source: str, n: int) -> dict:
    job, at = f"zuora:{source}:job{n % 500}", iso(T0 + timedelta(milliseconds=n))
    return {
        "schema_version": 1, "run_key": f"{job}/run{n}", "job_key": job, "vendor": "zuora", "source": source,
        "parent_run_key": None, "version": 3, "state": "SUCCEEDED", "attempt": 1, "retries": 0,
        "first_event_at": at, "last_event_at": at, "current_at": at, "queued_at": at, "started_at": at,
        "finished_at": at, "duration_s": 12.5, "queue_s": 0.5, "native_state": "COMPLETED", "progress": 100.0,
        "rows": 5000, "stale_episodes": 0, "reactivations": 0, "events": 5, "last_error_code": None,
        "last_error_message": None, "last_error_at": None, "deadline": None,
    }


def records(count: int, source: str) -> list[tuple[str, bytes, bytes]]:
    out = []
    for n in range(count):
        kind = n % 4
        if kind < 2:
            value = event(source, n)
            out.append((catalog.EVENTS, value["job_key"].encode(), orjson.dumps(value)))
        elif kind == 2:
            value = transition(source, n)
            out.append((catalog.TRANSITIONS, value["job_key"].encode(), orjson.dumps(value)))
        else:
            value = run(source, n)
            out.append((catalog.RUNS, value["run_key"].encode(), orjson.dumps(value)))
    return out


async def preload(bootstrap: str, items: list[tuple[str, bytes, bytes]]) -> None:
    producer = clients.producer(bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    futures = [await producer.send(topic, value, key=key) for topic, key, value in items]
    await asyncio.gather(*futures)
    await producer.stop()


async def bare_loop(bootstrap: str, want: int) -> float:
    consumer = clients.consumer(
        bootstrap, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, time.perf_counter()
        while seen < want:
            for messages in (await consumer.getmany(timeout_ms=200, max_records=50_000)).values():
                for message in messages:
                    orjson.loads(message.value)
                    seen += 1
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def sink_loop(bootstrap: str, db: Path, want: int) -> tuple[float, int, int]:
    writer = DuckDBWriter(db).open()  # threads as `pipeline sink` sets them
    stop = asyncio.Event()
    done = {"records": 0, "rows": 0, "batches": 0}

    def committed(batch) -> None:
        done["records"] += batch.records
        done["rows"] += batch.rows
        done["batches"] += 1
        if done["records"] >= want:
            stop.set()

    started = time.perf_counter()
    try:
        await consume(Settings(bootstrap=bootstrap, db_path=db), writer, stop=stop, on_commit=committed)
        elapsed = time.perf_counter() - started
        stored = writer.connection.execute(
            "SELECT (SELECT count(*) FROM job_events) + (SELECT count(*) FROM job_transitions) + (SELECT count(*) FROM job_runs)"
        ).fetchone()[0]
    finally:
        writer.close()
    return elapsed, stored, done["batches"]


def throughput(bootstrap: str, count: int, folder: Path, repeat: int) -> Path:
    """Bare loop and sink alternately, ``repeat`` times each; returns the last sink's file
    (caught up with every topic, so the freshness run starts at the end)."""
    print(f"preloading {count:,} records ...", flush=True)
    asyncio.run(preload(bootstrap, records(count, "bench")))
    ratios = []
    for n in range(repeat):
        bare = asyncio.run(bare_loop(bootstrap, count))
        db = folder / f"throughput{n}.duckdb"
        elapsed, stored, batches = asyncio.run(sink_loop(bootstrap, db, count))
        ratios.append((stored / elapsed) / (count / bare))
        print(f"run {n + 1}: bare aiokafka getmany + orjson {count / bare:,.0f} records/s ({bare:.2f} s); "
              f"sink, Kafka -> committed DuckDB rows {stored / elapsed:,.0f} rows/s ({stored:,} rows, {batches} batches, "
              f"{elapsed:.2f} s); sink / bare {ratios[-1]:.2f}", flush=True)
    print(f"sink / bare, median of {repeat}: {statistics.median(ratios):.2f}")
    return db


def freshness(bootstrap: str, rate: int, seconds: float, db: Path) -> None:
    token, port = uuid.uuid4().hex, free_port()
    source = f"fresh{uuid.uuid4().hex[:6]}"
    env = {**os.environ, quack.TOKEN_ENV: token}
    sink = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "sink", "--bootstrap", bootstrap, "--db", str(db), "--quack-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    address = quack.uri("localhost", port)
    client = duckdb.connect()
    deadline = time.monotonic() + 60
    while True:
        try:
            quack.attach(client, address, token)
            break
        except duckdb.Error:
            if time.monotonic() > deadline or sink.poll() is not None:
                raise SystemExit(f"the sink did not serve: {sink.stderr.read().decode() if sink.poll() is not None else ''}")
            time.sleep(0.1)
    total = int(rate * seconds)
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        lowest = 0
        while not stop.is_set() and len(seen) < total:
            # quack_query runs the filter in the sink (an attached table would be pulled whole).
            query = f"SELECT raw_offset FROM job_events WHERE source = ''{source}'' AND raw_offset >= {lowest}"
            rows = client.execute(f"FROM quack_query('{address}', '{query}', token => '{token}')").fetchall()
            now = time.perf_counter()
            for (n,) in rows:
                seen.setdefault(n, now)
            while lowest in seen:
                lowest += 1
            time.sleep(0.01)

    async def produce() -> None:
        producer = clients.producer(bootstrap, linger_ms=2)
        await producer.start()
        started = time.perf_counter()
        pending = []
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value = event(source, n)
            future = await producer.send(catalog.EVENTS, orjson.dumps(value), key=value["job_key"].encode())
            future.add_done_callback(lambda _f, n=n: acked.__setitem__(n, time.perf_counter()))
            pending.append(future)
        await asyncio.gather(*pending)
        await producer.stop()

    poller = threading.Thread(target=poll)
    poller.start()
    cpu_before, wall_before = cpu_seconds(sink.pid), time.perf_counter()
    asyncio.run(produce())
    cpu_used, wall = cpu_seconds(sink.pid) - cpu_before, time.perf_counter() - wall_before
    poller.join(timeout=60)
    stop.set()
    sink.terminate()
    sink.wait(timeout=30)
    lags = sorted(seen[n] - acked[n] for n in acked if n in seen)
    if len(lags) < total:
        print(f"freshness: only {len(lags)} of {total} events became visible within 60 s")
    p50 = statistics.median(lags)
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"freshness at {rate:,}/s for {seconds:g} s ({len(lags):,} events, Kafka ack -> visible over Quack, 10 ms polls): "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms; "
          f"the sink used {cpu_used / wall:.0%} of a core meanwhile (Quack polls included)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dedupe(table_rows: int, batch: int = 20_000) -> None:
    base = [uuid.uuid4().hex for _ in range(table_rows)]
    for strategy in ("anti-join (NOT EXISTS)", "PRIMARY KEY + INSERT OR IGNORE", "plain INSERT (no dedupe)"):
        con = duckdb.connect()
        key = " PRIMARY KEY" if "PRIMARY" in strategy else ""
        con.execute(f"CREATE TABLE e (event_id VARCHAR{key}, payload VARCHAR)")
        for i in range(0, table_rows, 200_000):
            chunk = pa.table({"event_id": base[i:i + 200_000], "payload": ["x" * 60] * len(base[i:i + 200_000])})
            con.execute("INSERT INTO e SELECT * FROM chunk")
        timings = []
        for _ in range(5):
            ids = [uuid.uuid4().hex for _ in range(batch - batch // 100)] + random.sample(base, batch // 100)
            b = pa.table({"event_id": ids, "payload": ["y" * 60] * batch})
            started = time.perf_counter()
            con.execute("BEGIN")
            if strategy.startswith("anti"):
                con.execute("INSERT INTO e SELECT * FROM b WHERE NOT EXISTS (SELECT 1 FROM e t WHERE t.event_id = b.event_id)")
            elif key:
                con.execute("INSERT OR IGNORE INTO e SELECT * FROM b")
            else:
                con.execute("INSERT INTO e SELECT * FROM b")
            con.execute("COMMIT")
            timings.append(time.perf_counter() - started)
        ms = statistics.median(timings) * 1000
        print(f"dedupe into {table_rows:,} rows, {strategy}: {ms:.0f} ms per {batch:,}-row batch = {batch / ms * 1000:,.0f} rows/s")
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--table-rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="Throughput runs (bare and sink alternately).")
    parser.add_argument("--skip", choices=["throughput", "freshness", "dedupe"], action="append", default=[])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    broker = EmbeddedBroker(log=folder / "tansu.log").start()
    try:
        asyncio.run(catalog.apply(broker.bootstrap))
        db = folder / "fresh.duckdb"
        if "throughput" not in args.skip:
            db = throughput(broker.bootstrap, args.records, folder, args.repeat)
        if "freshness" not in args.skip:
            freshness(broker.bootstrap, args.rate, args.seconds, db)
    finally:
        broker.stop()
    if "dedupe" not in args.skip:
        dedupe(args.table_rows)


if __name__ == "__main__":
    main()
