"""What keeps the webhook receiver closed to what Qlik Cloud would never send: a bounded
number of connections, a request rate per client, no event from years ago, no delivery
written twice, and refusals said at a bounded rate (2,000 unsigned POSTs are a few log
lines and a counter, not 2,000 lines). Qlik sends no timestamp header, so the event's own
time (``time``, ``eventTime`` or ``ce-time``) is what an old replay is recognised by."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from pipeline.model import UTC


def event_time(payload: Any) -> datetime | None:
    """The event's own time: CloudEvents ``time``, the legacy envelope's ``eventTime``, or a
    binary-mode ``ce-time`` header (pure; None when absent or unreadable)."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("headers"), dict) and "data" in payload:  # binary mode (ingest.payload_of)
        text = payload["headers"].get("ce-time")
    else:
        text = payload.get("time") or payload.get("eventTime")
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def too_old(when: datetime | None, now: datetime, max_age_s: float) -> str | None:
    """Why an event dated ``when`` is refused (older than ``max_age_s``), else None."""
    if when is None or max_age_s <= 0:
        return None
    age = (now - when).total_seconds()
    if age <= max_age_s:
        return None
    return (f"event dated {when.isoformat()} is {age / 86_400:.0f} days old, beyond the {max_age_s / 86_400:g}-day limit "
            "(a replayed or stale delivery)")


def client_of(remote: str | None, forwarded_for: str | None) -> str:
    """The client a request is counted for: behind a TLS proxy on this machine every request
    comes from loopback, so there the proxy's ``X-Forwarded-For`` (its last entry, the one
    the proxy added) names the client; from anywhere else the header is not trusted."""
    remote = remote or "?"
    if forwarded_for and (remote.startswith("127.") or remote == "::1"):
        return forwarded_for.rsplit(",", 1)[-1].strip() or remote
    return remote


class ClientRates:
    """A token bucket per client address: ``per_s`` requests a second, bursts of twice that.
    At most ``clients`` buckets are kept (the least recently seen go first)."""

    def __init__(self, per_s: float, clients: int = 10_000) -> None:
        self.per_s = per_s
        self.burst = max(per_s * 2, 1.0)
        self.clients = clients
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, client: str, now: float) -> bool:
        if self.per_s <= 0:
            return True
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.clients:
            self._buckets.popitem(last=False)
        return allowed


class Remembered:
    """The digests of the last ``size`` deliveries acknowledged (oldest out first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seen

    def add(self, digest: bytes) -> None:
        self._seen[digest] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


class BoundedLog:
    """At most one line per reason every ``every_s``; the next one says how many were not said."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def warning(self, reason: str, message: str, *args: object) -> None:
        now = self.clock()
        if reason in self._last and now - self._last[reason] < self.every_s:
            self._held[reason] += 1
            return
        held = self._held.pop(reason, 0)
        self._last[reason] = now
        suffix = f" ({held} more refused for {reason} since the last line)" if held else ""
        self.logger.warning(message + suffix, *args)


def bound_connections(runner: web.AppRunner, limit: int, refused: Callable[[], None]) -> None:
    """Close any connection beyond ``limit`` open ones at once (after ``runner.setup()``):
    aiohttp has no such bound, its server tells each new connection to this hook."""
    server = runner.server
    assert server is not None, "call after runner.setup()"
    opened = server.connection_made

    def connection_made(handler: Any, transport: Any) -> None:
        opened(handler, transport)
        if limit and len(server.connections) > limit:
            refused()
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]
