"""Informatica Cloud Integration Hub events API, simulated over real HTTP.

Speaks what the CIH REST API reference documents (docs/design.md, "Vendor protocols", the
Japanese seed): ``POST /dih-console/api/v1/events`` with Basic auth and the JSON body
``{applicationName, topicName, pubSubName, timeframe: {range, fromDate, toDate},
firstResult, maxResults, useExactMatch, eventType, eventStatus}``, answering a list of
events (publications with their subscriptions nested in ``childEvents``), sorted by
eventId so offset paging is stable; ``GET /dih-console/api/v1/event/{eventId}`` for one
event; 5 accepted calls per minute per organization, then 429 TOO_MANY_REQUESTS with
``Retry-After: <seconds>``. Every ``Date`` header is vendor time, the clock the poller
takes its window ends from.

The CUSTOM window selects events by ``createTime`` (fromDate <= createTime <= toDate):
the documentation does not say which time it filters on; createTime is the one every
event has.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.vendors._simulator import REQUEST_BODY, Faults, SimClock, Simulator
from pipeline.vendors.informatica.ingest import EVENT_PATH, EVENTS_PATH, TERMINAL, cih_time, parse_cih_time

RANGES = {"LAST_HOUR": 3600, "LAST_DAY": 86400, "LAST_WEEK": 7 * 86400, "LAST_MONTH": 31 * 86400, "CUSTOM": None}
EVENT_TYPES = ("ALL", "PUBLICATION", "SUBSCRIPTION")


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float  # vendor seconds after the simulator's epoch
    status: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """One CIH event's life: its status steps in vendor time, its counts once done."""

    event_id: int
    event_type: str
    application: str
    topic: str
    pub_sub: str
    steps: tuple[Step, ...]
    rows: int = 0
    run_id: str = ""
    children: tuple["ScriptedEvent", ...] = ()

    @property
    def created_s(self) -> float:
        return self.steps[0].at_s

    def view(self, clock: SimClock, now_s: float, parent_id: int | None = None) -> dict[str, Any] | None:
        """The event as the API shows it at vendor second ``now_s`` (None: not yet created)."""
        steps = [step for step in self.steps if step.at_s <= now_s]
        if not steps:
            return None
        status = steps[-1].status
        done = status in TERMINAL
        children = [c for c in (child.view(clock, now_s, self.event_id) for child in self.children) if c]
        child_states = {c["eventStatus"] for c in children}
        descendant = "NONE" if not children else (
            "ERROR" if "Error" in child_states
            else "PROCESSING" if child_states - set(TERMINAL) else "COMPLETED"
        )
        failed = status == "Error"
        event: dict[str, Any] = {
            "eventId": self.event_id,
            "createTime": cih_time(clock.at(self.created_s)),
            "completionTime": cih_time(clock.at(steps[-1].at_s)) if done else None,
            "eventType": self.event_type,
            "eventStatus": status,
            "descendantState": descendant,
            "applicationName": self.application,
            "pubSubName": self.pub_sub,
            "topicName": self.topic,
            "sourceSuccessCount": self.rows if done and not failed else 0,
            "sourceFailedCount": self.rows if failed else 0,
            "targetSuccessCount": self.rows if done and not failed else 0,
            "targetFailedCount": self.rows if failed else 0,
            "runId": self.run_id,
            "eventHistory": [
                {"eventId": self.event_id, "timeStamp": cih_time(clock.at(step.at_s)),
                 "eventStatusName": step.status, "comments": step.comment}
                for step in steps
            ],
        }
        if parent_id is not None:
            event["parentEventId"] = parent_id
        if children:
            event["childEvents"] = children
        return event

    def finished_s(self) -> float:
        return max([self.steps[-1].at_s, *(child.finished_s() for child in self.children)])


def scenario(groups: int = 2, *, period_s: float = 120.0, first_id: int = 32010) -> list[ScriptedEvent]:
    """``groups`` rounds of the scenarios CIH shows: a publication and its subscription
    that both complete; a subscription that fails under a completed publication (the
    seed); a failed publication; a delayed subscription and a discarded one."""
    events: list[ScriptedEvent] = []
    next_id = first_id

    def ids() -> int:
        nonlocal next_id
        next_id += 1
        return next_id - 1

    for group in range(groups):
        t = group * period_s
        pub = ids()
        events.append(ScriptedEvent(
            pub, "PUBLICATION", "DI_App", "DI_Topic", "Orders_Pub",
            (Step(t, "Processing"), Step(t + 30, "Complete", "Publishing to topic completed successfully")),
            rows=120, run_id=str(group * 3 + 1),
            children=(ScriptedEvent(
                ids(), "SUBSCRIPTION", "DI_App", "DI_Topic", "Orders_Sub",
                (Step(t + 31, "Pending"), Step(t + 33, "Processing"),
                 Step(t + 60, "Completed", "Subscription to topic completed")),
                rows=120, run_id=str(group * 3 + 2),
            ),),
        ))
        pub = ids()
        events.append(ScriptedEvent(
            pub, "PUBLICATION", "DI_App", "DI_Topic", "DSS_Pub",
            (Step(t + 5, "Processing"), Step(t + 45, "Complete", "Publishing to topic completed successfully")),
            rows=1, run_id=str(group * 3 + 3),
            children=(
                ScriptedEvent(
                    ids(), "SUBSCRIPTION", "DI_App", "DI_Topic", "DSS_Sub",
                    (Step(t + 46, "Processing"), Step(t + 70, "Error", "Subscription to topic failed. The job failed.")),
                ),
                ScriptedEvent(
                    ids(), "SUBSCRIPTION", "DI_App", "DI_Topic", "DSS_Sub_Archive",
                    (Step(t + 46, "Delayed"), Step(t + 50, "Discarded", "Discarded: a newer event is processed")),
                ),
            ),
        ))
        events.append(ScriptedEvent(
            ids(), "PUBLICATION", "Billing", "Invoices", "Invoice_Pub",
            (Step(t + 10, "Processing"), Step(t + 25, "Error", "Publication failed: source connection refused")),
        ))
    return events


