"""Apache Airflow's stable REST API, simulated over real HTTP, both flavours at once:

- Airflow 2: ``/api/v1/...`` with HTTP Basic auth;
- Airflow 3: ``POST /auth/token`` with ``{"username", "password"}`` answers 201
  ``{"access_token": <JWT>}``; ``/api/v2/...`` wants ``Authorization: Bearer <JWT>`` and
  answers 401 once the token expired (``token_ttl_s``, real seconds).

Endpoints (the same under both prefixes, with each version's field names): ``GET
/dags/~/dagRuns`` and ``GET /dags/~/dagRuns/~/taskInstances`` (``updated_at_gte``,
``limit``, ``offset``; answers ``{"dag_runs"|"task_instances": [...], "total_entries": N}``,
sorted so offset paging is stable) and ``GET /eventLogs`` (``after``, ``limit``,
``offset``). ``limit`` above ``maximum_page_limit`` (100, Airflow's default) is capped.

The scripted DAGs (``scenario``), each group ``period_s`` vendor seconds after the last:
``etl_orders`` (a task that fails a try and retries, a mapped task with three indexes of
which one retries), ``sensor_pipeline`` (a sensor in reschedule mode, a deferred task),
``nightly_report`` (a failure and its upstream_failed downstream), ``flaky_worker`` (a
zombie: the audit log's heartbeat timeout, then up_for_retry and a second try),
``manual_fix`` (a manual run a user marks failed: the audit log names the user) and
``billing_sync`` (a failed run a user clears: the task's second try and the run again).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.model import Rejected
from pipeline.vendors._common import parse_time
from pipeline.vendors._simulator import Faults, SimClock, Simulator
from pipeline.vendors.airflow.ingest import API_PREFIX, DAG_RUNS_PATH, EVENT_LOGS_PATH, TASK_INSTANCES_PATH, TOKEN_PATH

TIME_FIELDS = ("queued_when", "scheduled_when", "start_date", "end_date", "queued_at", "logical_date", "when",
               "data_interval_start", "data_interval_end")
RUN_ID_FIELDS = ("dag_run_id", "run_id")
MAXIMUM_PAGE_LIMIT = 100


@dataclass(slots=True)
class Scripted:
    """One object's life in vendor seconds: its fixed fields and its changes in time order.
    Time fields hold vendor seconds (rendered as ISO 8601 in a view)."""

    kind: str  # "dag_run", "task_instance" or "event_log"
    base: dict[str, Any]
    steps: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def at(self, at_s: float, **changes: Any) -> "Scripted":
        self.steps.append((at_s, changes))
        return self

    def sort_key(self) -> tuple[Any, ...]:
        b = self.base
        return (b.get("event_log_id", 0), b.get("dag_id", ""), str(b.get("dag_run_id", "")), b.get("task_id", ""),
                b.get("map_index", -1))

    def updated_s(self, now_s: float) -> float | None:
        """When the object last changed up to ``now_s`` (None: it does not exist yet)."""
        done = [at for at, _ in self.steps if at <= now_s]
        return done[-1] if done else None

    def view(self, clock: SimClock, now_s: float, version: str) -> dict[str, Any] | None:
        fields: dict[str, Any] = dict(self.base)
        seen = False
        for at, changes in self.steps:
            if at > now_s:
                break
            fields.update(changes)
            seen = True
        if not seen:
            return None
        for name in TIME_FIELDS:
            if isinstance(fields.get(name), (int, float)) and not isinstance(fields.get(name), bool):
                fields[name] = clock.at(fields[name]).isoformat().replace("+00:00", "Z")
        for name in RUN_ID_FIELDS:
            if isinstance(fields.get(name), tuple):  # (run_type, vendor second): Airflow's own run id
                run_type, at_s = fields[name]
                fields[name] = f"{run_type}__{clock.at(at_s).isoformat()}"
        return _flavoured(self.kind, fields, version)


def _flavoured(kind: str, fields: dict[str, Any], version: str) -> dict[str, Any]:
    """The object with the field names its API version uses."""
    if version == "v1":
        for name in ("scheduled_when", "queued_at", "triggered_by"):
            fields.pop(name, None)
        fields.pop("id", None)
        if "logical_date" in fields:
            fields["execution_date"] = fields["logical_date"]
            if kind != "dag_run":
                fields.pop("logical_date")
        if kind == "dag_run":
            fields["external_trigger"] = fields.get("run_type") == "manual"
    return fields


class Script:
    """Builds the scripted objects of a scenario."""

    def __init__(self) -> None:
        self.objects: list[Scripted] = []
        self._log_id = 0

    def dag_run(self, dag_id: str, at_s: float, run_type: str = "scheduled") -> Scripted:
        run_id = (run_type, at_s)  # rendered as Airflow writes it, e.g. scheduled__2026-11-20T06:00:10+00:00
        run = Scripted("dag_run", {"dag_id": dag_id, "dag_run_id": run_id, "run_type": run_type, "logical_date": at_s,
                                   "data_interval_start": at_s - 86400 if run_type == "scheduled" else at_s,
                                   "data_interval_end": at_s, "note": None,
                                   "triggered_by": "ui" if run_type == "manual" else "timetable"})
        run.at(at_s, state="queued", queued_at=at_s, start_date=None, end_date=None)
        self.objects.append(run)
        return run

    def task(self, run: Scripted, task_id: str, map_index: int = -1, max_tries: int = 1,
             operator: str = "PythonOperator") -> Scripted:
        ti = Scripted("task_instance", {
            "dag_id": run.base["dag_id"], "dag_run_id": run.base["dag_run_id"], "task_id": task_id,
            "map_index": map_index, "max_tries": max_tries, "operator": operator, "pool": "default_pool",
            "queue": "default", "hostname": "", "logical_date": run.base["logical_date"],
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run.base['dag_run_id']}/{task_id}/{map_index}")),
            "rendered_map_index": str(map_index) if map_index >= 0 else None,
        })
        ti.steps.append((run.steps[0][0], {"state": None, "try_number": 0, "queued_when": None, "scheduled_when": None,
                                           "start_date": None, "end_date": None}))
        self.objects.append(ti)
        return ti

    def attempt(self, ti: Scripted, at_s: float, try_number: int, outcome: str, duration_s: float = 20.0) -> float:
        """One try: scheduled, queued, running, then ``outcome``; returns when it ended."""
        ti.at(at_s, state="scheduled", try_number=try_number, scheduled_when=at_s, end_date=None)
        ti.at(at_s + 1, state="queued", queued_when=at_s + 1)
        ti.at(at_s + 3, state="running", start_date=at_s + 3, hostname="worker-1")
        end = at_s + 3 + duration_s
        ti.at(end, state=outcome, end_date=end)
        return end

    def log(self, at_s: float, event: str, dag_id: str, run_id: tuple[str, float], task_id: str | None = None, *,
            try_number: int | None = None, owner: str | None = None, extra: Any = None, map_index: int = -1) -> None:
        self._log_id += 1
        entry = Scripted("event_log", {"event_log_id": self._log_id, "when": at_s, "event": event, "dag_id": dag_id,
                                       "run_id": run_id, "task_id": task_id, "map_index": map_index,
                                       "try_number": try_number, "owner": owner,
                                       "extra": extra if extra is None or isinstance(extra, str) else orjson.dumps(extra).decode()})
        entry.at(at_s)
        self.objects.append(entry)


def scenario(groups: int = 1, *, period_s: float = 900.0) -> list[Scripted]:
    """``groups`` rounds of the six DAGs described in the module docstring."""
    script = Script()
    for group in range(groups):
        t = 10.0 + group * period_s
        # etl_orders: extract; transform fails its first try and retries; a mapped load.
        run = script.dag_run("etl_orders", t)
        run.at(t + 2, state="running", start_date=t + 2)
        extract = script.task(run, "extract", max_tries=2)
        end = script.attempt(extract, t + 3, 1, "success", 15)
        transform = script.task(run, "transform", max_tries=2)
        end = script.attempt(transform, end + 1, 1, "up_for_retry", 10)
        end = script.attempt(transform, end + 30, 2, "success", 12)
        ends = []
        for index in range(3):
            mapped = script.task(run, "load_partition", map_index=index, max_tries=2)
            first = script.attempt(mapped, end + 1, 1, "up_for_retry" if index == 1 else "success", 8 + index)
            ends.append(script.attempt(mapped, first + 20, 2, "success", 6) if index == 1 else first)
        run.at(max(ends) + 1, state="success", end_date=max(ends) + 1)
        script.log(t + 1, "cli_task_run", "etl_orders", run.base["dag_run_id"], "extract", try_number=1, owner="airflow")

        # sensor_pipeline: a reschedule-mode sensor pokes three times; a deferred task resumes.
        run = script.dag_run("sensor_pipeline", t + 5)
        run.at(t + 6, state="running", start_date=t + 6)
        sensor = script.task(run, "wait_for_file", max_tries=1, operator="FileSensor")
        at = t + 7
        sensor.at(at, state="scheduled", try_number=1, scheduled_when=at)
        for poke in range(3):
            sensor.at(at + 1, state="queued", queued_when=at + 1)
            sensor.at(at + 2, state="running", start_date=at + 2, hostname="worker-2")
            sensor.at(at + 4, state="up_for_reschedule" if poke < 2 else "success", end_date=at + 4)
            at += 30
        deferred = script.task(run, "wait_for_partner", max_tries=1, operator="DateTimeSensorAsync")
        start = at - 25
        deferred.at(start, state="scheduled", try_number=1, scheduled_when=start)
        deferred.at(start + 1, state="queued", queued_when=start + 1)
        deferred.at(start + 2, state="running", start_date=start + 2, hostname="worker-2")
        deferred.at(start + 4, state="deferred")
        deferred.at(start + 40, state="scheduled", scheduled_when=start + 40)
        deferred.at(start + 41, state="queued", queued_when=start + 41)
        deferred.at(start + 42, state="running", start_date=start + 42)
        deferred.at(start + 44, state="success", end_date=start + 44)
        run.at(start + 45, state="success", end_date=start + 45)

        # nightly_report: build fails (no retries left), publish never runs (upstream_failed).
        run = script.dag_run("nightly_report", t + 8)
        run.at(t + 9, state="running", start_date=t + 9)
        build = script.task(run, "build", max_tries=0)
        end = script.attempt(build, t + 10, 1, "failed", 25)
        publish = script.task(run, "publish", max_tries=0)
        publish.at(end + 1, state="upstream_failed", end_date=end + 1)
        run.at(end + 2, state="failed", end_date=end + 2)

        # flaky_worker: the worker dies; Airflow's heartbeat check fails the try (a zombie).
        run = script.dag_run("flaky_worker", t + 12)
        run.at(t + 13, state="running", start_date=t + 13)
        crunch = script.task(run, "crunch", max_tries=2)
        crunch.at(t + 14, state="scheduled", try_number=1, scheduled_when=t + 14)
        crunch.at(t + 15, state="queued", queued_when=t + 15)
        crunch.at(t + 17, state="running", start_date=t + 17, hostname="worker-3")
        script.log(t + 320, "heartbeat timeout", "flaky_worker", run.base["dag_run_id"], "crunch", try_number=1,
                   extra="Task did not emit heartbeat within time limit (300 seconds) and will be terminated.")
        crunch.at(t + 321, state="up_for_retry", end_date=t + 321)
        end = script.attempt(crunch, t + 350, 2, "success", 30)
        run.at(end + 1, state="success", end_date=end + 1)

        # manual_fix: a manual run; a user marks it failed while its task runs.
        run = script.dag_run("manual_fix", t + 20, run_type="manual")
        run.at(t + 21, state="running", start_date=t + 21)
        long_job = script.task(run, "long_job", max_tries=0, operator="BashOperator")
        long_job.at(t + 22, state="scheduled", try_number=1, scheduled_when=t + 22)
        long_job.at(t + 23, state="queued", queued_when=t + 23)
        long_job.at(t + 25, state="running", start_date=t + 25, hostname="worker-1")
        cleanup = script.task(run, "cleanup", max_tries=0)
        script.log(t + 120, "patch_dag_run", "manual_fix", run.base["dag_run_id"], owner="admin",
                   extra={"state": "failed"})
        run.at(t + 120, state="failed", end_date=t + 120, note="stopped by hand: wrong input file")
        long_job.at(t + 120, state="failed", end_date=t + 120)
        cleanup.at(t + 120, state="skipped", end_date=t + 120)

        # billing_sync: sync fails, the run fails; a user clears it: sync's second try, the run again.
        run = script.dag_run("billing_sync", t + 30)
        run.at(t + 31, state="running", start_date=t + 31)
        sync = script.task(run, "sync", max_tries=0)
        end = script.attempt(sync, t + 32, 1, "failed", 10)
        run.at(end + 1, state="failed", end_date=end + 1)
        script.log(end + 60, "clear", "billing_sync", run.base["dag_run_id"], "sync", owner="admin",
                   extra={"only_failed": True})
        sync.at(end + 60, state=None, max_tries=1, end_date=None)
        run.at(end + 60, state="queued", queued_at=end + 60, start_date=None, end_date=None)
        run.at(end + 61, state="running", start_date=end + 61)
        end = script.attempt(sync, end + 62, 2, "success", 10)
        run.at(end + 1, state="success", end_date=end + 1)
    return script.objects


class AirflowSimulator(Simulator):
    """Both API versions over one server; objects by ``scenario`` unless given."""

    def __init__(
        self, objects: list[Scripted] | None = None, *, user: str = "airflow", password: str = "airflow-password",
        token_ttl_s: float = 3600.0, maximum_page_limit: int = MAXIMUM_PAGE_LIMIT, clock: SimClock | None = None,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(clock, faults)
        self.objects = sorted(scenario() if objects is None else objects, key=Scripted.sort_key)
        self.user = user
        self.password = password
        self.token_ttl_s = token_ttl_s
        self.maximum_page_limit = maximum_page_limit
        self.tokens: dict[str, float] = {}  # token -> real monotonic expiry
        self.tokens_issued = 0
        self._basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def routes(self) -> list[web.RouteDef]:
        routes = [web.post(TOKEN_PATH, self.issue_token)]
        for version, prefix in API_PREFIX.items():
            for path, kind, collection, filter_name in (
                (DAG_RUNS_PATH, "dag_run", "dag_runs", "updated_at_gte"),
                (TASK_INSTANCES_PATH, "task_instance", "task_instances", "updated_at_gte"),
                (EVENT_LOGS_PATH, "event_log", "event_logs", "after"),
            ):
                routes.append(web.get(prefix + path, self._lister(version, kind, collection, filter_name)))
        return routes

    def final_views(self, version: str = "v2") -> list[tuple[str, dict[str, Any]]]:
        """(kind, object) of every object as it ends: what a poller must have sent last."""
        end = max(at for obj in self.objects for at, _ in obj.steps) + 1
        return [(obj.kind, view) for obj in self.objects if (view := obj.view(self.clock, end, version)) is not None]

    async def issue_token(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or body.get("username") != self.user or body.get("password") != self.password:
            return web.json_response({"detail": "Invalid credentials"}, status=401)
        token = ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=") for part in (
            b'{"alg":"HS512","typ":"JWT"}', orjson.dumps({"sub": self.user, "iat": int(time.time())}),
            secrets.token_bytes(32)))
        self.tokens[token] = time.monotonic() + self.token_ttl_s
        self.tokens_issued += 1
        return web.json_response({"access_token": token}, status=201)

    def _refused(self, request: web.Request, version: str) -> web.Response | None:
        given = request.headers.get("Authorization", "")
        if version == "v1":
            if given != self._basic:
                return web.json_response({"title": "Unauthorized", "status": 401, "type": "about:blank",
                                          "detail": "The request was not authenticated."}, status=401)
            return None
        token = given.removeprefix("Bearer ")
        expiry = self.tokens.get(token)
        if not given.startswith("Bearer ") or expiry is None:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        if expiry < time.monotonic():
            return web.json_response({"detail": "Invalid JWT token: Signature has expired"}, status=401)
        return None

    def _lister(self, version: str, kind: str, collection: str, filter_name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if (refused := self._refused(request, version)) is not None:
                return refused
            try:
                limit = min(int(request.query.get("limit", "100")), self.maximum_page_limit)
                offset = int(request.query.get("offset", "0"))
                since_text = request.query.get(filter_name)
                since = _parse(since_text) if since_text else None
                if limit < 0 or offset < 0:
                    raise ValueError("limit and offset must not be negative")
            except ValueError as exc:
                return web.json_response({"detail": f"Invalid query: {exc}"}, status=422 if version == "v2" else 400)
            now_s = self.clock.elapsed()
            found = []
            for obj in self.objects:
                if obj.kind != kind:
                    continue
                updated = obj.updated_s(now_s)
                if updated is None or (since is not None and self.clock.at(updated) < since):
                    continue
                found.append(obj.view(self.clock, now_s, version))
            page = self.shaped(found[offset: offset + limit])
            return web.json_response({collection: page, "total_entries": len(found)})

        return handler


def _parse(text: str) -> datetime | None:
    try:
        return parse_time(text, field="date")
    except Rejected as exc:
        raise ValueError(str(exc)) from None


def demo_simulator(*, clock: SimClock, faults: Faults, groups: int) -> AirflowSimulator:
    """``pipeline simulate airflow``: the scenario, user airflow / airflow-password (both APIs)."""
    return AirflowSimulator(scenario(max(groups, 1)), clock=clock, faults=faults)
