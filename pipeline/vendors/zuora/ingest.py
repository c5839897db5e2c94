"""Zuora RevPro BI Views poller: ``GET /api/integrations/v2/biviews-status`` snapshots,
diffed.

Authentication: ``POST /api/integration/v1/authenticate`` (Basic auth, ``role`` and
``clientname`` headers); the token comes back in the header named ``token_header`` and
goes out in that header on every call. It is renewed ``renew_margin_s`` before its 30
minutes run out, and once more if a call answers 401 (the tenant's clock may differ);
405 means the BI Views API is not enabled for the tenant: terminal.

Each poll reads the four queues and sends ``{queue: [task]}`` for every token whose
queue, status, counters, last activity or message changed since the last snapshot
(``elapsed_time`` grows on every read and is not a change). A token that vanished from
every queue is asked for alone (``GET .../biviews-status/{task_id}``); if Zuora no longer
knows it and it was last active or stale, it is sent as draining with the message
"token vanished from every queue" (Zuora removes stale tokens through draining, which a
poll can miss: it lasts 5 s). Tokens last seen completed or draining vanish as the
documentation says they do, and nothing is sent. The cursor is the last snapshot.

Observation time: Zuora gives no time for a queue change (a token listed stale or
draining carries only its ``last_activity``), so every task sent carries
``observed_at``: when this poll saw it, on the vendor's clock (the answer's ``Date``
header, the clock ``last_activity`` is written in), else this ingestor's receive time.
The normalizer dates stale and draining snapshots by it; a vanished token's drain gets
the time of the call that found it gone. ``observed_at`` is no part of the snapshot's
fingerprint nor of the cursor.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson

from pipeline.config.secret import Secret, as_secrets
from pipeline.sources import (
    Answer, BadAnswer, Backoff, ConfigError, Poll, Record, Redactor, TerminalError, TransientError, basic_auth, http_call,
    password_problems, records_for,
)
from pipeline.vendors import Context
from pipeline.vendors._common import header_date, receive_now
from pipeline.config.resolver import Origin
from pipeline.vendors._poller import HttpPoller, url_problems

VENDOR = "zuora"
AUTH_PATH = "/api/integration/v1/authenticate"
STATUS_PATH = "/api/integrations/v2/biviews-status"
QUEUES = ("active", "completed", "draining", "stale")


@dataclass(frozen=True, slots=True)
class ZuoraSettings:
    """``[zuora]`` in the config file, ``JOBSTREAM_ZUORA_*`` in the env."""

    SECRETS: ClassVar[tuple[str, ...]] = ("password",)

    base_url: str = ""
    user: str = ""
    password: Secret | None = None
    role: str = ""
    clientname: str = ""
    source: str = "default"
    token_header: str = "token"
    token_ttl_s: float = 1800.0
    renew_margin_s: float = 120.0
    poll_interval_s: float = 10.0
    timeout_s: float = 30.0
    origins: Mapping[str, Origin] = field(default_factory=dict, repr=False, compare=False)
    """Where each value came from (``load_config`` fills it): checks name a flag's or a variable's value as given."""

    def __post_init__(self) -> None:
        as_secrets(self, "password")

    def check(self) -> None:
        """Every problem, one line each."""
        problems = url_problems(self, "zuora", "https://<tenant>.revpro.cloud")
        problems += [f"[zuora] {name} is required" for name in ("user", "role", "clientname", "token_header") if not getattr(self, name)]
        problems += password_problems("zuora", "RevPro", self.password)
        if problems:
            raise ConfigError("\n".join(problems))

    def redactor(self) -> Redactor:
        return Redactor([self.password])


def fingerprint(queue: str, task: dict[str, Any]) -> str:
    """What makes a token's state new: everything but the ever-growing elapsed_time."""
    tracker = task.get("activity_tracker") if isinstance(task.get("activity_tracker"), dict) else {}
    parts = [queue, task.get("status"), task.get("accumulate"), task.get("metric"),
             tracker.get("last_activity"), task.get("message")]
    return hashlib.blake2b(orjson.dumps(parts, default=str), digest_size=8).hexdigest()


class ZuoraApi:
    """Authenticated calls to one RevPro tenant."""

    def __init__(self, settings: ZuoraSettings, http: aiohttp.ClientSession, redact: Redactor) -> None:
        self.settings = settings
        self.http = http
        self.redact = redact
        self._token: str | None = None
        self._token_at = 0.0

    async def call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,)) -> Answer:
        for renewed in (False, True):
            token = await self._auth_token(force=renewed)
            answer = await http_call(
                self.http, method, self.settings.base_url.rstrip("/") + path, what=what,
                timeout_s=self.settings.timeout_s, redact=self.redact, passthrough=(401,),
                headers={self.settings.token_header: token},
            )
            if answer.status == 405:
                raise TerminalError("Zuora answered 405: the BI Views API is not enabled for this tenant")
            if answer.status != 401:
                return answer
        raise TerminalError(f"{what}: HTTP 401 even with a fresh token")

    async def _auth_token(self, force: bool) -> str:
        age = time.monotonic() - self._token_at
        if self._token and not force and age < self.settings.token_ttl_s - self.settings.renew_margin_s:
            return self._token
        s = self.settings
        answer = await http_call(
            self.http, "POST", s.base_url.rstrip("/") + AUTH_PATH, what="Zuora authenticate", timeout_s=s.timeout_s,
            redact=self.redact, headers={"Authorization": basic_auth(s.user, s.password), "role": s.role, "clientname": s.clientname},
        )
        if answer.status == 405:
            raise TerminalError("Zuora answered 405: the BI Views API is not enabled for this tenant")
        token = answer.headers.get(s.token_header)
        if answer.status != 200 or not token:
            raise TerminalError(
                f"Zuora authenticate: HTTP {answer.status} without a {s.token_header!r} header "
                "(set token_header to the header your tenant uses)"
            )
        self.redact.add(token)
        self._token, self._token_at = token, time.monotonic()
        return token


