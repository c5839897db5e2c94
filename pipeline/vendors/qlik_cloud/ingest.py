"""The Qlik Cloud webhook receiver: ``pipeline ingest qlik-cloud --listen HOST:PORT``.

Qlik Cloud POSTs one event per request. For each request, in this order:

1. a body larger than the limit is refused with 413 (checked on Content-Length, then
   while reading);
2. with a secret configured, ``Qlik-Signature`` must be the HMAC-SHA256 (hex, any case,
   an optional ``sha256=`` prefix) of the exact bytes received, compared in constant
   time: missing or forged -> 401;
3. a content type that is not JSON -> 415, a body that does not parse -> 400, each with
   the reason in the answer;
4. the event becomes raw records keyed by job (structured mode: the JSON body;
   binary mode: ``{"headers": {ce-* and content-type}, "data": body}``, which the
   normalizer reads), sent to ``raw.qlik_cloud`` with acks=all;
5. 200 only once Kafka acknowledged every record; 503 with Retry-After when it did not,
   so Qlik delivers again (the worker drops the repeat by its deterministic event id).

An event the normalizer refuses (an event type it does not know, a missing field) is
still recorded, unkeyed, so the worker dead-letters it with the reason: it was valid
JSON from a signed sender, so it is acknowledged, not lost. ``GET /healthz`` answers 200
while Kafka is reachable, 503 otherwise. A heartbeat goes to every partition of the raw
topic every few seconds.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from pipeline.model import UTC
from pipeline.ops import ports
from pipeline.push import KafkaLink, KafkaUnavailable
from pipeline.vendors.qlik_cloud import guard
from pipeline.sources import Record, Redactor, records_for
from pipeline.vendors import Context

from pipeline.settings import SettingsError

if TYPE_CHECKING:
    from pipeline.settings import Settings

VENDOR = "qlik_cloud"
SIGNATURE_HEADER = "Qlik-Signature"
RETRY_AFTER_S = 5

log = logging.getLogger("pipeline.ingest.qlik_cloud")


def signature(secret: str, body: bytes) -> str:
    """What Qlik sends in ``Qlik-Signature``: hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str) -> bool:
    """Constant-time check of a ``Qlik-Signature`` header against the exact body bytes."""
    given = header.strip()
    if given[:7].lower() == "sha256=":
        given = given[7:]
    expected = signature(secret, body).encode("ascii")
    return hmac.compare_digest(expected, given.lower().encode("utf-8", "surrogateescape"))


