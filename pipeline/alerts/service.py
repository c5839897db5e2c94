"""``pipeline alert``: the alerter process (its own consumer group).

It reads ``jobs.transitions`` and ``jobs.deadletter`` in its consumer group, and
``jobs.runs`` as a table (every partition from the beginning, no group, like a Kafka
Streams GlobalKTable) for each run's context: source, error, duration, and each job's
usual duration. The rules (``logic``) decide, ``limits`` rate-limits and digests,
``delivery`` sends through Apprise, and every alert becomes records on ``jobs.alerts``.

Several alerters in one group split the jobs between them (transitions are keyed by
job, so each job's memory lives in one process); each reads the whole runs table.

Commit protocol, one batch of transitions and dead letters at a time:
  1. read a batch (plus up to ``alert_digest_window_s`` more when something fired, so
     a rule firing for many jobs at once becomes one digest);
  2. wait up to ``alert_context_wait_s`` for the runs those transitions belong to to
     show up in the runs table (the worker writes both topics; either may come first);
  3. evaluate the rules, in offset order; add the slow-run wake-ups that are due;
  4. write a ``fired`` record per alert to ``jobs.alerts`` and wait until Kafka has it;
  5. deliver (bounded retries per channel), or suppress by rate limit;
  6. write the outcome record per alert (``delivered`` | ``suppressed`` | ``failed``
     with the reason) and any dead letters, and wait until Kafka has them all;
  7. commit the batch's offsets.

Killed after step k, the restart reads the batch again from the last commit:
  - before 4: nothing was said; the batch is evaluated as if for the first time;
  - after 4 or 5: the same alerts fire again with the same ``alert_id`` (deterministic:
    rule + transition id); a receiver that got the first delivery sees the id again and
    can drop it; ``jobs.alerts`` holds one more ``fired`` record and then the outcome,
    and readers keep the latest status per ``alert_id``;
  - after 6: same as after 5, with one more outcome record of the same id;
  - after 7: nothing is repeated.
Nothing acknowledged is lost: an offset is committed only after the outcome record of
every alert of its batch is in Kafka. A commit refused after a rebalance ends the process
(one line, non-zero exit); its supervisor restarts it and the batch repeats as above.

What survives a restart, and how (the alerter has no state topic of its own):
  - run context, each job's usual duration (median of its last 20 successful runs) and
    the slow-run wake-ups of runs still going: rebuilt from ``jobs.runs``, which is
    compacted (one current snapshot per run) and already holds exactly these facts; it
    is read to its end before the first transition is evaluated. A second, private
    state topic would only duplicate it.
  - when a STALE run went stale (for "reactivated after N minutes"): remembered from
    the STALE transition; after a restart, estimated from the run's snapshot as its last
    activity + ``stale_after`` (the worker's own setting).
  - per-job retry windows, dead-letter minute counts and rate limits: in memory only
    (minutes to an hour long). After a restart a storm already under way is counted
    from the restart on, and each rule/job/channel may deliver once more (as Butler).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError

from pipeline import catalog
from pipeline.alerts import delivery, limits, logic, message
from pipeline.alerts.records import (
    RecordError, alert_id, dead_letter, decode_dead_letter, decode_run, decode_transition, encode,
)
from pipeline.alerts.rules import Rule, RuleSet
from pipeline.contract import SCHEMA_VERSION, Alert, RunView, TransitionView
from pipeline.kafka import clients
from pipeline.model import UTC
from pipeline.ops.health import RoleMetrics, observe_fetch
from pipeline.ops.runtime import beside
from pipeline.ops.stopping import stop_on_signals
from pipeline.settings import Settings
from pipeline.errors import JobstreamError

log = logging.getLogger("pipeline.alerts")

RUNS_KEPT = 50_000  # run snapshots in the runs table (least recently changed leave first; ~1 KB each)
JOBS_KEPT = 100_000  # per-job memories
SLOW_FIRED_KEPT = 10_000  # slow alerts already sent by this process (a wake-up and the finish)


class AlerterError(JobstreamError, RuntimeError):
    """The alerter cannot start or go on (Kafka unreachable, a bad URL); one line."""


class RunTable:
    """``jobs.runs`` as a table: the highest version per run, bounded by count."""

    def __init__(self, connection: Settings | str, on_update: Callable[[RunView], None]) -> None:
        self._consumer = clients.consumer(connection, auto_offset_reset="earliest", client_id="jobstream-alerts-runs")
        self._on_update = on_update
        self._runs: OrderedDict[str, RunView] = OrderedDict()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def get(self, run_key: str) -> RunView | None:
        return self._runs.get(run_key)

    def __len__(self) -> int:
        return len(self._runs)

    async def start(self, timeout: float) -> None:
        """Read every partition to its end, then keep reading in the background."""
        await self._consumer.start()
        await self._consumer.topics()  # loads every topic's metadata
        partitions = self._consumer.partitions_for_topic(catalog.RUNS) or set()
        tps = [TopicPartition(catalog.RUNS, p) for p in sorted(partitions)]
        if not tps:
            raise AlerterError(f"topic {catalog.RUNS} has no partitions")
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._apply(await self._consumer.getmany(timeout_ms=200, max_records=5000))
            positions = {tp: await self._consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
        self._task = asyncio.create_task(self._follow(), name="alerts-runs-table")

    async def _follow(self) -> None:
        while True:
            self._apply(await self._consumer.getmany(timeout_ms=500, max_records=5000))

    def _apply(self, batch) -> None:
        changed = False
        for records in batch.values():
            for record in records:
                try:
                    run = decode_run(record.value)
                except RecordError as exc:
                    log.warning("jobs.runs %d:%d skipped: %s", record.partition, record.offset, exc)
                    continue
                known = self._runs.get(run.run_key)
                if known is not None and known.version > run.version:  # an older one, arriving late
                    continue
                self._runs[run.run_key] = run
                self._runs.move_to_end(run.run_key)
                if len(self._runs) > RUNS_KEPT:
                    self._runs.popitem(last=False)
                self._on_update(run)
                changed = True
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Wait (until the monotonic ``deadline``) for ``ready()`` after new snapshots."""
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return ready()
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


