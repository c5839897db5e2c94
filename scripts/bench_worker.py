"""Worker throughput and restart time on the embedded broker.

    python scripts/bench_worker.py [--messages 50000] [--jobs 10000] [--keys 500]
    python scripts/bench_worker.py --runs-per-key 1000 --messages 100000 [--store rocksdb://]

Pre-loads ``raw.truenas`` with job updates, starts ``pipeline worker`` (Tansu
workarounds on), and measures events/s from "Worker ready" until every raw message came
out on jobs.events. Then stops the worker, starts it again and measures restart-to-ready
and restart-to-first-output (a probe message through the rebuilt index), and prints the
largest changelog record.

Default mix: each job WAITING, RUNNING, RUNNING 50%, SUCCESS, spread over ``--jobs``
runs and ``--keys`` table entries. With ``--runs-per-key R``: one SUCCESS update per
run, R runs per job key (``--messages / R`` keys), so the history under one key grows
to R runs (issue 25: the cost of an event must not grow with it).
With ``--workload five-vendors``: the seeded five-vendor workload of ``pipeline bench``
(``--messages`` documents) instead. ``--profile FILE`` records the worker with py-spy
(``pip install py-spy``) while it works, as collapsed stacks (``-f raw``), and prints the
functions with the largest share of the samples (inclusive and own time).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path


from pipeline import catalog
from pipeline.bench import stages, worker_stages
from pipeline.bench.workload import documents
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients
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


def history(count: int, runs_per_key: int) -> list[tuple[bytes, bytes]]:
    """One SUCCESS update per run, ``runs_per_key`` consecutive runs per method."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for n in range(count):
        method = f"bench.history{n // runs_per_key}"
        started = t0 + timedelta(seconds=n)
        fields = {"id": n, "method": method, "state": "SUCCESS",
                  "time_started": {"$date": int(started.timestamp() * 1000)},
                  "time_finished": {"$date": int(started.timestamp() * 1000) + 500},
                  "progress": {"percent": 100, "description": None, "extra": None}}
        doc = {"msg": "changed", "collection": "core.get_jobs", "id": n, "fields": fields}
        envelope = RawEnvelope(vendor="truenas", source="bench", received_at=started, payload=doc)
        out.append((f"truenas:bench:{method}".encode(), encode_envelope(envelope)))
    return out


