"""Worker throughput and restart time on the embedded broker.

    python scripts/bench_worker.py [--messages 50000] [--jobs 10000]

Pre-loads ``raw.truenas`` with job updates (each job: WAITING, RUNNING, RUNNING 50%,
SUCCESS, spread over ``--jobs`` jobs and keys), starts ``pipeline worker`` (memory
store, Tansu workarounds on), and measures events/s from "Worker ready" until every
raw message came out on jobs.events. Then stops the worker, starts it again and
measures restart-to-ready with the table it built (one entry per job).
Until ``pipeline bench`` exists, this is how the numbers in the issue notes were taken.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC, RawEnvelope, encode_envelope

TANSU_FLAG = "--tansu"
STATES = ("WAITING", "RUNNING", "RUNNING", "SUCCESS")


def messages(count: int, jobs: int, keys: int) -> list[tuple[bytes, bytes]]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for n in range(count):
        job, step = n % jobs, (n // jobs) % len(STATES)
        method = f"bench.method{job % keys}"
        fields = {"id": job, "method": method, "state": STATES[step],
                  "time_started": {"$date": 1767225600000},
                  "progress": {"percent": step * 30, "description": None, "extra": None}}
        doc = {"msg": "changed", "collection": "core.get_jobs", "id": job, "fields": fields}
        envelope = RawEnvelope(vendor="truenas", source="bench", received_at=t0 + timedelta(milliseconds=n), payload=doc)
        out.append((f"truenas:bench:{method}".encode(), encode_envelope(envelope)))
    return out


async def preload(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=20)
    await producer.start()
    topic = catalog.raw_topic("truenas")
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)
    await producer.stop()


async def count_events(bootstrap: str, want: int, timeout: float) -> float:
    consumer = AIOKafkaConsumer(catalog.EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10000)
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    if seen < want:
        raise SystemExit(f"only {seen} of {want} events came out within {timeout:.0f} s")
    return time.monotonic()


def start(bootstrap: str, log: Path, datadir: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", "memory://",
             TANSU_FLAG, "--app-id", "bench", "--datadir", str(datadir), "--loglevel", "info"],
            stdout=output, stderr=output,
        )


def wait_ready(log: Path, since: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall("Worker ready", log.read_text(errors="replace"))) > since:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit("worker not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=10_000, help="runs (TrueNAS job ids)")
    parser.add_argument("--keys", type=int, default=500, help="jobs (TrueNAS methods): table entries")
    parser.add_argument("--no-tansu", action="store_true", help="Without the Tansu changelog workaround (to see its cost).")
    args = parser.parse_args()
    global TANSU_FLAG
    TANSU_FLAG = "--no-tansu" if args.no_tansu else "--tansu"
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-"))
    log = folder / "worker.log"
    with EmbeddedBroker() as broker:
        asyncio.run(catalog.apply(broker.bootstrap))
        records = messages(args.messages, args.jobs, args.keys)
        began = time.monotonic()
        asyncio.run(preload(broker.bootstrap, records))
        print(f"preloaded {len(records)} raw messages in {time.monotonic() - began:.1f} s")
        worker = start(broker.bootstrap, log, folder / "data")
        launched = time.monotonic()
        ready = wait_ready(log, 0)
        done = asyncio.run(count_events(broker.bootstrap, len(records), timeout=600))
        seconds = done - ready
        print(f"start to ready: {ready - launched:.1f} s")
        print(f"worker: {len(records)} events in {seconds:.1f} s = {len(records) / seconds:,.0f} events/s")
        worker.terminate()
        worker.wait(timeout=60)
        restarted = start(broker.bootstrap, log, folder / "data")
        launched = time.monotonic()
        ready = wait_ready(log, 1)
        recovered = re.findall(r"Done reading from changelog topics", log.read_text(errors="replace"))
        print(f"restart to ready with {min(args.jobs, args.keys)} table entries ({args.jobs} runs): "
              f"{ready - launched:.1f} s ({len(recovered)} changelog reads logged)")
        restarted.terminate()
        restarted.wait(timeout=60)


if __name__ == "__main__":
    main()
