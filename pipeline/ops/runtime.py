"""One runtime for every long-running role (worker, sink, alerter, ingestors): what runs
beside its loop (``operate``: /metrics and /healthz when ``metrics_port`` is set, and the
broker watch, which makes a consumer role whose brokers are all gone exit 69 instead of
reconnecting forever), SIGINT/SIGTERM to a stop event and a sleep that a stop ends
(``pipeline/ops/stopping.py``) and the role's logging (``pipeline/ops/logs.py``).
Nothing here imports the supervisor (``pipeline/run/``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from pipeline.kafka.probes import any_broker_answers_async
from pipeline.ops import ports
from pipeline.ops.health import RoleMetrics, serve
from pipeline.sources import SOURCE_METRICS

if TYPE_CHECKING:
    from pipeline.settings import Settings

T = TypeVar("T")
EXIT_BROKER_LOST = 69  # EX_UNAVAILABLE: a supervisor restarts the role


async def watch_broker(
    bootstrap: str, metrics: RoleMetrics, *, lost_after_s: float, every_s: float = 2.0,
    on_lost: Callable[[str], None] | None = None,
    probe: Callable[[str], Awaitable[bool]] | None = None,
) -> None:
    """Probe the brokers every ``every_s`` (an ApiVersions request on a connection of its
    own: Kafka clients hide a dead broker behind endless reconnects). Unreachable: /healthz
    says so at once; for ``lost_after_s`` (0: never) ``on_lost`` is called with one line
    (default: print it and exit 69). Runs until cancelled."""
    probe = probe or any_broker_answers_async
    on_lost = on_lost or _exit_broker_lost
    lost_since: float | None = None
    while True:
        reachable = await probe(bootstrap)
        metrics.broker_reachable.labels(metrics.role).set(1 if reachable else 0)
        now = time.monotonic()
        if reachable:
            lost_since = None
            metrics.problem("broker", None)
        else:
            lost_since = now if lost_since is None else lost_since
            metrics.problem("broker", f"no broker of {bootstrap} answered for {now - lost_since:.0f} s")
            if lost_after_s and now - lost_since >= lost_after_s:
                on_lost(
                    f"pipeline {metrics.role}: no Kafka broker at {bootstrap} answered for {lost_after_s:g} s "
                    f"(JOBSTREAM_BROKER_LOST_EXIT_S); exit {EXIT_BROKER_LOST} so a supervisor restarts it"
                )
                return
        await asyncio.sleep(every_s)


def _exit_broker_lost(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)
    logging.shutdown()
    os._exit(EXIT_BROKER_LOST)


async def operate(metrics: RoleMetrics, settings: "Settings", *, watch: bool = True) -> None:
    """What every long-running role runs beside its loop, until cancelled: the /metrics and
    /healthz server when ``metrics_port`` is set (or the starter asked for any port:
    ``pipeline/ops/ports.py``; the bound port is reported), and (``watch``) the broker watch."""
    runner = None
    try:
        port = 0 if ports.wants_any("metrics") else settings.metrics_port
        if port or ports.wants_any("metrics"):
            runner = await serve(metrics, settings.metrics_host, port)
            bound = runner.addresses[0][1] if runner.addresses else port
            ports.report("metrics", bound)
            print(f"pipeline {metrics.role}: metrics on http://{settings.metrics_host}:{bound}/metrics",
                  file=sys.__stderr__, flush=True)
        if watch:
            await watch_broker(settings.bootstrap, metrics, lost_after_s=settings.broker_lost_exit_s)
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()


async def run_with_operations(role: str, settings: "Settings", main: Callable[[], Awaitable[T]], *, watch: bool = False) -> T:
    """Run an ingestor's ``main`` with its metrics: /metrics and /healthz served beside it,
    and its polls and pushes counted (``sources.SOURCE_METRICS``). Ingestors keep running
    without Kafka (they back off, or answer 503), so no broker watch unless ``watch``."""
    metrics = RoleMetrics(role, stall_after_s=settings.stall_after_s)
    token = SOURCE_METRICS.set(metrics)
    try:
        async with beside(metrics, settings, watch=watch):
            return await main()
    finally:
        SOURCE_METRICS.reset(token)


@asynccontextmanager
async def beside(metrics: RoleMetrics | None, settings: "Settings", *, watch: bool = True) -> AsyncIterator[None]:
    """``operate`` for as long as the block runs (nothing when ``metrics`` is None)."""
    if metrics is None:
        yield
        return
    operations = asyncio.ensure_future(operate(metrics, settings, watch=watch))
    try:
        yield
    finally:
        operations.cancel()
        await asyncio.gather(operations, return_exceptions=True)
