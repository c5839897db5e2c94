"""The worker's logic without Kafka: raw messages in, output records and state writes out.

The Faust agent (``pipeline.stream.app``) is a thin shell around ``StreamCore``: it feeds
batches of consumed messages in, sends what comes out, then stores the state. Keeping
the logic here means it runs in an in-memory harness in tests, and a replay of the same
messages always gives the same outputs (the consistency oracle relies on it).

State is one ``Entry`` per raw message key (the job key): the jobs seen under that key,
the raw offsets already applied, and the partition it lives in. Keying by the raw key
keeps every changelog record in the partition of the message that caused it.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from pipeline import catalog, lifecycle, vendors
from pipeline.lifecycle import JobState
from pipeline.model import UTC, RawRef, decode_envelope, encode_event
from pipeline.settings import Settings
from pipeline.vendors import Context, Rejected


class Message(NamedTuple):
    """One consumed raw record, as the agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Output(NamedTuple):
    """One record to produce.

    ``partition`` is the partition of the raw message that caused it: records about a
    job may go to that partition number of their topic (keyed by job, so one key always
    lands in one partition) and skip the partitioner; None lets the producer choose.
    """

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


class Entry(msgspec.Struct, array_like=True, gc=False):
    """The table value under one raw key: its jobs and how far its input was applied."""

    partition: int
    offsets: dict[str, int]
    jobs: dict[str, JobState]


# A dead letter must fit in one produce request (1 MB by default) or it would stop the
# partition it was meant to unblock: beyond this the original bytes stay in the raw topic,
# found by topic/partition/offset.
DEAD_LETTER_MAX_BYTES = 256 * 1024


class DeadLetter(msgspec.Struct, kw_only=True):
    """What ``jobs.deadletter`` holds: the original bytes and why they were refused."""

    stage: str  # decode | normalize | lifecycle | expiry
    error_type: str
    reason: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    value_preview: str | None
    value_size: int | None = None  # value_b64 is None when the value exceeds DEAD_LETTER_MAX_BYTES
    vendor: str | None = None


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(Entry)
_json = msgspec.json.Encoder()


def encode_entry(entry: Entry) -> bytes:
    return _entry_encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    return _entry_decoder.decode(data)


def run_snapshot(run: lifecycle.RunState) -> bytes:
    """JSON of a run for ``jobs.runs`` (named fields, readable by analysts)."""
    snapshot = msgspec.structs.asdict(run)
    for name in lifecycle.INTERNAL_RUN_FIELDS:  # duplicate memory, liveness...: the worker's business
        del snapshot[name]
    duration = run.duration
    snapshot["duration_s"] = None if duration is None else duration.total_seconds()
    queue_time = run.queue_time
    snapshot["queue_s"] = None if queue_time is None else queue_time.total_seconds()
    return _json.encode(snapshot)


@dataclass(slots=True)
class Batch:
    """What one call to ``process`` produced, in the order it must be made durable:
    first ``outputs`` (events, transitions, run snapshots, dead letters), then ``writes``
    (table entries, each to be stored and sent to the changelog partition given)."""

    outputs: list[Output] = field(default_factory=list)
    writes: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    runs: dict[str, tuple[lifecycle.RunState, int]] = field(default_factory=dict)  # latest per run, sent last
    applied: int = 0
    skipped: int = 0
    dead: int = 0


@dataclass(slots=True)
class _Partition:
    """Event time and stale deadlines of one raw topic-partition."""

    number: int
    watermark: datetime | None = None
    deadlines: list[tuple[datetime, bytes, str]] = field(default_factory=list)

    def advance(self, at: datetime) -> None:
        if self.watermark is None or at > self.watermark:
            self.watermark = at


