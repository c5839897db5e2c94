"""Informatica CIH poller: ``POST /dih-console/api/v1/events`` by CUSTOM time window.

Each poll reads the window [from, to] page by page (``firstResult``/``maxResults``)
inside the organization's budget of 5 calls a minute (``CallBudget``; a 429's
Retry-After blocks every call until the time it names). ``to`` is the vendor's own
clock, from the ``Date`` header of its last answer, minus ``settle_s``. Events come
with their subscriptions nested in ``childEvents``; each event (children included) is
its own raw record, keyed by its job.

The cursor ``{"from", "seen"}``: ``from`` stays at the createTime of the oldest event
that is not finished (it or a child still moving, or ended less than ``child_grace_s``
ago: CIH creates subscription events after their publication ended), so a window is read again until
everything in it ended; ``seen`` maps each event id in the window to a hash of the
content last sent, so an event is sent again only when its content changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import aiohttp

from pipeline.config.secret import Secret, as_secrets
from pipeline.model import UTC
from pipeline.sources import (
    BadAnswer, CallBudget, ConfigError, OffsetPaginator, Poll, Record, Redactor, TerminalError, TransientError, basic_auth,
    http_call, password_problems, records_for,
)
from pipeline.vendors import Context
from pipeline.vendors._common import content_digest, header_date, parse_time, receive_now, utc_millis
from pipeline.config.resolver import Origin, named
from pipeline.vendors._poller import HttpPoller, url_problems

VENDOR = "informatica"
EVENTS_PATH = "/dih-console/api/v1/events"
EVENT_PATH = "/dih-console/api/v1/event"
TERMINAL = ("Complete", "Completed", "Error", "Discarded")


@dataclass(frozen=True, slots=True)
class InformaticaSettings:
    """``[informatica]`` in the config file, ``JOBSTREAM_INFORMATICA_*`` in the env."""

    SECRETS: ClassVar[tuple[str, ...]] = ("password",)

    base_url: str = ""
    user: str = ""
    password: Secret | None = None
    source: str = "default"
    application: str = ""
    topic: str = ""
    event_type: str = "ALL"
    page_size: int = 500
    calls: int = 5
    per_s: float = 60.0
    poll_interval_s: float = 60.0
    lookback_s: float = 3600.0
    settle_s: float = 5.0
    child_grace_s: float = 300.0
    timeout_s: float = 30.0
    origins: Mapping[str, Origin] = field(default_factory=dict, repr=False, compare=False)
    """Where each value came from (``load_config`` fills it): checks name a flag's or a variable's value as given."""

    def __post_init__(self) -> None:
        as_secrets(self, "password")

    def check(self) -> None:
        """Every problem, one line each."""
        problems = url_problems(self, "informatica", "https://<pod>.dih.informaticacloud.com")
        if not self.user:
            problems.append("[informatica] user is required (the IICS user)")
        problems += password_problems("informatica", "IICS", self.password)
        if not 1 <= self.page_size <= 2000:
            problems.append(f"{named(self, 'page_size', '[informatica]')} must be 1..2000 (the API's maxResults)")
        if self.calls < 1 or self.per_s <= 0:
            problems.append("[informatica] calls and per_s must be positive")
        if problems:
            raise ConfigError("\n".join(problems))

    def redactor(self) -> Redactor:
        return Redactor([self.password])


cih_time = utc_millis
"""``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC, as the API writes and reads times."""


def parse_cih_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(text)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


content_hash = content_digest


class InformaticaSource(HttpPoller):
    """The ``PollingSource`` for one CIH organization."""

    vendor = VENDOR

    def __init__(self, settings: InformaticaSettings, http: aiohttp.ClientSession | None) -> None:
        super().__init__(settings, http)
        self.budget = CallBudget(settings.calls, settings.per_s)
        self.paginator = OffsetPaginator(settings.page_size)
        self.auth = {"Authorization": basic_auth(settings.user, settings.password)}
        self.vendor_now: datetime | None = None

    def initial_cursor(self) -> dict[str, Any]:
        start = receive_now() - timedelta(seconds=self.settings.lookback_s)
        return {"from": cih_time(start), "seen": {}}

    def window_end(self) -> datetime:
        """The vendor's now as its last Date header said (else ours), minus settle_s."""
        now = self.vendor_now or receive_now()
        return now - timedelta(seconds=self.settings.settle_s)

    async def poll_once(self, cursor: dict[str, Any]) -> Poll:
        start = parse_cih_time(cursor["from"])
        end = self.window_end()
        if end < start:
            return Poll(records=[], cursor=cursor, next_in_s=self.settings.poll_interval_s)
        return self._plan(await self._read_window(start, end), cursor, end)

    def _plan(self, events: list[dict[str, Any]], cursor: dict[str, Any], end: datetime) -> Poll:
        """Records for what changed, and the cursor after this window."""
        received_at = receive_now()
        ctx = Context(source=self.source, received_at=received_at)
        seen: dict[str, str] = cursor["seen"]
        kept: dict[str, str] = {}
        records: list[Record] = []
        oldest_open = end
        by_id = {str(event.get("eventId")): event for event in events}  # the API's repeats, once
        for event in by_id.values():
            created = parse_time(event["createTime"], field="createTime")
            if not _finished(event, end - timedelta(seconds=self.settings.child_grace_s)):
                oldest_open = min(oldest_open, created)
            for record in records_for(VENDOR, event, ctx):
                event_id = str(record.payload.get("eventId")) if isinstance(record.payload, dict) else None
                digest = content_hash(record.payload)
                if event_id is not None:
                    unchanged = digest in (seen.get(event_id), kept.get(event_id))
                    kept[event_id] = digest  # remembered while the window reads it, sent or not
                    if unchanged:
                        continue  # sent before, or twice in this answer (nested and top-level)
                records.append(record)
        # Keep the hashes of every event the next window will read again.
        next_from = oldest_open
        kept = {
            event_id: digest for event_id, digest in kept.items()
            if event_id not in by_id or parse_time(by_id[event_id]["createTime"], field="createTime") >= next_from
        }
        return Poll(
            records=records, cursor={"from": cih_time(next_from), "seen": kept},
            next_in_s=self.settings.poll_interval_s,
        )

    async def _read_window(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "timeframe": {"range": "CUSTOM", "fromDate": cih_time(start), "toDate": cih_time(end)},
            "eventType": self.settings.event_type,
            "useExactMatch": True,
        }
        for name, value in (("applicationName", self.settings.application), ("topicName", self.settings.topic)):
            if value:
                body[name] = value
        events: list[dict[str, Any]] = []
        params: dict[str, int] | None = self.paginator.first()
        while params is not None:
            page = await self._call({**body, **params})
            events.extend(page)
            params = self.paginator.next(params, len(page))
        return events

    async def _call(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        await self.budget.acquire()
        try:
            answer = await http_call(
                self.http, "POST", self.settings.base_url.rstrip("/") + EVENTS_PATH, what="CIH events",
                timeout_s=self.settings.timeout_s, redact=self.redact, json=body, headers=self.auth,
            )
        except TransientError as exc:
            if exc.retry_after is not None:
                self.budget.block_for(exc.retry_after)
            raise
        finally:
            self.budget.spent()
        self.vendor_now = header_date(answer.headers.get("Date")) or self.vendor_now
        if answer.status == 400:
            raise TerminalError(f"CIH events refused the query: HTTP 400 {answer.body[:200].decode('utf-8', 'replace')}")
        if answer.status != 200:
            raise BadAnswer(f"CIH events: HTTP {answer.status}", body=answer.body)
        page = answer.json("CIH events")
        if isinstance(page, dict):  # a wrapper object, as the normalizer also accepts
            page = next((page[k] for k in ("events", "eventDetails", "content", "data") if isinstance(page.get(k), list)), page)
        if not isinstance(page, list) or not all(isinstance(item, dict) and "eventId" in item and "createTime" in item for item in page):
            raise BadAnswer("CIH events: the answer is not a list of events", body=answer.body)
        return page


def _finished(event: dict[str, Any], settled_before: datetime) -> bool:
    """Whether an event and all its children ended, ``child_grace_s`` ago at least
    (CIH creates a publication's subscription events after the publication ended)."""
    if event.get("eventStatus") not in TERMINAL:
        return False
    completed = parse_time(event.get("completionTime"), field="completionTime")
    if completed is None or completed > settled_before:
        return False
    return all(_finished(child, settled_before) for child in event.get("childEvents") or [] if isinstance(child, dict))


run = InformaticaSource.run
