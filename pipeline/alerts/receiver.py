"""A local webhook receiver for alerts: what ``pipeline demo`` can start to show alerts
arriving without Slack or a mail server (Apprise URL ``json://127.0.0.1:PORT/hook``), and
what the tests deliver to. It serves on a 127.0.0.1 port the kernel picks (``port`` once started) in its own thread, keeps
every delivery, and counts distinct alert ids (a repeat after a crash counts once, as a
receiver that honours ``X-Jobstream-Alert-Id`` would). ``fail_next`` answers 500 that
many times, to show and test retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.alerts.delivery import ALERT_ID_HEADER


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request as received: its headers and JSON body (Apprise's json:// payload)."""

    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class LocalReceiver:
    """``POST /hook`` records JSON bodies; ``on_delivery`` runs (in the server's thread)
    after a delivery is recorded."""

    port: int = 0  # 0: the kernel picks a free port; ``port`` holds it once started
    deliveries: list[Delivery] = field(default_factory=list)
    refused: int = 0
    fail_next: int = 0
    on_delivery: Callable[[Delivery], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="webhook-receiver")

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def start(self) -> "LocalReceiver":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.refused += 1
                return web.Response(status=500, text="receiver down")
            delivery = Delivery(dict(request.headers), body)
            self.deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return web.json_response({"ok": True})

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def alert_ids(self) -> list[str]:
        """Distinct alert ids, in order of first arrival."""
        seen: dict[str, None] = {}
        for delivery in self.received():
            seen.setdefault(delivery.headers.get(ALERT_ID_HEADER) or str(delivery.body.get("alert_id")), None)
        return list(seen)

    def wait_for(self, count: int, timeout: float = 30.0, settle: float = 0.0) -> list[Delivery]:
        """Until ``count`` deliveries arrived (or the deadline), then ``settle`` seconds
        more to catch unexpected extra ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received()) < count:
            time.sleep(0.05)
        if settle:
            time.sleep(settle)
        return self.received()

    async def wait_for_async(self, count: int, timeout: float = 30.0, settle: float = 0.0) -> list[Delivery]:
        return await asyncio.to_thread(self.wait_for, count, timeout, settle)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