class StreamCore:
    """Normalize + lifecycle + stale expiry for the partitions one worker owns.

    ``lookup(key)`` returns the stored entry bytes for a raw key (or None). Call
    ``reset_index`` after a rebalance; the next ``process`` rebuilds the watermarks and
    stale deadlines from the stored entries of ``entries()``.
    """

    def __init__(
        self,
        settings: Settings,
        lookup: Callable[[bytes], bytes | None],
        entries: Callable[[], Iterable[tuple[bytes, bytes]]] = lambda: (),
    ) -> None:
        self.settings = settings
        self._lookup = lookup
        self._entries = entries
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._indexed = False
        # Decoded entries this worker wrote: it is their only writer while it owns their
        # partition, so they stay valid until a rebalance (``reset_index``) clears them.
        self._cache: dict[bytes, Entry] = {}
        self._vendor_of_topic = {catalog.raw_topic(v): v for v in vendors.VENDOR_NAMES}
        self._stale_after = {v: settings.stale_after(v) for v in vendors.VENDOR_NAMES}
        self._tz = {v: settings.tz(v) for v in vendors.VENDOR_NAMES}
        self._run_retention = settings.run_retention
        self._stale_retention = settings.stale_retention

    def reset_index(self) -> None:
        self._partitions.clear()
        self._cache.clear()
        self._indexed = False

    def _rebuild_index(self) -> None:
        """Watermarks and stale deadlines, from the state alone (after a restart or a
        rebalance): a deadline index, never a scan of the table on every event."""
        for key, data in self._entries():
            entry = decode_entry(data)
            for job in entry.jobs.values():
                part = self._partition(catalog.raw_topic(job.vendor), entry.partition)
                for run in job.runs.values():
                    part.advance(run.last_event_at)
                if job.deadline is not None:
                    heapq.heappush(part.deadlines, (job.deadline, key, job.job_key))
        self._indexed = True

    def _partition(self, topic: str, partition: int) -> _Partition:
        part = self._partitions.get((topic, partition))
        if part is None:
            part = self._partitions[(topic, partition)] = _Partition(partition)
        return part

    def process(self, messages: Iterable[Message]) -> Batch:
        if not self._indexed:
            self._rebuild_index()
        batch = Batch()
        pending: dict[bytes, Entry] = {}
        for message in messages:
            self._process_one(message, pending, batch)
        # jobs.runs is compacted: only each run's latest snapshot of the batch matters.
        for run_key, (run, partition) in batch.runs.items():
            batch.outputs.append(Output(catalog.RUNS, run_key.encode(), run_snapshot(run), partition))
        for key, entry in pending.items():
            batch.writes[key] = (entry.partition, encode_entry(entry))
        for key in pending:
            self._cache.pop(key, None)
        self._cache.update(pending)
        while len(self._cache) > self.settings.entry_cache_size:
            del self._cache[next(iter(self._cache))]
        return batch

    def _stored(self, key: bytes, pending: dict[bytes, Entry]) -> Entry | None:
        """The entry under ``key`` as this batch left it, else as cached, else as stored."""
        entry = pending.get(key) or self._cache.get(key)
        if entry is None:
            data = self._lookup(key)
            entry = decode_entry(data) if data is not None else None
        return entry

    def _entry(self, key: bytes, partition: int, pending: dict[bytes, Entry]) -> Entry:
        entry = self._stored(key, pending) or Entry(partition, {}, {})
        pending[key] = entry
        return entry

    def _process_one(self, message: Message, pending: dict[bytes, Entry], batch: Batch) -> None:
        vendor = self._vendor_of_topic.get(message.topic)
        if vendor is None:
            self._dead(batch, message, "decode", "UnknownTopic", f"{message.topic} is not a raw topic")
            return
        try:
            if message.value is None:
                raise Rejected("empty message (no value)")
            envelope = decode_envelope(message.value)
            if envelope.vendor != vendor:
                raise Rejected(f"envelope says vendor {envelope.vendor!r} on {message.topic}")
        except (msgspec.DecodeError, msgspec.ValidationError, Rejected) as exc:
            self._dead(batch, message, "decode", type(exc).__name__, _one_line(exc), vendor)
            return
        ctx = Context(
            source=envelope.source,
            received_at=envelope.received_at,
            raw_ref=RawRef(message.topic, message.partition, message.offset),
            tz=self._tz[vendor],
        )
        try:
            events = vendors.normalize(vendor, envelope.payload, ctx)
        except Rejected as exc:
            self._dead(batch, message, "normalize", "Rejected", exc.reason, vendor)
            return
        key = message.key or f"{message.topic}#{message.partition}:unkeyed".encode()
        entry = self._entry(key, message.partition, pending)
        if entry.partition != message.partition:
            self._dead(
                batch, message, "lifecycle", "PartitionMismatch",
                f"key arrived on partition {message.partition} but its state lives in partition "
                f"{entry.partition}: the producer must use the default (murmur2) partitioner",
                vendor,
            )
            return
        part = self._partition(message.topic, message.partition)
        if events:
            # Event time moves once per message, before any of its events apply: replay and
            # live see the same expiries whatever the batching (and a skipped message too).
            self._advance(part, max(event.occurred_at for event in events), message, pending, batch)
        if message.offset <= entry.offsets.get(message.topic, -1):
            # Applied before a restart: its state is stored and its outputs were sent first.
            batch.skipped += 1
            return
        entry.offsets[message.topic] = message.offset
        try:
            staged, outputs, runs = self._apply(events, entry, part, message.partition)
        except Exception as exc:  # noqa: BLE001 - a lifecycle bug must not stop the partition
            # Nothing of the message is kept but its offset: a redelivery is skipped, so the
            # dead letter and the outputs stay what they were live.
            self._dead(batch, message, "lifecycle", type(exc).__name__, _one_line(exc), vendor)
            return
        for job_key, job in staged.items():
            old_deadline = None if job_key not in entry.jobs else entry.jobs[job_key].deadline
            entry.jobs[job_key] = job
            if job.deadline is not None and job.deadline != old_deadline:
                heapq.heappush(part.deadlines, (job.deadline, key, job_key))
        batch.outputs.extend(outputs)
        for run_key, snapshot in runs.items():
            batch.runs.pop(run_key, None)
            batch.runs[run_key] = snapshot
        batch.applied += 1

    def _apply(
        self, events: list, entry: Entry, part: _Partition, partition: int
    ) -> tuple[dict[str, JobState], list[Output], dict[str, tuple[lifecycle.RunState, int]]]:
        """One message's events through the lifecycle, staged: the caller keeps all of it
        or, if anything raises, none of it."""
        staged: dict[str, JobState] = {}
        outputs: list[Output] = []
        runs: dict[str, tuple[lifecycle.RunState, int]] = {}
        for event in events:
            stale_after = self._stale_after[event.vendor]
            job = staged.get(event.job_key) or entry.jobs.get(event.job_key)
            job, transitions = lifecycle.apply_job(job, event, stale_after=stale_after)
            job = lifecycle.evict(
                job, part.watermark, retention=self._run_retention, stale_retention=self._stale_retention
            )
            staged[event.job_key] = job
            outputs.append(Output(catalog.EVENTS, event.job_key.encode(), encode_event(event), partition))
            self._emit(outputs, runs, job, event.run_key, transitions, partition)
        return staged, outputs, runs

    def _advance(
        self, part: _Partition, at: datetime, message: Message, pending: dict[bytes, Entry], batch: Batch,
    ) -> None:
        """Move event time forward and expire every job whose deadline it passed."""
        part.advance(at)
        watermark = part.watermark
        while part.deadlines and part.deadlines[0][0] <= watermark:
            deadline, key, job_key = heapq.heappop(part.deadlines)
            entry = self._stored(key, pending)
            if entry is None:
                continue
            job = entry.jobs.get(job_key)
            if job is None or job.deadline != deadline:
                continue  # superseded: the job moved on since this deadline was indexed
            try:
                job, transitions = lifecycle.expire_job(job, watermark, stale_after=self._stale_after[job.vendor])
            except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the partition
                self._dead(batch, message, "expiry", type(exc).__name__, f"expiring {job_key}: {_one_line(exc)}")
                continue
            entry.jobs[job_key] = job
            pending[key] = entry
            runs: dict[str, tuple[lifecycle.RunState, int]] = {}
            for transition in transitions:
                self._emit(batch.outputs, runs, job, transition.run_key, [transition], part.number)
            for run_key, snapshot in runs.items():
                batch.runs.pop(run_key, None)
                batch.runs[run_key] = snapshot
            if job.deadline is not None:
                heapq.heappush(part.deadlines, (job.deadline, key, job_key))

    def _emit(
        self, outputs: list[Output], runs: dict[str, tuple[lifecycle.RunState, int]], job: JobState,
        run_key: str, transitions: list[lifecycle.Transition], partition: int,
    ) -> None:
        key = job.job_key.encode()
        for transition in transitions:
            outputs.append(Output(catalog.TRANSITIONS, key, lifecycle.encode_transition(transition), partition))
        run = job.runs.get(run_key)
        if run is not None:
            runs.pop(run_key, None)
            runs[run_key] = (run, partition)

    def _dead(
        self, batch: Batch, message: Message, stage: str, error_type: str, reason: str,
        vendor: str | None = None,
    ) -> None:
        value = message.value
        record = DeadLetter(
            stage=stage, error_type=error_type, reason=reason, topic=message.topic,
            partition=message.partition, offset=message.offset,
            key_b64=_b64(message.key[:DEAD_LETTER_MAX_BYTES] if message.key else message.key),
            value_b64=_b64(value) if value is None or len(value) <= DEAD_LETTER_MAX_BYTES else None,
            value_size=None if value is None else len(value),
            value_preview=_preview(value), vendor=vendor,
        )
        batch.outputs.append(Output(catalog.DEADLETTER, message.key, _json.encode(record)))
        batch.dead += 1


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _preview(data: bytes | None, limit: int = 200) -> str | None:
    if data is None:
        return None
    return data[:limit].decode("utf-8", "replace")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def decode_dead_letter(data: bytes) -> dict[str, Any]:
    return msgspec.json.decode(data)


__all__ = ["Batch", "DeadLetter", "Entry", "Message", "Output", "StreamCore", "UTC"]
