"""The worker's state: one table entry per job, and per raw partition its event time
and the index of when each job is next due (stale timeout, eviction, forgetting).

Pure data structures; ``StreamCore`` decides what goes in them.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from pipeline.lifecycle import JobState


class Entry(msgspec.Struct, array_like=True, gc=False):
    """The table value under one job key.

    ``partition`` is the raw partition that owns the job (its changelog partition);
    ``offset`` the last raw offset applied to it, so a message re-delivered after a
    restart is skipped; ``watermark`` the partition's event time when it was written,
    so a restart rebuilds event time from times the worker trusted, not from the
    (possibly skewed) vendor times inside the runs.
    """

    partition: int
    offset: int
    job: JobState
    watermark: datetime | None = None
    source: str = ""  # whose event time ``watermark`` is (the job's source); "" before issue 32
    due: datetime | None = None
    """``lifecycle.next_due(job)`` under the rules ``due_rules`` names: a restart indexes
    the entry without decoding its job (``decode_head``)."""
    due_rules: int = 0
    """``due_rules(...)`` of the vendor and settings ``due`` was computed with; 0 (entries
    written before issue 39 kept it): unknown, the index decodes the job."""


class EntryHead(msgspec.Struct, array_like=True, gc=False):
    """An ``Entry`` with its job left encoded: what the due index needs, read without
    building the job's runs (50,000 entries of 20 runs indexed in 0.3-0.6 s instead of
    1.4-1.7 s, in process)."""

    partition: int
    offset: int
    job: msgspec.Raw
    watermark: datetime | None = None
    source: str = ""
    due: datetime | None = None
    due_rules: int = 0


DUE_RULES_VERSION = 1
"""Names the rules of ``lifecycle.next_due`` (and what it reads of a job): a change to them
must move this number, or a restart would index stored entries at dues the new rules no
longer give (``tests/stream/test_state.py`` fingerprints those functions to remind;
docs/design.md, "Lifecycle and event time": each stored entry carries its job's next due)."""


def due_rules(vendor: str, *settings: object) -> int:
    """A non-zero tag of the rules and ``settings`` (the vendor's stale timeout, retentions
    and forget time) a stored ``due`` was computed under: a restart with other settings or
    other rules decodes the job and computes its due again."""
    text = "|".join(map(repr, (DUE_RULES_VERSION, vendor, *settings))).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1 or 1  # 63 bits: a msgpack int


CLOCK_KEY_PREFIX = b"\x00clock\x1f"
"""Table keys of event-time records (never a job key): a source's event time on a raw
partition as its heartbeats moved it, so a restart does not roll it back."""


def clock_key(topic: str, partition: int, source: str) -> bytes:
    return CLOCK_KEY_PREFIX + "\x1f".join((topic, str(partition), source)).encode("utf-8", "surrogatepass")


def source_of(entry: Entry) -> str:
    """The source whose clock an entry follows (entries stored before it was kept:
    a run's source, else the job key's middle part, ``vendor:source:job``)."""
    if entry.source:
        return entry.source
    for run in entry.job.runs.values():
        if run.source:
            return run.source
    parts = entry.job.job_key.split(":", 2)
    return parts[1] if len(parts) == 3 else ""


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(Entry)
_head_decoder = msgspec.msgpack.Decoder(EntryHead)


def encode_entry(entry: Entry) -> bytes:
    return _entry_encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    return _entry_decoder.decode(data)


def decode_head(data: bytes) -> EntryHead:
    return _head_decoder.decode(data)


@dataclass(slots=True)
class PartitionClock:
    """Event time of one source on one raw topic-partition and its jobs due, by time
    (Flink's per-split watermarks: one source's fast clock or backfill moves no other
    source's runs).

    The index holds, per job key, a time no later than when the job next needs the
    stream's attention (``lifecycle.next_due``); a popped entry is re-checked against
    the job, so an early or superseded one costs a look-up, never a wrong expiry.
    """

    topic: str
    number: int
    source: str = ""
    watermark: datetime | None = None
    _heap: list[tuple[datetime, bytes]] = field(default_factory=list)
    _due: dict[bytes, datetime] = field(default_factory=dict)

    def advance(self, at: datetime) -> None:
        if self.watermark is None or at > self.watermark:
            self.watermark = at

    def schedule(self, key: bytes, due: datetime | None) -> None:
        """Make sure ``key`` is looked at by ``due`` (an earlier entry already does)."""
        if due is None:
            return
        current = self._due.get(key)
        if current is None or due < current:
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))

    def due_now(self) -> bool:
        """Whether a job may be due (the earliest entry's time was reached): the
        common answer, no, without a loop."""
        heap, watermark = self._heap, self.watermark
        return bool(heap) and watermark is not None and heap[0][0] <= watermark

    def pop_due(self) -> bytes | None:
        """The next job key whose time the watermark reached, or None."""
        heap, watermark = self._heap, self.watermark
        while heap and watermark is not None and heap[0][0] <= watermark:
            due, key = heapq.heappop(heap)
            if self._due.get(key) == due:
                del self._due[key]
                return key
        return None

    def __len__(self) -> int:
        return len(self._due)
