"""The one place that touches faust-streaming's private API.

The worker writes its table through the store directly (app.py says why). Faust's
RocksDB store picks the partition database of a write from the *current event*, a
private context variable (``faust.streams._current_event``); ``take_events`` batches
have none. ``current_event`` sets it around one write. Its shape is checked for the
faust-streaming versions below; any other version is refused at start with one line,
instead of corrupting the store later.

``App`` is Faust's app with one change to its consumer's fetch loop (``drain_messages``):
Faust hands each fetched record to its conductor through ``wait_first(callback(message),
suspend_flow.wait())``, four asyncio tasks and an ``asyncio.wait`` per record, most of
Faust's own cost per record (docs/design.md, "Worker cost"). Here the callback runs in the
fetch loop's own task and only a callback that must wait (a full stream buffer, flow
suspended) goes on as Faust runs it. While the app is rebalancing (from a revocation to
"Worker ready", recovery and the seek to committed offsets included) every record goes
Faust's own way: delivered inline, the records fetched while recovery sought the stream
partitions went through in one go and all but one never reached the batches (a restarted
worker went silent; docs/design.md, "Worker cost"). The loop is a copy of
Faust's, used only while the installed Faust's loop is the one it was copied from
(``DRAIN_FINGERPRINT``). Its table manager (``TableManager``) starts without Faust's
one-second sleep, under the same kind of check.

The worker's own records (the raw topics) do not go through the conductor at all: the
loop puts them into a ``Handoff``, which the agent reads in batches, doing per batch what
Faust's stream does per record (docs/design.md, "Faust").
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import hashlib
import inspect
import logging
import textwrap
import time
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, cast

import faust
import faust.tables

from pipeline.errors import JobstreamError
from pipeline.kafka import compat

log = logging.getLogger("pipeline.worker")

KNOWN_VERSIONS = ("0.15.",)
_COMMITTED = "_committed_offset"
"""faust-streaming releases whose ``_current_event`` is a ContextVar of a weakref."""


class UnsupportedFaust(JobstreamError, RuntimeError):
    """The installed faust-streaming is one this adapter was not checked against."""


def check_version(version: str | None = None) -> None:
    version = faust.__version__ if version is None else version
    if not version.startswith(KNOWN_VERSIONS):
        raise UnsupportedFaust(
            f"faust-streaming {version} is not supported (known: {', '.join(v + 'x' for v in KNOWN_VERSIONS)}): "
            "the worker sets its private _current_event; install faust-streaming>=0.15.3,<0.16"
        )
    from faust import streams

    if not hasattr(streams, "_current_event") or not hasattr(streams._current_event, "set"):
        raise UnsupportedFaust(f"faust-streaming {version} has no faust.streams._current_event context variable")
    check_consumer(version)


def check_consumer(version: str, consumer: type | None = None) -> None:
    """The consumer attributes ``committed_offset``, ``seek_back`` and ``drop_early``
    rely on (declared on Faust's Consumer class)."""
    if consumer is None:
        from faust.transport.consumer import Consumer as consumer
    declared = {name for klass in consumer.__mro__ for name in getattr(klass, "__annotations__", {})}
    missing = [name for name in (_COMMITTED, "_gap", "_unacked_messages") if name not in declared]
    if missing or not hasattr(consumer, "seek"):
        raise UnsupportedFaust(
            f"faust-streaming {version}: its consumer has no {', '.join(missing) or 'seek'} "
            "(the worker's gap check reads them); install faust-streaming>=0.15.3,<0.16"
        )


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (for the store's partition) while inside
    (None: no current event, enough for deletes, which look in every partition)."""
    from faust.streams import _current_event

    token = _current_event.set(None if event is None else weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def committed_offset(app: faust.App, tp: Any) -> int | None:
    """The next offset of ``tp`` as Faust's consumer last committed or sought it (its
    private ``_committed_offset``), or None when it has none. Faust's ``perform_seek``
    stores a committed 0 as None, and in a rebalance its cache can lag the group, so None
    means "not known here": the caller asks the broker (gaps.GapProbe.committed) and checks
    from the log start only when the group has nothing committed. A consumer without the attribute
    is refused, never read as "nothing committed" (that would switch the check off)."""
    offsets = getattr(app.consumer, _COMMITTED, None)
    if offsets is None:
        raise UnsupportedFaust(f"faust-streaming {faust.__version__}: its consumer has no {_COMMITTED}")
    value = offsets.get(tp)
    return value if isinstance(value, int) and value >= 0 else None


async def seek_back(app: faust.App, tp: Any, offset: int) -> None:
    """Read ``tp`` again from ``offset``, and withdraw the gap Faust recorded there (it
    would let a commit pass the records about to come again)."""
    await app.consumer.seek(tp, offset)
    gaps = getattr(app.consumer, "_gap", {})
    if tp in gaps:
        gaps[tp].chop(offset, 1 << 62)


def drop_early(app: faust.App, events: list[Any]) -> None:
    """Keep Faust from acknowledging ``events`` (records that came before the ones
    skipped): an acknowledged one would let a commit pass the skipped records. They are
    marked done without entering the consumer's acknowledged offsets."""
    unacked = getattr(app.consumer, "_unacked_messages", None)
    for event in events:
        event.message.acked = True
        if unacked is not None:
            unacked.discard(event.message)


DRAIN_FINGERPRINT = "534d036692b697d3"
"""``fingerprint`` of faust-streaming 0.15.3's ``Consumer._drain_messages``, the loop
``drain_messages`` copies (its syntax tree: comments and layout do not count)."""


def fingerprint(function: Any) -> str:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def draining_supported(consumer: type | None = None) -> bool:
    """Whether the installed Faust's fetch loop is the one ``drain_messages`` copies."""
    if consumer is None:
        from faust.transport.consumer import Consumer as consumer
    try:
        return fingerprint(consumer._drain_messages) == DRAIN_FINGERPRINT
    except (OSError, TypeError, SyntaxError):  # no source to compare (a frozen or compiled install)
        return False


class App(faust.App):
    """Faust's app whose consumer delivers records with ``drain_messages`` and whose
    fetches wait at most ``fetch_wait_ms`` at the broker (``with_fetch_wait``). With
    ``handoff`` (a ``Handoff``), the records of its topics go from the fetch loop to that
    handoff in place of Faust's conductor and streams."""

    def __init__(self, *args: Any, fetch_wait_ms: int | None = None, handoff: "Handoff | None" = None,
                 **options: Any) -> None:
        self.fetch_wait_ms = fetch_wait_ms
        self.handoff = handoff
        if table_start_supported():
            options = {"TableManager": TableManager, **options}
        super().__init__(*args, **options)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        if self.handoff is not None:
            seek_uncommitted_to_start(consumer, self.handoff.topics)
        if draining_supported(type(consumer)):
            consumer._drain_messages = types.MethodType(drain_messages, consumer)
            if self.handoff is not None:
                self.handoff.install(self, consumer)
        else:
            log.warning("jobstream: faust-streaming %s has a fetch loop this worker does not know: using Faust's own "
                        "(correct, about four asyncio tasks more per record)", faust.__version__)
        if self.fetch_wait_ms is not None:
            with_fetch_wait(consumer, self.fetch_wait_ms)
        leaving_its_group(consumer)
        return consumer


TABLE_START_FINGERPRINT = "0d1566ceb4f5fa15"
"""``fingerprint`` of faust-streaming 0.15.3's ``TableManager.on_start``, which
``TableManager.on_start`` repeats without its first line."""


def table_start_supported() -> bool:
    """Whether the installed Faust's table manager starts as ``TableManager`` assumes."""
    try:
        return fingerprint(faust.tables.TableManager.on_start) == TABLE_START_FINGERPRINT
    except (OSError, TypeError, SyntaxError):  # no source to compare
        return False


class TableManager(faust.tables.TableManager):
    """Faust's table manager without the one-second sleep its start begins with (time for
    tables declared after the app starts; the worker declares its one table before): a
    second off every worker's start and restart (docs/design.md, "Faust"). Faust names
    this class a setting (``TableManager``) for such subclasses; ``App`` uses it only
    while Faust's ``on_start`` is the one it repeats (``TABLE_START_FINGERPRINT``)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def stored_items(store: Any) -> Iterable[tuple[bytes, bytes]]:
    """A table store's (key, value) pairs as stored. Faust's ``items()`` sends every key
    and value of a RocksDB store through its serializer registry, a few Python frames
    each even when both serializers are ``raw`` (what the worker's table uses): the
    store's own ``_iteritems`` yields the same bytes without them. Any other store (the
    memory one) or serializer: its ``items()``."""
    iteritems = getattr(store, "_iteritems", None)
    if callable(iteritems) and getattr(store, "key_serializer", None) == "raw" == getattr(store, "value_serializer", None):
        return iteritems()  # type: ignore[no-any-return]
    return store.items()  # type: ignore[no-any-return]


def seek_uncommitted_to_start(consumer: Any, topics: Iterable[str]) -> None:
    """Make Faust's "seek to committed offsets" also rewind the partitions of ``topics``
    that have nothing committed, to their start.

    Faust drops records it fetched while the flow is stopped or the generation changed
    (``Consumer.getmany``) and relies on ``perform_seek`` (recovery, and getmany itself) to
    fetch them again. aiokafka's ``seek_to_committed`` seeks only partitions with a
    committed offset above 0; one with none stays where the fetcher left it, past the
    dropped records, and a worker of a group that has not committed there yet stays silent
    about them until another record comes to that partition (docs/design.md, "Faust").
    Records read again are skipped as applied (the failure table in ``app.py``)."""
    names = frozenset(topics)
    seek_to_committed = consumer.seek_to_committed

    async def seek_to_committed_or_start() -> Any:
        committed = await seek_to_committed()
        rewound = sorted((tp for tp, offset in committed.items()
                          if tp.topic in names and (offset is None or offset <= 0)))
        if rewound:
            await consumer.seek_wait({tp: 0 for tp in rewound})  # in the consumer's thread, as recovery seeks
            by_topic: dict[str, list[str]] = {}
            for tp in rewound:
                by_topic.setdefault(tp.topic, []).append(str(tp.partition))
            log.info("jobstream: nothing committed yet for %s: read from their start",
                     "; ".join(f"{topic} {','.join(partitions)}" for topic, partitions in by_topic.items()))
        return committed

    consumer.seek_to_committed = seek_to_committed_or_start


def with_fetch_wait(consumer: Any, wait_ms: int) -> None:
    """Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting;
    this sets the consumer's wait before it starts (aiokafka hands it to its fetcher at
    ``start``). Where Faust's consumer thread or aiokafka's consumer do not have the
    attributes this relies on, Faust's 1,500 ms stays, with a warning."""

    def wait(kafka_consumer: Any) -> Any:
        if hasattr(kafka_consumer, "_fetch_max_wait_ms"):
            kafka_consumer._fetch_max_wait_ms = wait_ms
        else:
            log.warning("jobstream: this aiokafka consumer has no fetch wait to set: fetches wait Faust's 1,500 ms")
        return kafka_consumer

    _on_created(consumer, wait, "fetches wait Faust's 1,500 ms")