class ZuoraSource(HttpPoller):
    """The ``PollingSource`` for one RevPro tenant."""

    vendor = VENDOR
    repeat = "the queues are read again"

    def __init__(self, settings: ZuoraSettings, http: aiohttp.ClientSession | None) -> None:
        super().__init__(settings, http)
        self.api = ZuoraApi(settings, http, self.redact)

    def initial_cursor(self) -> dict[str, Any]:
        return {"tasks": {}}

    async def poll_once(self, cursor: dict[str, Any]) -> Poll:
        received_at = receive_now()
        answer = await self.api.call("GET", STATUS_PATH, "biviews-status")
        current = self._queues(answer)
        ctx = Context(source=self.source, received_at=received_at)
        seen = observed_at(answer, received_at)
        before: dict[str, dict[str, Any]] = cursor["tasks"]
        after: dict[str, dict[str, Any]] = {}
        records: list[Record] = []
        for task_id, (queue, task) in current.items():
            mark = fingerprint(queue, task)
            after[task_id] = {"queue": queue, "fp": mark, "task": task}
            if before.get(task_id, {}).get("fp") != mark:
                records.extend(records_for(VENDOR, {queue: [{**task, "observed_at": seen}]}, ctx))
        for task_id, last in before.items():
            if task_id not in after:
                records.extend(await self._vanished(task_id, last, ctx))
        return Poll(records=records, cursor={"tasks": after}, next_in_s=self.settings.poll_interval_s)

    def _queues(self, answer: Answer) -> dict[str, tuple[str, dict[str, Any]]]:
        if answer.status != 200:
            raise BadAnswer(f"biviews-status: HTTP {answer.status}", body=answer.body)
        doc = answer.json("biviews-status")
        if isinstance(doc, dict) and isinstance(doc.get("result"), dict):
            doc = doc["result"]
        if not isinstance(doc, dict) or not any(queue in doc for queue in QUEUES):
            raise BadAnswer("biviews-status: the answer has none of the four queues", body=answer.body)
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for queue in QUEUES:
            members = doc.get(queue) or []
            for task in members if isinstance(members, list) else [members]:
                if isinstance(task, dict) and isinstance(task.get("task_id"), str):
                    found[task["task_id"]] = (queue, task)
        return found

    async def _vanished(self, task_id: str, last: dict[str, Any], ctx: Context) -> list[Record]:
        answer = await self.api.call("GET", f"{STATUS_PATH}/{task_id}", "biviews-status/<task_id>")
        if answer.status == 200:
            try:
                again = self._queues(answer).get(task_id)
            except BadAnswer:
                again = None
            if again is not None:
                queue, task = again
                if fingerprint(queue, task) == last["fp"]:
                    return []
                return records_for(VENDOR, {queue: [{**task, "observed_at": observed_at(answer, ctx.received_at)}]}, ctx)
        if last["queue"] not in ("active", "stale"):
            return []
        # drained when this call found it gone: not at the old snapshot's last activity
        task = {**last["task"], "message": f"token vanished from every queue (last seen {last['queue']})",
                "observed_at": observed_at(answer, ctx.received_at)}
        return records_for(VENDOR, {"draining": [task]}, ctx)


def observed_at(answer: Answer, received_at: datetime | None) -> str | None:
    """When an answer was given, on the vendor's clock (its ``Date`` header), else
    ``received_at``; ISO 8601 text."""
    vendor_time = header_date(answer.headers.get("Date"))
    if vendor_time is not None:
        return vendor_time.isoformat()
    return received_at.isoformat() if received_at is not None else None


run = ZuoraSource.run


async def cancel(settings: ZuoraSettings, task_id: str, *, attempts: int = 5, backoff: Backoff = Backoff(maximum_s=10.0)) -> str:
    """``pipeline zuora cancel``: DELETE the token's task (transient failures retried,
    Retry-After honoured); a line saying what happened."""
    redact = settings.redactor()
    async with aiohttp.ClientSession() as http:
        api = ZuoraApi(settings, http, redact)
        for attempt in range(1, attempts + 1):
            try:
                answer = await api.call("DELETE", f"{STATUS_PATH}/{task_id}", "cancel")
                break
            except TransientError as exc:
                if attempt == attempts:
                    raise
                await asyncio.sleep(backoff.delay(attempt, exc.retry_after))
    if answer.status == 404:
        raise TerminalError(f"Zuora knows no BI Views task {task_id!r} (HTTP 404)")
    if answer.status != 200:
        raise TerminalError(f"Zuora refused to cancel {task_id!r}: HTTP {answer.status} {redact(answer.body[:200].decode('utf-8', 'replace'))}")
    return f"cancelled BI Views task {task_id}"
