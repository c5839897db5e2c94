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
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from pipeline.kafka import clients
from pipeline.kafka.probes import any_broker_answers_async
from pipeline.ops import ports
from pipeline.ops.health import RoleMetrics, bind_metrics, serve
from pipeline.sources import SOURCE_METRICS

if TYPE_CHECKING:
    from pipeline.settings import Settings

T = TypeVar("T")
EXIT_BROKER_LOST = 69  # EX_UNAVAILABLE: a supervisor restarts the role


async def watch_broker(
    bootstrap: "str | clients.Connection", metrics: RoleMetrics, *, lost_after_s: float, every_s: float = 2.0,
    on_lost: Callable[[str], None] | None = None,
    probe: Callable[[str], Awaitable[bool]] | None = None,
) -> None:
    """Probe the brokers every ``every_s`` (an ApiVersions request on a connection of its
    own: Kafka clients hide a dead broker behind endless reconnects). Unreachable: /healthz
    says so at once; for ``lost_after_s`` (0: never) ``on_lost`` is called with one line
    (default: print it and exit 69). Runs until cancelled."""
    if probe is None:
        tls = clients.connection(bootstrap).security.ssl_context()

        async def probe(addresses: object) -> bool:
            return await any_broker_answers_async(str(addresses), tls=tls)
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


def bind(metrics: RoleMetrics, settings: "Settings") -> socket.socket | None:
    """The role's metrics port bound now, at its start (None when not served; port 0 when
    the starter asked for any port); a taken port raises ``MetricsPortTaken``, one line."""
    any_port = ports.wants_any("metrics")
    if not settings.metrics_port and not any_port:
        return None
    return bind_metrics(metrics.role, settings.metrics_host, 0 if any_port else settings.metrics_port)


async def operate(metrics: RoleMetrics, settings: "Settings", *, watch: bool = True,
                  listening: socket.socket | None = None, exit_on_lost: bool = True) -> None:
    """What every long-running role runs beside its loop, until cancelled: the /metrics and
    /healthz server (on ``listening``, the port ``bind`` took at the start; the bound port
    is reported when the starter asked for any port: ``pipeline/ops/ports.py``) and
    (``watch``) the broker watch."""
    runner = None
    try:
        if listening is None:
            listening = bind(metrics, settings)
        if listening is not None:
            bound = listening.getsockname()[1]
            runner = await serve(metrics, settings.metrics_host, bound, listening=listening)
            ports.report("metrics", bound)
            print(f"pipeline {metrics.role}: metrics on http://{settings.metrics_host}:{bound}/metrics",
                  file=sys.__stderr__, flush=True)
        if watch:
            await watch_broker(clients.connection(settings), metrics,
                               lost_after_s=settings.broker_lost_exit_s if exit_on_lost else 0)
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()


async def run_with_operations(role: str, settings: "Settings", main: Callable[[], Awaitable[T]], *, watch: bool = False) -> T:
    """Run an ingestor's ``main`` with its metrics: /metrics and /healthz served beside it,
    and its polls and pushes counted (``sources.SOURCE_METRICS``). /healthz is 503 when no
    poll or push was acknowledged for ``stall_after_s`` (beyond the next planned poll) and
    while no broker answers. Ingestors keep running without Kafka (they back off, or
    answer 503), so the broker watch ends one only with ``watch``."""
    metrics = RoleMetrics(role_name(role), stall_after_s=settings.stall_after_s)
    metrics.expect_success_within(settings.stall_after_s)
    token = SOURCE_METRICS.set(metrics)
    try:
        async with beside(metrics, settings, exit_on_lost=watch):
            return await main()
    finally:
        SOURCE_METRICS.reset(token)


def role_name(role: str) -> str:
    """The role's label in metrics: its name in ``pipeline run`` (``zuora``, ``qlik-cloud``),
    not the command's description (``zuora-ingestor``)."""
    return role.removesuffix("-ingestor")


@asynccontextmanager
async def beside(metrics: RoleMetrics | None, settings: "Settings", *, watch: bool = True,
                 exit_on_lost: bool = True) -> AsyncIterator[None]:
    """``operate`` for as long as the block runs (nothing when ``metrics`` is None)."""
    if metrics is None:
        yield
        return
    operations = asyncio.ensure_future(operate(metrics, settings, watch=watch, listening=bind(metrics, settings),
                                               exit_on_lost=exit_on_lost))
    try:
        yield
    finally:
        operations.cancel()
        await asyncio.gather(operations, return_exceptions=True)
