"""Apache Airflow poller: the stable REST API of Airflow 2 (``/api/v1``, HTTP Basic auth) and
Airflow 3 (``/api/v2``, a JWT from ``POST /auth/token``).

Each poll lists, page by page (``limit``/``offset`` up to ``total_entries``), what changed
since the last poll:

- ``GET <api>/dags/~/dagRuns?updated_at_gte=T`` (answer ``{"dag_runs": [...], "total_entries"}``),
- ``GET <api>/dags/~/dagRuns/~/taskInstances?updated_at_gte=T`` (``{"task_instances": [...]}``),
- ``GET <api>/eventLogs?after=T`` (``{"event_logs": [...]}``): only the entries that say
  something about a run's state (a zombie, a run marked failed or success by hand,
  ``normalize.relevant_log``) are sent.

``T`` is the vendor's own time (the ``Date`` header) at the previous poll minus
``overlap_s``, so a row written while a poll was under way, or a clock a second off, is read
again. Neither API version puts ``updated_at`` in the objects it returns, so the memory of what
was sent is (id, content digest): ``seen`` keeps the digest of every object the last window
returned, and an object is sent again only when its content changed (a new state, a new try,
a new end date). Ids: (dag_id, dag_run_id) for a DAG run, (dag_id, dag_run_id, task_id,
map_index) for a task instance, event_log_id for an audit-log entry.

Errors: 429 and 5xx back off (never sooner than Retry-After, ``pipeline.sources``); 401/403
end the ingestor with one line; with ``/api/v2`` a 401 first renews the token once (it
expires), and a second 401 is terminal. A body that is not the API's shape is sent unkeyed
(to be dead-lettered with its reason) and the window is read again. The password and the
token never reach a log line (``Redactor``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp
import orjson

from pipeline.model import UTC
from pipeline.sources import (
    Answer, BadAnswer, Backoff, ConfigError, Poll, Record, Redactor, TerminalError, basic_auth,
    http_call, password_problems, records_for, run_source,
)
from pipeline.vendors import Context
from pipeline.vendors._common import receive_now
from pipeline.vendors.airflow.normalize import relevant_log

VENDOR = "airflow"
API_PREFIX = {"v1": "/api/v1", "v2": "/api/v2"}
TOKEN_PATH = "/auth/token"
DAG_RUNS_PATH = "/dags/~/dagRuns"
TASK_INSTANCES_PATH = "/dags/~/dagRuns/~/taskInstances"
EVENT_LOGS_PATH = "/eventLogs"
LISTINGS = (  # (path, collection key, filter parameter, what)
    (DAG_RUNS_PATH, "dag_runs", "updated_at_gte", "Airflow DAG runs"),
    (TASK_INSTANCES_PATH, "task_instances", "updated_at_gte", "Airflow task instances"),
    (EVENT_LOGS_PATH, "event_logs", "after", "Airflow audit log"),
)
log = logging.getLogger("pipeline.ingest.airflow")


@dataclass(frozen=True, slots=True)
class AirflowSettings:
    """``[airflow]`` in the config file, ``JOBSTREAM_AIRFLOW_*`` in the env (the password only
    from ``JOBSTREAM_AIRFLOW_PASSWORD`` or ``password_file``)."""

    SECRETS: ClassVar[tuple[str, ...]] = ("password",)

    base_url: str = ""
    api_version: str = "v2"
    user: str = ""
    password: str = ""
    source: str = ""
    page_size: int = 100
    poll_interval_s: float = 15.0
    overlap_s: float = 30.0
    lookback_s: float = 86400.0
    read_audit_log: bool = True
    timeout_s: float = 30.0

    def check(self) -> None:
        """Every problem, one line each."""
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append("[airflow] base_url must be an http(s) URL, e.g. https://airflow.example.com")
        if self.api_version not in API_PREFIX:
            problems.append(f"[airflow] api_version must be v1 (Airflow 2, basic auth) or v2 (Airflow 3, JWT), got {self.api_version!r}")
        if not self.source:
            problems.append("[airflow] source is required (it names the Airflow instance in every job key)")
        if not self.user:
            problems.append("[airflow] user is required")
        problems += password_problems("airflow", "Airflow", self.password)
        if not 1 <= self.page_size <= 1000:
            problems.append("[airflow] page_size must be 1..1000 (Airflow caps limit at maximum_page_limit, 100 by default)")
        if self.overlap_s < 0 or self.poll_interval_s <= 0:
            problems.append("[airflow] overlap_s must not be negative and poll_interval_s must be positive")
        if problems:
            raise ConfigError("\n".join(problems))

    def redactor(self) -> Redactor:
        return Redactor([self.password])


def airflow_time(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``, as both API versions read date-time filters."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def digest(item: Any) -> str:
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def item_id(collection: str, item: dict[str, Any]) -> str:
    """The identity an object keeps across its updates (see the module docstring)."""
    if collection == "event_logs":
        return f"log:{item.get('event_log_id')}"
    if collection == "dag_runs":
        return f"dr:{item.get('dag_id')}\x1f{item.get('dag_run_id')}"
    return f"ti:{item.get('dag_id')}\x1f{item.get('dag_run_id')}\x1f{item.get('task_id')}\x1f{item.get('map_index', -1)}"


class AirflowApi:
    """Calls to one Airflow API server with its auth: Basic for v1, a bearer JWT for v2."""

    def __init__(self, settings: AirflowSettings, http: aiohttp.ClientSession, redact: Redactor) -> None:
        self.settings = settings
        self.http = http
        self.redact = redact
        self.root = settings.base_url.rstrip("/")
        self.prefix = API_PREFIX[settings.api_version]
        self.token: str | None = None
        self.vendor_now: datetime | None = None

    async def _authorization(self) -> str:
        if self.settings.api_version == "v1":
            return basic_auth(self.settings.user, self.settings.password)
        if self.token is None:
            await self._renew_token()
        return f"Bearer {self.token}"

    async def _renew_token(self) -> None:
        answer = await http_call(
            self.http, "POST", self.root + TOKEN_PATH, what="Airflow token", timeout_s=self.settings.timeout_s,
            redact=self.redact, json={"username": self.settings.user, "password": self.settings.password},
        )
        if answer.status not in (200, 201):
            raise TerminalError(f"Airflow token: HTTP {answer.status} from POST {TOKEN_PATH} (is this an Airflow 3 API server?)")
        body = answer.json("Airflow token")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadAnswer("Airflow token: the answer has no access_token", body=answer.body)
        self.token = token
        self.redact.add(token)

    async def get(self, path: str, params: dict[str, Any], what: str) -> Answer:
        """One GET; with v2 an expired token (401) is renewed once, and a second 401 is terminal."""
        renewable = self.settings.api_version == "v2"
        answer = await self._get(path, params, what, passthrough=(401,) if renewable else ())
        if answer.status == 401:
            self.token = None
            answer = await self._get(path, params, what, passthrough=())
        self._note_date(answer)
        return answer

    async def _get(self, path: str, params: dict[str, Any], what: str, *, passthrough: tuple[int, ...]) -> Answer:
        return await http_call(
            self.http, "GET", self.root + self.prefix + path, what=what, timeout_s=self.settings.timeout_s,
            redact=self.redact, params=params, headers={"Authorization": await self._authorization()},
            passthrough=passthrough,
        )

    def _note_date(self, answer: Answer) -> None:
        """The vendor's time at the first answer of a poll (the next window starts there)."""
        date = answer.headers.get("Date")
        if date and self.vendor_now is None:
            try:
                self.vendor_now = parsedate_to_datetime(date).astimezone(UTC)
            except (TypeError, ValueError, IndexError):
                pass

    async def listing(self, path: str, collection: str, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
        """Every object of a list endpoint, page by page. The next offset counts the distinct
        objects read so far (a page that repeats one did not skip one) and the end is
        ``total_entries``: a server whose ``maximum_page_limit`` is below ``page_size``
        answers shorter pages that are not the last."""
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = await self.get(path, {**params, "limit": self.settings.page_size, "offset": offset}, what)
            if answer.status != 200:
                raise BadAnswer(f"{what}: HTTP {answer.status}", body=answer.body)
            body = answer.json(what)
            page = body.get(collection) if isinstance(body, dict) else None
            if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
                raise BadAnswer(f"{what}: the answer has no {collection!r} list of objects", body=answer.body)
            items.extend(page)
            offset += len({item_id(collection, item) for item in page})
            total = body.get("total_entries")
            if not page or (offset >= total if isinstance(total, int) else len(page) < self.settings.page_size):
                return items


class AirflowSource:
    """The ``PollingSource`` for one Airflow instance."""

    vendor = VENDOR

    def __init__(self, settings: AirflowSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.source = settings.source
        self.redact = settings.redactor()
        self.api = AirflowApi(settings, http, self.redact)

    @property
    def cursor_key(self) -> str:
        return f"airflow:{self.source}"

    def initial_cursor(self) -> dict[str, Any]:
        since = receive_now() - timedelta(seconds=self.settings.lookback_s)
        return {"mark": since.isoformat(), "seen": {}}

    async def poll(self, cursor: dict[str, Any]) -> Poll:
        since = datetime.fromisoformat(cursor["mark"]) - timedelta(seconds=self.settings.overlap_s)
        self.api.vendor_now = None
        polled_at = receive_now()
        found: list[tuple[str, dict[str, Any]]] = []
        try:
            for path, collection, parameter, what in LISTINGS:
                if collection == "event_logs" and not self.settings.read_audit_log:
                    continue
                items = await self.api.listing(path, collection, {parameter: airflow_time(since)}, what)
                found.extend((collection, item) for item in items)
        except BadAnswer as exc:
            log.warning("%s: %s; the body goes to the dead letters and the window is read again", self.cursor_key, exc)
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
            return Poll(records=[Record(key=None, payload=body, received_at=receive_now())], cursor=cursor,
                        next_in_s=min(self.settings.poll_interval_s, 5.0))
        return self._plan(found, cursor, self.api.vendor_now or polled_at)

    def _plan(self, found: list[tuple[str, dict[str, Any]]], cursor: dict[str, Any], mark: datetime) -> Poll:
        """Records for what is new or changed, and the cursor after this window."""
        ctx = Context(source=self.source, received_at=receive_now())
        seen: dict[str, str] = cursor["seen"]
        kept: dict[str, str] = {}
        records: list[Record] = []
        for collection, item in found:
            identity, content = item_id(collection, item), digest(item)
            if collection == "event_logs" and not relevant_log(item):
                continue  # an audit entry about something else: not sent, not remembered
            if content in (seen.get(identity), kept.get(identity)):
                kept[identity] = content
                continue  # sent before, or repeated in this answer
            kept[identity] = content
            records.extend(records_for(VENDOR, item, ctx))
        return Poll(records=records, cursor={"mark": mark.isoformat(), "seen": kept},
                    next_in_s=self.settings.poll_interval_s)


async def run(settings: AirflowSettings, bootstrap: str, *, stop: asyncio.Event) -> None:
    """``pipeline ingest airflow``: poll until ``stop``."""
    async with aiohttp.ClientSession() as http:
        source = AirflowSource(settings, http)
        await run_source(source, bootstrap, stop=stop, redact=source.redact, backoff=Backoff(maximum_s=60.0))
