"""A TrueNAS middleware websocket server, for tests and the demo.

It speaks both API flavours the ingestor connects to:

- current: ``ws://host/api/current``, JSON-RPC 2.0: ``core.set_options``,
  ``auth.login_ex`` (``API_KEY_PLAIN``) or ``auth.login_with_api_key``, ``system.boot_id``,
  ``core.subscribe ["core.get_jobs"]``, ``core.get_jobs``, ``core.ping``; job changes as
  ``collection_update`` notifications;
- legacy: ``ws://host/websocket``: ``connect`` -> ``connected``, ``method`` -> ``result``,
  ``sub`` -> ``ready``, ``ping`` -> ``pong``; job changes as ``added``/``changed``/``removed``.

Jobs go WAITING -> RUNNING (progress) -> SUCCESS / FAILED / ABORTED, either step by step
(``add_job`` / ``update_job``: what tests use, deterministic) or on their own
(``run_job`` / ``workload``, paced by ``clock``: ``clock=60`` runs a minute in a second).
Faults: ``drop_connections`` (mid-job), ``pause``/``resume`` (refuse connections for a
while), ``restart`` (every job forgotten, ids back to 1; a new ``system.boot_id`` unless
``kernel_boot_id``, as newer middleware reads the kernel's, which a middleware restart
keeps), ``partial_updates`` (``changed`` with only the fields that changed), ``login_ex=False``
(an older server that only knows ``auth.login_with_api_key``).
"""

from __future__ import annotations

import asyncio
import copy
import random
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from pipeline.ops import ports

COLLECTION = "core.get_jobs"
OUTCOMES = ("SUCCESS", "FAILED", "ABORTED")
METHODS = ("pool.scrub.scrub", "replication.run", "cloudsync.sync", "pool.dataset.snapshot_task.run", "update.download")
TASK_IDS = (1, 2)
"""The replication / cloud sync / snapshot tasks the simulated NAS has (their ids)."""


