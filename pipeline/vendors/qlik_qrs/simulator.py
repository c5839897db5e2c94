"""Qlik Sense Repository Service (QRS), simulated over real HTTP (plain HTTP: the
real service listens on https://host:4242 with client certificates).

Speaks what the QRS API reference and its public clients do (docs/design.md,
"Vendor protocols", the "Task: Start" seed): every request carries the ``X-Qlik-Xrfkey`` header
and the ``xrfkey`` query parameter with the same 16 characters [A-Za-z0-9] (else 403),
and ``X-Qlik-User: UserDirectory=...; UserId=...`` (else 403). Endpoints:
``GET /qrs/executionresult/full`` and ``GET /qrs/executionsession/full`` with
``filter=`` clauses (``modifiedDate ge '2026-09-23T12:00:00.000Z'``, ``executionID eq
<guid>``, joined by ``and``; no paging), ``GET /qrs/executionsession/{id}`` (404 once the
execution ended: QRS deletes the session), ``POST /qrs/task/{id}/start/synchronous``
(``{"value": <session guid>}``, the empty GUID for a disabled task, 404 for an unknown
one). Results carry numeric statuses; a running result's stopTime is 1753-01-01.
Several results in one session are its retries.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.vendors._simulator import Faults, SimClock, Simulator
from pipeline.vendors.qlik_qrs.ingest import EMPTY_GUID, qrs_time

NO_DATE = "1753-01-01T00:00:00.000Z"
STARTED, SUCCESS, FAIL, ABORTED = 2, 7, 8, 6
_XRF = re.compile(r"^[A-Za-z0-9]{16}$")
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|gt|ge|lt|le)\s+(?:'([^']*)'|(\S+))\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ScriptedResult:
    start_s: float
    end_s: float
    status: int  # the final status
    result_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class ScriptedSession:
    task_id: str
    task_name: str
    results: list[ScriptedResult]
    execution_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def result_views(self, clock: SimClock, now_s: float) -> list[dict[str, Any]]:
        views = []
        for result in self.results:
            if result.start_s > now_s:
                continue
            done = result.end_s <= now_s
            views.append({
                "id": result.result_id,
                "createdDate": qrs_time(clock.at(result.start_s)),
                "modifiedDate": qrs_time(clock.at(result.end_s if done else result.start_s)),
                "modifiedByUserName": "INTERNAL\\System",
                "executionID": self.execution_id,
                "appID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.task_id)),
                "taskID": self.task_id,
                "status": result.status if done else STARTED,
                "startTime": qrs_time(clock.at(result.start_s)),
                "stopTime": qrs_time(clock.at(result.end_s)) if done else NO_DATE,
                "duration": int((result.end_s - result.start_s) * 1000) if done else 0,
                "details": [],
                "scriptLogAvailable": done,
                "schemaPath": "ExecutionResult",
            })
        return views

    def session_view(self, clock: SimClock, now_s: float) -> dict[str, Any] | None:
        """The session while it runs; None before and after (QRS deleted it)."""
        if now_s < self.results[0].start_s or now_s >= self.results[-1].end_s:
            return None
        results = self.result_views(clock, now_s)
        current = results[-1]
        return {
            "id": self.execution_id,
            "createdDate": qrs_time(clock.at(self.results[0].start_s)),
            "modifiedDate": current["modifiedDate"],
            "reloadTask": {"id": self.task_id, "name": self.task_name},
            "executionResult": {k: current[k] for k in ("id", "status", "startTime", "stopTime", "duration")},
            "retries": len(results) - 1,
            "schemaPath": "ExecutionSession",
        }


def scenario(groups: int = 1, *, period_s: float = 120.0) -> list[ScriptedSession]:
    """Per group: a reload that succeeds, one that fails, one that fails then succeeds
    on retry, and one that is aborted."""
    sessions = []
    for group in range(groups):
        t = group * period_s
        sessions += [
            ScriptedSession("11111111-1111-4111-8111-000000000001", "Reload Sales", [ScriptedResult(t, t + 30, SUCCESS)]),
            ScriptedSession("11111111-1111-4111-8111-000000000002", "Reload Finance", [ScriptedResult(t + 5, t + 25, FAIL)]),
            ScriptedSession("11111111-1111-4111-8111-000000000003", "Reload HR", [
                ScriptedResult(t + 10, t + 20, FAIL), ScriptedResult(t + 22, t + 50, SUCCESS),
            ]),
            ScriptedSession("11111111-1111-4111-8111-000000000004", "Reload Ops", [ScriptedResult(t + 15, t + 40, ABORTED)]),
        ]
    return sessions


class QrsSimulator(Simulator):
    def __init__(
        self, sessions: list[ScriptedSession] | None = None, *, disabled_tasks: tuple[str, ...] = (),
        startable: dict[str, str] | None = None, clock: SimClock | None = None, faults: Faults | None = None,
    ) -> None:
        super().__init__(clock, faults)
        self.sessions = scenario() if sessions is None else sessions
        self.disabled_tasks = set(disabled_tasks)
        self.startable = {"22222222-2222-4222-8222-000000000001": "Reload on demand", **(startable or {})}
        self.startable.update({task: "Disabled task" for task in disabled_tasks})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/qrs/executionresult/full", self.results),
            web.get("/qrs/executionresult", self.results),
            web.get("/qrs/executionsession/full", self.sessions_list),
            web.get("/qrs/executionsession/{id}", self.one_session),
            web.post("/qrs/task/{id}/start/synchronous", self.start_task),
        ]

    def _refused(self, request: web.Request) -> web.Response | None:
        key = request.query.get("xrfkey", "")
        if not _XRF.match(key) or request.headers.get("X-Qlik-Xrfkey") != key:
            return web.Response(status=403, text="XSRF prevention check failed. Possible XSRF discovered.")
        user = request.headers.get("X-Qlik-User", "")
        if "UserDirectory=" not in user or "UserId=" not in user:
            return web.Response(status=403, text="Forbidden: no X-Qlik-User header")
        return None

    def _filtered(self, request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]] | web.Response:
        text = request.query.get("filter")
        if not text:
            return items
        clauses = []
        for part in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
            match = _CLAUSE.match(part)
            if not match:
                return web.Response(status=400, text=f"Invalid filter: {part!r}")
            clauses.append((match[1].lower(), match[2].lower(), match[3] if match[3] is not None else match[4]))

        def keep(item: dict[str, Any]) -> bool:
            fields = {k.lower(): v for k, v in item.items()}
            for name, op, value in clauses:
                have = str(fields.get(name, ""))
                if op in ("eq", "ne"):
                    ok = have.lower() == value.lower()
                    ok = ok if op == "eq" else not ok
                else:  # ISO times of one format compare as text
                    ok = {"gt": have > value, "ge": have >= value, "lt": have < value, "le": have <= value}[op]
                if not ok:
                    return False
            return True

        return [item for item in items if keep(item)]

    async def results(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        now_s = self.clock.elapsed()
        found = self._filtered(request, [v for s in self.sessions for v in s.result_views(self.clock, now_s)])
        return found if isinstance(found, web.Response) else web.json_response(self.shaped(found))

    async def sessions_list(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        now_s = self.clock.elapsed()
        found = self._filtered(request, [v for s in self.sessions if (v := s.session_view(self.clock, now_s))])
        return found if isinstance(found, web.Response) else web.json_response(self.shaped(found))

    async def one_session(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        now_s = self.clock.elapsed()
        for session in self.sessions:
            if session.execution_id == request.match_info["id"] and (view := session.session_view(self.clock, now_s)):
                return web.json_response(view)
        return web.Response(status=404, text="Not Found")

    async def start_task(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        task_id = request.match_info["id"]
        if task_id not in self.startable:
            return web.Response(status=404, text="Not Found")
        if task_id in self.disabled_tasks:
            return web.json_response({"value": EMPTY_GUID})
        now_s = self.clock.elapsed()
        session = ScriptedSession(task_id, self.startable[task_id], [
            ScriptedResult(now_s, now_s + 10, FAIL), ScriptedResult(now_s + 11, now_s + 25, SUCCESS),
        ])
        self.sessions.append(session)
        return web.json_response({"value": session.execution_id})


def demo_simulator(*, clock: SimClock, faults: Faults, groups: int) -> QrsSimulator:
    """``pipeline simulate qlik-qrs``: the default scenario; start task 22222222-2222-4222-8222-000000000001."""
    return QrsSimulator(scenario(groups), clock=clock, faults=faults)
