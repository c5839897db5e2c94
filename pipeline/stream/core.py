"""The worker's logic without Kafka: raw messages in, output records and state writes out.

The Faust agent (``pipeline.stream.app``) is a thin shell around ``StreamCore``: it feeds
batches of consumed messages in, sends what comes out, then stores the state. Keeping
the logic here means it runs in an in-memory harness in tests, and a replay of the same
messages always gives the same outputs (the consistency oracle relies on it).

State is one ``Entry`` per job key (``state.py``), in the raw partition of the first
message that carried the job; a job seen on another partition is dead-lettered, so one
run never gets two lifecycles and no worker writes another's changelog partition.
Event time is per source on each raw partition (a job belongs to one source) and moves
only by times the worker can trust: vendor times at most ``max_clock_skew`` ahead of
``received_at``, and heartbeats (stored as clock records, ``state.clock_key``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial

import msgspec

from pipeline import catalog, lifecycle, vendors
from pipeline.lifecycle import JobState
from pipeline.model import JobEvent, RawEnvelope, RawRef, decode_envelope
from pipeline.settings import Settings
from pipeline.stream.records import (
    RECORD_OVERHEAD_BYTES,
    Message,
    Output,
    dead_letter,
    event_record,
    one_line,
    run_record,
    transition_record,
)
from pipeline.stream.state import (
    Entry,
    PartitionClock,
    clock_key,
    decode_entry,
    decode_head,
    due_rules,
    encode_entry,
    source_of,
)
from pipeline.vendors import Context, Rejected


@dataclass(slots=True)
class Batch:
    """What one call to ``process`` produced, in the order it must be made durable:
    first ``outputs`` (events, transitions, dead letters, then run snapshots), then
    ``writes`` (table entries by key, each to be stored and sent to the changelog
    partition given; a value of None deletes the entry)."""

    outputs: list[Output] = field(default_factory=list)
    writes: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)


class _Overlay(dict):
    """One message's table writes over the batch's (``base``), kept apart until the
    message is kept whole. Reads fall through to ``base`` (a ChainMap did this in
    Python code per look-up: ~2 % of the worker's own time)."""

    __slots__ = ("base",)

    def __init__(self, base: dict[bytes, Entry | None]) -> None:
        super().__init__()
        self.base = base

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.base

    def __missing__(self, key: bytes) -> Entry | None:
        return self.base[key]


class StreamCore:
    """Normalize + lifecycle + expiry for the raw partitions one worker owns.

    ``lookup(key)`` returns the stored entry bytes for a job key (or None);
    ``entries()`` iterates the stored ones. After a rebalance call ``assign`` with the
    partitions now owned: the next ``process`` (or ``index_steps``) rebuilds event time
    and the due index for the partitions gained, from the stored entries.
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
        self._clocks: dict[tuple[str, int, str], PartitionClock] = {}  # (topic, partition, source)
        self._to_index: set[int] | None = None  # raw partition numbers; None: all
        self._indexed = False
        # Decoded entries this worker wrote: it is their only writer while it owns their
        # partition, so they stay valid until a rebalance (``assign``) clears them.
        self._cache: dict[bytes, tuple[Entry, int]] = {}  # entry, its encoded size
        self._cache_bytes = 0
        self._heartbeats: dict[tuple[str, str], datetime] = {}
        self._deleted: dict[bytes, int] = {}  # this batch's tombstones -> their partition
        self._left: list[tuple[lifecycle.RunState, lifecycle.Transition]] = []  # runs ``_shrunk`` made leave open
        self._vendor_of_topic = {catalog.raw_topic(v): v for v in vendors.VENDOR_NAMES}
        # The vendor's own function, guarded here as ``vendors.normalize`` guards it: two
        # Python frames fewer per raw record.
        self._normalize_of = {v: vendors.get(v).normalize for v in vendors.VENDOR_NAMES}
        self._stale_after = {v: settings.stale_after(v) for v in vendors.VENDOR_NAMES}
        self._tz = {v: settings.tz(v) for v in vendors.VENDOR_NAMES}
        self._skew = settings.max_clock_skew
        self._bound_of_ms: int | None = None  # the last record timestamp and its trusted bound
        self._bound = _EPOCH
        self._retention = settings.run_retention
        self._stale_retention = settings.stale_retention
        self._forget_after = settings.forget_after
        # ``lifecycle.next_due`` and ``evict`` with this worker's settings bound: called per
        # event, a partial saves a Python frame and the keyword arguments built each time.
        self._due_of = {
            v: partial(lifecycle.next_due, stale_after=self._stale_after[v], retention=self._retention,
                       stale_retention=self._stale_retention, forget_after=self._forget_after)
            for v in vendors.VENDOR_NAMES
        }
        # Each stored entry carries its job's next due and the tag of the rules it was
        # computed under: a restart indexes entries of the same tag without decoding them.
        self._due_rules = {
            v: due_rules(v, self._stale_after[v], self._retention, self._stale_retention, self._forget_after)
            for v in vendors.VENDOR_NAMES
        }
        self._vendor_of_rules = {tag: v for v, tag in self._due_rules.items()}
        if len(self._vendor_of_rules) < len(self._due_rules):  # two vendors' tags collide: decode all
            self._vendor_of_rules = {}
        self.index_read = self.index_decoded = 0
        """Entries the last index rebuild read, and of them decoded whole (their due was
        not stored, or under other settings or rules)."""
        self._evict = partial(
            lifecycle.evict, retention=self._retention, stale_retention=self._stale_retention,
            max_finished=settings.max_finished_runs, max_runs=settings.max_runs_per_job,
            max_evicted=settings.evicted_memory,
        )
        self.stored_offsets: dict[tuple[str, int], int] = {}
        """The highest raw offset applied per partition, as the stored entries say
        (after an index rebuild): a raw topic whose end lies below it was recreated."""

    # --- ownership and the index ------------------------------------------------------

    def assign(self, partitions: Iterable[int] | None = None) -> None:
        """The raw partitions this worker now owns (None: whatever arrives). Event time
        and index of partitions kept stay; gained ones are rebuilt from the store."""
        owned = None if partitions is None else set(partitions)
        known = {number for _topic, number, _source in self._clocks}
        if owned is None:
            self._clocks.clear()
            self._to_index = None
        else:
            for clock_id in list(self._clocks):
                if clock_id[1] not in owned:
                    del self._clocks[clock_id]
            self._to_index = owned - known
        self._cache.clear()
        self._cache_bytes = 0
        self._indexed = False

    def reset_index(self) -> None:
        self.assign(None)

    def index_steps(self, chunk: int = 2000) -> Iterator[int]:
        """Rebuild the index, yielding after every ``chunk`` entries so an event loop
        can run between them (the app awaits between steps)."""
        gained = self._to_index
        vendor_of_rules = self._vendor_of_rules
        seen = decoded = 0
        for key, data in self._entries():
            head = decode_head(data)
            partition = head.partition
            if gained is None or partition in gained:
                vendor = vendor_of_rules.get(head.due_rules) if head.source else None
                if vendor is None:  # stored without its due, or under other settings or rules
                    entry = decode_entry(data)
                    vendor, source, due = entry.job.vendor, source_of(entry), self._next_due(entry.job)
                    decoded += 1
                else:
                    source, due = head.source, head.due
                topic = catalog.raw_topic(vendor)
                clock = self._clock(topic, partition, source)
                if head.watermark is not None:
                    clock.advance(head.watermark)
                clock.schedule(key, due)
                stored = self.stored_offsets.get((topic, partition), -1)
                if head.offset > stored:
                    self.stored_offsets[(topic, partition)] = head.offset
            seen += 1
            if seen % chunk == 0:
                yield seen
        self.index_read, self.index_decoded = seen, decoded
        self._indexed = True
        self._to_index = set()

    def recreated(self, ends: dict[tuple[str, int], int]) -> list[str]:
        """Raw partitions whose end offset (``ends``, the next offset to be written) lies
        at or below an offset the table already applied: the topic was deleted and
        created again, and its new messages would be skipped as applied. One line each."""
        return [
            f"{topic} partition {partition} ends at offset {end} but the table already applied offset "
            f"{self.stored_offsets[(topic, partition)]}: the topic was recreated"
            for (topic, partition), end in sorted(ends.items())
            if self.stored_offsets.get((topic, partition), -1) >= end
        ]

    @property
    def indexed(self) -> bool:
        return self._indexed

    def last_heartbeats(self) -> dict[tuple[str, str], datetime]:
        """(vendor, source) -> the latest heartbeat time seen: a source missing here or
        long behind is silent (for status and alerts), not a reason to make runs STALE."""
        return dict(self._heartbeats)

    def watermark(self, topic: str, partition: int, source: str | None = None) -> datetime | None:
        """A source's event time on a raw partition; without ``source``, the partition's
        progress: the earliest of its sources' event times (what every source reached)."""
        if source is not None:
            clock = self._clocks.get((topic, partition, source))
            return None if clock is None else clock.watermark
        times = [clock.watermark for (t, p, _s), clock in self._clocks.items()
                 if t == topic and p == partition and clock.watermark is not None]
        return min(times) if times else None

    def _clock(self, topic: str, partition: int, source: str) -> PartitionClock:
        clock = self._clocks.get((topic, partition, source))
        if clock is None:
            clock = self._clocks[(topic, partition, source)] = PartitionClock(topic, partition, source)
        return clock

    def _next_due(self, job: JobState) -> datetime | None:
        return self._due_of[job.vendor](job)

    def _entry(self, partition: int, offset: int, job: JobState, watermark: datetime | None, source: str) -> Entry:
        """The entry to store for ``job``, with its next due for a restart's index."""
        vendor = job.vendor
        return Entry(partition, offset, job, watermark, source, self._due_of[vendor](job), self._due_rules[vendor])

    # --- the batch ------------------------------------------------------------------

    def process(self, messages: Iterable[Message]) -> Batch:
        if not self._indexed:
            for _ in self.index_steps():
                pass
        batch = Batch()
        pending: dict[bytes, Entry | None] = {}
        runs: dict[str, tuple[lifecycle.RunState, int]] = {}
        for message in messages:
            self._process_one(message, pending, runs, batch)
        # jobs.runs is compacted: only each run's latest snapshot of the batch matters.
        for run_key, (run, partition) in runs.items():
            batch.outputs.append(_output(Output, (catalog.RUNS, run_key.encode(), run_record(run), partition)))
        for key, entry in pending.items():
            self._uncache(key)
            if entry is None:
                batch.writes[key] = (self._deleted[key], None)
                continue
            data = encode_entry(entry)
            if len(data) > self.settings.max_entry_bytes:
                entry, data = self._shrunk(entry, data)
                for run, transition in self._left:
                    batch.outputs.append(Output(catalog.TRANSITIONS, key, transition_record(transition), entry.partition))
                    batch.outputs.append(Output(catalog.RUNS, run.run_key.encode(), run_record(run), entry.partition))
                self._left.clear()
            batch.writes[key] = (entry.partition, data)
            self._cache[key] = (entry, len(data))
            self._cache_bytes += len(data)
        while self._cache_bytes > self.settings.entry_cache_bytes:
            self._uncache(next(iter(self._cache)))
        self._deleted.clear()
        return batch

    def _uncache(self, key: bytes) -> None:
        cached = self._cache.pop(key, None)
        if cached is not None:
            self._cache_bytes -= cached[1]

    def _shrunk(self, entry: Entry, data: bytes) -> tuple[Entry, bytes]:
        """Evict the quietest runs until the entry fits in ``max_entry_bytes``: no
        changelog record grows with the job's history (each run that leaves is
        already complete in jobs.runs)."""
        limit = self.settings.max_entry_bytes
        while len(data) > limit and entry.job.runs:
            count = max(1, len(entry.job.runs) * (len(data) - limit) // len(data) + 1)
            job = lifecycle.evict_oldest(
                entry.job, count, entry.watermark or _EPOCH, max_evicted=self.settings.evicted_memory
            )
            self._left.extend(lifecycle.left_open(entry.job, job, entry.watermark or _EPOCH))
            entry = self._entry(entry.partition, entry.offset, job, entry.watermark, entry.source)
            data = encode_entry(entry)
        return entry, data

    def _stored(self, key: bytes, pending: dict[bytes, Entry | None]) -> Entry | None:
        """The entry under ``key`` as this batch left it, else as cached, else as stored."""
        if key in pending:
            return pending[key]
        cached = self._cache.get(key)
        entry = None if cached is None else cached[0]
        if entry is None:
            data = self._lookup(key)
            entry = decode_entry(data) if data is not None else None
        return entry

    def _process_one(
        self, message: Message, pending: dict[bytes, Entry | None],
        runs: dict[str, tuple[lifecycle.RunState, int]], batch: Batch,
    ) -> None:
        vendor = self._vendor_of_topic.get(message.topic)
        if vendor is None:
            batch.outputs.append(dead_letter(message, "decode", "UnknownTopic", f"{message.topic} is not a raw topic", None))
            return
        try:
            if message.value is None:
                raise Rejected("empty message (no value)")
            envelope = decode_envelope(message.value)
            if envelope.vendor != vendor:
                raise Rejected(f"envelope says vendor {envelope.vendor!r} on {message.topic}")
        except (msgspec.DecodeError, msgspec.ValidationError, Rejected, RecursionError, UnicodeDecodeError) as exc:
            # msgspec raises RecursionError for JSON nested deeper than it decodes, and
            # UnicodeDecodeError for invalid UTF-8 in some strings, not DecodeError.
            batch.outputs.append(dead_letter(message, "decode", type(exc).__name__, one_line(exc), vendor))
            return
        clock = self._clock(message.topic, message.partition, envelope.source)
        received = self._trusted_received_at(envelope, message)
        if envelope.heartbeat:
            source_key = (vendor, envelope.source)
            if source_key not in self._heartbeats or self._heartbeats[source_key] < received:
                self._heartbeats[source_key] = received
            before = clock.watermark
            self._advance(clock, received, message, pending, runs, batch)
            if clock.watermark != before:  # stored, so a restart does not roll it back
                pending[clock_key(message.topic, message.partition, envelope.source)] = self._entry(
                    message.partition, message.offset, JobState(job_key="", vendor=vendor), clock.watermark,
                    envelope.source,
                )
            return
        ctx = Context(
            source=envelope.source, received_at=envelope.received_at,
            raw_ref=RawRef(message.topic, message.partition, message.offset), tz=self._tz[vendor],
        )
        try:
            events = self._normalize_of[vendor](envelope.payload, ctx)
        except Rejected as exc:
            batch.outputs.append(dead_letter(message, "normalize", "Rejected", exc.reason, vendor))
            return
        except Exception as exc:  # noqa: BLE001 - one document must never stop the stream
            batch.outputs.append(dead_letter(message, "normalize", "Rejected", vendors.as_rejected(exc).reason, vendor))
            return
        if not events:
            return
        job_keys = (events[0].job_key,) if len(events) == 1 else dict.fromkeys(event.job_key for event in events)
        for job_key in job_keys:
            entry = self._stored(job_key.encode(), pending)
            if entry is not None and entry.partition != message.partition:
                batch.outputs.append(dead_letter(
                    message, "partition", "PartitionMismatch",
                    f"job {job_key[:200]} arrived on partition {message.partition} but its state lives in "
                    f"partition {entry.partition}: producers must key raw messages by job key with the "
                    "default (murmur2) partitioner", vendor,
                ))
                return
        # Event time moves before each event applies, to that event's trusted time: a
        # message of several events has the effects of the same events sent one message
        # each (R19), so stale episodes do not depend on how the ingestor packs documents.
        trusted_until = received + self._skew
        if len(events) == 1:
            if events[0].occurred_at <= trusted_until:
                self._advance(clock, events[0].occurred_at, message, pending, runs, batch)
            self._apply_staged(events[0], message, clock, pending, runs, batch, received, trusted_until)
            return
        # Several events: staged over an overlay, kept or dropped as a whole with the
        # expiries that the message's own events moved between them.
        overlay = _Overlay(pending)
        staged_runs: dict[str, tuple[lifecycle.RunState, int]] = {}
        staged_batch = Batch()
        applied: set[bytes] = set()
        for event in events:
            if event.occurred_at <= trusted_until:
                self._advance(clock, event.occurred_at, message, overlay, staged_runs, staged_batch)  # type: ignore[arg-type]
            failure = self._apply_staged(
                event, message, clock, overlay, staged_runs, staged_batch, received, trusted_until, applied,  # type: ignore[arg-type]
            )
            if failure is not None:
                for key in dict.keys(overlay):  # the index as if the message never came
                    entry = self._stored(key, pending)
                    if entry is not None:
                        clock.schedule(key, self._next_due(entry.job))
                trusted = [e.occurred_at for e in events if e.occurred_at <= trusted_until]
                if trusted:
                    self._advance(clock, max(trusted), message, pending, runs, batch)
                batch.outputs.append(failure)
                return
        pending.update(dict.items(overlay))
        batch.outputs.extend(staged_batch.outputs)
        for run_key, snapshot in staged_runs.items():
            runs.pop(run_key, None)
            runs[run_key] = snapshot

    def _apply_staged(
        self, event: JobEvent, message: Message, clock: PartitionClock, pending: dict[bytes, Entry | None],
        runs: dict[str, tuple[lifecycle.RunState, int]], batch: Batch, received: datetime,
        trusted_until: datetime, applied: set[bytes] | None = None,
    ) -> Output | None:
        """One event of ``message`` through the lifecycle, kept whole or dropped whole:
        then the dead letter that says why is returned (with ``applied``, the caller's
        to send) or sent (without). ``applied``: the keys the message's earlier events
        already moved to its offset.

        One Python frame per event: the outputs and run snapshots are built in locals and
        reach ``batch`` and ``runs`` only once the event was applied whole and fits."""
        partition = message.partition
        key = event.job_key.encode()
        try:
            entry = self._stored(key, pending)
            if entry is not None and message.offset <= entry.offset and not (
                message.offset == entry.offset and applied is not None and key in applied
            ):
                return None  # applied before a restart: its state is stored, its outputs were sent
            watermark = clock.watermark
            before = None if entry is None else entry.job
            skewed = event.occurred_at > trusted_until
            applied_event = lifecycle.trusted(event, received, trusted_until) if skewed else event
            job, transitions = lifecycle.apply_job(before, applied_event, stale_after=self._stale_after[event.vendor])
            # The event record is flagged late when its run had left the state (R14, R20);
            # asked only of a late record (the memory look-up hashes every name of the run).
            late = bool(transitions) and transitions[0].late and before is not None and (
                event.run_key not in before.runs and lifecycle.evicted_state(before, event) is not None
            )
            # The snapshot first: a run that leaves right away still ends complete in jobs.runs.
            outputs = [_output(Output, (catalog.EVENTS, key, event_record(event, late=late, skewed=skewed), partition))]
            for transition in transitions:
                outputs.append(_output(Output, (catalog.TRANSITIONS, key, transition_record(transition), partition)))
            run = lifecycle.run_of(job, event)  # R17: the run the lifecycle filed the event under
            snapshots = {} if run is None else {run.run_key: (run, partition)}
            kept = self._evict(job, watermark or _EPOCH)  # before any trusted time (watermark None) by count alone
            if len(kept.runs) < len(job.runs):
                self._left_open(outputs, snapshots, lifecycle.left_open(job, kept, applied_event.occurred_at), partition)
            job = kept
            stored = self._entry(partition, message.offset, job, watermark, clock.source)
        except Exception as exc:  # noqa: BLE001 - a lifecycle bug must not stop the partition
            # Nothing of the message is kept: a redelivery gives the same dead letter.
            failure = dead_letter(message, "lifecycle", type(exc).__name__, one_line(exc), event.vendor)
        else:
            largest = 0  # Output.size, inlined: this runs for every event
            for output in outputs:
                size = len(output.key or b"") + len(output.value or b"")
                if size > largest:
                    largest = size
            too_big = largest + RECORD_OVERHEAD_BYTES
            if too_big <= self.settings.max_record_bytes:
                pending[key] = stored
                if applied is not None:
                    applied.add(key)
                clock.schedule(key, stored.due)
                batch.outputs.extend(outputs)
                for run_key, snapshot in snapshots.items():  # jobs.runs keeps each run's latest snapshot of the batch
                    runs.pop(run_key, None)
                    runs[run_key] = snapshot
                return None
            failure = dead_letter(
                message, "size", "RecordTooLarge",
                f"an output record would take {too_big} bytes, more than the {self.settings.max_record_bytes} "
                "a produce request may carry; the message's effects were dropped", event.vendor,
            )
        if applied is not None:
            return failure
        batch.outputs.append(failure)
        return None

    def _trusted_received_at(self, envelope: RawEnvelope, message: Message) -> datetime:
        """``received_at``, but never more than ``max_clock_skew`` past the record's
        Kafka timestamp (an ingestor's clock is trusted no more than a vendor's)."""
        received = envelope.received_at
        timestamp_ms = message.timestamp_ms
        if timestamp_ms is not None:
            if timestamp_ms != self._bound_of_ms:  # records of one produce batch share it
                self._bound_of_ms = timestamp_ms
                self._bound = datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc) + self._skew
            bound = self._bound
            if received > bound:
                return bound
        return received

    def _advance(
        self, clock: PartitionClock, at: datetime, message: Message, pending: dict[bytes, Entry | None],
        runs: dict[str, tuple[lifecycle.RunState, int]], batch: Batch,
    ) -> None:
        """Move event time forward; expire, evict or forget every job it made due."""
        clock.advance(at)
        if not clock.due_now():
            return
        watermark = clock.watermark
        assert watermark is not None
        settings = self.settings
        handled: set[bytes] = set()
        again: list[tuple[bytes, datetime | None]] = []
        while (key := clock.pop_due()) is not None:
            if key in handled:  # each job at most once per move of event time: always ends
                again.append((key, self._next_due(entry.job) if (entry := self._stored(key, pending)) else None))
                continue
            handled.add(key)
            entry = self._stored(key, pending)
            if entry is None:
                continue
            old = entry.job
            due = self._due_of[old.vendor](old)
            if due is not None and due > watermark and not lifecycle.eviction_due(
                old, watermark, retention=self._retention, stale_retention=self._stale_retention,
                max_finished=settings.max_finished_runs,
            ):
                # An early index entry (the job's activity moved its time on): no run is
                # due (R18), ``evict`` would return the job as it is, nothing to forget.
                clock.schedule(key, due)
                continue
            try:
                expired, transitions = lifecycle.expire_job(old, watermark, stale_after=self._stale_after[old.vendor])
                job = self._evict(expired, watermark)
            except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the partition
                batch.outputs.append(dead_letter(
                    message, "expiry", type(exc).__name__, f"expiring {old.job_key[:200]}: {one_line(exc)}",
                    old.vendor,
                ))
                continue
            for transition in transitions:  # snapshots from before eviction: a STALE run that
                # leaves at once still ends STALE in jobs.runs
                self._emit(batch.outputs, runs, expired, [transition], clock.number, expired.runs.get(transition.run_key))
            if len(job.runs) < len(expired.runs):
                self._left_open(batch.outputs, runs, lifecycle.left_open(expired, job, watermark), clock.number)
            if job.runs and lifecycle.forgettable(job, watermark, forget_after=self._forget_after):
                # Not a tombstone: the forgotten job keeps its applied offset (a re-delivery
                # is skipped) and seen_until (a late event does not reopen a run), R20.
                pending[key] = self._entry(entry.partition, entry.offset, lifecycle.forget(job), watermark, clock.source)
                continue
            if job is old:
                clock.schedule(key, due)
            else:
                stored = pending[key] = self._entry(entry.partition, entry.offset, job, watermark, clock.source)
                clock.schedule(key, stored.due)
        for key, due in again:
            clock.schedule(key, due)

    def _left_open(
        self, outputs: list[Output], runs: dict[str, tuple[lifecycle.RunState, int]],
        left: list[tuple[lifecycle.RunState, lifecycle.Transition]], partition: int,
    ) -> None:
        """R21: the record and last snapshot of each run that left the state open."""
        for run, transition in left:
            outputs.append(Output(catalog.TRANSITIONS, run.job_key.encode(), transition_record(transition), partition))
            runs.pop(run.run_key, None)
            runs[run.run_key] = (run, partition)

    def _emit(
        self, outputs: list[Output], runs: dict[str, tuple[lifecycle.RunState, int]], job: JobState,
        transitions: list[lifecycle.Transition], partition: int, run: lifecycle.RunState | None,
    ) -> None:
        """The transitions and ``run``'s latest snapshot of the batch (R17: the run the
        lifecycle filed the event under, whatever name the event used)."""
        if transitions:
            key = job.job_key.encode()
            for transition in transitions:
                outputs.append(_output(Output, (catalog.TRANSITIONS, key, transition_record(transition), partition)))
        if run is not None:
            run_key = run.run_key
            runs.pop(run_key, None)
            runs[run_key] = (run, partition)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_output = tuple.__new__
"""Builds an ``Output`` from all four fields without the NamedTuple's Python-level
``__new__`` (a frame per record; the hot paths make one to three records per event)."""

__all__ = ["Batch", "Entry", "Message", "Output", "StreamCore", "decode_entry", "encode_entry"]
