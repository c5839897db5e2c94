"""File backfill: saved vendor documents into ``raw.<vendor>``, keyed by job.

One implementation serves ``pipeline ingest file`` and ``pipeline replay`` (which also
runs it against its embedded broker). It streams: files are read a line (or one whole
document) at a time, each document is cut into one piece per job, and at most
``max_in_flight`` records wait for Kafka's acknowledgement at any moment, so memory
stays flat whatever the input size.

What it promises, like every producer of raw records:
- a document, or one item of it, that cannot be used is reported with its file, line
  (or document) and item number and the reason, and the rest goes on; the good items of
  a document are sent even when one of its items is bad;
- a record too large for Kafka is reported the same way instead of stopping the run;
- heartbeats (docs/records.md): one to every partition of each raw topic it writes, at
  the start, every ``heartbeat_every_s`` while it runs and at the end, each carrying the
  envelope time the backfill was using then; in a backfill of history (records at their
  vendor's own times) that is the latest time sent so far, never the wall clock, and
  none goes before the first record (``heartbeat_time``): a heartbeat at "now" ahead of
  the history would move event time past every run in it (issue 32.1);
- nothing counts as sent before Kafka acknowledged it (acks=all).

Input shapes: JSON lines, one JSON document (an object or an array, pretty-printed or
not), the Zuora status text that is not JSON at all (handed to the vendor module as
text), and directories of such files.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson

from pipeline.errors import JobstreamError
from pipeline import catalog, vendors
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key

MAX_WHOLE_DOCUMENT_BYTES = 32 << 20  # a file read as one document (not JSON lines)
MAX_LINE_BYTES = 32 << 20
MAX_RECORD_BYTES = 1_000_000  # under Kafka's default message.max.bytes (1 MiB + 12)
DEFAULT_MAX_IN_FLIGHT = 5000  # records sent and not yet acknowledged
BATCH_BYTES = 256 << 10  # one Kafka batch per partition, sent when full
DEFAULT_HEARTBEAT_EVERY_S = 5.0
_SNIFF_LINES = 8


class BackfillError(JobstreamError, RuntimeError):
    """Kafka could not be reached or did not acknowledge a record; one line."""


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a file: where it is, what it is, and the file offset after it."""

    position: str  # "line 12" or "document 1"
    doc: Any  # parsed JSON, or the raw bytes when it is not JSON
    end: int


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    key: bytes
    value: bytes
    events: int  # job events the worker will make of it
    received_at: datetime  # the envelope's time


@dataclass(frozen=True, slots=True)
class Rejection:
    where: str  # "path line 3 item 2"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class Report:
    """What a backfill did. ``rejected`` lists every refused document or item."""

    files: int = 0
    documents: int = 0
    records: int = 0
    expected_events: int = 0
    heartbeats: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    rejected: list[Rejection] = field(default_factory=list)


