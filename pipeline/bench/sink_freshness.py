"""Freshness of the sink stages of ``pipeline bench``, in the same run as their rows/s
(issue 37): one sink on a file, one sink on a lake, two sinks of one group on a lake.

Measured as stage 8 measures the whole pipeline's (``sink_stages.freshness``): from the
producer's acknowledgement to the row visible in SQL, here for ``jobs.events`` records
(the worker's output, so the worker is not in it):

1. The sink loop(s) run in this process, as the rows/s stages run them, on a new file or
   lake that starts at the current ends of the ``jobs.*`` topics; a reader in a thread of
   its own polls every ``POLL_S``: for the file a cursor of the sink's own connection
   (what Quack and the Postgres endpoint serve), for the lake a new DuckDB that attaches
   it read-only (what any analyst runs).
2. Warm-up: one record per ``jobs.events`` key of the templates is sent and waited for,
   so the group has joined and every partition has an owner before the clock starts.
3. ``rate`` records a second for ``seconds`` are sent, paced (acks=all); each is a
   ``jobs.events`` record the worker wrote in stages 7 and 8, with a new ``event_id`` and
   ``received_at`` (the send time), keyed as before, so it lands on the same partition.
   The freshness of one is the first poll that sees its row minus its acknowledgement.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import duckdb
import orjson
from aiokafka import TopicPartition

from pipeline import catalog
from pipeline.bench.stages import BenchError
from pipeline.kafka import clients
from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.records import Batch

Position = tuple[str, int]

POLL_S = 0.05
"""As stage 8: a visibility is known to within this."""
SEND_TICK_S = 0.002
READY_TIMEOUT_S = 120.0
"""The warm-up's bound: the group join of two sinks (a rebalance) included."""
FRESHNESS_WAIT_S = 30.0
"""Gives up when no new row became visible for this long (as stage 8)."""


@dataclass(frozen=True, slots=True)
class Template:
    """One ``jobs.events`` record as the worker wrote it: its key and decoded value."""

    key: bytes | None
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Freshness:
    """Acknowledged -> visible in SQL, over ``events`` records sent at ``rate`` a second."""

    p50_s: float
    p99_s: float
    max_s: float
    events: int


class Writer(Protocol):
    def write(self, batch: Batch) -> None: ...
    def read_offsets(self) -> dict[Position, int]: ...


async def templates(bootstrap: str, start: dict[Position, int], end: dict[Position, int], count: int) -> list[Template]:
    """Up to ``count`` of the ``jobs.events`` records between ``start`` and ``end``."""
    consumer = clients.consumer(bootstrap, max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        remaining = {TopicPartition(t, p): offset for (t, p), offset in end.items()
                     if t == catalog.EVENTS and offset > start.get((t, p), 0)}
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, start.get((tp.topic, tp.partition), 0))
        found: list[Template] = []
        deadline = time.monotonic() + READY_TIMEOUT_S
        while remaining and len(found) < count and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                found += [Template(r.key, orjson.loads(r.value)) for r in records if r.value and r.offset < remaining.get(tp, 0)]
                if tp in remaining and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
                    consumer.pause(tp)
        if not found:
            raise BenchError("sink freshness: no jobs.events records to copy (did the worker write any?)")
        return found[:count]
    finally:
        await consumer.stop()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")


