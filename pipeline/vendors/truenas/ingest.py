"""The TrueNAS ingestor: ``pipeline ingest truenas --url ws(s)://HOST/api/current``.

One connection, in this order (both API flavours; the URL path picks it):

1. connect: current API ``core.set_options {"legacy_jobs": false}``; legacy API
   ``{"msg": "connect"}`` -> ``connected``;
2. log in with the API key: ``auth.login_ex`` ``API_KEY_PLAIN`` (current; a refusal
   ends the ingestor with one line) or ``auth.login_with_api_key`` (legacy);
3. ``system.boot_id`` (the boot marker, see below);
4. subscribe to ``core.get_jobs`` (``core.subscribe`` / ``sub``);
5. resync: ``core.get_jobs``; every job whose snapshot differs from what this ingestor
   last sent goes to Kafka, so nothing that changed while disconnected is lost;
   notifications that arrived before the answer are older than it and are dropped
   (one websocket delivers in order);
6. then every ``added``/``changed`` notification goes to Kafka, a partial ``changed``
   merged into the job's last snapshot first; ``core.ping`` keeps the connection alive;
   a heartbeat goes to every raw partition after the resync and every few seconds.

Any failure (connection dropped, ping unanswered, Kafka not acknowledging) closes the
connection; the ingestor reconnects with backoff and resyncs (step 5), so a job change
that could not be sent is sent from the next listing. ``credentials`` and ``arguments``
are dropped from every job before anything else sees it: they may hold secrets. Only the
first argument of the methods that run a named task (``normalize.TASK_METHODS``: a
replication, cloud sync, snapshot or rsync task id, a scrub's pool) is kept, as the
job's ``task`` field: it is part of the job's identity.

Runs across middleware restarts: job ids restart at 1 when middlewared restarts, so the
records' ``source`` (the normalizer's run key is ``truenas:<source>:<id>``) is
``<host>@<boot marker>``: the first 8 characters of ``system.boot_id``, plus ``.N`` for
the N-th restart detected under the same boot id (newer middleware answers the kernel's
boot id, which a middleware restart keeps). A restart is detected when a job id comes
back with another method, creation time (``time_started``) or finish time, when an
``added`` id is not above every id seen, or when a kept (non-transient) job vanished from
a listing without newer jobs. The marker state is stored in ``ingest.cursors``, so an
ingestor restart keeps the same source. The normalizer keys the job by the host alone.

Jobs lost in a restart: middlewared forgets every job when it restarts, so a job that the
previous run last showed WAITING or RUNNING can never finish. When a restart is detected,
each such job goes to Kafka, under the previous run's source, as ``{"msg": "lost",
"collection": "core.get_jobs", "id": N, "fields": {its last snapshot}}``, which the
normalizer ends as FAILED with error_code ``LOST_IN_RESTART``. Until Kafka acknowledged
them they are kept and sent again before the next listing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiokafka.errors import KafkaError

from pipeline.model import UTC
from pipeline.push import KafkaLink, KafkaUnavailable
from pipeline.sources import Backoff, CursorStore, Record, Redactor, TerminalError, TransientError, records_for
from pipeline.vendors import Context
from pipeline.vendors.truenas.normalize import LOST, TASK_FIELD, task_of

if TYPE_CHECKING:
    from pipeline.settings import Settings

VENDOR = "truenas"
COLLECTION = "core.get_jobs"
SECRET_FIELDS = ("credentials", "arguments")
_MEMORY = 2000  # jobs remembered (the middleware keeps at most 1,000)
_CURSOR_IDENTITIES = 64
_BATCH = 1000  # notifications sent to Kafka in one acknowledged batch at most

log = logging.getLogger("pipeline.ingest.truenas")


# --- the pure part: what is known of the jobs, and which boot they belong to -------------


def _ms(value: Any) -> Any:
    return value.get("$date") if isinstance(value, dict) else value


def _identity(job: dict[str, Any]) -> list[Any]:
    """What cannot change for one job id within one middleware run, once it ran (and its
    state and task, so that a job lost in a restart can be named from the cursor alone)."""
    return [job.get("method"), _ms(job.get("time_started")), _ms(job.get("time_finished")), job.get("state"),
            job.get(TASK_FIELD)]


def _same_run(known: list[Any], job: dict[str, Any]) -> bool:
    """Whether ``job`` can be the job ``known`` describes: middlewared sets a job's
    ``time_started`` once, when it creates it, and its ``time_finished`` once."""
    method, started, finished = known[:3]
    if job.get("method", method) != method:
        return False
    if "time_started" in job and started is not None and _ms(job.get("time_started")) != started:
        return False
    return finished is None or _ms(job.get("time_finished")) == finished


def without_secrets(fields: dict[str, Any]) -> dict[str, Any]:
    """The job without ``credentials`` and ``arguments``; a named task (the first
    argument of ``TASK_METHODS``) kept as ``task``."""
    kept = {name: value for name, value in fields.items() if name not in SECRET_FIELDS}
    task = task_of(fields.get("method"), fields.get("arguments"))
    if task is not None:
        kept[TASK_FIELD] = task
    return kept


_UNFINISHED = ("WAITING", "RUNNING")


def _unfinished(identity: list[Any]) -> bool:
    finished, state = identity[2:4]
    return finished is None and (state in _UNFINISHED or state is None)


@dataclass(frozen=True, slots=True)
class LostJob:
    """A job of an ended middleware run that did not finish in it: its source and last snapshot."""

    source: str
    job: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"msg": LOST, "collection": COLLECTION, "id": self.job["id"], "fields": self.job}


@dataclass
class JobBook:
    """The jobs of one host as this ingestor knows them, and the boot marker.

    Pure (no I/O): the ingestor feeds it listings and notifications and sends what it
    returns. ``source`` is the value to put in the records' ``source``.
    """

    host: str
    boot_id: str | None = None
    epoch: int = 0
    max_id: int = 0
    max_kept_id: int = 0
    identities: dict[int, list[Any]] = field(default_factory=dict)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    sent: dict[int, bytes] = field(default_factory=dict)
    lost: list[LostJob] = field(default_factory=list)

    @property
    def source(self) -> str:
        marker = (self.boot_id or "noboot")[:8]
        return f"{self.host}@{marker}" + (f".{self.epoch}" if self.epoch else "")

    # cursor ---------------------------------------------------------------------------

    def cursor(self) -> dict[str, Any]:
        recent = sorted(self.identities)[-_CURSOR_IDENTITIES:]
        return {
            "boot_id": self.boot_id, "epoch": self.epoch, "max_id": self.max_id, "max_kept_id": self.max_kept_id,
            "identities": {str(job_id): self.identities[job_id] for job_id in recent},
        }

    @classmethod
    def from_cursor(cls, host: str, cursor: dict[str, Any] | None) -> "JobBook":
        if not isinstance(cursor, dict):
            return cls(host)
        return cls(
            host, boot_id=cursor.get("boot_id"), epoch=int(cursor.get("epoch", 0)),
            max_id=int(cursor.get("max_id", 0)), max_kept_id=int(cursor.get("max_kept_id", 0)),
            identities={int(k): list(v) for k, v in (cursor.get("identities") or {}).items()},
        )

    # boots ----------------------------------------------------------------------------

    def _new_run(self, boot_id: str | None) -> None:
        ended = self.source
        for job_id, identity in sorted(self.identities.items()):
            if _unfinished(identity):
                method, started, _finished, state = identity[:4]
                task = identity[4] if len(identity) > 4 else None
                job = self.snapshots.get(job_id) or {
                    "id": job_id, "method": method, "state": state,
                    "time_started": None if started is None else {"$date": started},
                    **({TASK_FIELD: task} if task is not None else {}),
                }
                self.lost.append(LostJob(ended, job))
        if boot_id == self.boot_id:
            self.epoch += 1
        else:
            self.boot_id, self.epoch = boot_id, 0
        self.max_id = self.max_kept_id = 0
        self.identities.clear()
        self.snapshots.clear()
        self.sent.clear()

    def restarted_by(self, listed: list[dict[str, Any]]) -> bool:
        """Whether a listing cannot come from the middleware run this book knows."""
        ids = set()
        for job in listed:
            job_id = job.get("id")
            if not isinstance(job_id, int):
                continue
            ids.add(job_id)
            known = self.identities.get(job_id)
            if known is not None and not _same_run(known, job):
                return True
        newest = max(ids, default=0)
        return self.max_kept_id > newest and self.max_kept_id not in ids

    def connect(self, boot_id: str | None, listed: list[dict[str, Any]]) -> bool:
        """Settle which middleware run ``listed`` belongs to; True when it is a new one."""
        if self.boot_id is None and self.max_id == 0 and not self.identities:
            self.boot_id = boot_id  # first contact ever
            return False
        if boot_id != self.boot_id or self.restarted_by(listed):
            self._new_run(boot_id)
            return True
        return False

    # jobs -----------------------------------------------------------------------------

    def _remember(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        self.snapshots[job_id] = job
        self.identities[job_id] = _identity(job)
        self.max_id = max(self.max_id, job_id)
        if job.get("transient") is False:
            self.max_kept_id = max(self.max_kept_id, job_id)
        if len(self.snapshots) > _MEMORY:
            for old in sorted(self.snapshots)[: len(self.snapshots) - _MEMORY]:
                self.snapshots.pop(old, None)
                self.identities.pop(old, None)
                self.sent.pop(old, None)

    def acknowledged(self, jobs: list[dict[str, Any]]) -> None:
        """Kafka acknowledged these snapshots: a resync need not send them again."""
        for job in jobs:
            if isinstance(job, dict) and isinstance(job.get("id"), int):
                self.sent[job["id"]] = orjson.dumps(job, option=orjson.OPT_SORT_KEYS)

    def resync(self, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The listed jobs that differ from what Kafka last acknowledged (all after a start)."""
        out = []
        for raw in listed:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
                out.append(raw)  # the worker dead-letters it with the reason
                continue
            job = without_secrets(raw)
            self._remember(job)
            if self.sent.get(job["id"]) != orjson.dumps(job, option=orjson.OPT_SORT_KEYS):
                out.append(job)
        return out

    def update(self, kind: str, job_id: Any, fields: Any) -> tuple[dict[str, Any] | None, bool]:
        """A notification -> (the job's merged snapshot to send or None, restart detected)."""
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            return (fields if isinstance(fields, dict) else None), False
        if kind == "removed":
            self.snapshots.pop(job_id, None)
            self.sent.pop(job_id, None)
            return None, False
        fields = without_secrets(fields) if isinstance(fields, dict) else {}
        restarted = False
        if kind == "added" and self.max_id and job_id <= self.max_id:  # ids only grow within one run
            self._new_run(self.boot_id)
            restarted = True
        merged = {**self.snapshots.get(job_id, {}), **fields, "id": job_id}
        self._remember(merged)
        return merged, restarted


