"""Metrics and health for every long-running role, on one port: ``/metrics`` (Prometheus
text format, prometheus-client) and ``/healthz`` (JSON; 200 when healthy, 503 with the
reasons when not).

A role creates one ``RoleMetrics``, counts what it does (records in and out, dead
letters, batch latency, deliveries), reports each consumed partition's position and
high-water mark, and serves them with ``serve``. A partition with lag that has not moved
for ``stall_after_s`` makes the role unhealthy: the failure users of Faust complain
about most (an agent that stops silently) shows up here and in ``pipeline status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


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


async def serve(metrics: RoleMetrics, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` and ``/healthz``; returns the runner (``await runner.cleanup()``)."""

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
    await web.TCPSite(runner, host, port).start()
    return runner
