"""File replay: vendor documents from files into ``raw.<vendor>``, keyed by job.

Used for backfills (``pipeline replay --bootstrap``) and, until ``pipeline demo`` exists,
for the local run: embedded broker + worker + the bundled sample documents, with a
summary of the lifecycles that came out.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from pipeline import catalog, vendors
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.normalize_cli import documents


@dataclass(slots=True)
class ReplayPlan:
    """The keyed raw messages to send, and what the worker should make of them."""

    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)  # topic, key, value
    expected_events: int = 0
    rejected: list[str] = field(default_factory=list)


def sample_files() -> list[tuple[str, Path]]:
    """The bundled sample documents: ``pipeline/samples/<vendor>/*``."""
    root = resources.files("pipeline") / "samples"
    found = []
    for vendor in vendors.VENDOR_NAMES:
        folder = Path(str(root / vendor))
        if folder.is_dir():
            found.extend((vendor, path) for path in sorted(folder.iterdir()) if path.is_file())
    return found


def vendor_of(path: Path) -> str | None:
    """A file's vendor from its folder or name prefix (``zuora/x.json``, ``zuora-x.json``)."""
    for name in (path.parent.name, path.name.split("-")[0].split(".")[0]):
        if name in vendors.VENDOR_NAMES:
            return name
    return None


MAX_RAW_RECORD_BYTES = 1_000_000 - 512
"""What one raw record may take (Kafka's default max.request.size, less the record's
overhead): a larger document is reported with its position, and the rest goes on."""

# The bundled samples are replayed as if received from this time on, one document every
# ten seconds: TrueNAS updates of running jobs carry no time of their own.
SAMPLES_RECEIVED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def plan(
    files: Iterable[tuple[str, Path]], *, source: str, received_at: datetime | None = None,
    step: timedelta = timedelta(0),
) -> ReplayPlan:
    """Cut each file into documents and each document into one piece per job.

    Document ``n`` of a file counts as received at ``received_at + n * step``. Without
    ``received_at`` (a backfill) each piece counts as received at the vendor's own
    latest time in it, where it carries one (never later than now): the worker's event
    time then follows the history instead of standing still at the moment of the replay.
    """
    result = ReplayPlan()
    backfill = received_at is None
    start = received_at or datetime.now(UTC)
    for vendor, path in files:
        topic = catalog.raw_topic(vendor)
        for index, (position, doc) in enumerate(documents(path.read_bytes())):
            received_at = start + index * step
            ctx = vendors.Context(source=source, received_at=received_at)
            try:
                pieces = vendors.keyed_documents(vendor, doc, ctx)
            except vendors.Rejected as exc:
                result.rejected.append(f"{path} {position}: {exc.reason}")
                continue
            for job_key, piece in pieces:
                piece_received = _own_time(vendor, piece, source, start) if backfill else received_at
                envelope = RawEnvelope(vendor=vendor, source=source, received_at=piece_received, payload=piece)
                key, value = job_key.encode(), encode_envelope(envelope)
                if len(key) + len(value) > MAX_RAW_RECORD_BYTES:
                    result.rejected.append(
                        f"{path} {position}: its raw message takes {len(key) + len(value)} bytes, more than "
                        f"one Kafka record may ({MAX_RAW_RECORD_BYTES}); not sent"
                    )
                    continue
                result.messages.append((topic, key, value))
                result.expected_events += len(vendors.normalize(vendor, piece, ctx))
    return result


def _own_time(vendor: str, piece: Any, source: str, now: datetime) -> datetime:
    """The latest vendor time of ``piece`` (its events normalized without a receive
    time), capped at ``now``; ``now`` when it carries none."""
    try:
        events = vendors.normalize(vendor, piece, vendors.Context(source=source, received_at=None))
    except vendors.Rejected:
        return now
    times = [event.occurred_at for event in events]
    return min(max(times), now) if times else now


async def send(bootstrap: str, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Send in order with acks=all; raises if the broker refuses."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass(slots=True)
class Outcome:
    events: int = 0
    transitions: int = 0
    dead_letters: int = 0
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_key -> last snapshot
    flagged: Counter = field(default_factory=Counter)


async def watch(
    bootstrap: str, *, expected_events: int, timeout: float,
    progress: Callable[[Outcome], None] = lambda outcome: None,
    alive: Callable[[], bool] = lambda: True,
) -> Outcome:
    """Read the output topics until ``expected_events`` events came out and the
    outputs have been quiet for a second, ``timeout`` passes or ``alive()`` says the
    worker is gone."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        catalog.EVENTS, catalog.TRANSITIONS, catalog.RUNS, catalog.DEADLETTER,
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline and alive():
            batches = await consumer.getmany(timeout_ms=250)
            for tp, records in batches.items():
                for record in records:
                    _count(outcome, tp.topic, record.value)
            if batches:
                quiet_since = time.monotonic()
                progress(outcome)
            elif outcome.events >= expected_events and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        await consumer.stop()
    return outcome


def _count(outcome: Outcome, topic: str, value: bytes) -> None:
    if topic == catalog.EVENTS:
        outcome.events += 1
    elif topic == catalog.DEADLETTER:
        outcome.dead_letters += 1
    elif topic == catalog.TRANSITIONS:
        transition = msgspec.json.decode(value)
        outcome.transitions += 1
        for flag in ("late", "duplicate", "illegal"):
            if transition.get(flag):
                outcome.flagged[flag] += 1
    elif topic == catalog.RUNS:
        run = msgspec.json.decode(value)
        outcome.runs[run["run_key"]] = run


def start_worker(bootstrap: str, *, app_id: str, log: Path, tansu: bool) -> subprocess.Popen[bytes]:
    """``pipeline worker`` in a child process (Faust owns its event loop and signals)."""
    datadir = Path(tempfile.mkdtemp(prefix="jobstream-worker-"))
    # -P: not the current directory first on sys.path, where a source checkout's
    # pipeline/ would shadow the installed package.
    args = [
        sys.executable, "-P", "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", "memory://",
        "--app-id", app_id, "--datadir", str(datadir), "--tansu" if tansu else "--no-tansu",
    ]
    with open(log, "ab") as output:
        return subprocess.Popen(args, stdout=output, stderr=output, stdin=subprocess.DEVNULL, env=dict(os.environ))