def _job_of(payload: Any) -> Any:
    """The job snapshot inside a payload this ingestor built (notification or listed job)."""
    if isinstance(payload, dict):
        body = payload.get("params", payload)
        if isinstance(body, dict) and "fields" in body:
            return body["fields"]
    return payload


# --- the websocket side ------------------------------------------------------------------


class _Closed(TransientError):
    pass


@dataclass(frozen=True, slots=True)
class Notification:
    seq: int
    kind: str
    job_id: Any
    fields: Any


class _Client:
    """One websocket connection in either flavour: calls, pings, notifications in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, legacy: bool, call_timeout_s: float) -> None:
        self.ws = ws
        self.legacy = legacy
        self.call_timeout_s = call_timeout_s
        self.notifications: asyncio.Queue[Notification | None] = asyncio.Queue()
        self._pending: dict[Any, asyncio.Future[tuple[Any, int]]] = {}
        self._ids = itertools.count(1)
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        reason = "the middleware closed the connection"
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    reason = f"unexpected websocket frame {message.type.name}"
                    break
                try:
                    data = orjson.loads(message.data)
                except orjson.JSONDecodeError:
                    log.warning("ignored a websocket message that is not JSON (%d bytes)", len(message.data))
                    continue
                if isinstance(data, dict):
                    self._dispatch(data)
        except (aiohttp.ClientError, asyncio.CancelledError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(_Closed(reason))
            self._pending.clear()
            self.notifications.put_nowait(None)

    def _dispatch(self, data: dict[str, Any]) -> None:
        self._seq += 1
        if self.legacy:
            kind = data.get("msg")
            if kind in ("added", "changed", "removed") and data.get("collection") == COLLECTION:
                self.notifications.put_nowait(Notification(self._seq, kind, data.get("id"), data.get("fields")))
            elif kind in ("result", "pong", "connected", "failed"):
                key = "connect" if kind in ("connected", "failed") else data.get("id")
                self._resolve(key, data)
            elif kind in ("ready", "nosub"):
                subs = data.get("subs") or [data.get("id")]
                for sub in subs:
                    self._resolve(sub, data)
            elif kind == "ping":
                asyncio.ensure_future(self._send({"msg": "pong", "id": data.get("id")}))
            return
        if data.get("method") == "collection_update":
            params = data.get("params") or {}
            if isinstance(params, dict) and params.get("collection") == COLLECTION:
                self.notifications.put_nowait(
                    Notification(self._seq, params.get("msg"), params.get("id"), params.get("fields"))
                )
        elif "id" in data:
            self._resolve(data["id"], data)

    def _resolve(self, key: Any, data: dict[str, Any]) -> None:
        future = self._pending.pop(key, None)
        if future is not None and not future.done():
            future.set_result((data, self._seq))

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self.ws.send_str(orjson.dumps(message).decode())
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise _Closed(f"sending failed: {exc}") from None

    async def _request(self, key: Any, message: dict[str, Any]) -> tuple[dict[str, Any], int]:
        future: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        await self._send(message)
        try:
            return await asyncio.wait_for(future, self.call_timeout_s)
        except asyncio.TimeoutError:
            self._pending.pop(key, None)
            raise TransientError(f"no answer to {message.get('method') or message.get('msg')} within {self.call_timeout_s:g} s") from None

    async def call(self, method: str, params: list[Any]) -> tuple[Any, int]:
        """A method call -> (result, sequence number of the answer); errors raise."""
        if self.legacy:
            call_id = str(uuid.uuid4())
            answer, seq = await self._request(call_id, {"id": call_id, "msg": "method", "method": method, "params": params})
        else:
            call_id = next(self._ids)
            answer, seq = await self._request(call_id, {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params})
        error = answer.get("error")
        if error is not None:
            raise CallFailed(method, error)
        return answer.get("result"), seq

    async def handshake(self) -> None:
        if self.legacy:
            answer, _ = await self._request("connect", {"msg": "connect", "version": "1", "support": ["1"]})
            if answer.get("msg") != "connected":
                raise TransientError(f"the middleware refused the connection: {str(answer)[:200]}")
        else:
            await self.call("core.set_options", [{"legacy_jobs": False}])

    async def login(self, username: str, api_key: str) -> None:
        if self.legacy:
            ok, _ = await self.call("auth.login_with_api_key", [api_key])
            if ok is not True:
                raise TerminalError("TrueNAS refused the API key (auth.login_with_api_key answered false)")
            return
        try:
            answer, _ = await self.call("auth.login_ex", [{"mechanism": "API_KEY_PLAIN", "username": username, "api_key": api_key}])
        except CallFailed as exc:
            if not exc.no_such_method:
                raise
            ok, _ = await self.call("auth.login_with_api_key", [api_key])  # servers before auth.login_ex
            if ok is not True:
                raise TerminalError("TrueNAS refused the API key (auth.login_with_api_key answered false)") from None
            return
        response = answer.get("response_type") if isinstance(answer, dict) else answer
        if response != "SUCCESS":
            raise TerminalError(f"TrueNAS refused the API key for user {username!r} (auth.login_ex: {response})")

    async def boot_id(self) -> str | None:
        try:
            result, _ = await self.call("system.boot_id", [])
        except CallFailed as exc:
            log.warning("system.boot_id failed (%s); runs are told apart by job ids alone", exc)
            return None
        return result if isinstance(result, str) and result else None

    async def subscribe(self) -> None:
        if self.legacy:
            sub_id = str(uuid.uuid4())
            answer, _ = await self._request(sub_id, {"msg": "sub", "id": sub_id, "name": COLLECTION})
            if answer.get("msg") != "ready":
                raise TransientError(f"subscribing to {COLLECTION} failed: {str(answer.get('error'))[:200]}")
        else:
            await self.call("core.subscribe", [COLLECTION])

    async def ping(self) -> None:
        if self.legacy:
            ping_id = str(uuid.uuid4())
            await self._request(ping_id, {"msg": "ping", "id": ping_id})
        else:
            result, _ = await self.call("core.ping", [])
            if result != "pong":
                raise TransientError(f"core.ping answered {str(result)[:40]!r}")


class CallFailed(TransientError):
    """A method call answered with an error (-32000 too many calls, -32001 call error ...)."""

    def __init__(self, method: str, error: Any) -> None:
        if isinstance(error, dict):
            detail = error.get("message") or error.get("reason") or error.get("errname") or error.get("error")
            code = error.get("code", error.get("error"))
        else:
            detail, code = error, None
        super().__init__(f"{method} failed ({code}): {str(detail)[:200]}")
        text = str(detail).lower()
        self.no_such_method = str(code) in ("-32601", "ENOMETHOD") or "does not exist" in text or "not found" in text


@dataclass(frozen=True, slots=True)
class TruenasConfig:
    url: str
    api_key: str
    username: str = "root"
    host: str | None = None
    ping_every_s: float = 20.0
    heartbeat_every_s: float = 5.0
    call_timeout_s: float = 30.0
    verify_tls: bool = True
    ca_file: str | None = None

    def ssl(self) -> ssl.SSLContext | bool:
        """What aiohttp gets: the system's CAs, a CA file of the NAS's own, or no check."""
        if not self.verify_tls:
            return False
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        return True

    @property
    def legacy(self) -> bool:
        return urlsplit(self.url).path.rstrip("/").endswith("/websocket")

    @property
    def source_host(self) -> str:
        """The host part of ``source``: given, else the URL's host name (no port, no ':')."""
        return self.host or (urlsplit(self.url).hostname or "truenas").replace(":", "_")


