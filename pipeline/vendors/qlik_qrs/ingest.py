"""Qlik Sense QRS poller: execution results by a modifiedDate watermark, execution
sessions by change, and ``--start-task``.

Every request carries a fresh 16-character ``xrfkey`` as query parameter and
``X-Qlik-Xrfkey`` header, and ``X-Qlik-User``; with ``cert_file``/``key_file`` (and
``ca_file``) the client certificate authenticates, as QRS on port 4242 requires.

A poll reads ``/qrs/executionresult/full?filter=modifiedDate ge '<mark - overlap>'``
and sends each result not sent yet at its modifiedDate, one record per result, in
modifiedDate order (so the worker's lifecycle numbers the retries: several results of
one session are retries, in the order QRS changed them, whatever the answer's order),
then ``/qrs/executionsession/full`` and sends each session whose modifiedDate changed.
A session that left the list has ended; its outcome is in its results (the normalizer
turns no "vanished" record into an event, so none is sent). The cursor holds the
watermark and the sessions' modifiedDates.

``--start-task ID``: ``POST /qrs/task/{id}/start/synchronous`` and send the start
record; the empty GUID means QRS did not start the task (the record says so, the
command fails with one line); otherwise follow ``/qrs/executionsession/{guid}`` until
it answers 404, then send the session's results (``filter=executionID eq <guid>``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import aiohttp

from pipeline.model import UTC
from pipeline.sources import (
    Answer, BadAnswer, Backoff, ConfigError, Poll, RawProducer, Record, Redactor, TerminalError, TransientError,
    Watermark, http_call, records_for, run_source,
)
from pipeline.vendors import Context
from pipeline.vendors._common import parse_time, receive_now

VENDOR = "qlik_qrs"
log = logging.getLogger("pipeline.ingest.qlik_qrs")
_XRF_ALPHABET = string.ascii_letters + string.digits
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"  # "the task did not start"


def qrs_time(value: datetime) -> str:
    """QRS's own time format, as its filters read it: ``2026-09-23T12:00:00.000Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class QrsSettings:
    """``[qlik_qrs]`` in the config file, ``JOBSTREAM_QLIK_QRS_*`` in the env. The
    certificate files are paths; the key file is read by the TLS layer, never logged."""

    SECRETS: ClassVar[tuple[str, ...]] = ()

    base_url: str = ""
    source: str = ""
    user_header: str = "UserDirectory=INTERNAL; UserId=sa_repository"
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    poll_interval_s: float = 15.0
    overlap_s: float = 5.0
    lookback_s: float = 86400.0
    follow_interval_s: float = 2.0
    timeout_s: float = 30.0

    def check(self) -> None:
        """Every problem, one line each; the certificate files are loaded here, so an
        unreadable one is a config error at start, not at the first poll."""
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append("[qlik_qrs] base_url must be an http(s) URL, e.g. https://qlik.example.com:4242")
        if not self.source:
            problems.append("[qlik_qrs] source is required (the repository host, it names the jobs)")
        if bool(self.cert_file) != bool(self.key_file):
            problems.append("[qlik_qrs] cert_file and key_file go together")
        else:
            try:
                self.ssl_context()
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))

    def redactor(self) -> Redactor:
        return Redactor()

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.cert_file:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[qlik_qrs] cannot load the client certificate: {exc}") from None
        return context


class QrsApi:
    def __init__(self, settings: QrsSettings, http: aiohttp.ClientSession, redact: Redactor) -> None:
        self.settings = settings
        self.http = http
        self.redact = redact
        self.ssl = settings.ssl_context()

    async def call(self, method: str, path: str, what: str, filter_text: str | None = None) -> Answer:
        key = "".join(secrets.choice(_XRF_ALPHABET) for _ in range(16))
        params = {"xrfkey": key, **({"filter": filter_text} if filter_text else {})}
        headers = {"X-Qlik-Xrfkey": key, "X-Qlik-User": self.settings.user_header}
        return await http_call(
            self.http, method, self.settings.base_url.rstrip("/") + path, what=what, timeout_s=self.settings.timeout_s,
            redact=self.redact, params=params, headers=headers, **({"ssl": self.ssl} if self.ssl else {}),
        )

    async def entities(self, path: str, what: str, filter_text: str | None = None) -> list[dict[str, Any]]:
        answer = await self.call("GET", path, what, filter_text)
        if answer.status != 200:
            raise BadAnswer(f"{what}: HTTP {answer.status}", body=answer.body)
        items = answer.json(what)
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("id"), str) and isinstance(i.get("modifiedDate"), str) for i in items
        ):
            raise BadAnswer(f"{what}: the answer is not a list of entities with id and modifiedDate", body=answer.body)
        return items