async def largest_record(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, largest value in bytes) of ``topic``, read to its highwater."""
    consumer = clients.consumer(bootstrap, topic, auto_offset_reset="earliest")
    await consumer.start()
    count = largest = 0
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            if not batches:
                break
            for records in batches.values():
                count += len(records)
                largest = max([largest, *(len(r.value or b"") for r in records)])
    finally:
        await consumer.stop()
    return count, largest


async def probe(bootstrap: str, job_id: int) -> float:
    """Send one new job and return the monotonic time its event came out."""
    key = f"truenas:bench:probe{job_id}".encode()
    doc = {"msg": "changed", "collection": "core.get_jobs", "id": job_id,
           "fields": {"id": job_id, "method": f"probe{job_id}", "state": "RUNNING",
                      "time_started": {"$date": 1767225600000}}}
    envelope = RawEnvelope(vendor="truenas", source="bench", received_at=datetime(2027, 1, 1, tzinfo=UTC), payload=doc)
    consumer = clients.consumer(bootstrap, catalog.EVENTS, auto_offset_reset="latest")
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.position(tp)  # pinned at the end before the probe is sent
        await preload(bootstrap, [(key, encode_envelope(envelope))])
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=10000)
            if any(r.key == key for records in batches.values() for r in records):
                return time.monotonic()
    finally:
        await consumer.stop()


async def preload(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = clients.producer(bootstrap, linger_ms=20)
    await producer.start()
    topic = catalog.raw_topic("truenas")
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)
    await producer.stop()


async def count_events(bootstrap: str, want: int, timeout: float) -> float:
    consumer = clients.consumer(bootstrap, catalog.EVENTS, auto_offset_reset="earliest")
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


STORE = "memory://"


def start(bootstrap: str, log: Path, datadir: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", STORE,
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


def print_profile(path: Path, top: int = 30) -> None:
    """The functions with the largest share of the samples: inclusive, then own time."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [re.sub(r" \((?:[^()]*/)?([^()/]*?)(?::\d+)?\)$", r" (\1)", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    print(f"profile: {total} samples in {path}")
    for title, counts in (("inclusive", inclusive), ("own time", own)):
        print(f"  {title}:")
        for frame, samples in counts.most_common(top):
            print(f"  {100 * samples / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=10_000, help="runs (TrueNAS job ids)")
    parser.add_argument("--keys", type=int, default=500, help="jobs (TrueNAS methods): table entries")
    parser.add_argument("--runs-per-key", type=int, default=None,
                        help="one SUCCESS update per run, this many runs per job key (replaces the default mix)")
    parser.add_argument("--store", default="memory://", help="worker store: memory:// or rocksdb://")
    parser.add_argument("--no-tansu", action="store_true", help="Without the Tansu changelog workaround (to see its cost).")
    parser.add_argument("--workload", choices=("truenas", "five-vendors"), default="truenas")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy collapsed stacks of the worker, written here.")
    args = parser.parse_args()
    global TANSU_FLAG, STORE
    TANSU_FLAG = "--no-tansu" if args.no_tansu else "--tansu"
    STORE = args.store
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-"))
    log = folder / "worker.log"
    with EmbeddedBroker() as broker:
        asyncio.run(catalog.apply(broker.bootstrap))
        began = time.monotonic()
        if args.workload == "five-vendors":
            loaded = asyncio.run(stages.load(broker.bootstrap, documents(args.messages)))
            _, expected = worker_stages.expected_events(documents(args.messages))
            records = range(expected)  # the count of jobs.events records to wait for
            runs, entries = "?", "?"
            print(f"preloaded {loaded} raw messages ({expected} events) in {time.monotonic() - began:.1f} s")
        else:
            if args.runs_per_key:
                records = history(args.messages, args.runs_per_key)
                runs, entries = args.messages, -(-args.messages // args.runs_per_key)
            else:
                records = messages(args.messages, args.jobs, args.keys)
                runs, entries = args.jobs, min(args.jobs, args.keys)
            asyncio.run(preload(broker.bootstrap, records))
            print(f"preloaded {len(records)} raw messages in {time.monotonic() - began:.1f} s")
        worker = restarted = None
        try:
            worker = start(broker.bootstrap, log, folder / "data")
            launched = time.monotonic()
            ready = wait_ready(log, 0)
            spy = None
            if args.profile is not None:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-f", "raw",
                                        "-o", str(args.profile), "--pid", str(worker.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done = asyncio.run(count_events(broker.bootstrap, len(records), timeout=max(600, len(records) / 500)))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
                print_profile(args.profile)
            seconds = done - ready
            print(f"start to ready: {ready - launched:.1f} s")
            print(f"worker ({STORE}): {len(records)} events in {seconds:.1f} s = {len(records) / seconds:,.0f} events/s")
            changelog = "bench-lifecycle-changelog"
            count, largest = asyncio.run(largest_record(broker.bootstrap, changelog))
            print(f"changelog: {count} records, largest {largest:,} bytes")
            worker.terminate()
            worker.wait(timeout=60)
            restarted = start(broker.bootstrap, log, folder / "data")
            launched = time.monotonic()
            ready = wait_ready(log, 1)
            first_output = asyncio.run(probe(broker.bootstrap, 10**9))
            recovered = re.findall(r"Done reading from changelog topics", log.read_text(errors="replace"))
            print(f"restart with {entries} table entries ({runs} runs, {STORE}): ready in {ready - launched:.1f} s, "
                  f"first output (index rebuilt) in {first_output - launched:.1f} s "
                  f"({len(recovered)} changelog reads logged)")
            restarted.terminate()
            restarted.wait(timeout=60)
        finally:
            for process in (worker, restarted):
                if process is not None and process.poll() is None:
                    process.kill()


if __name__ == "__main__":
    main()