class EnvelopeClock:
    """The ``received_at`` each record's envelope carries: the wall clock, or a fixed
    start plus ``step`` per document (replays of samples that must come out the same)."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(0)) -> None:
        self._start = start
        self._step = step
        self.wall = start is None  # a backfill of history: records take their vendor's own times
        self._count = 0
        self.current = start or datetime.now(UTC)

    def next(self) -> datetime:
        if self._start is None:
            self.current = datetime.now(UTC)
        else:
            self.current = self._start + self._count * self._step
        self._count += 1
        return self.current


def vendor_of(path: Path) -> str | None:
    """A file's vendor from its folder or name prefix (``zuora/x.json``, ``zuora-x.json``)."""
    for name in (path.parent.name, path.name.split("-")[0].split(".")[0]):
        if name in vendors.VENDOR_NAMES:
            return name
    return None


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and every file under a directory (sorted, hidden names skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found.append(path)
    return found


def read_documents(path: Path) -> Iterator[Document]:
    """The documents of one file, streamed: JSON lines one by one; otherwise the whole
    file as one JSON document (or as text, for the vendor to parse), if it is small
    enough to hold (``MAX_WHOLE_DOCUMENT_BYTES``)."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        sniffed = _sniff(stream)
        stream.seek(0)
        if sniffed == "lines":
            yield from _lines(stream)
            return
        if size > MAX_WHOLE_DOCUMENT_BYTES:
            raise FileTooLargeToRead(
                f"not JSON lines, and {size / 2**20:.0f} MiB is over the {MAX_WHOLE_DOCUMENT_BYTES >> 20} MiB "
                "read as one document; save it as JSON lines"
            )
        data = stream.read()
    try:
        yield Document("document 1", orjson.loads(data), size)
        return
    except orjson.JSONDecodeError:
        pass
    if sniffed == "lines-after-first":
        with open(path, "rb") as stream:
            yield from _lines(stream)
        return
    if data.strip():
        yield Document("document 1", data, size)


class FileTooLargeToRead(ValueError):
    """A file that is neither JSON lines nor small enough to read whole."""


def _sniff(stream: BinaryIO) -> str:
    """"lines" when the first non-blank line is a JSON value of its own; "lines-after-
    first" when a later one of the first few is (a bad first line); else "whole"."""
    seen = 0
    for line in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            value = _NOT_JSON
        if seen == 0 and value is not _NOT_JSON:
            return "lines"
        if seen > 0 and isinstance(value, (dict, list)):
            return "lines-after-first"
        seen += 1
        if seen >= _SNIFF_LINES:
            break
    return "whole"


_NOT_JSON = object()


def _lines(stream: BinaryIO) -> Iterator[Document]:
    number = 0
    offset = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        offset += len(line)
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            skipped = _skip_to_end_of_line(stream)
            offset += skipped
            yield Document(f"line {number}", _TooLong(len(line) + skipped), offset)
            continue
        if not line.strip():
            continue
        try:
            yield Document(f"line {number}", orjson.loads(line), offset)
        except orjson.JSONDecodeError:
            yield Document(f"line {number}", line.rstrip(b"\r\n"), offset)


@dataclass(frozen=True, slots=True)
class _TooLong:
    size: int


def _skip_to_end_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def records_of(
    vendor: str, document: Document, *, where: str, source: str, received_at: datetime, tz: tzinfo | None = None,
    own_time: bool = False,
) -> Iterator[RawRecord | Rejection]:
    """The keyed raw records of one document, and a rejection per unusable item.

    Pure (no I/O). A document is cut into one piece per job (``split``); a piece that
    is a group of items and fails as a whole is retried item by item, so one bad item
    never takes the good ones with it. With ``own_time`` (a backfill of history, no
    receive time given) each piece counts as received at the latest vendor time it
    carries, never later than ``received_at``: the worker's event time then follows the
    history instead of standing still at the moment of the backfill (issue 25.3).
    """
    label = f"{where} {document.position}"
    if isinstance(document.doc, _TooLong):
        yield Rejection(label, f"a line of {document.doc.size} bytes is over the {MAX_LINE_BYTES} read at once")
        return
    ctx = vendors.Context(source=source, received_at=received_at, tz=tz or UTC)
    try:
        pieces = vendors.get(vendor).split(document.doc)
    except vendors.Rejected as exc:
        yield Rejection(label, exc.reason)
        return
    except Exception as exc:  # noqa: BLE001 - the vendor guard, as vendors.normalize
        yield Rejection(label, f"unexpected {type(exc).__name__}: {str(exc)[:200]}")
        return
    if not pieces:
        try:
            vendors.normalize(vendor, document.doc, ctx)
        except vendors.Rejected as exc:
            yield Rejection(label, exc.reason)
        return
    items = _item_numbers(document.doc)
    several = len(pieces) > 1 or isinstance(document.doc, list)
    topic = catalog.raw_topic(vendor)
    for number, piece in enumerate(pieces, 1):
        piece_label = f"{label} item {items.get(id(piece), number)}" if several else label
        try:
            yield _record(vendor, topic, piece, ctx, source, received_at, own_time)
            continue
        except vendors.Rejected as exc:
            if not isinstance(piece, list) or len(piece) < 2:
                yield Rejection(piece_label, exc.reason)
                continue
        good = []
        for offset, item in enumerate(piece, 1):
            try:
                vendors.normalize(vendor, item, ctx)
                good.append(item)
            except vendors.Rejected as exc:
                yield Rejection(f"{label} item {items.get(id(item), f'{number}.{offset}')}", exc.reason)
        if good:
            try:
                yield _record(vendor, topic, good[0] if len(good) == 1 else good, ctx, source, received_at, own_time)
            except vendors.Rejected as exc:
                yield Rejection(piece_label, exc.reason)


def _item_numbers(doc: Any) -> dict[int, int]:
    """Item number (1-based) of each element of a top-level array, by identity."""
    return {id(item): number for number, item in enumerate(doc, 1)} if isinstance(doc, list) else {}


def _record(
    vendor: str, topic: str, piece: Any, ctx: vendors.Context, source: str, received_at: datetime, own_time: bool = False,
) -> RawRecord:
    if own_time:
        vendor_time = _own_time(vendor, piece, ctx)
        if vendor_time is not None and vendor_time < received_at:
            received_at = vendor_time
            ctx = msgspec.structs.replace(ctx, received_at=received_at)
    events = vendors.normalize(vendor, piece, ctx)
    keys = {event.job_key for event in events}
    if len(keys) != 1:
        raise vendors.Rejected(f"a {vendor} piece concerns {len(keys)} jobs, expected exactly one")
    key = keys.pop().encode()
    value = encode_envelope(RawEnvelope(vendor=vendor, source=source, received_at=received_at, payload=piece))
    if len(key) + len(value) > MAX_RECORD_BYTES:
        raise vendors.Rejected(
            f"its raw record is {len(key) + len(value)} bytes, over the {MAX_RECORD_BYTES} a Kafka record may hold"
        )
    return RawRecord(topic, key, value, len(events), received_at)


def _own_time(vendor: str, piece: Any, ctx: vendors.Context) -> datetime | None:
    """The latest vendor time ``piece`` carries (normalized without a receive time), or
    None when it carries none (TrueNAS updates take their time from the receive time)."""
    try:
        events = vendors.normalize(vendor, piece, msgspec.structs.replace(ctx, received_at=None))
    except vendors.Rejected:
        return None
    return max((event.occurred_at for event in events), default=None)


def heartbeat_time(clock: EnvelopeClock, latest_sent: datetime | None) -> datetime | None:
    """The time a heartbeat carries now, or None for none yet. A fixed clock's current
    time; in a backfill of history (``clock.wall``) the latest envelope time sent, the
    time the history has reached, so event time moves with the history as it did live."""
    return latest_sent if clock.wall else clock.current


def heartbeat_record(vendor: str, source: str, at: datetime) -> tuple[str, bytes, bytes]:
    """``(topic, key, value)`` of a heartbeat (docs/records.md); sent to every partition."""
    envelope = RawEnvelope(vendor=vendor, source=source, received_at=at, payload=None, heartbeat=True)
    return catalog.raw_topic(vendor), heartbeat_key(source), encode_envelope(envelope)


ProgressFn = Callable[[int, int], None]  # (bytes read so far in all files, records sent)


class _Sender:
    """Records gathered into one Kafka batch per partition and sent when full, with at
    most ``max_in_flight`` records unacknowledged. Batches (aiokafka's ``create_batch`` /
    ``send_batch``, partitioned by key exactly as ``producer.send`` does) cost about a
    third of the CPU a record of ``producer.send`` does, which bounds a backfill's speed.
    """

    def __init__(self, producer: Any, bootstrap: str, max_in_flight: int, timeout_s: float) -> None:
        from aiokafka.partitioner import DefaultPartitioner

        self._producer = producer
        self._bootstrap = bootstrap
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._pending: collections.deque[tuple[str, int, asyncio.Future[Any]]] = collections.deque()
        self._in_flight = 0

    async def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            found = await asyncio.wait_for(self._producer.partitions_for(topic), self._timeout_s)
            self._partitions[topic] = sorted(found)
        return self._partitions[topic]

    async def add(self, topic: str, key: bytes, value: bytes, where: str, partition: int | None = None) -> None:
        if partition is None:
            every = await self.partitions(topic)
            partition = self._partitioner(key, every, every)
        slot = (topic, partition)
        if slot in self._open and self._open[slot].batch.append(key=key, value=value, timestamp=None) is not None:
            self._open[slot].count += 1
            return
        if slot in self._open:  # full: send it, start the next (a first record always fits)
            await self._send(slot)
        self._open[slot] = _OpenBatch(self._producer.create_batch(), where, 1)
        self._open[slot].batch.append(key=key, value=value, timestamp=None)

    async def flush(self) -> None:
        """Send every open batch (before a pause, a heartbeat round, the end)."""
        for slot in list(self._open):
            await self._send(slot)

    async def settle(self, limit: int = 0) -> None:
        """Wait for acknowledgements until at most ``limit`` records are in flight."""
        while self._in_flight > limit:
            where, count, future = self._pending.popleft()
            self._in_flight -= count
            try:
                await future
            except Exception as exc:  # noqa: BLE001 - KafkaError or a timeout, both one line
                raise BackfillError(f"Kafka at {self._bootstrap} did not acknowledge {where}: {exc or type(exc).__name__}") from None

    def cancel(self) -> None:
        for _where, _count, future in self._pending:
            future.cancel()

    async def _send(self, slot: tuple[str, int]) -> None:
        batch = self._open.pop(slot)
        await self.settle(max(self._max_in_flight - batch.count, 0))
        future = await self._producer.send_batch(batch.batch, slot[0], partition=slot[1])
        where = batch.first if batch.count == 1 else f"{batch.count} records from {batch.first} on"
        self._pending.append((where, batch.count, future))
        self._in_flight += batch.count


@dataclass(slots=True)
class _OpenBatch:
    batch: Any  # aiokafka BatchBuilder
    first: str  # where its first record came from, for errors
    count: int


async def run(
    bootstrap: str,
    files: list[tuple[str, Path]],
    *,
    source: str,
    clock: EnvelopeClock | None = None,
    tz: Callable[[str], tzinfo] | None = None,
    rate: float | None = None,
    heartbeats: bool = True,
    heartbeat_every_s: float = DEFAULT_HEARTBEAT_EVERY_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    connect_timeout_s: float = 10.0,
    on_rejected: Callable[[Rejection], None] = lambda rejection: None,
    progress: ProgressFn = lambda read, sent: None,
) -> Report:
    """Send every document of ``files`` (``(vendor, path)`` pairs) to ``bootstrap``.

    At most ``max_in_flight`` records are unacknowledged at once; ``rate`` caps records
    per second (each is then sent at once, not gathered). Raises ``BackfillError`` when
    Kafka is unreachable or refuses a record.
    """
    from aiokafka.errors import KafkaError

    from pipeline.kafka import clients

    clock = clock or EnvelopeClock()
    report = Report(files=len(files))
    started = time.monotonic()
    producer = clients.producer(
        bootstrap, linger_ms=5, max_batch_size=BATCH_BYTES, request_timeout_ms=int(connect_timeout_s * 1000),
        client_id="jobstream-backfill",
    )
    sender = _Sender(producer, bootstrap, max_in_flight, connect_timeout_s)

    def reject(rejection: Rejection) -> None:
        report.rejected.append(rejection)
        on_rejected(rejection)

    latest_sent: datetime | None = None

    async def beat() -> None:
        at = heartbeat_time(clock, latest_sent)
        if at is None:
            return
        for vendor in sorted({vendor for vendor, _ in files}):
            topic, key, value = heartbeat_record(vendor, source, at)
            for partition in await sender.partitions(topic):
                await sender.add(topic, key, value, f"the heartbeat to {topic}[{partition}]", partition)
                report.heartbeats += 1
        await sender.flush()

    try:
        try:
            await asyncio.wait_for(producer.start(), connect_timeout_s)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            raise BackfillError(clients.unreachable(bootstrap, exc)) from None
        if heartbeats:
            await beat()
        last_beat = time.monotonic()
        done_bytes = 0
        for vendor, path in files:
            zone = tz(vendor) if tz else None
            try:
                for document in read_documents(path):
                    report.documents += 1
                    received_at = clock.next()
                    for item in records_of(vendor, document, where=str(path), source=source, received_at=received_at,
                                           tz=zone, own_time=clock.wall):
                        if isinstance(item, Rejection):
                            reject(item)
                            continue
                        if rate:
                            delay = started + report.records / rate - time.monotonic()
                            if delay > 0:
                                await asyncio.sleep(delay)
                        await sender.add(item.topic, item.key, item.value, f"{path} {document.position}")
                        if rate:
                            await sender.flush()
                        report.records += 1
                        report.expected_events += item.events
                        latest_sent = item.received_at if latest_sent is None else max(latest_sent, item.received_at)
                    progress(done_bytes + document.end, report.records)
                    if heartbeats and time.monotonic() - last_beat >= heartbeat_every_s:
                        await beat()
                        last_beat = time.monotonic()
            except FileTooLargeToRead as exc:
                reject(Rejection(str(path), str(exc)))
            except OSError as exc:
                reject(Rejection(str(path), f"cannot read it: {exc.strerror or exc}"))
            done_bytes += _size(path)
            report.bytes_read = done_bytes
        if heartbeats:
            await beat()
        await sender.flush()
        await sender.settle(0)
    except asyncio.TimeoutError:
        raise BackfillError(f"Kafka at {bootstrap} did not answer within {connect_timeout_s:g} s") from None
    except KafkaError as exc:
        raise BackfillError(f"Kafka at {bootstrap} refused the backfill: {exc}") from None
    finally:
        sender.cancel()
        await producer.stop()
    report.seconds = time.monotonic() - started
    return report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
