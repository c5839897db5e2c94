"""Zuora RevPro BI Views v2 activity monitoring, simulated over real HTTP.

Speaks what the BI Views documentation says (the seed, docs/design.md, "Vendor protocols"):
``POST /api/integration/v1/authenticate`` with Basic auth and ``role`` / ``clientname``
headers answers the token in a response header (name configurable, default ``token``;
valid 30 minutes of vendor time), which every other call sends back; a tenant without
the API answers 405 to everything. ``GET /api/integrations/v2/biviews-status`` lists the
four queues, ``GET .../biviews-status/{task_id}`` one token (404 when unknown),
``DELETE .../biviews-status/{task_id}`` cancels it.

Queue rules, in vendor time: a token is active while it works; idle for more than 240 s
it is stale; active again if it resumes within 300 s, else draining (5 s) and gone.
A finished token (COMPLETED, FAILED or CANCELLED: the documentation names only the
completed case) is listed as completed for 300 s, then draining 5 s, then gone. Times are naive (the tenant's zone; here UTC), as Zuora
writes them: ``2019-05-02 10:39:36.560855``.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from pipeline.vendors._simulator import Faults, SimClock, Simulator
from pipeline.vendors.zuora.ingest import AUTH_PATH, QUEUES, STATUS_PATH

FINAL = ("COMPLETED", "FAILED", "CANCELLED")
STALE_AFTER_S = 240.0
STALE_FOR_S = 300.0
COMPLETED_FOR_S = 300.0
DRAINING_FOR_S = 5.0
TOKEN_TTL_S = 1800.0


@dataclass(frozen=True, slots=True)
class Activity:
    at_s: float
    status: str
    accumulate: int = 0
    metric: int | None = None
    message: str | None = None


@dataclass(slots=True)
class ScriptedToken:
    """One continuation token's life; ``activities`` in vendor seconds after the epoch."""

    task_id: str
    view: str
    activities: list[Activity]
    filters: dict[str, str] = field(default_factory=lambda: {"fromDate": "2026-01-01 00:00:00", "toDate": "2026-12-01 00:00:00"})

    def state(self, now_s: float) -> tuple[str, Activity] | None:
        """(queue, last activity) at vendor second ``now_s``, or None when not listed."""
        done = [a for a in self.activities if a.at_s <= now_s]
        if not done:
            return None
        last = done[-1]
        idle = now_s - last.at_s
        if last.status in FINAL:
            if idle < COMPLETED_FOR_S:
                return "completed", last
            return ("draining", last) if idle < COMPLETED_FOR_S + DRAINING_FOR_S else None
        if idle <= STALE_AFTER_S:
            return "active", last
        if idle <= STALE_AFTER_S + STALE_FOR_S:
            return "stale", last
        return ("draining", last) if idle <= STALE_AFTER_S + STALE_FOR_S + DRAINING_FOR_S else None

    def view_at(self, clock: SimClock, now_s: float, last: Activity) -> dict[str, Any]:
        started = self.activities[0].at_s
        return {
            "accumulate": last.accumulate,
            "activity_tracker": {
                "elapsed_time": _elapsed(now_s - started),
                "initated_time": _naive(clock.at(started)),
                "last_activity": _naive(clock.at(last.at_s)),
            },
            "message": last.message,
            "metric": last.metric,
            "query_config": {"filter_params": dict(self.filters), "object_name": self.view},
            "status": last.status,
            "task_id": self.task_id,
        }

    def end_s(self) -> float:
        return self.activities[-1].at_s + COMPLETED_FOR_S + STALE_FOR_S + STALE_AFTER_S + DRAINING_FOR_S