class BadRequest(Exception):
    """A request refused before anything reached Kafka: an HTTP status, one line, and the
    reason's code for the refusal counter."""

    def __init__(self, status: int, reason: str, code: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


def _is_json_type(content_type: str) -> bool:
    return content_type in ("application/json", "text/json") or content_type.endswith("+json")


def payload_of(headers: Mapping[str, str], content_type: str, body: bytes) -> Any:
    """The raw payload to record for one request (pure; raises ``BadRequest``).

    Binary-mode CloudEvents carry their attributes in ``ce-*`` headers: those headers
    and the content type are kept with the body; every other header is dropped (they
    may carry credentials of proxies on the way).
    """
    if content_type and not _is_json_type(content_type):
        raise BadRequest(415, f"content type {content_type[:80]!r} is not JSON (send application/json or application/cloudevents+json)",
                         "not_json")
    if not body.strip():
        raise BadRequest(400, "empty body: a Qlik Cloud event is a JSON object", "not_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}", "not_json") from None
    attributes = {name.lower(): value for name, value in headers.items() if name.lower().startswith("ce-")}
    if not attributes:
        return data
    if content_type:
        attributes["content-type"] = content_type
    return {"headers": attributes, "data": data}


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """What the receiver accepts. ``secret`` None only with ``--no-signature`` (local tests).
    A slow client is cut off (headers, then body), connections and each client's request
    rate are bounded, an event older than ``max_event_age_s`` is refused and a delivery
    already acknowledged (same bytes) is acknowledged again without a second record."""

    secret: str | None
    max_body_bytes: int = 262_144
    heartbeat_every_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 256
    requests_per_s_per_client: float = 20.0
    max_event_age_s: float = 7 * 86_400.0
    remembered_deliveries: int = 100_000


class Receiver:
    """The webhook endpoint: HTTP in, acknowledged raw records out."""

    def __init__(self, link: KafkaLink, config: ReceiverConfig, redact: Redactor | None = None) -> None:
        self.link = link
        self.config = config
        self.redact = redact or Redactor([config.secret])
        self.accepted = 0
        self.refusals: collections.Counter[str] = collections.Counter()
        self._counter = refusal_counter()
        self._log = guard.BoundedLog(log)
        self._rates = guard.ClientRates(config.requests_per_s_per_client)
        self._delivered = guard.Remembered(config.remembered_deliveries)

    @property
    def refused(self) -> int:
        return sum(self.refusals.values())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/{tail:.*}", self.receive)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.link.connect()
        except KafkaUnavailable as exc:
            return web.json_response({"status": "kafka unavailable", "reason": self.redact(str(exc))}, status=503)
        return web.json_response({"status": "ok", "accepted": self.accepted, "refused": self.refused,
                                  "refusals": dict(self.refusals)})

    def refuse(self, reason: str, remote: str | None, line: str = "") -> None:
        """Count a refusal by reason (and in /metrics); say it at a bounded rate."""
        self.refusals[reason] += 1
        if self._counter is not None:
            self._counter.labels(reason).inc()
        self._log.warning(reason, "refused a delivery from %s: %s", remote, line or reason)

    async def receive(self, request: web.Request) -> web.Response:
        received_at = datetime.now(UTC)
        now = asyncio.get_running_loop().time()
        if not self._rates.allow(guard.client_of(request.remote, request.headers.get("X-Forwarded-For")), now):
            self.refuse("rate_limited", request.remote)
            return web.json_response({"error": "too many requests from this client"}, status=429,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            body = await self._body(request)
            self._verify(request, body)
            content_type = request.content_type if "Content-Type" in request.headers else ""
            payload = payload_of(request.headers, content_type, body)
            too_old = guard.too_old(guard.event_time(payload), received_at, self.config.max_event_age_s)
            if too_old:
                raise BadRequest(422, too_old, "too_old")
        except BadRequest as exc:
            self.refuse(exc.code, request.remote, f"{exc.status} {exc.reason}")
            return web.json_response({"error": exc.reason}, status=exc.status)
        digest = hashlib.sha256(body).digest()
        if digest in self._delivered:
            self.refuse("replayed", request.remote, "the same bytes were acknowledged before; not written again")
            return web.json_response({"accepted": 0, "duplicate": True})
        records = records_for(VENDOR, payload, Context(received_at=received_at))
        try:
            report = await self.link.send(records)
        except KafkaUnavailable as exc:
            log.warning("answering 503: %s", self.redact(str(exc)))
            return web.json_response(
                {"error": "Kafka did not acknowledge the event; deliver it again"}, status=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if report.too_large:
            self.refuse("too_large", request.remote, report.too_large[0][1])
            return web.json_response({"error": report.too_large[0][1]}, status=413)
        self._delivered.add(digest)
        self.accepted += 1
        return web.json_response({"accepted": report.sent, "keyed": _keyed(records)})

    async def _body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, f"body of {request.content_length:,} bytes exceeds the {limit:,}-byte limit", "too_large")
        try:
            return await asyncio.wait_for(request.read(), self.config.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(413, f"body exceeds the {limit:,}-byte limit", "too_large") from None
        except asyncio.TimeoutError:
            raise BadRequest(408, f"the body did not arrive within {self.config.body_timeout_s:g} s", "slow_body") from None

    def _verify(self, request: web.Request, body: bytes) -> None:
        if self.config.secret is None:
            return
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise BadRequest(401, f"missing {SIGNATURE_HEADER} header", "unsigned")
        if not signature_matches(self.config.secret, body, header):
            raise BadRequest(401, f"{SIGNATURE_HEADER} does not match the body", "bad_signature")

    async def heartbeats(self, stop: asyncio.Event) -> None:
        """A heartbeat every few seconds while running; an outage is only logged."""
        while not stop.is_set():
            try:
                await self.link.heartbeat()
            except KafkaUnavailable as exc:
                log.warning("heartbeat not sent: %s", self.redact(str(exc)))
            try:
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_every_s)
            except asyncio.TimeoutError:
                pass


class _RefusalCounter:
    """``jobstream_webhook_refusals_total{role, reason}`` in the role's /metrics registry."""

    def __init__(self, metrics: Any) -> None:
        from prometheus_client import Counter

        self.role = metrics.role
        self.counter = Counter("jobstream_webhook_refusals", "Webhook deliveries refused, by reason",
                               ["role", "reason"], registry=metrics.registry)

    def labels(self, reason: str) -> Any:
        return self.counter.labels(self.role, reason)


def refusal_counter() -> _RefusalCounter | None:
    """The refusal counter beside the role's other metrics (None outside a role runtime)."""
    from pipeline.sources import SOURCE_METRICS

    metrics = SOURCE_METRICS.get()
    return None if metrics is None else _RefusalCounter(metrics)


def _keyed(records: list[Record]) -> int:
    return sum(1 for record in records if record.key is not None)


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (Qlik Cloud delivers only to https:// URLs), or OSError/SSLError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve(
    receiver: Receiver, host: str, port: int, stop: asyncio.Event, *, ready: asyncio.Future[int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Listen until ``stop`` is set; ``ready`` gets the bound port (0 picks a free one)."""
    # aiohttp closes a connection that has not completed a request's headers within its
    # keep-alive timeout (counted from the connection's start): the header timeout.
    runner = web.AppRunner(receiver.app(), access_log=None, keepalive_timeout=receiver.config.header_timeout_s)
    await runner.setup()
    guard.bound_connections(runner, receiver.config.max_connections, lambda: receiver.refuse("too_many_connections", None))
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    heartbeats = None
    try:
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        ports.report("listen", bound)
        if ready is not None and not ready.done():
            ready.set_result(bound)
        heartbeats = asyncio.create_task(receiver.heartbeats(stop))
        await stop.wait()
    finally:
        if heartbeats is not None:
            heartbeats.cancel()
            await asyncio.gather(heartbeats, return_exceptions=True)
        await runner.cleanup()
        await receiver.link.close()


def server_tls(settings: "Settings") -> ssl.SSLContext | None:
    """The https context the settings ask for (None: plain http), or SettingsError: the
    check ``pipeline run`` makes before it starts this role too."""
    if not (settings.webhook_tls_cert or settings.webhook_tls_key):
        return None
    if not (settings.webhook_tls_cert and settings.webhook_tls_key):
        raise SettingsError("--tls-cert and --tls-key (JOBSTREAM_WEBHOOK_TLS_CERT / _KEY) go together")
    try:
        return tls_context(str(settings.webhook_tls_cert), str(settings.webhook_tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load the TLS certificate and key: {getattr(exc, 'strerror', None) or exc}") from None


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def required_secret(settings: "Settings", host: str, no_signature: bool) -> str | None:
    """The webhook secret, or ``SettingsError``: without one the receiver does not start
    (anyone could write events), unless ``--no-signature`` on a loopback address (local tests)."""
    secret = settings.qlik_secret()
    if secret is not None or no_signature and host in LOOPBACK:
        return secret
    if no_signature:
        raise SettingsError(f"--no-signature is for local tests: listen on 127.0.0.1, not {host}")
    raise SettingsError("no webhook secret: set JOBSTREAM_QLIK_WEBHOOK_SECRET or JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE "
                        "(the secret of the webhook in Qlik Cloud), or pass --no-signature for a local test")


async def run(settings: "Settings", *, host: str, port: int, source: str, no_signature: bool = False,
              guard_config: "dict[str, float] | None" = None) -> None:
    """``pipeline ingest qlik-cloud``: receive until SIGINT/SIGTERM (https with a cert)."""
    from dataclasses import replace

    from pipeline.push import log_to_stderr, stop_on_signals

    secret = required_secret(settings, host, no_signature)
    context = server_tls(settings)
    redact = Redactor([secret])
    log_to_stderr(redact)
    if secret is None:
        log.warning("--no-signature: deliveries are not verified (local tests only)")
    link = KafkaLink(settings.bootstrap, VENDOR, source, ack_timeout_s=settings.kafka_ack_timeout_s,
                     client_id="jobstream-ingest-qlik-cloud")
    config = replace(ReceiverConfig(secret, settings.webhook_max_body_bytes, settings.heartbeat_every_s),
                     **{k: v for k, v in (guard_config or {}).items() if v is not None})
    receiver = Receiver(link, config, redact)
    stop = asyncio.Event()
    stop_on_signals(stop)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    scheme = "https" if context else "http"
    ready.add_done_callback(lambda f: log.info(
        "receiving Qlik Cloud webhooks on %s://%s:%d/ (healthz: /healthz) -> %s at %s",
        scheme, host, f.result(), link.vendor, settings.bootstrap,
    ))
    await serve(receiver, host, port, stop, ready=ready, ssl_context=context)
    log.info("stopped: %d deliveries accepted, %d refused", receiver.accepted, receiver.refused)