class _Visible:
    """The reader: polls for the sent event ids from the oldest not yet seen on."""

    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self.connect = connect
        self.seen: dict[str, float] = {}
        self.waiting: list[tuple[str, str]] = []  # (received_at, event_id), sorted as sent
        self.failure: list[BaseException] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, name="sink-freshness-poll", daemon=True)

    def expect(self, items: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            self.waiting.extend(items)

    def start(self) -> "_Visible":
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join()

    def _poll(self) -> None:
        try:
            con = self.connect()
        except BaseException as exc:  # noqa: BLE001 - reported by the stage as one line
            self.failure.append(exc)
            return
        lowest = 0
        try:
            while not self.stop.is_set():
                with self._lock:
                    while lowest < len(self.waiting) and self.waiting[lowest][1] in self.seen:
                        lowest += 1
                    since = self.waiting[lowest][0] if lowest < len(self.waiting) else None
                if since is not None:
                    rows = con.execute("SELECT event_id FROM job_events WHERE received_at >= CAST(? AS TIMESTAMPTZ)",
                                       [since]).fetchall()
                    now = time.perf_counter()
                    for (event_id,) in rows:
                        self.seen.setdefault(event_id, now)
                time.sleep(POLL_S)
        except duckdb.Error as exc:
            self.failure.append(exc)
        finally:
            con.close()

    def wait_for(self, ids: Sequence[str], quiet_s: float) -> bool:
        """Until every one of ``ids`` is visible (True), or none more became so for ``quiet_s``."""
        count, progress_at = -1, time.monotonic()
        while True:
            have = sum(1 for i in ids if i in self.seen)
            if have == len(ids):
                return True
            if self.failure or not self._thread.is_alive():
                return False
            if have != count:
                count, progress_at = have, time.monotonic()
            elif time.monotonic() - progress_at > quiet_s:
                return False
            time.sleep(POLL_S)


async def _send(producer, copies: list[tuple[Template, str]], rate: int, acked: dict[str, float],
                visible: _Visible) -> None:
    """``copies`` (template, new event id) at ``rate`` a second; each one's ack time in ``acked``."""
    started = time.perf_counter()
    to_epoch = time.time() - started  # perf_counter -> epoch seconds, for received_at
    sent = 0
    sends = []
    while sent < len(copies):
        due = min(len(copies), int((time.perf_counter() - started) * rate) + 1)
        batch = []
        for template, event_id in copies[sent:due]:
            received = _iso(to_epoch + time.perf_counter())
            value = orjson.dumps({**template.value, "event_id": event_id, "received_at": received})
            batch.append((received, event_id))
            sending = await producer.send(catalog.EVENTS, value, key=template.key)
            sending.add_done_callback(lambda _, event_id=event_id: acked.setdefault(event_id, time.perf_counter()))
            sends.append(sending)
        visible.expect(batch)
        sent = due
        await asyncio.sleep(SEND_TICK_S)
    await asyncio.gather(*sends)


async def measure(bootstrap: str, writers: Sequence[Writer], group: str | None,
                  connect_reader: Callable[[], duckdb.DuckDBPyConnection], pool: list[Template],
                  rate: int, seconds: float) -> Freshness:
    """The sink loop of each of ``writers`` (in ``group``, or alone with every partition)
    and a reader; see the module's steps 2 and 3."""
    stop = asyncio.Event()
    settings = Settings(bootstrap=bootstrap, session_timeout_s=6)
    loops = [asyncio.ensure_future(consume(settings, writer, stop=stop, group=group)) for writer in writers]
    visible = _Visible(connect_reader).start()
    producer = clients.producer(bootstrap, linger_ms=1)
    await producer.start()
    tag = uuid.uuid4().hex[:8]
    try:
        keys = {t.key: t for t in pool}
        warm = [(t, f"bench-warm-{tag}-{n}") for n, t in enumerate(keys.values())]
        await _send(producer, warm, max(rate, 1), {}, visible)
        if not await asyncio.to_thread(visible.wait_for, [i for _, i in warm], READY_TIMEOUT_S):
            _raise_if_done(loops)
            raise BenchError(f"sink freshness: the warm-up's {len(warm)} rows did not all become visible "
                             f"({_why(visible)})")
        count = max(1, int(rate * seconds))
        copies = [(pool[n % len(pool)], f"bench-fresh-{tag}-{n}") for n in range(count)]
        acked: dict[str, float] = {}
        await _send(producer, copies, rate, acked, visible)
        ids = [i for _, i in copies]
        complete = await asyncio.to_thread(visible.wait_for, ids, FRESHNESS_WAIT_S)
        _raise_if_done(loops)
        if not complete:
            seen = sum(1 for i in ids if i in visible.seen)
            raise BenchError(f"sink freshness: only {seen:,} of {len(ids):,} rows became visible ({_why(visible)})")
        lags = sorted(visible.seen[i] - acked[i] for i in ids)
    finally:
        visible.close()
        await producer.stop()
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
    return Freshness(statistics.median(lags), lags[math.ceil(len(lags) * 0.99) - 1], lags[-1], len(lags))


def _raise_if_done(loops: list[asyncio.Future]) -> None:
    """A sink loop that ended before being told to: its error is the stage's."""
    for loop in loops:
        if loop.done() and loop.exception() is not None:
            raise BenchError(f"sink freshness: a sink stopped: {loop.exception()}")


def _why(visible: _Visible) -> str:
    if visible.failure:
        return f"the reader failed: {' '.join(str(visible.failure[0]).split())[:300]}"
    return f"none more for {FRESHNESS_WAIT_S:.0f} s"


def as_results(prefix: str, measured: Freshness, rate: int) -> dict[str, Any]:
    """The JSON keys of one stage's freshness."""
    return {f"{prefix}_freshness_p50_s": measured.p50_s, f"{prefix}_freshness_p99_s": measured.p99_s,
            f"{prefix}_freshness_max_s": measured.max_s, f"{prefix}_freshness_events": measured.events,
            "sink_freshness_rate": rate}
