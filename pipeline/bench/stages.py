"""One function per measured stage of ``pipeline bench``; each returns events (or rows)
per second over the same input, so the ratios compare like with like.

Pure stages (normalize, lifecycle) run in this process on a sample of the workload; the
Kafka stages read the raw topics the loader filled on the embedded broker.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from pipeline.errors import JobstreamError
from pipeline import catalog, lifecycle, vendors
from pipeline.bench.workload import Document
from pipeline.kafka import clients
from pipeline.model import JobEvent
from pipeline.sources import RawProducer, records_for
from pipeline.vendors import Context


async def load(bootstrap: str, docs: Iterable[Document], *, progress=None) -> int:
    """Send every document to its raw topic, keyed by job, through the ingestors' producer.

    One producer per (vendor, source); sends are awaited in chunks so memory stays flat
    whatever the number of documents.
    """
    producers: dict[tuple[str, str], RawProducer] = {}
    chunk: dict[tuple[str, str], list] = defaultdict(list)
    sent = 0

    async def flush() -> None:
        nonlocal sent
        for key, records in chunk.items():
            report = await producers[key].send(records)
            sent += report.sent
        chunk.clear()
        if progress is not None:
            progress(sent)

    try:
        pending = 0
        for doc in docs:
            key = (doc.vendor, doc.source)
            if key not in producers:
                producers[key] = await RawProducer(bootstrap, doc.vendor, doc.source).start()
            chunk[key].extend(records_for(doc.vendor, doc.payload, Context(source=doc.source, received_at=doc.at)))
            pending += 1
            if pending >= 5000:
                await flush()
                pending = 0
        await flush()
    finally:
        for producer in producers.values():
            await producer.stop()
    return sent


async def bare_aiokafka(bootstrap: str, count: int, timeout_s: float = 600) -> float:
    """Read the raw topics from the start and orjson-parse every value: events/s."""
    consumer = clients.consumer(bootstrap, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in catalog.raw_topics()
            for p in range(catalog.topic(topic).partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    if seen < count:
        raise BenchError(f"bare aiokafka read {seen} of {count} records within {timeout_s:.0f} s")
    return seen / elapsed


def bare_faust(bootstrap: str, count: int, timeout_s: float = 600) -> float:
    """The bare Faust agent loop in its own process, over the same topics: events/s."""
    app_id = f"jobstream-bench-bare-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pipeline.bench.bare_faust", "--bootstrap", bootstrap,
         "--count", str(count), "--app-id", app_id],
        capture_output=True, text=True, timeout=timeout_s,
    )
    # Faust redirects stdout into its log (stderr): look in both.
    match = re.search(r"bare-faust: (\d+) events in ([\d.]+) s", result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        raise BenchError(f"bare faust loop failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    events, seconds = int(match.group(1)), float(match.group(2))
    if events == 0 or seconds <= 0:
        raise BenchError(f"too few events to time the bare faust loop ({count} came in one batch): use more --events")
    return events / seconds


def quix_peer(bootstrap: str, count: int, timeout_s: float = 600) -> float:
    """The peer (``quix_peer``): normalize + lifecycle as a quix-streams application in
    its own process, over the same topics: raw records/s. Needs the ``bench`` extra."""
    app_id = f"jobstream-bench-quix-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pipeline.bench.quix_peer", "--bootstrap", bootstrap,
         "--count", str(count), "--app-id", app_id],
        capture_output=True, text=True, timeout=timeout_s,
    )
    match = re.search(r"quix-peer: (\d+) records in ([\d.]+) s", result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        raise BenchError(f"the quix-streams peer failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    records, seconds = int(match.group(1)), float(match.group(2))
    if records == 0 or seconds <= 0:
        raise BenchError("too few records to time the quix-streams peer: use more --events")
    return records / seconds


def has_quix() -> bool:
    """Whether the peer can run here (quix-streams is an optional extra, ``bench``)."""
    import importlib.util

    return importlib.util.find_spec("quixstreams") is not None


def normalize_rates(docs: list[Document]) -> dict[str, float]:
    """Parse + normalize, per vendor, from the documents' JSON bytes: events/s."""
    by_vendor: dict[str, list[tuple[bytes, Context]]] = defaultdict(list)
    for doc in docs:
        by_vendor[doc.vendor].append((orjson.dumps(doc.payload), Context(source=doc.source, received_at=doc.at)))
    rates = {}
    for vendor, items in sorted(by_vendor.items()):
        module = vendors.get(vendor)
        started = time.perf_counter()
        events = 0
        for raw, ctx in items:
            events += len(module.normalize(orjson.loads(raw), ctx))
        rates[vendor] = events / (time.perf_counter() - started)
    return rates


def lifecycle_rate(docs: list[Document], stale_after: timedelta = lifecycle.DEFAULT_STALE_AFTER) -> float:
    """``apply_job`` + ``evict`` over the normalized sample, as the worker calls them: events/s."""
    events: list[JobEvent] = []
    for doc in docs:
        events.extend(vendors.normalize(doc.vendor, doc.payload, Context(source=doc.source, received_at=doc.at)))
    jobs: dict[str, lifecycle.JobState | None] = {}
    retention = timedelta(hours=1)
    started = time.perf_counter()
    for event in events:
        job, _ = lifecycle.apply_job(jobs.get(event.job_key), event, stale_after=stale_after)
        jobs[event.job_key] = lifecycle.evict(job, event.occurred_at, retention=retention)
    return len(events) / (time.perf_counter() - started)


STOP_GRACE_S = 30.0


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM a role the bench started, SIGKILL it if it has not ended within the grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(log: Path) -> str:
    """The end of a role's log, for the error that says why a stage failed."""
    return log.read_text(errors="replace").strip()[-600:] if log.exists() else ""


class BenchError(JobstreamError, RuntimeError):
    """A stage could not be measured; the message says which and why."""