def leaving_its_group(consumer: Any) -> None:
    """Faust's aiokafka consumer leaves its group when the worker stops, from generation 0
    too (``kafka.compat.leaves_its_group``: Tansu's first generation), so a restarted
    worker does not wait for its own old session to time out."""
    _on_created(consumer, compat.leaves_its_group,
                "a stopped worker stays in a Tansu group until its session times out")


def _on_created(consumer: Any, adjust: Callable[[Any], Any], otherwise: str) -> None:
    """Apply ``adjust`` to each aiokafka consumer Faust's consumer thread creates; where the
    thread creates it another way, warn with ``otherwise`` (what then stays Faust's)."""
    thread = getattr(consumer, "_thread", None)
    create = getattr(thread, "_create_worker_consumer", None)
    if create is None:
        log.warning("jobstream: faust-streaming %s builds its consumer another way: %s", faust.__version__, otherwise)
        return

    def create_adjusted(transport: Any) -> Any:
        return adjust(create(transport))

    thread._create_worker_consumer = create_adjusted


HANDOFF = "_jobstream_handoff"
"""The attribute of Faust's consumer that holds its ``Handoff`` (``drain_messages`` reads it)."""


class Delivered:
    """A handed-off record in the worker's batches: ``.message`` as Faust's events have it
    (the checks and the RocksDB store's partition read ``event.message``)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, message: Any) -> None:
        self.message = message


class Handoff:
    """The records of ``topics``, from Faust's fetch loop to the worker's agent in batches,
    past Faust's conductor, channel, stream and event per record (about 90 us a record,
    more than the worker's own work: docs/design.md, "Faust").

    What Faust's stream does for a record is done here, per batch:

    - Records fetched before a rebalance are never handed over: the handoff is one of the
      queues ``app.flow_control`` clears when it suspends the flow, the fetch loop holds a
      record while the flow is suspended, and records taken while it is suspended, or of
      an older consumer generation, are dropped as Faust's stream drops them. Faust's
      recovery seeks the partitions to their committed offsets before the flow resumes,
      so they come again.
    - A record handed over is tracked (``track_message``: a rebalance or a stop waits for
      it) and acknowledged once the agent asks for the next batch (commits then pass it);
      never when the agent fails.

    A batch closes at ``max_`` records or ``within`` seconds after its first record
    arrived. (Faust's ``take_events`` waits ``within`` after the previous batch, even when
    records are already waiting: at 2,000 records/s its batches came every ``within`` plus
    the time to process one.) At ``capacity`` records waiting, the fetch loop waits."""

    def __init__(self, topics: Iterable[str], capacity: int) -> None:
        self.topics = frozenset(topics)
        self.capacity = capacity
        self._records: collections.deque[Any] = collections.deque()
        self._first_at = 0.0
        self._batch_max = capacity
        self._arrived = asyncio.Event()
        self._full_batch = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._app: Any = None
        self._consumer: Any = None

    @property
    def installed(self) -> bool:
        return self._consumer is not None

    def install(self, app: Any, consumer: Any) -> None:
        """Take over the records of ``topics`` from ``consumer``'s fetch loop."""
        self._app, self._consumer = app, consumer
        setattr(consumer, HANDOFF, self)
        app.flow_control.manage_queue(self)  # a WeakSet: the app holds the handoff

    def clear(self) -> None:
        """Drop every record waiting, when flow control suspends the flow (a rebalance).
        Flow control also clears its queues when it resumes the flow, after recovery has
        sought the partitions to their committed offsets: the records here then were
        fetched after that seek, and dropping them lost them (a worker restarted after
        SIGKILL stayed silent: ``test_worker_groups``), so they are kept."""
        if self._app is not None and self._app.flow_control.is_active():
            return
        self._records.clear()
        self._room.set()

    def put(self, message: Any) -> bool:
        """Add one fetched record; True when the handoff is now full."""
        records = self._records
        if not records:
            self._first_at = time.monotonic()
            self._arrived.set()
        records.append(message)
        waiting = len(records)
        if waiting >= self._batch_max:
            self._full_batch.set()
        if waiting >= self.capacity:
            self._room.clear()
            return True
        return False

    async def room(self) -> None:
        await self._room.wait()

    async def batches(self, max_: int, within: float) -> AsyncIterator[list[Delivered]]:
        """The agent's batches, each acknowledged when the next one is asked for."""
        records = self._records
        self._batch_max = max_
        while True:
            while not records:
                self._arrived.clear()
                await self._arrived.wait()
            left = self._first_at + within - time.monotonic()
            if left > 0 and len(records) < max_:
                self._full_batch.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full_batch.wait(), left)
            taken = [records.popleft() for _ in range(min(max_, len(records)))]
            if len(records) < self.capacity:
                self._room.set()
            kept = self._current(taken)
            if len(kept) < len(taken):
                _log_dropped(taken, kept)
            if not kept:
                continue
            track = self._consumer.track_message
            for message in kept:
                track(message)
            self._stream_inbound({message.tp for message in kept})
            yield [Delivered(message) for message in kept]
            ack = self._consumer.ack
            for message in kept:
                ack(message)

    def _stream_inbound(self, partitions: set[Any]) -> None:
        """What Faust's stream records per event: the last time each partition delivered.
        Faust's livelock check logs an ERROR for a partition that is behind without one."""
        monitor = getattr(self._app, "monitor", None)
        if monitor is not None:
            now = time.monotonic()
            for tp in partitions:
                monitor.stream_inbound_time[tp] = now

    def _current(self, taken: list[Any]) -> list[Any]:
        """The records Faust's stream would deliver: none while the flow is suspended,
        only the current consumer generation's."""
        app = self._app
        if not taken or not app.flow_control.is_active():
            return []
        generation = app.consumer_generation_id
        return [message for message in taken if message.generation_id == generation]


