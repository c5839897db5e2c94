"""Real receivers for alert deliveries: an aiohttp webhook endpoint and an aiosmtpd SMTP
server, each on a free 127.0.0.1 port in its own thread (so a test, the alerter in a
thread or the alerter in a subprocess can all reach them)."""

from __future__ import annotations

import asyncio
import email
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pipeline.broker import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """``POST /hook`` records JSON bodies; ``fail_next`` answers 500 that many times;
    ``on_delivery`` runs (in the server's thread) after a delivery is recorded."""

    port: int = field(default_factory=free_port)
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

    def start(self) -> "WebhookReceiver":
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


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


class SmtpReceiver:
    """An SMTP server that requires a login (user ``alerts``, password ``password``)."""

    user = "alerts"
    password = "s3cret-smtp-pass"

    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.port = free_port()
        self.controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=self.port,
            authenticator=self._authenticate, auth_require_tls=False,
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok)

    @property
    def url(self) -> str:
        return (
            f"mailto://{self.user}:{self.password}@127.0.0.1:{self.port}"
            "?from=jobstream@example.com&to=ops@example.com&mode=insecure"
        )

    def start(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def messages(self) -> list[Message]:
        with self.mailbox.lock:
            return list(self.mailbox.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages()) < count:
            time.sleep(0.05)
        return self.messages()
