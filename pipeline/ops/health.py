"""Metrics and health for every long-running role, on one port: ``/metrics`` (Prometheus
text format, prometheus-client) and ``/healthz`` (JSON; 200 when healthy, 503 with the
reasons when not). ``pipeline/ops/runtime.py`` serves them beside a role's loop.

A role creates one ``RoleMetrics``, counts what it does (records in and out, dead
letters, batch latency, deliveries), reports each consumed partition's position and
high-water mark, and serves them with ``serve``. A partition with lag that has not moved
for ``stall_after_s`` makes the role unhealthy: the failure users of Faust complain
about most (an agent that stops silently) shows up here and in ``pipeline status``.

The roles' loops call one hook per batch (``observe_batch`` for the Faust worker,
``observe_fetch`` for aiokafka consumers, ``RoleMetrics.polled`` for ingestors).
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector, generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline import catalog
from pipeline.errors import ConfigError


@dataclass(slots=True)
class _Position:
    offset: int
    highwater: int
    moved_at: float


class RoleMetrics:
    """The metric families every role shares, in a registry of its own."""

    def __init__(self, role: str, *, stall_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.role = role
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._started = clock()
        self._positions: dict[tuple[str, int], _Position] = {}
        self._problems: dict[str, str] = {}
        self._success_within_s: float | None = None
        self._last_success: float | None = None
        self._next_poll_in_s = 0.0
        self._last_error: str | None = None
        self.registry = CollectorRegistry()
        self.records_in = Counter("jobstream_records_in", "Records consumed", ["role", "topic"], registry=self.registry)
        self.records_out = Counter("jobstream_records_out", "Records produced or written", ["role", "topic"], registry=self.registry)
        self.dead_letters = Counter("jobstream_dead_letters", "Records refused, by stage", ["role", "stage"], registry=self.registry)
        self.batch_seconds = Histogram(
            "jobstream_batch_seconds", "Time to make one batch durable", ["role"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.lag = Gauge("jobstream_consumer_lag", "High-water mark minus position", ["role", "topic", "partition"], registry=self.registry)
        self.freshness_seconds = Gauge(
            "jobstream_freshness_seconds", "Age of the newest record made durable, at the time it was", ["role"],
            registry=self.registry,
        )
        self.stale_runs = Gauge("jobstream_stale_runs", "Runs STALE now", ["role"], registry=self.registry)
        self.deliveries = Counter("jobstream_deliveries", "Alert deliveries, by outcome", ["role", "outcome"], registry=self.registry)
        self.polls = Counter("jobstream_polls", "Vendor polls or pushes handled, by outcome (ok, error)", ["role", "outcome"], registry=self.registry)
        self.last_success = Gauge(
            "jobstream_last_success_timestamp_seconds", "Unix time of the last poll or push Kafka acknowledged", ["role"],
            registry=self.registry,
        )
        self.rows_written = Counter("jobstream_rows_written", "Rows the sink wrote, by table", ["role", "table"], registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes ...
        PlatformCollector(registry=self.registry)
        Info("jobstream_build", "The running code's versions", registry=self.registry).info(build_info())
        self.broker_reachable = Gauge("jobstream_broker_reachable", "1 when a broker answered the last probe", ["role"], registry=self.registry)

    # -- one call per batch or poll: the hooks the roles' loops use --------------------
    def batch(self, *, seconds: float, records_in: dict[str, int] | None = None, records_out: dict[str, int] | None = None,
              dead_letters: dict[str, int] | None = None, newest_at: float | None = None) -> None:
        """One batch made durable: its duration, records per topic in and out, dead letters
        per stage, and (``newest_at``, unix seconds) the time of its newest record."""
        self.batch_seconds.labels(self.role).observe(seconds)
        for topic, n in (records_in or {}).items():
            self.records_in.labels(self.role, topic).inc(n)
        for topic, n in (records_out or {}).items():
            self.records_out.labels(self.role, topic).inc(n)
        for stage, n in (dead_letters or {}).items():
            self.dead_letters.labels(self.role, stage).inc(n)
        if newest_at is not None:
            self.freshness_seconds.labels(self.role).set(max(time.time() - newest_at, 0.0))

    def expect_success_within(self, seconds: float) -> None:
        """An ingestor: unhealthy when no poll or push was acknowledged by Kafka for
        ``seconds`` beyond the wait its last poll planned (a hung vendor, a Kafka that
        does not acknowledge: either stops every success)."""
        self._success_within_s = seconds

    def polled(self, ok: bool, *, topic: str | None = None, sent: int = 0, next_in_s: float = 0.0,
               error: str | None = None) -> None:
        """One poll (or push delivery) of an ingestor: ok means Kafka acknowledged it;
        ``next_in_s``, when the next poll is planned; ``error``, why it failed."""
        self.polls.labels(self.role, "ok" if ok else "error").inc()
        if ok:
            self.acknowledged()
            self._next_poll_in_s = next_in_s
            if topic is not None and sent:
                self.records_out.labels(self.role, topic).inc(sent)
        elif error:
            self._last_error = error

    def acknowledged(self) -> None:
        """Kafka acknowledged what an ingestor wrote (a poll's records, a heartbeat)."""
        self._last_success = self._clock()
        self.last_success.labels(self.role).set(time.time())

    def position(self, topic: str, partition: int, offset: int, highwater: int) -> None:
        """Where the role is in one partition (``offset``: the next it will read)."""
        now = self._clock()
        old = self._positions.get((topic, partition))
        moved_at = now if old is None or offset != old.offset else old.moved_at
        self._positions[(topic, partition)] = _Position(offset, highwater, moved_at)
        self.lag.labels(self.role, topic, str(partition)).set(max(highwater - offset, 0))

    def forget(self, topic: str, partition: int) -> None:
        """A partition was revoked: it is no longer this role's to move."""
        self._positions.pop((topic, partition), None)
        try:
            self.lag.remove(self.role, topic, str(partition))
        except KeyError:
            pass

    def problem(self, name: str, text: str | None) -> None:
        """Set (or with None clear) a named reason for being unhealthy."""
        if text is None:
            self._problems.pop(name, None)
        else:
            self._problems[name] = text

    def health(self) -> tuple[bool, dict[str, object]]:
        now = self._clock()
        problems = dict(self._problems)
        if self._success_within_s is not None:
            since = now - (self._last_success if self._last_success is not None else self._started)
            if since > self._success_within_s + self._next_poll_in_s:
                what = "no poll or push acknowledged by Kafka" + (" since the start" if self._last_success is None else "")
                problems["ingest"] = f"{what} for {since:.0f} s" + (f" (last error: {self._last_error})" if self._last_error else "")
        partitions = {}
        for (topic, partition), pos in sorted(self._positions.items()):
            lag = max(pos.highwater - pos.offset, 0)
            idle = now - pos.moved_at
            partitions[f"{topic}:{partition}"] = {"offset": pos.offset, "lag": lag, "last_moved_s": round(idle, 1)}
            if lag > 0 and idle >= self.stall_after_s:
                problems[f"stalled {topic}:{partition}"] = f"lag {lag} and no progress for {idle:.0f} s"
        body = {
            "role": self.role, "status": "ok" if not problems else "unhealthy",
            "uptime_s": round(now - self._started, 1), "problems": problems, "partitions": partitions,
        }
        return not problems, body


def observe_batch(
    metrics: RoleMetrics, highwater: Callable[[Any], int | None], messages: Iterable[Any],
    outputs: Iterable[tuple[str, Any, bytes | None, Any]], seconds: float,
) -> None:
    """The worker's one call per batch: ``messages`` consumed (Faust messages: ``tp``,
    ``topic``, ``partition``, ``offset``, ``timestamp`` in seconds), ``outputs`` sent as
    (topic, key, value, partition), and each partition's high-water mark for its lag."""
    records_in: dict[str, int] = {}
    last: dict[Any, int] = {}
    newest = None
    for message in messages:
        records_in[message.topic] = records_in.get(message.topic, 0) + 1
        last[message.tp] = message.offset
        if message.timestamp is not None and (newest is None or message.timestamp > newest):
            newest = message.timestamp
    records_out: dict[str, int] = {}
    dead: dict[str, int] = {}
    for topic, _key, value, _partition in outputs:
        records_out[topic] = records_out.get(topic, 0) + 1
        if topic == catalog.DEADLETTER:
            stage = str(orjson.loads(value or b"{}").get("stage", "unknown"))
            dead[stage] = dead.get(stage, 0) + 1
    metrics.batch(seconds=seconds, records_in=records_in, records_out=records_out, dead_letters=dead, newest_at=newest)
    for tp, offset in last.items():
        end = highwater(tp)
        metrics.position(tp.topic, tp.partition, offset + 1, offset + 1 if end is None else end)


def observe_fetch(
    metrics: RoleMetrics, highwater: Callable[[Any], int | None], fetched: dict[Any, list[Any]],
    rows_out: dict[str, int], seconds: float, dead_letters: int = 0,
) -> None:
    """An aiokafka consumer's one call per batch (the sink): ``fetched`` as ``getmany``
    returned it (record timestamps in ms), rows written per table, each partition's lag."""
    records_in: dict[str, int] = {}
    newest = None
    for tp, records in fetched.items():
        if not records:
            continue
        records_in[tp.topic] = records_in.get(tp.topic, 0) + len(records)
        stamp = records[-1].timestamp
        if stamp is not None and (newest is None or stamp > newest):
            newest = stamp
        end = highwater(tp)
        nxt = records[-1].offset + 1
        metrics.position(tp.topic, tp.partition, nxt, nxt if end is None else end)
    metrics.batch(seconds=seconds, records_in=records_in,
                  dead_letters={"sink": dead_letters} if dead_letters else None,
                  newest_at=None if newest is None else newest / 1000)
    for table, rows in rows_out.items():
        metrics.rows_written.labels(metrics.role, table).inc(rows)


def build_info() -> dict[str, str]:
    """What ``jobstream_build_info`` reports: Jobstream's version and its stack's."""
    from importlib import metadata

    info = {"python": platform.python_version()}
    for name, label in (("jobstream", "version"), ("faust-streaming", "faust"), ("aiokafka", "aiokafka"), ("duckdb", "duckdb")):
        try:
            info[label] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[label] = "unknown"
    return info


class MetricsPortTaken(ConfigError):
    """The metrics port cannot be bound (another process has it): the role must not start
    without its metrics and, above all, without the broker watch that runs beside them."""


def bind_metrics(role: str, host: str, port: int) -> socket.socket:
    """The metrics port, bound and listening now, at the role's start (``serve`` takes it
    later): a taken port is one line and exit 2 there, not a task that dies unseen."""
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        raise MetricsPortTaken(
            f"pipeline {role}: cannot serve metrics on {host}:{port} ({exc.strerror or exc}); another process "
            "listens there: choose another port (--metrics-port, JOBSTREAM_METRICS_PORT)"
        ) from None


async def serve(metrics: RoleMetrics, host: str, port: int, *, listening: socket.socket | None = None) -> web.AppRunner:
    """Serve ``/metrics`` and ``/healthz`` (on ``listening`` when the port was bound
    already); returns the runner (``await runner.cleanup()``)."""

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        healthy, body = metrics.health()
        return web.Response(
            body=orjson.dumps(body), status=200 if healthy else 503, content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, listening) if listening is not None else web.TCPSite(runner, host, port)
    await site.start()
    return runner