class QrsSource:
    """The ``PollingSource`` for one QRS repository."""

    vendor = VENDOR

    def __init__(self, settings: QrsSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.source = settings.source
        self.redact = settings.redactor()
        self.api = QrsApi(settings, http, self.redact)

    @property
    def cursor_key(self) -> str:
        return f"qlik_qrs:{self.source}"

    def initial_cursor(self) -> dict[str, Any]:
        mark = receive_now() - timedelta(seconds=self.settings.lookback_s)
        return {"mark": mark.isoformat(), "seen": {}, "sessions": {}}

    async def poll(self, cursor: dict[str, Any]) -> Poll:
        received_at = receive_now()
        watermark = Watermark(mark=datetime.fromisoformat(cursor["mark"]) if cursor["mark"] else None, seen=cursor["seen"])
        since = watermark.query_from(self.settings.overlap_s)
        try:
            results = await self.api.entities(
                "/qrs/executionresult/full", "QRS execution results",
                f"modifiedDate ge '{qrs_time(since)}'" if since else None,
            )
            sessions = await self.api.entities("/qrs/executionsession/full", "QRS execution sessions")
        except BadAnswer as exc:
            log.warning("%s: %s; the body goes to the dead letters and the poll is repeated", self.cursor_key, exc)
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
            return Poll(records=[Record(key=None, payload=body, received_at=received_at)], cursor=cursor,
                        next_in_s=min(self.settings.poll_interval_s, 5.0))
        ctx = Context(source=self.source, received_at=received_at)
        stamps = [(r["id"], parse_time(r["modifiedDate"], field="modifiedDate") or received_at) for r in results]
        new, watermark = watermark.admit(stamps, self.settings.overlap_s)
        records = [record for result in in_change_order([results[index] for index in new], received_at)
                   for record in records_for(VENDOR, result, ctx)]
        known: dict[str, str] = cursor["sessions"]
        current = {session["id"]: session for session in sessions}
        for session_id, session in current.items():
            if known.get(session_id) != session["modifiedDate"]:
                records.extend(records_for(VENDOR, session, ctx))
        return Poll(
            records=records,
            cursor={"mark": watermark.mark.isoformat() if watermark.mark else None, "seen": watermark.seen,
                    "sessions": {i: s["modifiedDate"] for i, s in current.items()}},
            next_in_s=self.settings.poll_interval_s,
        )


def in_change_order(results: list[dict[str, Any]], received_at: datetime) -> list[dict[str, Any]]:
    """Execution results by modifiedDate (stable; none: when received). QRS lists in no
    promised order, and the worker numbers the results of one execution as retries in
    arrival order (lifecycle R7, R15): a success sent before the failure it retried made
    the failure a late copy (one attempt, no failure)."""
    return sorted(results, key=lambda result: parse_time(result["modifiedDate"], field="modifiedDate") or received_at)


async def run(settings: QrsSettings, bootstrap: str, *, stop: asyncio.Event, start_task: str | None = None) -> None:
    """``pipeline ingest qlik-qrs``: poll until ``stop``, or start one task and follow it."""
    async with aiohttp.ClientSession() as http:
        if start_task:
            await start_and_follow(settings, http, bootstrap, start_task, stop=stop)
            return
        source = QrsSource(settings, http)
        await run_source(source, bootstrap, stop=stop, redact=source.redact, backoff=Backoff(maximum_s=60.0))


async def start_and_follow(
    settings: QrsSettings, http: aiohttp.ClientSession, bootstrap: str, task_id: str, *, stop: asyncio.Event,
    backoff: Backoff = Backoff(maximum_s=30.0),
) -> None:
    api = QrsApi(settings, http, settings.redactor())
    ctx = lambda: Context(source=settings.source, received_at=receive_now())  # noqa: E731

    async def retried(what: str, call: Any) -> Any:
        failures = 0
        while True:
            try:
                return await call()
            except (TransientError, BadAnswer) as exc:
                failures += 1
                wait = backoff.delay(failures, getattr(exc, "retry_after", None))
                log.warning("%s: %s; retrying in %.1f s", what, exc, wait)
                await asyncio.sleep(wait)

    async with RawProducer(bootstrap, VENDOR, settings.source) as producer:
        answer = await retried("start", lambda: api.call("POST", f"/qrs/task/{task_id}/start/synchronous", "QRS start task"))
        if answer.status == 404:
            raise TerminalError(f"QRS knows no task {task_id} (HTTP 404)")
        body = answer.json("QRS start task") if answer.status == 200 else None
        guid = body.get("value") if isinstance(body, dict) else body
        if not isinstance(guid, str):
            raise TerminalError(f"QRS start task answered HTTP {answer.status} without a session id")
        start_doc = {"taskId": task_id, "value": guid, "host": settings.source, "time": receive_now().isoformat()}
        await producer.send(records_for(VENDOR, start_doc, ctx()))
        if guid == EMPTY_GUID:
            raise TerminalError(f"QRS did not start task {task_id} (empty GUID: disabled, no scheduler, or the app is unavailable)")
        log.info("task %s started: execution session %s", task_id, guid)
        last_modified = None
        while not stop.is_set():
            answer = await retried("session", lambda: api.call("GET", f"/qrs/executionsession/{guid}", "QRS execution session"))
            if answer.status == 404:
                break
            session = answer.json("QRS execution session")
            if isinstance(session, dict) and session.get("modifiedDate") != last_modified:
                last_modified = session.get("modifiedDate")
                await producer.send(records_for(VENDOR, session, ctx()))
            try:
                await asyncio.wait_for(stop.wait(), settings.follow_interval_s)
            except asyncio.TimeoutError:
                pass
        if stop.is_set():
            return
        results = await retried("results", lambda: api.entities(
            "/qrs/executionresult/full", "QRS execution results", f"executionID eq {guid}",
        ))
        context = ctx()
        await producer.send(records_for(VENDOR, in_change_order(results, context.received_at), context))
        log.info("execution session %s ended with %d result(s)", guid, len(results))