def _log_dropped(taken: list[Any], kept: list[Any]) -> None:
    """One line per batch that lost records to a rebalance: which partitions and offsets
    were dropped, to be fetched again after recovery's seek (if a partition then stays
    silent, this is where to look)."""
    kept_ids = {id(message) for message in kept}
    spans: dict[Any, list[int]] = {}
    for message in taken:
        if id(message) not in kept_ids:
            span = spans.setdefault(message.tp, [message.offset, message.offset])
            span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    log.info("jobstream: handoff dropped %d records fetched before a rebalance (%s)", len(taken) - len(kept),
             ", ".join(f"{tp.topic}[{tp.partition}] {low}-{high}" for tp, (low, high) in sorted(spans.items())))


def batches(app: Any, stream: Any, max_: int, within: float) -> AsyncIterator[Any]:
    """The agent's batches: from the app's handoff when its consumer has one, else
    Faust's own ``take_events`` (an unknown Faust: the fetch loop is Faust's)."""
    handoff = getattr(app, "handoff", None)
    if handoff is not None and handoff.installed:
        return handoff.batches(max_, within)
    return stream.take_events(max_, within=within)


async def deliver(consumer: Any, delivery: Coroutine[Any, Any, Any]) -> None:
    """Run ``delivery`` (Faust's callback for one record) to its end in this task when it
    never has to wait; if it waits, go on as Faust's loop does: in a task of its own,
    raced against ``suspend_flow`` and the consumer stopping or crashing."""
    try:
        waiting = delivery.send(None)
    except StopIteration:
        return
    await consumer.wait_first(_go_on(delivery, waiting), consumer.suspend_flow.wait())