LOOPBACK_HOSTS = ("localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_url(url: str, *, allow_plain: bool = False) -> str:
    """A usable websocket URL, or ValueError with what is wrong. Plain ``ws://`` only to this
    machine (or with ``allow_plain``): TrueNAS revokes an API key used over an unencrypted
    connection, so one wrong URL would burn the key."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"--url {url!r} must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"--url {url!r} has no host")
    if parts.scheme == "ws" and not allow_plain and not is_loopback(parts.hostname):
        raise ValueError(f"--url {url!r}: TrueNAS revokes an API key sent over an unencrypted connection; use wss://, "
                         "or pass --allow-plain-ws (allow_plain_ws = true) when a TLS tunnel carries it")
    path = parts.path.rstrip("/")
    if not (path.endswith("/api/current") or path.endswith("/websocket") or "/api/v" in path):
        raise ValueError(f"--url {url!r} should end with /api/current (or /websocket for the legacy API)")
    return url


def check_host(host: str) -> str:
    """A host name usable in ``source`` (job keys are split on ':', the marker follows '@')."""
    if not host or any(char in host for char in ":@ \t\n") or len(host) > 200:
        raise ValueError(f"--host {host!r} must be a non-empty name without ':', '@' or spaces")
    return host


@dataclass(slots=True)
class IngestStats:
    connections: int = 0
    resyncs: int = 0
    records: int = 0
    heartbeats: int = 0
    restarts_detected: int = 0
    lost_jobs: int = 0


class TruenasIngestor:
    """Connect, resync, follow, reconnect: the loop described in the module docstring."""

    def __init__(
        self, config: TruenasConfig, link: KafkaLink, cursors: CursorStore | None, *,
        backoff: Backoff = Backoff(initial_s=1.0, maximum_s=60.0), redact: Redactor | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.cursors = cursors
        self.backoff = backoff
        self.redact = redact or Redactor([config.api_key])
        self.book: JobBook | None = None
        self.stats = IngestStats()
        self.on_sent = on_sent
        self.connected = asyncio.Event()
        self._saved_cursor: dict[str, Any] | None = None

    @property
    def cursor_key(self) -> str:
        return f"truenas:{self.config.source_host}"

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a ``TerminalError`` (bad API key) propagates."""
        failures = 0
        while not stop.is_set():
            resyncs = self.stats.resyncs
            try:
                if self.book is None:
                    cursor = await self.cursors.load(self.cursor_key, timeout_s=30) if self.cursors else None
                    self.book = JobBook.from_cursor(self.config.source_host, cursor)
                    self.link.source = self.book.source
                await self._session(stop)
                failures = 0
            except TerminalError:
                raise
            except (TransientError, KafkaUnavailable, KafkaError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                # a connection that got through its resync was a success: start the backoff over
                failures = 1 if self.stats.resyncs > resyncs else failures + 1
                wait = self.backoff.delay(failures)
                log.warning("truenas %s: %s; reconnecting in %.1f s", self.config.source_host,
                            self.redact(str(exc) or type(exc).__name__), wait)
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            finally:
                self.connected.clear()

    async def _session(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.call_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                ws = await http.ws_connect(
                    self.config.url, ssl=self.config.ssl(), heartbeat=None, max_msg_size=64 * 1024 * 1024,
                )
            except aiohttp.WSServerHandshakeError as exc:
                raise TransientError(f"websocket handshake with {self.config.url} failed: HTTP {exc.status}") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise TerminalError(
                    f"the TLS certificate of {self.config.url} is not trusted ({exc.certificate_error}); "
                    "pass --ca-file with the NAS's CA, or --insecure"
                ) from None
            client = _Client(ws, legacy=self.config.legacy, call_timeout_s=self.config.call_timeout_s)
            client.start()
            try:
                await self._follow(client, stop)
            finally:
                await client.close()

    async def _follow(self, client: _Client, stop: asyncio.Event) -> None:
        book = self.book
        assert book is not None
        await client.handshake()
        await client.login(self.config.username, self.config.api_key)
        boot_id = await client.boot_id()
        await client.subscribe()
        listed, barrier = await client.call("core.get_jobs", [])
        if not isinstance(listed, list):
            raise TransientError(f"core.get_jobs answered {type(listed).__name__}, not a list")
        self.stats.connections += 1
        if book.connect(boot_id, listed):
            self.stats.restarts_detected += 1
            log.warning("truenas %s: middleware restart detected; runs now under source %s", book.host, book.source)
        self.link.source = book.source
        await self._send_lost()
        await self._send(book.resync(listed))
        self.stats.resyncs += 1
        await self._heartbeat_and_cursor()
        self.connected.set()
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.config.ping_every_s
        next_heartbeat = loop.time() + self.config.heartbeat_every_s
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                wait = max(0.0, min(next_ping, next_heartbeat) - loop.time())
                getting = asyncio.ensure_future(client.notifications.get())
                done, _ = await asyncio.wait({getting, stopping}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if getting in done:
                    notes = [getting.result()]
                    while len(notes) < _BATCH and not client.notifications.empty():
                        notes.append(client.notifications.get_nowait())
                    await self._notified([note for note in notes if note is not None and note.seq > barrier])
                    if None in notes:
                        raise _Closed("the middleware closed the connection")
                else:
                    getting.cancel()
                if loop.time() >= next_ping:
                    await client.ping()
                    next_ping = loop.time() + self.config.ping_every_s
                if loop.time() >= next_heartbeat:
                    await self._heartbeat_and_cursor()
                    next_heartbeat = loop.time() + self.config.heartbeat_every_s
        finally:
            stopping.cancel()

    async def _notified(self, notes: list[Notification]) -> None:
        """Send the notifications already queued as one acknowledged batch; a restart
        found among them first flushes what belongs to the previous middleware run."""
        book = self.book
        assert book is not None
        payloads: list[Any] = []
        for note in notes:
            fields, restarted = book.update(note.kind, note.job_id, note.fields)
            if restarted:
                await self._send(payloads)
                payloads = []
                await self._send_lost()
                self.stats.restarts_detected += 1
                self.link.source = book.source
                log.warning("truenas %s: job id %s came back: middleware restart; runs now under source %s",
                            book.host, note.job_id, book.source)
                await self._save_cursor()
            if fields is None:
                continue
            body = {"msg": note.kind, "collection": COLLECTION, "id": note.job_id, "fields": fields}
            payloads.append(body if self.config.legacy else {"jsonrpc": "2.0", "method": "collection_update", "params": body})
        await self._send(payloads)

    async def _send_lost(self) -> None:
        """The jobs a restart took away, each under the source of the run it was in;
        forgotten only once Kafka acknowledged them."""
        book = self.book
        assert book is not None
        while book.lost:
            source = book.lost[0].source
            batch = list(itertools.takewhile(lambda lost: lost.source == source, book.lost))
            await self._send([lost.payload() for lost in batch], source=source)
            del book.lost[: len(batch)]
            self.stats.lost_jobs += len(batch)
            log.warning("truenas %s: %d job(s) of %s lost in the middleware restart", book.host, len(batch), source)

    async def _send(self, payloads: list[Any], *, source: str | None = None) -> None:
        """Records under the current source (or ``source``), sent and acknowledged
        (acks=all); only then are the jobs in them marked as sent (a failure leaves them
        to the next resync)."""
        if not payloads:
            return
        book = self.book
        assert book is not None
        ctx = Context(source=source or book.source, received_at=datetime.now(UTC))
        records: list[Record] = []
        for payload in payloads:
            records.extend(records_for(VENDOR, payload, ctx))
        current = self.link.source
        self.link.source = source or book.source
        try:
            report = await self.link.send(records)
        finally:
            self.link.source = current
        if source is None:
            book.acknowledged([_job_of(payload) for payload in payloads])
        for index, reason in report.too_large:
            log.error("truenas %s: a job record was not sent: %s", book.host, reason)
        self.stats.records += report.sent
        if self.on_sent is not None:
            self.on_sent(report.sent)

    async def _heartbeat_and_cursor(self) -> None:
        await self.link.heartbeat()
        self.stats.heartbeats += 1
        await self._save_cursor()

    async def _save_cursor(self) -> None:
        """The boot marker state to ``ingest.cursors``, when it changed since last saved."""
        if self.cursors is None or self.book is None:
            return
        cursor = self.book.cursor()
        if cursor == self._saved_cursor:
            return
        await asyncio.wait_for(self.cursors.save(self.cursor_key, cursor), self.link.ack_timeout_s)
        self._saved_cursor = cursor


def config_warnings(config: TruenasConfig) -> list[str]:
    """What works but should not be left so (pure)."""
    warnings = []
    if config.username == "root":
        warnings.append("the API key belongs to root: give the ingestor a read-only admin user of its own "
                        "(--username, JOBSTREAM_TRUENAS_USERNAME)")
    if not config.verify_tls:
        warnings.append("the NAS's TLS certificate is not verified (--insecure, insecure = true): anyone on the path "
                        "can take the API key; give the NAS's CA with --ca-file instead")
    return warnings


async def run(settings: "Settings", config: TruenasConfig) -> IngestStats:
    """``pipeline ingest truenas``: follow the middleware until SIGINT/SIGTERM.

    A refused API key raises ``TerminalError`` (the command prints it and exits 1).
    """
    from pipeline.push import log_to_stderr, stop_on_signals

    redact = Redactor([config.api_key])
    log_to_stderr(redact)
    link = KafkaLink(settings.bootstrap, VENDOR, config.source_host, ack_timeout_s=settings.kafka_ack_timeout_s,
                     client_id="jobstream-ingest-truenas")
    stop = asyncio.Event()
    stop_on_signals(stop)
    log.info("following %s (%s API) -> raw.truenas at %s", config.url, "legacy" if config.legacy else "current",
             settings.bootstrap)
    for warning in config_warnings(config):
        log.warning(warning)
    cursors = await _started_cursors(settings, stop, redact)
    ingestor = TruenasIngestor(config, link, cursors, redact=redact)
    try:
        if cursors is not None:
            await ingestor.run(stop)
    finally:
        await link.close()
        if cursors is not None:
            await cursors.stop()
    log.info("stopped: %d connections, %d records, %d heartbeats, %d middleware restarts detected",
             ingestor.stats.connections, ingestor.stats.records, ingestor.stats.heartbeats,
             ingestor.stats.restarts_detected)
    return ingestor.stats


async def _started_cursors(settings: "Settings", stop: asyncio.Event, redact: Redactor) -> CursorStore | None:
    """A started cursor store, retried with backoff while Kafka is away (None: stopped)."""
    backoff = Backoff(initial_s=1.0, maximum_s=30.0)
    failures = 0
    while not stop.is_set():
        cursors = CursorStore(settings.bootstrap, request_timeout_s=settings.kafka_ack_timeout_s)
        try:
            return await asyncio.wait_for(cursors.start(), settings.kafka_ack_timeout_s + 5)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            try:
                await asyncio.wait_for(cursors.stop(), 5)
            except Exception:  # noqa: BLE001 - it never started
                pass
            failures += 1
            wait = backoff.delay(failures)
            log.warning("Kafka at %s not reachable (%s); retrying in %.1f s", settings.bootstrap,
                        redact(str(exc) or type(exc).__name__), wait)
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass
    return None