def _context_ready(run: RunView | None, t: TransitionView) -> bool:
    """The snapshot tells at least as much as the transition."""
    if run is None:
        return False
    if run.state == t.to_state and run.attempt >= t.attempt:
        return True
    return run.current_at is not None and run.current_at > t.at


@dataclass(slots=True)
class _Outcome:
    delivered: list[str]
    notes: list[str]
    failed: bool = False


def alert_record(
    firing: logic.Firing, rule: Rule, status: str, reason: str | None, delivered_at: datetime | None,
) -> Alert:
    """The ``jobs.alerts`` record of one status of ``firing`` (pure)."""
    return Alert(
        alert_id=firing.alert_id, rule=firing.rule, status=status, reason=reason, vendor=firing.vendor,
        source=firing.source, job_key=firing.job_key, run_key=firing.run_key, attempt=firing.attempt,
        transition_id=firing.transition_id, state=firing.state, at=firing.at, delivered_at=delivered_at,
        channels=[delivery.scheme_of(url) for url in rule.urls],
        message=message.title(firing) + "\n" + message.body(firing),
        schema_version=SCHEMA_VERSION,
    )


class Alerter:
    """The process: Kafka in, rules, Apprise out, ``jobs.alerts`` records."""

    def __init__(
        self, settings: Settings, rules: RuleSet, *, clock: Callable[[], float] = time.time,
        metrics: RoleMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.rules = rules
        self.clock = clock
        self.channels: dict[str, delivery.Channel] = {}
        for rule in rules.rules:
            for url in rule.urls:
                if url not in self.channels:
                    try:
                        self.channels[url] = delivery.open_channel(url, f"rule {rule.name}")
                    except delivery.DeliveryError as exc:
                        raise AlerterError(str(exc)) from None
        self.memory: OrderedDict[str, logic.JobMemory] = OrderedDict()
        self.dead_letter_counts = logic.DeadLetterCounts()
        self.limiter = limits.RateLimiter()
        self.wakes: list[logic.Wake] = []
        self._wake_keys: set[tuple[str, str, int]] = set()
        self._slow_fired: OrderedDict[str, None] = OrderedDict()
        self.runs = RunTable(settings, self._on_run)
        self.counts = {"fired": 0, "delivered": 0, "suppressed": 0, "failed": 0}

    # -- state ------------------------------------------------------------------
    def _job(self, job_key: str) -> logic.JobMemory:
        return self.memory.get(job_key) or logic.JobMemory()

    def _remember(self, job_key: str, memory: logic.JobMemory) -> None:
        self.memory[job_key] = memory
        self.memory.move_to_end(job_key)
        if len(self.memory) > JOBS_KEPT:
            self.memory.popitem(last=False)

    def _on_run(self, run: RunView) -> None:
        memory = logic.remember_run(self._job(run.job_key), run, stale_after=self.settings.stale_after(run.vendor))
        self._remember(run.job_key, memory)
        for rule in self.rules.rules:
            self._schedule(logic.wake_for_run(rule, memory, run))

    def _schedule(self, wake: logic.Wake | None) -> None:
        if wake is None or (wake.rule, wake.run_key, wake.attempt) in self._wake_keys:
            return
        self._wake_keys.add((wake.rule, wake.run_key, wake.attempt))
        heapq.heappush(self.wakes, wake)

    def due_wakes(self, now: datetime) -> list[logic.Firing]:
        firings = []
        while self.wakes and self.wakes[0].when <= now:
            wake = heapq.heappop(self.wakes)
            self._wake_keys.discard((wake.rule, wake.run_key, wake.attempt))
            run = self.runs.get(wake.run_key)
            if run is None:
                continue
            firing = logic.on_wake(self.rules.by_name(wake.rule), self._job(run.job_key), wake, run)
            if firing is not None:
                firings.append(firing)
        return firings

    # -- one batch ----------------------------------------------------------------
    async def evaluate(self, records: list, dead_letters: list) -> list[logic.Firing]:
        """Steps 2 and 3 for the records of one batch, in offset order per partition."""
        transitions = []
        for record in records:
            if record.topic == catalog.TRANSITIONS:
                try:
                    transitions.append((record, decode_transition(record.value)))
                except RecordError as exc:
                    dead_letters.append(self._dead_letter(record, exc))
        wanted = [
            t for _record, t in transitions
            if not t.flagged and any(
                rule.kind != "dead_letters" and rule.matches(t.vendor, t.job_key, t.to_state) for rule in self.rules.rules
            )
        ]
        if wanted:
            deadline = time.monotonic() + self.settings.alert_context_wait_s
            await self.runs.wait_until(lambda: all(_context_ready(self.runs.get(t.run_key), t) for t in wanted), deadline)
        firings: list[logic.Firing] = []
        decoded = {id(record): t for record, t in transitions}
        for record in records:
            if record.topic == catalog.TRANSITIONS:
                t = decoded.get(id(record))
                if t is None:
                    continue
                memory, fired, wakes = logic.on_transition(self.rules.rules, self._job(t.job_key), t, self.runs.get(t.run_key))
                self._remember(t.job_key, memory)
                firings.extend(fired)
                for wake in wakes:
                    self._schedule(wake)
            elif record.topic == catalog.DEADLETTER:
                try:
                    letter = decode_dead_letter(record.value)
                except RecordError as exc:
                    dead_letters.append(self._dead_letter(record, exc))
                    continue
                if letter.at is None:  # a letter of a record without a timestamp: counted when it was written
                    letter = msgspec.structs.replace(letter, at=datetime.fromtimestamp(record.timestamp / 1000, UTC))
                self.dead_letter_counts, fired = logic.on_dead_letter(self.rules.rules, self.dead_letter_counts, letter)
                firings.extend(fired)
        firings.extend(self.due_wakes(datetime.now(UTC)))
        return self._first_slow_only(firings)

    def _first_slow_only(self, firings: list[logic.Firing]) -> list[logic.Firing]:
        kept = []
        for firing in firings:
            if firing.kind == "slow":
                if firing.alert_id in self._slow_fired:
                    continue
                self._slow_fired[firing.alert_id] = None
                if len(self._slow_fired) > SLOW_FIRED_KEPT:
                    self._slow_fired.popitem(last=False)
            kept.append(firing)
        return kept

    def _dead_letter(self, record, exc: RecordError) -> tuple[bytes, bytes]:
        letter = dead_letter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC), key=record.key, value=record.value,
            error_type=type(exc).__name__, reason=str(exc),
        )
        log.warning("dead letter %s: %s", letter.dead_letter_id, letter.reason)
        return letter.dead_letter_id.encode(), encode(letter)

    async def dispatch(self, producer: AIOKafkaProducer, firings: list[logic.Firing]) -> None:
        """Steps 4 to 6."""
        unique = list({f.alert_id: f for f in firings}.values())
        for firing in unique:
            await producer.send(catalog.ALERTS, encode(self._record(firing, "fired", None, None)), key=firing.alert_id.encode())
            self.counts["fired"] += 1
        if unique:
            await producer.flush()  # "fired" is in Kafka before anyone is told
        oldest = datetime.now(UTC) - timedelta(seconds=self.settings.alert_max_age_s)
        old_news = {f.alert_id for f in unique if f.at < oldest}
        plan = limits.plan(self.rules, [f for f in unique if f.alert_id not in old_news], self.limiter, self.clock(), delivery.scheme_of)
        outcomes = {f.alert_id: _Outcome([], list(plan.suppressed.get(f.alert_id, []))) for f in unique}
        for alert in old_news:
            outcomes[alert].notes.append(
                f"too old to send: happened more than {self.settings.alert_max_age_s:g} s ago (JOBSTREAM_ALERT_MAX_AGE_S)"
            )
        for send in plan.sends:
            channel = self.channels[send.channel]
            if send.digest:
                send_id = alert_id("digest", *sorted(f.alert_id for f in send.firings))
                title, body = message.digest_title(send.rule, list(send.firings)), message.digest_body(send.rule, list(send.firings))
            else:
                send_id = send.firings[0].alert_id
                title, body = message.title(send.firings[0]), message.body(send.firings[0])
            reason = await delivery.send(
                channel, title, body, send_id,
                attempts=self.settings.alert_delivery_attempts, retry_base_s=self.settings.alert_retry_base_s,
            )
            for firing in send.firings:
                outcome = outcomes[firing.alert_id]
                if reason is None:
                    outcome.delivered.append(channel.scheme)
                    if send.digest:
                        outcome.notes.append(f"{channel.scheme}: in digest {send_id} of {len(send.firings)} alerts")
                else:
                    outcome.failed = True
                    outcome.notes.append(reason)
        delivered_at = datetime.now(UTC)
        for firing in unique:
            outcome = outcomes[firing.alert_id]
            status = "delivered" if outcome.delivered else "failed" if outcome.failed else "suppressed"
            self.counts[status] += 1
            if self.metrics is not None:
                self.metrics.deliveries.labels(self.metrics.role, status).inc()
            reason = "; ".join(outcome.notes) or None
            record = self._record(firing, status, reason, delivered_at if outcome.delivered else None)
            await producer.send(catalog.ALERTS, encode(record), key=firing.alert_id.encode())
            log.info("alert %s rule %s %s: %s%s", firing.alert_id, firing.rule, firing.job_key or "-", status,
                     f" ({reason})" if reason else "")

    def _record(self, firing: logic.Firing, status: str, reason: str | None, delivered_at: datetime | None) -> Alert:
        return alert_record(firing, self.rules.by_name(firing.rule), status, reason, delivered_at)

    # -- the loop -----------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event | None = None, start_timeout: float = 30.0) -> None:
        settings = self.settings
        producer = clients.producer(settings, client_id="jobstream-alerts", request_timeout_ms=30_000)
        consumer = clients.consumer(
            settings, group_id=settings.alert_group, auto_offset_reset="earliest", client_id="jobstream-alerts",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(settings.session_timeout_s * 1000) // 3),
            max_poll_interval_ms=600_000,
        )
        try:
            await self._start(producer, consumer, start_timeout)
        except BaseException:
            await _stop_all(producer, consumer, self.runs)
            raise
        consumer.subscribe([catalog.TRANSITIONS, catalog.DEADLETTER], listener=_ReadyLog(self))
        try:
            async with beside(self.metrics, settings):
                while stop is None or not stop.is_set():
                    await self._one_batch(consumer, producer)
        finally:
            await _stop_all(producer, consumer, self.runs)

    async def _start(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, timeout: float) -> None:
        """Connect, check the topics are there, read the runs table to its end."""
        bootstrap = self.settings.bootstrap
        try:
            await asyncio.wait_for(producer.start(), timeout)
            await asyncio.wait_for(consumer.start(), timeout)
            missing = {catalog.TRANSITIONS, catalog.RUNS, catalog.DEADLETTER, catalog.ALERTS} - await consumer.topics()
        except (TimeoutError, OSError, KafkaConnectionError) as exc:
            raise AlerterError(clients.unreachable(self.settings, exc)) from None
        if missing:
            raise AlerterError(
                f"topics {', '.join(sorted(missing))} are not on {bootstrap}: "
                f"run 'pipeline topics apply --bootstrap {bootstrap}' first"
            )
        await asyncio.wait_for(self.runs.start(timeout), timeout * 2)

    async def _one_batch(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        batch = await consumer.getmany(timeout_ms=500, max_records=500)
        started = time.monotonic()
        records = [record for tp in sorted(batch, key=lambda tp: (tp.topic, tp.partition)) for record in batch[tp]]
        dead_letters: list[tuple[bytes, bytes]] = []
        firings = await self.evaluate(records, dead_letters)
        if firings and self.settings.alert_digest_window_s > 0:
            window_end = time.monotonic() + self.settings.alert_digest_window_s
            while (remaining := window_end - time.monotonic()) > 0:
                more = await consumer.getmany(timeout_ms=int(remaining * 1000) + 1, max_records=500)
                more_records = [r for tp in sorted(more, key=lambda tp: (tp.topic, tp.partition)) for r in more[tp]]
                for tp, items in more.items():
                    batch.setdefault(tp, []).extend(items)
                firings.extend(await self.evaluate(more_records, dead_letters))
        await self.dispatch(producer, firings)
        for key, letter in dead_letters:
            await producer.send(catalog.DEADLETTER, letter, key=key)
        await producer.flush()
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        if offsets:
            await consumer.commit(offsets)
        if self.metrics is not None and offsets:
            sent = {catalog.ALERTS: 2 * len({f.alert_id for f in firings}), catalog.DEADLETTER: len(dead_letters)}
            observe_fetch(self.metrics, consumer.highwater, batch, sent, time.monotonic() - started, len(dead_letters))


class _ReadyLog(ConsumerRebalanceListener):
    def __init__(self, alerter: Alerter) -> None:
        self.alerter = alerter

    async def on_partitions_revoked(self, revoked) -> None:
        return None

    async def on_partitions_assigned(self, assigned) -> None:
        log.info(
            "alerter ready: %d partitions assigned, %d rules, %d runs known",
            len(assigned), len(self.alerter.rules.rules), len(self.alerter.runs),
        )


async def _stop_all(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, runs: RunTable) -> None:
    for closing in (consumer.stop(), runs.stop(), producer.stop()):
        try:
            await asyncio.wait_for(closing, 10)
        except Exception:  # noqa: BLE001 - closing what may never have opened
            pass


def run(settings: Settings, rules: RuleSet) -> None:
    """Run the alerter until SIGTERM or Ctrl-C, which end the loop between batches: a
    clean stop, one ``stopped`` line and exit status 0, like the other roles."""
    async def main() -> None:
        stop = stop_on_signals(asyncio.Event())
        alerter = Alerter(settings, rules, metrics=RoleMetrics("alerter", stall_after_s=settings.stall_after_s))
        await alerter.run(stop=stop)
        log.info("stopped: %s", ", ".join(f"{n} {what}" for what, n in alerter.counts.items()))

    asyncio.run(main())
