"""What the vendor simulators share: a clock that runs vendor time faster than real
time, faults injected on request, a record of every call, and an aiohttp server on a
free 127.0.0.1 port.

A simulator's jobs are scripted in vendor time (seconds after the simulator's epoch),
so what an API answers is a pure function of "vendor now": the same scenario at a
clock factor of 60 shows an hour of vendor life in a real minute.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from pipeline.errors import ConfigError
from pipeline.model import UTC
from pipeline.ops import ports
from pipeline.vendors._common import Timeline, timeline_from_env

_ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("simulated_request_arrived", default=None)
REQUEST_BODY: contextvars.ContextVar[Any] = contextvars.ContextVar("simulated_request_body", default=None)
"""A handler sets the parsed request body here to have it recorded in ``calls``."""


@dataclass(slots=True)
class SimClock:
    """Vendor time: ``epoch`` plus real seconds elapsed times ``factor``; or, when
    ``JOBSTREAM_VENDOR_TIMELINE`` is set (the demo), that shared ``Timeline``, which
    starts in the past and reaches real time at the demo's end (so demo data are never
    in the future) and which the ingestors' receive clock follows too."""

    factor: float = 1.0
    epoch: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    _started: float = field(default_factory=time.monotonic)
    _frozen: float | None = None
    timeline: Timeline | None = field(default_factory=timeline_from_env)

    def __post_init__(self) -> None:
        if self.timeline is not None:
            self.epoch = self.timeline.epoch
            self.factor = self.timeline.factor

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self.elapsed())

    def elapsed(self) -> float:
        """Vendor seconds since the epoch."""
        if self._frozen is not None:
            return self._frozen
        if self.timeline is not None:
            return self.timeline.elapsed(time.time())
        return (time.monotonic() - self._started) * self.factor

    def freeze(self, at_s: float | None = None) -> None:
        """Stop vendor time, now or at vendor second ``at_s`` (tests: a restart against
        a world that does not move, or a poll that comes late)."""
        self._frozen = self.elapsed() if at_s is None else at_s

    def thaw(self) -> None:
        if self._frozen is not None and self.timeline is not None:
            self._frozen = None  # the shared timeline goes on by the wall clock
        if self._frozen is not None:
            self._started = time.monotonic() - self._frozen / self.factor
            self._frozen = None

    def at(self, offset_s: float) -> datetime:
        return self.epoch + timedelta(seconds=offset_s)


class FaultSpecError(ConfigError):
    """A ``--faults`` text names an unknown fault or a bad value."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults on request; rates are per API call (0..1), drawn from a seeded generator.

    ``timeout`` holds the answer ``hang_s`` seconds (longer than a client's deadline);
    ``error`` answers 503; ``storm`` starts ``storm_len`` answers of 429 with
    ``Retry-After: retry_after_s``; ``malformed`` cuts the body in half; ``duplicate``
    repeats an item of a list answer; ``reorder`` shuffles list answers.
    """

    latency_s: float = 0.0
    timeout: float = 0.0
    hang_s: float = 5.0
    error: float = 0.0
    storm: float = 0.0
    storm_len: int = 3
    retry_after_s: float = 1.0
    malformed: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    first: tuple[str, ...] = ()
    """Faults forced on the first calls, one a call, in order (tests use it so that
    every fault surely happens): ``("storm", "timeout", "error", "malformed")``."""

    @classmethod
    def parse(cls, text: str) -> "Faults":
        """``"error=0.1,storm=0.05,latency_s=0.2"`` -> Faults (for ``--faults``)."""
        known = {f.name: f for f in fields(cls) if f.name != "first"}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, raw = part.partition("=")
            name = name.strip()
            if name not in known:
                raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(known)})")
            try:
                value: Any = int(raw) if known[name].type in ("int", int) else float(raw)
            except ValueError:
                raise FaultSpecError(f"fault {name}={raw!r} is not a number") from None
            if value < 0:
                raise FaultSpecError(f"fault {name}={raw!r} must not be negative")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Call:
    """One API call as the simulator saw it (real monotonic times)."""

    at: float  # when the request arrived
    method: str
    path: str
    status: int
    retry_after: float | None
    body: Any = None
    answered: float = 0.0  # when the answer left (the moment a Retry-After counts from)


