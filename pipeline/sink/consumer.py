"""``pipeline sink``: the ``jobs.*`` topics -> DuckDB, exactly once, without Kafka transactions.

Commit protocol (one pass per batch; the sink is the single writer of its file, so it
takes every partition of the ``jobs.*`` topics itself, without a consumer group):

1. Open the file, apply the migrations, start Quack on it.
2. Assign every partition; seek each to its ``next_offset`` in ``kafka_offsets``, or to the
   beginning when the file has none (offsets live only in DuckDB, never in Kafka).
3. Fetch records (``getmany``).
4. Decode them in memory into the batch being built: contract-v1 records to rows,
   deduplicated within the batch; records that do not decode become ``dead_letters`` rows
   (``records.py``). While a write is in flight or the last one started less than
   ``sink_commit_interval_ms`` ago, and the batch is not full (``sink_batch_max``
   records), go back to step 3: the batch grows while DuckDB is busy.
5. In ONE DuckDB transaction: insert the rows (anti-join on ids for the append tables,
   highest version wins for runs and alerts) and upsert each partition's next offset
   into ``kafka_offsets``; COMMIT. Then back to step 3.

Step 5 runs in a thread (DuckDB releases the GIL) while steps 3-4 build the next batch;
writes stay one at a time and in order, so offsets only ever move forward. A batch is
written as soon as the previous write has committed and the commit interval has passed,
whatever its size: a slow input gives small batches at most ``sink_commit_interval_ms``
apart (freshness), a backlog gives large ones (a commit costs about 30 ms of CPU whatever
its size: scripts/bench_sink.py measured 10,000-row batches at half the rows/s of
50,000-row ones, and a trickle committed as it came cost a third of a core).

Killed after step k -> what the restart sees (tests/sink/test_commit_protocol.py: each
row is a child sink that SIGKILLs itself there, then a restart compared with a sink that
was never killed; plus a SIGKILL of `pipeline sink` from outside, mid-stream):

| killed after     | in the file                              | the restart                                 | test (point)       |
|------------------|------------------------------------------|---------------------------------------------|--------------------|
| 1 or 2           | schema, no rows or offsets of the batch  | seeks to the stored offsets (or the start)  | after_assign       |
| 3 or 4           | nothing of the batch (it was in memory)  | fetches the same records again, same rows   | before_write       |
| 5, before COMMIT | nothing of the batch (DuckDB drops the uncommitted WAL) | as above                     | before_commit      |
| 5, after COMMIT  | the rows and their offsets               | seeks past them: no row twice, none missing | after_commit       |

A re-sent record (the worker re-emits records with the same ids after its own crash)
sits at a new offset: the anti-join and version rules keep the tables right whatever
the broker re-delivers. A failure to write (full disk, file lost) rolls the transaction
back and ends the process with one line and a non-zero status; its supervisor restarts
it at step 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from pipeline.kafka import clients
from pipeline.ops import ports
from pipeline.ops.health import RoleMetrics, observe_fetch
from pipeline.ops.runtime import bind, operate
from pipeline.settings import Settings
from pipeline.sink import endpoint, pgwire, quack
from pipeline.sink.lake import Fenced
from pipeline.sink.records import TOPIC_TABLES, Batch, BatchBuilder
from pipeline.sink.writer import DuckDBWriter, SinkError, SinkWriter

TOPICS = tuple(TOPIC_TABLES)
STALE_RUNS_EVERY_S = 10.0
"""How often the sink counts the STALE runs for its metrics (one query on its own file)."""

POLL_IDLE_MS = 200
"""How long a fetch waits for records when nothing is waiting to be written."""
POLL_WHILE_WRITING_MS = 5
"""How long it waits when a batch is ready but the previous write is still running: the
most a record can wait beyond that write."""


@dataclass(slots=True)
class SinkStats:
    batches: int = 0
    records: int = 0
    rows: int = 0
    dead_letters: int = 0


async def consume(
    settings: Settings,
    writer: SinkWriter,
    *,
    stop: asyncio.Event,
    on_commit: Callable[[Batch], None] | None = None,
    metrics: RoleMetrics | None = None,
    group: str | None = None,
) -> SinkStats:
    """Steps 2 to 5 until ``stop`` is set; returns what was written (and, with
    ``metrics``, counts each committed batch there). With ``group`` the sink is one of a
    consumer group writing a lake (``lake.py``'s protocol): it owns what the group assigns
    it, claims those partitions' offsets from the lake and seeks to them."""
    consumer = clients.consumer(
        settings,
        group_id=group,
        auto_offset_reset="none",  # a stored offset Kafka no longer has is an error, never a silent jump
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        fetch_max_wait_ms=settings.sink_fetch_wait_ms,
        **({} if group is None else {
            "session_timeout_ms": int(settings.session_timeout_s * 1000),
            "heartbeat_interval_ms": max(100, int(settings.session_timeout_s * 1000) // 3),
            "max_poll_interval_ms": 600_000,
        }),
    )
    stats = SinkStats()
    writing: asyncio.Future[None] | None = None
    generation = 0  # moves at every revocation or fencing: a batch built before is dropped
    try:
        await consumer.start()
        partitions = await _partitions(consumer)
        if group is None:
            consumer.assign(partitions)
            await _seek_to_stored(consumer, partitions, writer.read_offsets())
        else:
            async def revoked() -> None:
                nonlocal generation
                generation += 1
                if writing is not None:
                    await asyncio.wait([writing])  # its outcome is raised in the loop

            async def assigned(owned: set[TopicPartition]) -> None:
                nonlocal generation
                generation += 1
                # No await before every partition has a position: aiokafka's fetcher would
                # look for offsets committed in Kafka (there are none) and fail the fetch.
                stored = writer.claim([(tp.topic, tp.partition) for tp in owned])
                await _seek_to_stored(consumer, sorted(owned), stored)
                print(f"sink: owns {len(owned)} partitions: {', '.join(f'{t}:{p}' for t, p in sorted(owned))}",
                      file=sys.stderr, flush=True)

            consumer.subscribe(list(TOPICS), listener=_GroupListener(revoked, assigned))

        stale_counted_at = float("-inf")

        async def write(batch: Batch, fetched: dict) -> None:
            nonlocal stale_counted_at, generation
            started = time.monotonic()
            try:
                await asyncio.to_thread(writer.write, batch)
            except Fenced as exc:
                generation += 1
                print(f"sink: {exc}; reading the partitions again from the lake", file=sys.stderr, flush=True)
                owned = consumer.assignment()
                stored = writer.claim([(tp.topic, tp.partition) for tp in owned])
                await _seek_to_stored(consumer, sorted(owned), stored)
                return
            stats.batches += 1
            stats.records += batch.records
            stats.rows += batch.rows
            letters = [batch.tables.get(t) for t in ("dead_letters", "sink_dead_letters")]
            stats.dead_letters += sum(t.num_rows for t in letters if t is not None)
            if on_commit is not None:
                on_commit(batch)
            if metrics is not None:
                rows = {table: t.num_rows for table, t in batch.tables.items()}
                observe_fetch(metrics, consumer.highwater, fetched, rows, time.monotonic() - started,
                              rows.get("sink_dead_letters", 0))
                if started - stale_counted_at >= STALE_RUNS_EVERY_S:
                    stale_counted_at = started
                    metrics.stale_runs.labels(metrics.role).set(await asyncio.to_thread(writer.stale_runs))

        building = BatchBuilder()
        built_in = generation
        fetched_into: dict[TopicPartition, list] = {}  # the batch's records per partition, for the metrics
        interval = settings.sink_commit_interval_ms / 1000
        next_write_at = 0.0
        while not stop.is_set():
            if built_in != generation:
                # Partitions moved (or this sink was fenced): the batch being built is
                # dropped and every owned partition read again from what the lake holds.
                if writing is not None:
                    await writing
                    writing = None
                building, fetched_into, built_in = BatchBuilder(), {}, generation
                await _seek_to_stored(consumer, sorted(consumer.assignment()), writer.claimed())
                continue
            try:
                fetched = await consumer.getmany(
                    timeout_ms=_poll_ms(building.records, writing, next_write_at),
                    max_records=settings.sink_batch_max - building.records,
                )
            except OffsetOutOfRangeError as exc:
                raise SinkError(_out_of_range(exc)) from None
            for tp, messages in fetched.items():
                building.add(messages)
                fetched_into.setdefault(tp, []).extend(messages)
            if writing is not None and writing.done():
                await writing  # raises what the write raised
                writing = None
            if not fetched and not building.records:
                await _refuse_positions_past_the_end(consumer, sorted(consumer.assignment()))
                continue
            if not building.records:
                continue
            if writing is not None or time.monotonic() < next_write_at:
                if building.records < settings.sink_batch_max:
                    continue  # keep fetching into this batch while DuckDB writes the last one
                if writing is not None:
                    await writing
                    writing = None
            if built_in != generation:
                continue
            next_write_at = time.monotonic() + interval
            writing = asyncio.ensure_future(write(building.build(), fetched_into))
            building, fetched_into = BatchBuilder(), {}
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:  # an error elsewhere: let the write in flight end before closing
            await asyncio.wait([writing])
        await consumer.stop()
    return stats


class _GroupListener(ConsumerRebalanceListener):
    """Step 2 of the lake's protocol, run by aiokafka around each rebalance."""

    def __init__(self, revoked: Callable[[], Awaitable[None]], assigned: Callable[[set[TopicPartition]], Awaitable[None]]) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked) -> None:
        await self._revoked()

    async def on_partitions_assigned(self, assigned) -> None:
        await self._assigned(set(assigned))


async def _seek_to_stored(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], stored: dict) -> None:
    """Seek to the stored offsets, the others to the beginning: every position is set
    before the first await (``seek_to_beginning`` marks all its partitions, then waits)."""
    beginning = []
    for tp in partitions:
        offset = stored.get((tp.topic, tp.partition))
        if offset is None:
            beginning.append(tp)
        else:
            consumer.seek(tp, offset)
    if beginning:
        await consumer.seek_to_beginning(*beginning)


