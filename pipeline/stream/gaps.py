"""Telling a hole in a raw partition's offsets from records Faust skipped.

On Apache Kafka offsets skip for good reasons: a transaction's commit/abort marker takes
an offset that no consumer is handed, read_committed skips aborted records, compaction
and retention delete records. Faust, on the other hand, can hand over a record prefetched
before a rebalance ahead of those before it and then commit past them (faust#221, #312).
Both look the same to the agent: a record beyond the next expected offset. ``Continuity``
(pure) finds such a skip; ``GapProbe`` reads the suspected range with a plain consumer of
its own: nothing there is a hole (go on), records there were skipped (heal: seek back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.kafka import clients


@dataclass(frozen=True, slots=True)
class Skip:
    """A record at ``offset`` of ``tp`` when ``expected`` was next (None: nothing
    committed that Faust tells apart from 0; the shell asks the broker for the group's
    offset, and only when it has none either does the range start at the log start).
    ``leftover``: the partition was sought back to ``expected`` and this is a record
    prefetched before that, already known to come early."""

    tp: Any
    expected: int | None
    offset: int
    leftover: bool = False

    def __str__(self) -> str:
        expected = "the log start" if self.expected is None else str(self.expected)
        return f"{self.tp.topic} partition {self.tp.partition}: record {self.offset} came when {expected} was next"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the range before a skipped-to record holds: ``first_record`` is the
    offset of the first record found there (None: a hole), ``log_start`` the
    partition's first offset still kept."""

    first_record: int | None
    log_start: int

    def deleted(self, skip: Skip) -> range:
        """Offsets retention deleted before they were applied (empty for most skips)."""
        if skip.expected is None:
            return range(0)
        return range(skip.expected, min(self.log_start, skip.offset))


class Continuity:
    """The next offset expected per raw partition: the one after the last record seen,
    else (after a start or an assignment) the committed offset. Pure: no I/O."""

    def __init__(self, committed: Callable[[Any], int | None]) -> None:
        self._committed = committed
        self._next: dict[Any, int] = {}
        self._healing: dict[Any, int] = {}  # tp -> the offset it was sought back to
        self.holes = 0

    def reset(self) -> None:
        self._next.clear()
        self._healing.clear()

    def first_skip(self, records: Sequence[tuple[Any, int]]) -> tuple[int, Skip] | None:
        """The index and description of the first record beyond its partition's next
        expected offset; the records before it are taken as seen."""
        for index, (tp, offset) in enumerate(records):
            expected = self._next.get(tp)
            if expected is None:
                expected = self._committed(tp)
                if expected is None and offset > 0:
                    return index, Skip(tp, None, offset)
            if expected is not None and offset > expected:
                return index, Skip(tp, expected, offset, leftover=tp in self._healing)
            if self._healing.get(tp) == offset:
                del self._healing[tp]
            self._next[tp] = max(offset + 1, self._next.get(tp, 0))
        return None

    def accept(self, skip: Skip) -> None:
        """The range before ``skip.offset`` holds nothing to read: go on from there."""
        if skip.expected is not None:
            self.holes += 1
        self._next[skip.tp] = skip.offset

    def resume_at(self, tp: Any, offset: int) -> None:
        """The group's committed offset, asked of the broker because Faust's consumer
        did not know it yet: the partition goes on from there."""
        self._next[tp] = offset

    def rewind(self, skip: Skip, to: int) -> None:
        """The partition was sought back to ``to``: records beyond it until it comes
        again are leftovers of the prefetch."""
        self._next[skip.tp] = to
        self._healing[skip.tp] = to


class GapProbe:
    """Reads a suspected range with a plain aiokafka consumer (no group, no commits),
    with the worker's isolation level: what it is handed is what Faust should have
    handed over. One consumer, started at the first probe and reused."""

    def __init__(self, connection: "clients.ConnectionLike", *, isolation_level: str = "read_uncommitted",
                 timeout_s: float = 30.0, client_options: dict[str, Any] | None = None, group: str | None = None) -> None:
        self._connection = connection
        self._group = group
        self._offsets: Any = None
        self._isolation_level = isolation_level
        self._timeout_s = timeout_s
        self._options = client_options or {}
        self._consumer: Any = None

    async def look(self, skip: Skip) -> Verdict:
        from aiokafka import TopicPartition

        from pipeline.kafka import clients

        if self._consumer is None:
            self._consumer = clients.consumer(
                self._connection, isolation_level=self._isolation_level, auto_offset_reset="earliest",
                client_id="jobstream-gap-probe", **self._options,
            )
            await self._consumer.start()
        consumer = self._consumer
        tp = TopicPartition(skip.tp.topic, skip.tp.partition)
        consumer.assign([tp])
        log_start = (await consumer.beginning_offsets([tp]))[tp]
        start = max(skip.expected or 0, log_start)
        if start >= skip.offset:
            return Verdict(None, log_start)
        consumer.seek(tp, start)
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            for record in fetched.get(tp, []):
                return Verdict(record.offset if record.offset < skip.offset else None, log_start)
            if await consumer.position(tp) >= skip.offset:
                return Verdict(None, log_start)
        raise TimeoutError(f"could not read {skip.tp.topic} partition {skip.tp.partition} "
                           f"from offset {start} within {self._timeout_s:g} s to check a skip")

    async def committed(self, tp: Any) -> int | None:
        """The worker group's committed offset of ``tp`` as the broker holds it (OffsetFetch
        through a consumer that only assigns and never commits), None when nothing was
        committed. Asked when Faust's consumer answers None: in a rebalance its cache can
        lag the group, and taking the log start then would seek back over applied records."""
        if self._group is None:
            return None
        from aiokafka import TopicPartition

        from pipeline.kafka import clients

        if self._offsets is None:
            self._offsets = clients.consumer(self._connection, group_id=self._group, enable_auto_commit=False,
                                             client_id="jobstream-gap-probe-offsets", **self._options)
            await self._offsets.start()
        tp = TopicPartition(tp.topic, tp.partition)
        self._offsets.assign([tp])
        return await asyncio.wait_for(self._offsets.committed(tp), self._timeout_s)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