def arguments_for(method: str, task_id: int = 1) -> list[Any]:
    """A job's ``arguments`` as middlewared lists them for ``method`` (the task id first
    for the task runners, the pool and action for a scrub)."""
    if method == "pool.scrub.scrub":
        return ["tank", "START"]
    if method == "replication.run":
        return [task_id, True]
    if method == "cloudsync.sync":
        return [task_id, {"dry_run": False}]
    if method == "pool.dataset.snapshot_task.run":
        return [task_id]
    return []


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class _Session:
    """One websocket client: its flavour, whether it logged in, what it subscribed to."""

    ws: web.WebSocketResponse
    legacy: bool
    outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    authenticated: bool = False
    subscribed: bool = False

    def push(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(orjson.dumps(message))


class MiddlewareSimulator:
    """An in-process TrueNAS middleware: jobs, subscriptions, faults."""

    def __init__(
        self, *, api_key: str, username: str = "root", clock: float = 1.0, kernel_boot_id: bool = False,
        partial_updates: bool = False, login_ex: bool = True, seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.username = username
        self.clock = clock
        self.kernel_boot_id = kernel_boot_id
        self.partial_updates = partial_updates
        self.login_ex = login_ex  # False: an older server without auth.login_ex
        self.rng = random.Random(seed)
        self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.jobs: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        self.restarts = 0
        self.accepting = True
        self.sessions: set[_Session] = set()
        self.logins = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fault_task: asyncio.Task[None] | None = None
        self.workload_every_s = 0.0
        self.workload_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # --- server -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen (``wss://`` with ``ssl_context``); returns the port."""
        app = web.Application()
        app.router.add_get("/api/current", self._current)
        app.router.add_get("/websocket", self._legacy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        self.port = self._runner.addresses[0][1]
        self.host = host
        self.scheme = "wss" if ssl_context is not None else "ws"
        return self.port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/api/current"

    @property
    def legacy_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/websocket"

    async def stop(self) -> None:
        if self._fault_task is not None:
            self._fault_task.cancel()
        self._cancel_jobs()
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _current(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, legacy=False)

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, legacy=True)

    async def _serve(self, request: web.Request, *, legacy: bool) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="middleware is restarting")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        session = _Session(ws, legacy)
        self.sessions.add(session)
        writer = asyncio.create_task(self._write(session))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                try:
                    data = orjson.loads(message.data)
                except orjson.JSONDecodeError:
                    break
                if legacy:
                    self._on_legacy(session, data)
                else:
                    self._on_jsonrpc(session, data)
        finally:
            self.sessions.discard(session)
            session.outbox.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    async def _write(self, session: _Session) -> None:
        while (data := await session.outbox.get()) is not None:
            if session.ws.closed:
                return
            await session.ws.send_str(data.decode())

    # --- the two flavours -----------------------------------------------------------

    def _on_jsonrpc(self, session: _Session, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        try:
            result = self._call(session, message.get("method"), message.get("params") or [])
        except _CallError as exc:
            session.push({"jsonrpc": "2.0", "id": call_id, "error": {"code": exc.code, "message": exc.message}})
            return
        session.push({"jsonrpc": "2.0", "id": call_id, "result": result})

    def _on_legacy(self, session: _Session, message: dict[str, Any]) -> None:
        kind = message.get("msg")
        if kind == "connect":
            session.push({"msg": "connected", "session": str(uuid.uuid4())})
        elif kind == "ping":
            session.push({"msg": "pong", "id": message.get("id")})
        elif kind == "sub":
            if not session.authenticated:
                session.push({"msg": "nosub", "id": message.get("id"), "error": {"error": "ENOTAUTHENTICATED"}})
            elif message.get("name") == COLLECTION:
                session.subscribed = True
                session.push({"msg": "ready", "subs": [message.get("id")]})
        elif kind == "method":
            try:
                result = self._call(session, message.get("method"), message.get("params") or [])
            except _CallError as exc:
                session.push({"msg": "result", "id": message.get("id"),
                              "error": {"error": exc.code, "errname": exc.name, "reason": exc.message}})
                return
            session.push({"msg": "result", "id": message.get("id"), "result": result})

    def _methods(self) -> set[str]:
        known = {"core.set_options", "core.ping", "auth.login_with_api_key", "system.boot_id", "core.subscribe", "core.get_jobs"}
        return known | {"auth.login_ex"} if self.login_ex else known

    def _call(self, session: _Session, method: Any, params: list[Any]) -> Any:
        if method not in self._methods():
            raise _CallError(-32601, "ENOMETHOD", "Method does not exist")
        if method == "core.set_options":
            return None
        if method == "core.ping":
            return "pong"
        if method == "auth.login_ex":
            request = params[0] if params and isinstance(params[0], dict) else {}
            ok = (request.get("mechanism") == "API_KEY_PLAIN" and request.get("username") == self.username
                  and request.get("api_key") == self.api_key)
            session.authenticated = ok
            self.logins += ok
            return {"response_type": "SUCCESS"} if ok else {"response_type": "AUTH_ERR"}
        if method == "auth.login_with_api_key":
            session.authenticated = bool(params) and params[0] == self.api_key
            self.logins += session.authenticated
            return session.authenticated
        if not session.authenticated:
            raise _CallError(-32001, "ENOTAUTHENTICATED", "Not authenticated")
        if method == "system.boot_id":
            return self.boot_id
        if method == "core.subscribe":
            if params[:1] != [COLLECTION]:
                raise _CallError(-32001, "EINVAL", f"unknown event {params[:1]}")
            session.subscribed = True
            return str(uuid.uuid4())
        return [_public(job) for job in self.jobs.values()]  # core.get_jobs

    # --- jobs -------------------------------------------------------------------------

    def _broadcast(self, kind: str, job_id: int, fields: dict[str, Any] | None) -> None:
        for session in list(self.sessions):
            if not session.subscribed:
                continue
            body: dict[str, Any] = {"msg": kind, "collection": COLLECTION, "id": job_id}
            if fields is not None:
                body["fields"] = copy.deepcopy(fields)
            if session.legacy:
                session.push(body)
            else:
                session.push({"jsonrpc": "2.0", "method": "collection_update", "params": body})

    def add_job(self, method: str, *, description: str | None = None, transient: bool = False,
                arguments: list[Any] | None = None) -> int:
        """A new job in WAITING (``time_started`` is its creation time and never
        changes, as in middlewared); subscribers get ``added``. ``arguments``: the
        method's usual ones (``arguments_for``) unless given."""
        job_id = self.next_id
        self.next_id += 1
        job = {
            "id": job_id, "message_ids": [], "method": method,
            "arguments": arguments_for(method) if arguments is None else arguments,
            "transient": transient, "description": description, "abortable": True, "logs_path": None,
            "logs_excerpt": None, "progress": {"percent": 0, "description": "", "extra": None},
            "result": None, "result_encoding_error": None, "error": None, "exception": None,
            "exc_info": None, "state": "WAITING", "time_started": {"$date": _now_ms()}, "time_finished": None,
            "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "root", "password": "never-leaves-the-nas"}},
        }
        self.jobs[job_id] = job
        self._broadcast("added", job_id, job)
        return job_id

    def update_job(self, job_id: int, *, state: str | None = None, percent: float | None = None,
                   description: str | None = None, error: str | None = None) -> None:
        """Change a job; subscribers get ``changed`` (whole, or only what changed)."""
        job = self.jobs[job_id]
        changed: dict[str, Any] = {"id": job_id}
        if state is not None:
            job["state"] = changed["state"] = state
            if state in OUTCOMES:
                job["time_finished"] = changed["time_finished"] = {"$date": _now_ms()}
            if state == "FAILED":
                job["error"] = changed["error"] = error or "[EFAULT] simulated failure"
                job["exc_info"] = changed["exc_info"] = {"repr": "CallError('simulated failure')", "type": "CallError", "errno": 14, "extra": None}
            if state == "ABORTED":
                job["error"] = changed["error"] = "[EINTR] Job aborted"
            if state == "SUCCESS":
                job["result"] = changed["result"] = True
        if percent is not None or description is not None:
            progress = dict(job["progress"])
            if percent is not None:
                progress["percent"] = percent
            if description is not None:
                progress["description"] = description
            job["progress"] = changed["progress"] = progress
        self._broadcast("changed", job_id, changed if self.partial_updates else job)

    def remove_job(self, job_id: int) -> None:
        """The middleware forgets a job (transient ones, or past its 1,000-job memory)."""
        self.jobs.pop(job_id, None)
        self._broadcast("removed", job_id, None)

    async def run_job(self, method: str, *, outcome: str = "SUCCESS", steps: int = 4, step_s: float = 5.0,
                      task_id: int = 1) -> int:
        """One job on its own: WAITING, RUNNING with progress, then ``outcome``."""
        job_id = self.add_job(method, description=f"{method} (simulated)", arguments=arguments_for(method, task_id))
        await self._sleep(step_s / 2)
        self.update_job(job_id, state="RUNNING", percent=0, description="starting")
        for step in range(1, steps + 1):
            await self._sleep(step_s)
            if job_id not in self.jobs:
                return job_id
            self.update_job(job_id, percent=round(100 * step / (steps + 1)), description=f"step {step} of {steps}")
        await self._sleep(step_s)
        if job_id in self.jobs:
            self.update_job(job_id, state=outcome, percent=100 if outcome == "SUCCESS" else None, description="done")
        return job_id

    def workload(self, *, every_s: float = 20.0, count: int | None = None) -> asyncio.Task[None]:
        """Start jobs every ``every_s`` (simulated), outcomes mostly SUCCESS, until stopped."""

        self.workload_every_s = every_s

        async def loop() -> None:
            started = 0
            while count is None or started < count:
                outcome = self.rng.choices(OUTCOMES, (80, 15, 5))[0]
                method = self.rng.choice(METHODS)
                self._spawn(self.run_job(method, outcome=outcome, steps=self.rng.randint(2, 6),
                                         step_s=self.rng.uniform(2, 15), task_id=self.rng.choice(TASK_IDS)))
                started += 1
                await self._sleep(self.rng.uniform(every_s / 2, every_s * 1.5))

        return self._spawn(loop())

    def faults(self, *, drop_every_s: float = 0.0, restart_every_s: float = 0.0) -> asyncio.Task[None]:
        """Drop every connection every ``drop_every_s`` and restart every ``restart_every_s``
        (simulated seconds; 0 = never), for demos of what the ingestor survives."""

        async def loop() -> None:
            now = 0.0
            next_drop = drop_every_s or float("inf")
            next_restart = restart_every_s or float("inf")
            while next_drop != float("inf") or next_restart != float("inf"):
                wake = min(next_drop, next_restart)
                await self._sleep(wake - now)
                now = wake
                if now >= next_restart:
                    await self.restart()
                    self.workload_task = self.workload(every_s=self.workload_every_s) if self.workload_every_s else None
                    next_restart += restart_every_s
                if now >= next_drop:
                    await self.drop_connections()
                    next_drop += drop_every_s

        task = asyncio.ensure_future(loop())
        self._fault_task = task
        return task

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sleep(self, simulated_s: float) -> None:
        await asyncio.sleep(simulated_s / self.clock)

    def _cancel_jobs(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- faults -----------------------------------------------------------------------

    async def drop_connections(self) -> int:
        """Close every websocket now (a network cut or a middleware crash)."""
        sessions = list(self.sessions)
        for session in sessions:
            await session.ws.close(code=1011, message=b"simulated drop")
        return len(sessions)

    def pause(self) -> None:
        """Refuse new connections (HTTP 503) until ``resume``."""
        self.accepting = False

    def resume(self) -> None:
        self.accepting = True

    async def restart(self, *, keep_boot_id: bool | None = None) -> None:
        """middlewared restarts: connections drop, jobs are forgotten, ids restart at 1."""
        await self.drop_connections()
        self._cancel_jobs()
        self.jobs.clear()
        self.next_id = 1
        self.restarts += 1
        if not (self.kernel_boot_id if keep_boot_id is None else keep_boot_id):
            self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128)))


class _CallError(Exception):
    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(job)


async def run(*, host: str, port: int, api_key: str, username: str, clock: float, every_s: float,
              drop_every_s: float = 0.0, restart_every_s: float = 0.0, on_ready: Any = None) -> MiddlewareSimulator:
    """``pipeline simulate truenas``: serve a middleware running jobs until SIGINT/SIGTERM."""
    from pipeline.push import stop_on_signals

    simulator = MiddlewareSimulator(api_key=api_key, username=username, clock=clock)
    ports.report("listen", await simulator.start(host, port))
    stop = asyncio.Event()
    stop_on_signals(stop)
    simulator.workload(every_s=every_s)
    simulator.faults(drop_every_s=drop_every_s, restart_every_s=restart_every_s)
    if on_ready is not None:
        on_ready(simulator)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
    return simulator