def _poll_ms(waiting: int, writing: asyncio.Future[None] | None, next_write_at: float) -> int:
    """How long the next fetch may wait for records: briefly when records wait for the
    write in flight, until the commit interval ends when they wait for that."""
    if not waiting:
        return POLL_IDLE_MS
    if writing is not None:
        return POLL_WHILE_WRITING_MS
    return max(1, min(POLL_IDLE_MS, int((next_write_at - time.monotonic()) * 1000) + 1))


def _out_of_range(exc: OffsetOutOfRangeError) -> str:
    where = ", ".join(f"{tp.topic}:{tp.partition} at {offset}" for tp, offset in (exc.args[0] or {}).items())
    return (
        f"Kafka no longer has the offsets stored in the database ({where}): records were deleted "
        "by retention before the sink read them, or this is another Kafka than the file was written from"
    )


async def _refuse_positions_past_the_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    """A position beyond a partition's end means the broker lost the records the file
    holds (a Kafka recreated empty, like the embedded broker after a restart). Real Kafka
    answers OffsetOutOfRange; Tansu answers an empty fetch, so the sink would wait
    forever and then skip every new record below its stored offsets."""
    ahead = {}
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) > highwater:
            ahead[tp] = await consumer.position(tp)
    if ahead:
        raise SinkError(_out_of_range(OffsetOutOfRangeError(ahead)))


async def _partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    deadline = time.monotonic() + 10
    while True:
        missing = [t for t in TOPICS if not consumer.partitions_for_topic(t)]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise SinkError(f"topics {', '.join(missing)} do not exist: run `pipeline topics apply` first")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
        await asyncio.sleep(0.2)
    return [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t))]


def consume_until_signalled(settings: Settings, writer: SinkWriter, *, group: str | None = None) -> SinkStats:
    """``consume`` until SIGINT or SIGTERM, with the role's metrics served meanwhile: the
    loop of ``pipeline sink``, on a file or (with ``group``) on the lake (``lake_role.py``)."""

    async def main() -> SinkStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        metrics = RoleMetrics("sink", stall_after_s=settings.stall_after_s)
        operations = asyncio.ensure_future(operate(metrics, settings, listening=bind(metrics, settings)))
        try:
            return await consume(settings, writer, stop=stop, metrics=metrics, group=group)
        finally:
            operations.cancel()
            await asyncio.gather(operations, return_exceptions=True)

    return asyncio.run(main())


def start_postgres(settings: Settings, writer: DuckDBWriter, token: str, *, hardened: bool, port: int | None = None) -> pgwire.PgServer:
    """The Postgres endpoint beside Quack (on ``port``, default the setting's; 0 lets the
    kernel choose); without Quack it locks the database's file access and configuration
    itself (what Quack's start does)."""
    try:
        password = pgwire.read_password(settings.pg_password_file, token)
        if not hardened:
            pgwire.harden(writer.connection)
        return pgwire.PgServer.start(writer.connection, pgwire.PgConfig(
            settings.pg_host, settings.pg_port if port is None else port, password, settings.live_query_timeout_s,
            settings.pg_tls_cert, settings.pg_tls_key or None,
        ))
    except pgwire.PgWireError as exc:
        raise SinkError(str(exc)) from None


def run_sink(settings: Settings, *, echo: Callable[[str], None] = print) -> SinkStats:
    """Step 1, then the loop until SIGINT/SIGTERM; errors surface as ``SinkError``."""
    writer = DuckDBWriter(settings.db_path, settings.sink_threads).open()
    server = None
    postgres = None
    try:
        token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
        where = "JOBSTREAM_QUACK_TOKEN" if os.environ.get(quack.TOKEN_ENV) else str(token_file)
        any_quack_port = ports.wants_any("quack")  # the starter asked for a port of its choosing
        any_pg_port = ports.wants_any("pg")
        if settings.quack_port or any_quack_port or settings.pg_port or any_pg_port:
            token = quack.resolve_token(token_file)
        if settings.quack_port or any_quack_port:
            try:
                server = (quack.QuackServer.start_on_any_port(writer.connection, settings.quack_host, token) if any_quack_port
                          else quack.QuackServer.start(writer.connection, settings.quack_host, settings.quack_port, token))
            except quack.QuackError as exc:
                raise SinkError(str(exc)) from None
            ports.report("quack", server.port)
            echo(f"sink: live SQL on {server.uri} (token in {where})")
        if settings.pg_port or any_pg_port:
            postgres = start_postgres(settings, writer, token, hardened=server is not None, port=0 if any_pg_port else None)
            ports.report("pg", postgres.server.server_address[1])
            echo(f"sink: live SQL on {postgres.uri} (password: {settings.pg_password_file or where}"
                 f"{', TLS' if settings.pg_tls_cert else ''})")
        if server is not None or postgres is not None:
            endpoint.publish(settings.db_path, endpoint.Endpoint(
                os.getpid(),
                quack.uri(endpoint.client_host(settings.quack_host), server.port) if server else "",
                postgres.uri if postgres else None,
            ))
        echo(f"sink: writing {settings.db_path} from {settings.bootstrap}")

        stats = consume_until_signalled(settings, writer)
        echo(f"sink: stopped after {stats.records} records, {stats.rows} rows, {stats.dead_letters} dead letters")
        return stats
    finally:
        endpoint.withdraw(settings.db_path, os.getpid())
        if postgres is not None:
            postgres.stop()
        if server is not None:
            server.stop()
        writer.close()