class Simulator:
    """Base of the vendor simulators: subclasses add routes in ``routes``; every API
    route goes through the fault injector and is recorded in ``calls``."""

    def __init__(self, clock: SimClock | None = None, faults: Faults | None = None) -> None:
        self.clock = clock or SimClock()
        self.faults = faults or Faults()
        self.calls: list[Call] = []
        self.malformed_served = 0
        self.malformed_paths: list[str] = []
        self._rng = random.Random(self.faults.seed)
        self._storm_left = 0
        self._forced = list(self.faults.first)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self, port: int = 0, ssl_context: Any = None, host: str = "127.0.0.1") -> str:
        """Listen on ``host`` (127.0.0.1 unless told; a container gives 0.0.0.0), ``port`` 0:
        a free one, over TLS with ``ssl_context``."""
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        host, bound = self._runner.addresses[0][:2]
        self.base_url = f"{'https' if ssl_context else 'http'}://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "Simulator":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def note(self, request: web.Request, status: int, retry_after: float | None = None, body: Any = None) -> None:
        arrived = _ARRIVED.get() or time.monotonic()
        self.calls.append(Call(arrived, request.method, request.path, status, retry_after, body, time.monotonic()))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        _ARRIVED.set(time.monotonic())
        faults = self.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        forced = self._forced.pop(0) if self._forced and self._storm_left == 0 else None
        if self._storm_left == 0 and (forced == "storm" or self._draw(faults.storm)):
            self._storm_left = faults.storm_len
        if self._storm_left > 0:
            self._storm_left -= 1
            return self.too_many(request, faults.retry_after_s)
        if forced == "timeout" or self._draw(faults.timeout):
            self.note(request, 504)  # never answered in time: recorded when it arrived
            await asyncio.sleep(faults.hang_s)
            return web.json_response({"message": "Gateway Timeout (simulated)"}, status=504)
        if forced == "error" or self._draw(faults.error):
            self.note(request, 503)
            return web.json_response({"message": "Service Unavailable (simulated)"}, status=503)
        response = await handler(request)
        if "Date" not in response.headers:  # the vendor's clock, as a real server's Date header is
            response.headers["Date"] = format_datetime(self.clock.now(), usegmt=True)
        retry_after = response.headers.get("Retry-After")
        self.note(request, response.status, float(retry_after) if retry_after else None, REQUEST_BODY.get())
        if isinstance(response, web.Response) and response.status == 200 and response.body and (
            forced == "malformed" or self._draw(faults.malformed)
        ):
            body = bytes(response.body)
            self.malformed_served += 1
            self.malformed_paths.append(request.path)
            headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
            return web.Response(body=body[: len(body) // 2], status=200, content_type="application/json", headers=headers)
        return response

    def too_many(self, request: web.Request, retry_after_s: float) -> web.Response:
        self.note(request, 429, retry_after_s)
        return web.json_response(
            {"responseCode": "TOO_MANY_REQUESTS", "message": "Too many requests"},
            status=429, headers={"Retry-After": f"{retry_after_s:g}"},
        )

    def shaped(self, items: list[Any]) -> list[Any]:
        """A list answer with the duplicate and reorder faults applied."""
        items = list(items)
        if items and self._draw(self.faults.duplicate):
            items.insert(self._rng.randrange(len(items) + 1), self._rng.choice(items))
        if len(items) > 1 and self._draw(self.faults.reorder):
            self._rng.shuffle(items)
        return items

    def _draw(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate


async def serve_forever(simulator: Simulator, port: int, announce: Callable[[str], None], host: str = "127.0.0.1") -> None:
    """Run a simulator until cancelled (``pipeline simulate``)."""
    url = await simulator.start(port, host=host)
    ports.report("listen", int(url.rsplit(":", 1)[1]))
    announce(url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