async def _go_on(delivery: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive ``delivery`` on from where it first waited on ``waiting`` (what it yielded),
    as an asyncio task would: resumed once that future is done, cancelled with it."""
    while True:
        try:
            if waiting is None:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # received, as a task's step does
                await waiting
        except asyncio.CancelledError:
            if waiting is None or not waiting.cancelled():  # cancelled here, not through its future
                try:
                    waiting = delivery.throw(asyncio.CancelledError())
                except StopIteration as stop:
                    return stop.value
                continue
        except BaseException:  # noqa: BLE001 - the future's own error: ``delivery`` reads it when resumed
            pass
        try:
            waiting = delivery.send(None)
        except StopIteration as stop:
            return stop.value


async def drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - the worker's fetch loop
    """faust-streaming 0.15.3's ``Consumer._drain_messages`` (BSD-3-Clause), but each record
    through ``deliver`` instead of ``wait_first`` outside a rebalance (the module docstring
    says why), and a record of a handed-off topic into the ``Handoff``."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    app = self.app

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    handoff = getattr(self, HANDOFF, None)
    handed_topics = handoff.topics if handoff is not None else frozenset()
    flow_control = app.flow_control if handoff is not None else None

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(Any, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset:
                            if acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        if message.topic in handed_topics:
                            if not flow_control.is_active():
                                # A rebalance: held until the flow resumes (its clearing done), as
                                # Faust's stream buffer holds it; dropped if the consumer stops its flow.
                                await self.wait_first(flow_control.acquire(), self.suspend_flow.wait())
                            if not self.suspend_flow.is_set() and handoff.put(message):
                                await self.wait_first(handoff.room(), self.suspend_flow.wait())  # full
                        elif app.rebalancing:  # Faust's own way until "Worker ready" (docstring)
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await deliver(self, callback(message))
                        set_read_offset(tp, offset)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)
