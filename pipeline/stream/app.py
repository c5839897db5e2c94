"""The Faust worker: one agent over every ``raw.<vendor>`` topic, one table.

Per batch of consumed messages (numbered, the order is the guarantee):

1. ``StreamCore.process`` normalizes, applies the lifecycle and expires stale runs, in
   offset order per partition, and returns output records and table writes.
2. The outputs (``jobs.events``, ``jobs.transitions``, ``jobs.runs``, ``jobs.deadletter``)
   are sent and awaited (acks=all).
3. The table entries are (a) sent to the changelog, to the partition of the raw messages
   that changed them, and awaited, then (b) written to the local store with the
   changelog's offset marker. The changelog goes first: the local store is never ahead
   of it, so every owner of a partition (this one after a restart, the next one, a
   standby) recovers the same state.
4. Only then is the batch acknowledged (when the agent asks for the next one:
   ``faust_compat.Handoff``); Faust's commits follow.

| killed after step | what the restart sees |
|---|---|
| 1 | nothing was sent; the batch is consumed again and gives the same outputs |
| 2 | outputs sent, state not stored: the batch is applied again and the same records (same deterministic ids) are sent again; downstream dedupes on event_id / transition_id |
| 3a | changelog sent, local store not written: recovery reads the entries from the changelog (the local offset marker is behind them), then the re-delivered messages are skipped as applied (no output twice), on this worker as on any other |
| 3b | state stored, offsets not committed: the entry remembers the applied offsets, so those messages are skipped (no output twice) |
| 4 | offsets committed: nothing is consumed again |

Before step 1, every raw partition's records must follow on from the last one (or, after
an assignment, from the committed offset): Faust can hand over a record prefetched before
a rebalance ahead of those before it, then count the ones in between as a gap it may
commit past (faust#221, #312), which silently lost raw records under ``pipeline chaos``.
A record that skips ahead is checked (``gaps.py``) by reading the range before it with a
plain consumer: records there were skipped, so the partition is sought back to the first
of them and its records that came early are dropped unacknowledged (they come again);
nothing there is a hole (transaction markers, compaction), and the batch goes on; records
deleted by retention before they were applied are reported in one line, and it goes on.

Anything unexpected in steps 2-3 (a broker that stops answering) ends the process with
one clear line and exit status 70, before Faust can commit the batch's offsets: a
supervisor restarts it and the table above applies.

The table is written through its store and changelog directly rather than
``table[key] = value``, and outputs and changelog records are sent as one Kafka batch per
topic-partition (``batches.py``) rather than through Faust's producer: Faust's
per-message send path costs ~100 us a record (docs/design.md, "Faust"), and the changelog record must
go to the source partition, which batches (no current event) cannot get from
``table[key]``. For the same reason the raw records reach the agent through
``faust_compat.Handoff``, not Faust's per-record stream. Recovery, standbys, partition
ownership and commits are still Faust's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from pipeline import catalog, compiled
from pipeline.kafka import clients
from pipeline.errors import EXIT_CONFIG, EXIT_DATA, EXIT_INTERNAL, EXIT_SIGTERM
from pipeline.ops.health import MetricsPortTaken, RoleMetrics, observe_batch
from pipeline.ops.runtime import bind, operate
from pipeline.settings import Settings
from pipeline.stream import collector, faust_compat
from pipeline.stream.batches import BatchSender
from pipeline.stream.core import StreamCore
from pipeline.stream.faults import Faults, Injector
from pipeline.stream.gaps import Continuity, GapProbe, Skip
from pipeline.stream.records import Message

log = logging.getLogger("pipeline.worker")

TABLE_NAME = "lifecycle"
TANSU_BARRIER_KEY = b"\x00jobstream:end-of-batch"
EXIT_UNEXPECTED = EXIT_INTERNAL
EXIT_RECREATED = EXIT_DATA  # the input no longer matches the stored state
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024**2,
    "block_cache_compressed_size": 8 * 1024**2,
}
"""The RocksDB store's memory per table partition: Faust's defaults (64 MB write buffers
up to 3 deep, a 2 GB block cache, each per partition) let the worker grow past 500 MB
while its table fills. The worker reads little from RocksDB (recently written entries
are kept decoded in memory, ``entry_cache_bytes``), so small buffers cost no speed."""
SEND_BATCH_BYTES = 1_000_000
"""The largest Kafka batch the worker builds (Kafka's default limit is 1 MB a batch)."""


def create_app(settings: Settings, metrics: RoleMetrics | None = None, listening: socket.socket | None = None) -> faust.App:
    """The Faust app with its agent and table, configured from ``settings``; with
    ``metrics``, each batch is counted there and /metrics, /healthz and the broker watch
    run beside the agent (pipeline/ops/)."""
    faust_compat.check_version()
    datadir = Path(settings.datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    partitions = settings.partitions or catalog.topic(catalog.raw_topics()[0]).partitions
    app = faust_compat.App(
        settings.app_id,
        fetch_wait_ms=settings.fetch_wait_ms,
        handoff=faust_compat.Handoff(catalog.raw_topics(), capacity=settings.batch_max * 4),
        **clients.faust_options(settings),
        topic_replication_factor=catalog.changelog_replication(settings.replication_factor),
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 4, 0.5),
        consumer_auto_offset_reset="earliest",
        producer_request_timeout=settings.send_timeout_s,
        topic_disable_leader=True,
        web_enabled=False,
        stream_buffer_maxsize=settings.batch_max * 4,
        recovery_consistency_check=not settings.tansu,
        table_standby_replicas=settings.standby_replicas,
        producer_max_request_size=settings.max_record_bytes + 48_576,
    )
    table = app.Table(
        TABLE_NAME, default=None, key_type=bytes, value_type=bytes, partitions=partitions,
        options=dict(ROCKSDB_OPTIONS) if settings.store.startswith("rocksdb") else None,
        extra_topic_configs=catalog.changelog_config(settings.min_insync_replicas),
    )
    raw = app.topic(
        *catalog.raw_topics(), key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )
    core = StreamCore(settings, lookup=lambda key: table.data.get(key), entries=lambda: faust_compat.stored_items(table.data))
    log.info("jobstream: %s", compiled.summary())
    faults = Injector(Faults.from_env())
    shell = _Shell(app, table, settings, faults)
    continuity = Continuity(lambda tp: faust_compat.committed_offset(app, tp))
    probe = GapProbe(clients.connection(settings), timeout_s=settings.send_timeout_s, group=settings.app_id)

    @app.agent(raw, name="lifecycle")
    async def lifecycle_agent(stream: faust.StreamT) -> None:
        async for events in _or_die(faust_compat.batches(app, stream, settings.batch_max, settings.batch_within_s)):
            started = time.monotonic()
            try:
                events = await _continuous(app, continuity, probe, faults.hide(events))
                # Rebuild the index of gained partitions in steps: the loop keeps serving.
                if not core.indexed:
                    for _ in core.index_steps():
                        await asyncio.sleep(0)
                    log.info("jobstream: due index rebuilt from %d stored entries (%d decoded whole)",
                             core.index_read, core.index_decoded)
                    _refuse_recreated_topics(core, app, events)
                batch = core.process(
                    _message(Message, (e.message.topic, e.message.partition, e.message.offset,
                                       e.message.key, e.message.value, _timestamp_ms(e.message.timestamp)))
                    for e in events
                )
                await _within(settings.send_timeout_s, "step 2 (sending the outputs)", shell.send(batch.outputs))
                await _within(settings.send_timeout_s, "step 3 (storing the state)", shell.store(batch.writes, events))
                if metrics is not None:
                    observe_batch(metrics, app.consumer.highwater, [e.message for e in events], batch.outputs, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - see the failure table above
                _die(exc)

    if metrics is not None:
        @app.task
        async def _operations(app: faust.App) -> None:
            await operate(metrics, settings, listening=listening)

    @app.on_partitions_assigned.connect
    async def _assigned(app: faust.App, assigned: set, **kwargs: Any) -> None:
        # Partitions kept through the rebalance keep their event time and index; the
        # gained ones are rebuilt from the store at the next batch (``index_steps``).
        core.assign({tp.partition for tp in assigned if tp.topic.startswith(catalog.RAW_PREFIX)})
        continuity.reset()  # every partition goes on from its committed offset now
        raw_partitions = sorted({tp.partition for tp in assigned if tp.topic.startswith(catalog.RAW_PREFIX)})
        log.info("jobstream: assigned raw partitions %s", raw_partitions)

    @app.on_before_shutdown.connect
    async def _stop_barrier_producer(app: faust.App, **kwargs: Any) -> None:
        await shell.stop()
        await probe.stop()

    app.jobstream_core = core  # type: ignore[attr-defined]
    return app


async def _continuous(app: faust.App, continuity: Continuity, probe: GapProbe, events: list) -> list:
    """The events of a batch that follow on in their partitions (module docstring,
    "Before step 1"): a hole is accepted, records Faust skipped are read again."""
    kept = list(events)
    start = 0
    while (found := continuity.first_skip([(e.message.tp, e.message.offset) for e in kept[start:]])) is not None:
        index, skip = found
        index += start
        if skip.expected is None and not skip.leftover:
            committed = await probe.committed(skip.tp)
            if committed:  # Faust's consumer did not know it yet: check from the group's offset
                continuity.resume_at(skip.tp, committed)
                start = index
                continue
        verdict = None if skip.leftover else await probe.look(skip)
        if verdict is None or verdict.first_record is not None:
            to = skip.expected if verdict is None else verdict.first_record
            early = [e for e in kept[index:] if e.message.tp == skip.tp]
            kept = kept[:index] + [e for e in kept[index:] if e.message.tp != skip.tp]
            faust_compat.drop_early(app, early)
            if verdict is not None:
                await faust_compat.seek_back(app, skip.tp, to)
                log.warning("jobstream: %s, and the records from %s on were not handed over (Faust's prefetch): "
                            "read again from %s", skip, to, to)
            continuity.rewind(skip, to)
        else:
            deleted = verdict.deleted(skip)
            if deleted:
                print(
                    f"pipeline worker: {skip.tp.topic} partition {skip.tp.partition}: records {deleted.start}-"
                    f"{deleted.stop - 1} were deleted by retention before this worker applied them (the log now "
                    f"starts at {verdict.log_start}); going on from {skip.offset}. Their events are lost to the "
                    "lifecycle: re-ingest that period if it matters, and keep the raw topics' retention longer "
                    "than any worker outage.",
                    file=sys.__stderr__, flush=True,
                )
            elif skip.expected is not None:
                log.info("jobstream: %s: offsets %s-%s hold no records (transaction markers, compaction): going on "
                         "(%d such holes so far)", skip, skip.expected, skip.offset - 1, continuity.holes + 1)
            continuity.accept(skip)
        start = index
    return kept


class _Shell:
    """Steps 2 and 3: durable sends, then durable state.

    Outputs and changelog records go through a producer of the worker's own, one Kafka
    batch per topic-partition (``batches.BatchSender``), not Faust's per-record send."""

    def __init__(self, app: faust.App, table: faust.Table, settings: Settings, faults: Injector) -> None:
        self.app = app
        self.faults = faults
        self.table = table
        self.settings = settings
        self._producer: Any = None
        self._sender: BatchSender | None = None
        self._barrier_producer: Any = None
        self._partition_counts = {
            name: settings.partitions or spec.partitions for name, spec in catalog.load().items()
        }

    async def stop(self) -> None:
        for producer in (self._producer, self._barrier_producer):
            if producer is not None:
                await producer.stop()
        self._producer = self._sender = self._barrier_producer = None

    async def _batch_sender(self) -> BatchSender:
        if self._sender is None:
            settings = self.settings
            self._producer = clients.producer(
                settings, client_id=f"{settings.app_id}-worker", linger_ms=0, max_batch_size=SEND_BATCH_BYTES,
                max_request_size=settings.max_record_bytes + 48_576,
                request_timeout_ms=int(settings.send_timeout_s * 1000),
            )
            await self._producer.start()
            self._sender = BatchSender(self._producer)
        return self._sender

    async def send(self, outputs: list) -> None:
        if not outputs:
            return
        sizes = self._partition_counts
        sender = await self._batch_sender()
        await sender.send(
            (topic, key, value, partition if partition is not None and partition < sizes.get(topic, 0) else None)
            for topic, key, value, partition in outputs
        )

    async def store(self, writes: dict[bytes, tuple[int, bytes | None]], events: list) -> None:
        """Step 3: the changelog first (3a), awaited, then the local store and its
        offset marker (3b). The other order let a send timeout or a kill between the two
        leave the local store ahead of the changelog: the re-delivered messages were then
        skipped as applied, and the next owner of the partition recovered older state."""
        if not writes:
            return
        by_partition = {e.message.partition: e for e in events}
        store = self.table.data
        changelog = self.table.changelog_topic.get_topic_name()
        grouped: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, (partition, value) in writes.items():
            grouped.setdefault(partition, []).append((key, value))
        for partition, items in grouped.items():
            if partition not in by_partition and any(value is not None for _key, value in items):
                raise RuntimeError(f"a table write for partition {partition} without a message of it in the batch")
        sender = await self._batch_sender()
        last = await sender.send((changelog, key, value, partition) for partition, items in grouped.items()
                                 for key, value in items)
        if self.settings.tansu:
            await self._end_with_single_record_batches(changelog, set(grouped))
        self.faults.step("3a")
        for partition, items in grouped.items():
            with faust_compat.current_event(by_partition.get(partition)):  # RocksDB: the partition's database
                for key, value in items:
                    if value is None:
                        store.pop(key, None)  # a tombstone: the job has nothing left to keep
                    else:
                        store[key] = value
        for (topic, partition), offset in last.items():
            store.set_persisted_offset(TP(topic, partition), offset)

    async def _end_with_single_record_batches(self, changelog: str, partitions: set[int]) -> None:
        """Tansu answers ListOffsets with the last batch's base offset + 1, so a changelog
        whose last batch holds several records is recovered short of its tail
        (docs/design.md, "Tansu"). Ending each written partition with a batch of one record (a
        tombstone for a key that never exists) makes that answer right; one record per
        partition and batch instead of every record alone. Never done on real Kafka."""
        if self._barrier_producer is None:
            self._barrier_producer = _SingleRecordProducer(clients.connection(self.settings))
            await self._barrier_producer.start()
        futures = [
            await self._barrier_producer.send(changelog, TANSU_BARRIER_KEY, None, partition, None, None)
            for partition in sorted(partitions)
        ]
        await asyncio.gather(*futures)


class _SingleRecordProducer:
    """An aiokafka producer with Faust's ``send`` signature and one record per batch."""

    def __init__(self, connection: clients.Connection) -> None:
        self._producer = clients.producer(connection, max_batch_size=1, linger_ms=0, client_id="jobstream-changelog")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int, timestamp: Any, headers: Any) -> Any:
        return await self._producer.send(topic, value, key=key, partition=partition)


async def _or_die(batches: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The agent's batches; a crash of the stream itself (not of one batch's work) ends
    the process with exit 70 instead of leaving a live worker that consumes nothing."""
    try:
        async for batch in batches:
            yield batch
    except Exception as exc:  # noqa: BLE001 - any crash of the agent is fatal
        _die(exc)


class DeadlineExceeded(RuntimeError):
    """Kafka did not acknowledge a step of the commit protocol in time."""


async def _within(seconds: float, step: str, awaitable: Any) -> None:
    """Await one step of the commit protocol, for at most ``seconds`` (the setting
    ``send_timeout_s``): a broker that stops answering ends the worker, not hangs it."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise DeadlineExceeded(f"Kafka did not acknowledge {step} within {seconds:g} s") from None

def _refuse_recreated_topics(core: StreamCore, app: faust.App, events: list) -> None:
    """Stop with one line if a raw topic was recreated under the table (25.7)."""
    ends = {}
    for tp in {e.message.tp for e in events}:
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            ends[(tp.topic, tp.partition)] = highwater
    problems = core.recreated(ends)
    if problems:
        print(
            f"pipeline worker: {problems[0]}. Its state no longer matches it: stop every worker of "
            f"app {app.conf.id!r}, then start them with a new --app-id (or delete the topic "
            f"{app.conf.id}-{TABLE_NAME}-changelog and each worker's --datadir) to rebuild from the raw topics.",
            file=sys.stderr, flush=True,
        )
        logging.shutdown()
        os._exit(EXIT_RECREATED)


_message = tuple.__new__
"""Builds a ``Message`` from all six fields without the NamedTuple's Python-level
``__new__`` (a frame per consumed record)."""


def _timestamp_ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _die(exc: BaseException) -> None:
    """End the process now: no commit may follow a batch whose records were not sent."""
    known = isinstance(exc, DeadlineExceeded)
    what = str(exc) if known else f"an unexpected {type(exc).__name__}: {exc}"
    print(
        f"pipeline worker: stopping on {what} "
        f"(exit {EXIT_UNEXPECTED}; restart it, no acknowledged input is lost)",
        file=sys.__stderr__, flush=True,  # the real stderr: Faust turns sys.stderr into log lines
    )
    if not known:
        log.error("unexpected error in the lifecycle agent", exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_UNEXPECTED)


def run_worker(settings: Settings, *, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until it is stopped (Ctrl-C, SIGTERM)."""
    metrics = RoleMetrics("worker", stall_after_s=settings.stall_after_s)
    try:
        app = create_app(settings, metrics, bind(metrics, settings))
    except MetricsPortTaken as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    except faust_compat.UnsupportedFaust as exc:
        print(f"pipeline worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    loop = "uvloop" if _has_uvloop() else "asyncio"
    worker = _Worker(app, loglevel=loglevel, loop=_make_loop(loop), quiet=True)
    collector.tune()  # fewer collections per record (collector.py says how much)
    worker.execute_from_commandline()


SHUTDOWN_GRACE_S = 15.0


class _Worker(faust.Worker):
    """Faust's worker, with SIGTERM always honoured and repeated log lines bounded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.stdout.isatty():  # its spinner writes cursor escape codes into log files
            self.spinner = None

    def _on_sigterm(self) -> None:
        """A graceful stop first; if it hangs (a broker that stopped answering), the
        process ends anyway after ``SHUTDOWN_GRACE_S``, or at once on a second SIGTERM."""
        if self._signal_stop_time:
            os._exit(EXIT_SIGTERM)
        timer = threading.Timer(SHUTDOWN_GRACE_S, os._exit, args=(EXIT_SIGTERM,))
        timer.daemon = True
        timer.start()
        super()._on_sigterm()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        for handler in logger.handlers:
            handler.addFilter(RepeatedLinesFilter())


class RepeatedLinesFilter(logging.Filter):
    """At most one warning or error line per logger and message template every
    ``every_s``, then a count of the ones held back: a dead broker made aiokafka log
    ~100 lines a second."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self.every_s:
            self._last[key] = (last, held + 1)
            return False
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {now - last:.0f} s)"
        return True


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _make_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop
