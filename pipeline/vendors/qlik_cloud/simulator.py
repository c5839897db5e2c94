"""A Qlik Cloud webhook sender, for tests and the demo.

It sends ``com.qlik.v1.reload.finished`` CloudEvents the way Qlik Cloud does: one HTTP
POST per event, the event as the JSON body (structured mode), signed with
``Qlik-Signature`` (hex HMAC-SHA256 of the body). On request it also sends some events
in binary mode (``ce-*`` headers), some as the older ``com.qlik.v1.app.reload.finished``
(legacy, hybrid and CloudEvents 1.0.2 envelopes), some twice, some out of order, and it retries a
delivery answered with 5xx (or not answered) with backoff and Retry-After, as a sender
that must not lose events does. ``clock`` speeds everything up for fast runs: with
``clock=60`` a minute of simulated reloads takes a second.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson

from pipeline.model import UTC
from pipeline.sources import Backoff, parse_retry_after
from pipeline.vendors.qlik_cloud.ingest import SIGNATURE_HEADER, signature

EVENT_TYPE = "com.qlik.v1.reload.finished"
APP_EVENT_TYPE = "com.qlik.v1.app.reload.finished"
STATUSES = (("SUCCEEDED", 70), ("FAILED", 20), ("CANCELED", 5), ("EXCEEDED_LIMIT", 5))


@dataclass(frozen=True, slots=True)
class Faults:
    """Every n-th event gets the fault (0 = never)."""

    duplicate_every: int = 0
    reorder_every: int = 0
    binary_every: int = 0
    legacy_every: int = 0  # as com.qlik.v1.app.reload.finished: legacy, hybrid, CloudEvents 1.0.2 in turn


@dataclass(slots=True)
class SenderReport:
    delivered: int = 0
    duplicates: int = 0
    reordered: int = 0
    binary: int = 0
    legacy: int = 0
    retries: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def reload_events(count: int, *, tenant: str, start: datetime, step_s: float = 30.0, apps: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` reload-finished CloudEvents, deterministic for a seed, one every ``step_s``."""
    rng = random.Random(seed)
    statuses, weights = zip(*STATUSES)
    events = []
    for index in range(count):
        finished = start + timedelta(seconds=step_s * index)
        duration = rng.randint(5, 600)
        status = rng.choices(statuses, weights)[0]
        data: dict[str, Any] = {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "appId": f"app-{rng.randint(1, apps)}",
            "userId": "sim-user",
            "succeeded": status == "SUCCEEDED",
            "status": status,
            "type": rng.choice(("chronos", "hub", "external")),
            "partial": False,
            "startTime": _iso(finished - timedelta(seconds=duration)),
            "endTime": _iso(finished),
            "durationSeconds": duration,
            "tenantId": tenant,
        }
        if status != "SUCCEEDED":
            data["errorCode"] = {"FAILED": "ReloadScriptError", "CANCELED": "Canceled", "EXCEEDED_LIMIT": "QuotaExceeded"}[status]
            data["errorMessage"] = f"simulated {status.lower()} reload"
        events.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "specversion": "1.0",
            "type": EVENT_TYPE,
            "source": "com.qlik/reloads",
            "time": _iso(finished),
            "tenantid": tenant,
            "datacontenttype": "application/json",
            "data": data,
        })
    return events


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def structured(event: dict[str, Any], secret: str | None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a structured-mode delivery."""
    body = orjson.dumps(event)
    headers = {"Content-Type": "application/cloudevents+json"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    return body, headers


def binary(event: dict[str, Any], secret: str | None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a binary-mode delivery: attributes as ``ce-*`` headers."""
    body = orjson.dumps(event["data"])
    headers = {"Content-Type": "application/json"}
    for name, value in event.items():
        if name not in ("data", "datacontenttype"):
            headers[f"ce-{name}"] = str(value)
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    return body, headers


APP_ENVELOPES = ("legacy", "hybrid", "cloudevents")


def app_reload_finished(event: dict[str, Any], *, envelope: str) -> dict[str, Any]:
    """The same reload as the older ``com.qlik.v1.app.reload.finished`` event, in one of
    the envelopes Qlik moves it through: legacy, hybrid (legacy fields plus the CloudEvents
    1.0.2 attributes) or pure CloudEvents 1.0.2."""
    data = event["data"]
    tenant, user, app = event["tenantid"], data["userId"], data["appId"]
    legacy: dict[str, Any] = {
        "eventType": APP_EVENT_TYPE, "eventTypeVersion": "1.0.0", "eventTime": event["time"],
        "source": "com.qlik/engine",
        "extensions": {"tenantId": tenant, "userId": user, "ownerId": user, "spaceId": "sim-space",
                       "topLevelResourceId": app},
        "data": {
            "status": "ok" if data["succeeded"] else "error", "reloadId": data["id"], "name": app,
            "duration": f"{data['durationSeconds']}s", "errors": [data["errorMessage"]] if "errorMessage" in data else [],
            "warnings": [], "isPartialReload": data["partial"], "peakMemoryBytes": 1_048_576,
        },
    }
    if envelope == "legacy":
        return legacy
    cloudevent = {"id": event["id"], "time": event["time"], "type": APP_EVENT_TYPE, "specversion": "1.0.2",
                  "source": legacy["source"], "tenantid": tenant, "userid": user, "toplevelresourceid": app}
    if envelope == "hybrid":
        return {**legacy, **cloudevent}
    return {**cloudevent, "data": legacy["data"]}


def delivery_plan(events: list[dict[str, Any]], faults: Faults) -> list[tuple[dict[str, Any], bool]]:
    """The order of deliveries: ``(event, binary_mode)``, with duplicates and swaps."""
    order = list(events)
    if faults.reorder_every:
        for index in range(faults.reorder_every - 1, len(order) - 1, faults.reorder_every):
            order[index], order[index + 1] = order[index + 1], order[index]
    plan = []
    for index, event in enumerate(order, start=1):
        as_binary = bool(faults.binary_every) and index % faults.binary_every == 0
        if faults.legacy_every and index % faults.legacy_every == 0:
            envelope = APP_ENVELOPES[(index // faults.legacy_every - 1) % len(APP_ENVELOPES)]
            event = app_reload_finished(event, envelope=envelope)
            as_binary = False  # these envelopes are only ever sent structured
        plan.append((event, as_binary))
        if faults.duplicate_every and index % faults.duplicate_every == 0:
            plan.append((event, as_binary))
    return plan


class WebhookSender:
    """Delivers events to a webhook URL, retrying 5xx, 429 and connection failures."""

    def __init__(
        self, url: str, *, secret: str | None, clock: float = 1.0, max_attempts: int = 8,
        backoff: Backoff = Backoff(initial_s=0.5, maximum_s=30.0), timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout_s = timeout_s

    async def deliver(self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str], report: SenderReport) -> int:
        """POST once, and again after 5xx or no answer; returns the last status (0: none)."""
        status = 0
        for attempt in range(1, self.max_attempts + 1):
            retry_after = None
            try:
                async with session.post(self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as answer:
                    status = answer.status
                    retry_after = parse_retry_after(answer.headers.get("Retry-After"))
                    await answer.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            report.statuses[status] = report.statuses.get(status, 0) + 1
            if status and status < 500 and status != 429:  # 429: the receiver's rate limit, retried after Retry-After
                return status
            if attempt < self.max_attempts:
                report.retries += 1
                await asyncio.sleep(self.backoff.delay(attempt, retry_after) / self.clock)
        report.failed += 1
        return status

    async def run(self, events: list[dict[str, Any]], faults: Faults = Faults(), *, interval_s: float = 1.0) -> SenderReport:
        """Deliver every event (with the faults asked for), ``interval_s / clock`` apart."""
        report = SenderReport()
        seen: set[str] = set()
        original = {_reload_id(event): index for index, event in enumerate(events)}
        latest = -1
        async with aiohttp.ClientSession() as session:
            for position, (event, as_binary) in enumerate(delivery_plan(events, faults)):
                body, headers = (binary if as_binary else structured)(event, self.secret)
                reload_id = _reload_id(event)
                if reload_id in seen:
                    report.duplicates += 1
                elif original[reload_id] < latest:
                    report.reordered += 1  # delivered after an event that came later
                latest = max(latest, original[reload_id])
                seen.add(reload_id)
                report.binary += as_binary
                report.legacy += (event.get("type") or event.get("eventType")) == APP_EVENT_TYPE
                status = await self.deliver(session, body, headers, report)
                if 200 <= status < 300:
                    report.delivered += 1
                if position and interval_s:
                    await asyncio.sleep(interval_s / self.clock)
        return report


def _reload_id(event: dict[str, Any]) -> str:
    data = event["data"]
    return data["reloadId"] if "reloadId" in data else data["id"]


async def run(url: str, *, secret: str | None, events: int, tenant: str, clock: float, faults: Faults,
              interval_s: float = 30.0, seed: int = 0) -> SenderReport:
    """``pipeline simulate qlik-cloud``: send ``events`` reloads to ``url``, then report."""
    start = datetime.now(UTC) - timedelta(seconds=interval_s * events)
    batch = reload_events(events, tenant=tenant, start=start, step_s=interval_s, seed=seed)
    return await WebhookSender(url, secret=secret, clock=clock).run(batch, faults, interval_s=interval_s)