@dataclass(slots=True)
class RateLimit:
    """``calls`` accepted calls per ``per_s`` real seconds, then 429 with Retry-After."""

    calls: int = 5
    per_s: float = 60.0
    accepted: list[float] = field(default_factory=list)

    def retry_after(self) -> int | None:
        now = time.monotonic()
        self.accepted = [t for t in self.accepted if t > now - self.per_s]
        if len(self.accepted) < self.calls:
            self.accepted.append(now)
            return None
        return max(1, math.ceil(self.accepted[-self.calls] + self.per_s - now))


class InformaticaSimulator(Simulator):
    def __init__(
        self, events: list[ScriptedEvent] | None = None, *, user: str = "iics-user", password: str = "iics-password",
        clock: SimClock | None = None, faults: Faults | None = None, rate_limit: RateLimit | None = None,
    ) -> None:
        super().__init__(clock, faults)
        self.events = scenario() if events is None else events
        self.rate_limit = rate_limit or RateLimit()
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(EVENTS_PATH, self.list_events), web.get(EVENT_PATH + "/{event_id}", self.one_event)]

    def final_views(self) -> list[dict[str, Any]]:
        """Every event as it ends (for tests: what a poller must have sent last)."""
        end = max(event.finished_s() for event in self.events) + 1
        return [view for event in self.events if (view := event.view(self.clock, end))]

    def _answer(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=orjson.dumps(body), status=status, content_type="application/json",
            headers={"Date": format_datetime(self.clock.now(), usegmt=True), **(headers or {})},
        )

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != self._auth:
            return self._answer({"responseCode": "UNAUTHORIZED", "message": "Invalid user name or password"}, 401)
        wait = self.rate_limit.retry_after()
        if wait is not None:
            return self._answer(
                {"responseCode": "TOO_MANY_REQUESTS", "message": "Too many requests"}, 429, {"Retry-After": str(wait)},
            )
        return None

    async def list_events(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
            query = self._query(body)
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            return self._answer({"responseCode": "BAD_REQUEST", "message": f"Invalid request: {exc}"}, 400)
        REQUEST_BODY.set(body)
        now_s = self.clock.elapsed()
        found = []
        for event in self.events:
            view = event.view(self.clock, now_s)
            if view is not None and self._matches(view, query):
                found.append(view)
        page = found[query["first"]: query["first"] + query["max"]]
        return self._answer(self.shaped(page))

    async def one_event(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        now_s = self.clock.elapsed()
        wanted = request.match_info["event_id"]
        for event in self.events:
            view = event.view(self.clock, now_s)
            for candidate in [view, *((view or {}).get("childEvents") or [])]:
                if candidate and str(candidate["eventId"]) == wanted:
                    return self._answer(candidate)
        return self._answer({"responseCode": "NOT_FOUND", "message": f"Event {wanted} not found"}, 404)

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        timeframe = body.get("timeframe") or {"range": "LAST_HOUR"}
        kind = timeframe["range"]
        if kind not in RANGES:
            raise ValueError(f"timeframe.range must be one of {', '.join(RANGES)}")
        if kind == "CUSTOM":
            start, end = parse_cih_time(timeframe["fromDate"]), parse_cih_time(timeframe["toDate"])
        else:
            end = self.clock.now()
            start = end - timedelta(seconds=RANGES[kind])
        first = int(body.get("firstResult", 0))
        maximum = int(body.get("maxResults", 2000))
        if first < 0 or not 1 <= maximum <= 2000:
            raise ValueError("firstResult must be >= 0 and maxResults 1..2000")
        event_type = body.get("eventType", "ALL")
        if event_type not in EVENT_TYPES:
            raise ValueError(f"eventType must be one of {', '.join(EVENT_TYPES)}")
        return {
            "start": start, "end": end, "first": first, "max": maximum, "type": event_type,
            "exact": bool(body.get("useExactMatch", False)), "status": body.get("eventStatus"),
            "names": {k: body[k] for k in ("applicationName", "topicName", "pubSubName") if body.get(k)},
        }

    def _matches(self, view: dict[str, Any], query: dict[str, Any]) -> bool:
        created = parse_cih_time(view["createTime"])
        if not query["start"] <= created <= query["end"]:
            return False
        if query["type"] != "ALL" and view["eventType"] != query["type"]:
            return False
        if query["status"] and view["eventStatus"] != query["status"]:
            return False
        for name, wanted in query["names"].items():
            value = view.get(name) or ""
            if (value != wanted) if query["exact"] else (str(wanted).lower() not in value.lower()):
                return False
        return True


def demo_simulator(*, clock: SimClock, faults: Faults, groups: int) -> InformaticaSimulator:
    """``pipeline simulate informatica``: the default scenario, user iics-user / iics-password."""
    return InformaticaSimulator(scenario(groups), clock=clock, faults=faults)