def _naive(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _elapsed(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}.{int((seconds - whole) * 1e6):06d}"


def scenario(groups: int = 1, *, period_s: float = 600.0) -> list[ScriptedToken]:
    """Per group: a success over two pages, a failure, a token that goes stale and comes
    back, one that goes stale and drains, and a long one (cancel it with DELETE)."""
    tokens: list[ScriptedToken] = []
    for group in range(groups):
        t = group * period_s

        def token(kind: str, view: str, *steps: Activity) -> None:
            tokens.append(ScriptedToken(f"{kind}-{group}-{secrets.token_hex(4)}", view, list(steps)))

        token("ok", "RPRO_BI3_RC_SCHD_V",
              Activity(t, "ADDED-TO-QUEUE"), Activity(t + 2, "META-DATA-SCANNED"),
              Activity(t + 5, "SCANNING-PAGE-1"), Activity(t + 8, "COMMITING-PAGE-1", 1000, 1000),
              Activity(t + 10, "SCANNING-PAGE-2", 1000, 1000), Activity(t + 12, "COMMITING-PAGE-2", 1353, 353),
              Activity(t + 14, "END-OF-QUERY-DATA", 1353, 353), Activity(t + 15, "COMPLETED", 1353, 353))
        token("fail", "RPRO_BI3_LN_V",
              Activity(t + 1, "ADDED-TO-QUEUE"), Activity(t + 3, "META-DATA-SCANNED"),
              Activity(t + 4, "SCANNING-PAGE-1"), Activity(t + 6, "FAILED", 0, None, "ORA-01555: snapshot too old"))
        token("back", "RPRO_BI3_RI_V",
              Activity(t + 2, "ADDED-TO-QUEUE"), Activity(t + 4, "SCANNING-PAGE-1"),
              Activity(t + 304, "COMMITING-PAGE-1", 500, 500), Activity(t + 330, "COMMITING-PAGE-2", 800, 300),
              Activity(t + 340, "COMPLETED", 800, 300))
        token("drain", "RPRO_BI3_ACCT_V",
              Activity(t + 3, "ADDED-TO-QUEUE"), Activity(t + 5, "SCANNING-PAGE-1"))
        token("long", "RPRO_BI3_SO_V",
              Activity(t + 4, "ADDED-TO-QUEUE"), Activity(t + 6, "SCANNING-PAGE-1"),
              *(Activity(t + 6 + 60 * n, f"COMMITING-PAGE-{n}", 1000 * n, 1000) for n in range(1, 9)),
              Activity(t + 540, "COMPLETED", 8000, 1000))
    return tokens


class ZuoraSimulator(Simulator):
    def __init__(
        self, tokens: list[ScriptedToken] | None = None, *, user: str = "revpro-user", password: str = "revpro-password",
        token_header: str = "token", api_enabled: bool = True, token_ttl_s: float = TOKEN_TTL_S, clock: SimClock | None = None,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(clock, faults)
        self.tokens = {t.task_id: t for t in (scenario() if tokens is None else tokens)}
        self.token_header = token_header
        self.api_enabled = api_enabled
        self.token_ttl_s = token_ttl_s
        self.auth_tokens: dict[str, float] = {}  # token -> vendor second it was issued
        self.authentications = 0
        self._basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(AUTH_PATH, self.authenticate),
            web.get(STATUS_PATH, self.status),
            web.get(STATUS_PATH + "/{task_id}", self.one),
            web.delete(STATUS_PATH + "/{task_id}", self.cancel),
        ]

    def _not_enabled(self) -> web.Response | None:
        if self.api_enabled:
            return None
        return web.json_response({"message": "Method Not Allowed: BI Views API is not enabled"}, status=405)

    async def authenticate(self, request: web.Request) -> web.Response:
        if (refused := self._not_enabled()) is not None:
            return refused
        if request.headers.get("Authorization") != self._basic or not request.headers.get("role") or not request.headers.get("clientname"):
            return web.json_response({"message": "Authentication failed"}, status=401)
        token = secrets.token_urlsafe(24)
        self.auth_tokens[token] = self.clock.elapsed()
        self.authentications += 1
        return web.json_response({"message": "Authorization successful"}, headers={self.token_header: token})

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if (refused := self._not_enabled()) is not None:
            return refused
        issued = self.auth_tokens.get(request.headers.get(self.token_header, ""))
        if issued is None or self.clock.elapsed() - issued > self.token_ttl_s:
            return web.json_response({"message": "Invalid or expired token"}, status=401)
        return None

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        now_s = self.clock.elapsed()
        queues: dict[str, list[dict[str, Any]]] = {queue: [] for queue in QUEUES}
        for token in self.tokens.values():
            state = token.state(now_s)
            if state is not None:
                queues[state[0]].append(token.view_at(self.clock, now_s, state[1]))
        return {queue: self.shaped(tasks) for queue, tasks in queues.items()}

    async def status(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        return web.json_response(self.snapshot())

    async def one(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        task_id = request.match_info["task_id"]
        token = self.tokens.get(task_id)
        now_s = self.clock.elapsed()
        state = token.state(now_s) if token else None
        if token is None or state is None:
            return web.json_response({"message": f"task_id {task_id} not found"}, status=404)
        return web.json_response({state[0]: [token.view_at(self.clock, now_s, state[1])]})

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        task_id = request.match_info["task_id"]
        token = self.tokens.get(task_id)
        now_s = self.clock.elapsed()
        state = token.state(now_s) if token else None
        if token is None or state is None:
            return web.json_response({"message": f"task_id {task_id} not found"}, status=404)
        queue, last = state
        if last.status in FINAL:
            return web.json_response({"message": f"task_id {task_id} already {last.status}"}, status=409)
        token.activities = [a for a in token.activities if a.at_s <= now_s] + [
            Activity(now_s, "CANCELLED", last.accumulate, last.metric, "Cancelled by user")
        ]
        return web.json_response({"message": f"task_id {task_id} cancelled"})


def demo_simulator(*, clock: SimClock, faults: Faults, groups: int) -> ZuoraSimulator:
    """``pipeline simulate zuora``: the default scenario, user revpro-user / revpro-password."""
    return ZuoraSimulator(scenario(groups), clock=clock, faults=faults)
