"""The one surface every ingestor implements, and the pieces they all share.

A *poller* (QRS, Zuora, Informatica) is a ``PollingSource``: given the cursor it last
stored, one ``poll`` returns the raw records it found, the cursor that covers them, and
when it wants to run next (bytewax's ``StatefulSourcePartition``: ``next_batch``,
``next_awake``, ``snapshot``, with the snapshot made explicit). ``run_poller`` drives it:

1. ``poll(cursor)`` -> ``Poll(records, cursor', next_in)`` (no side effect on Kafka);
2. the records go to ``raw.<vendor>`` and every one is acknowledged (acks=all);
3. heartbeats go to every partition of the raw topic (the worker's event time moves on
   quiet partitions, docs/records.md);
4. ``cursor'`` is stored in ``ingest.cursors`` and acknowledged;
5. only then is ``cursor'`` the cursor of the next poll.

| killed after step | what the restart sees |
|---|---|
| 1 | nothing sent: the same window is polled again |
| 2 or 3 | records sent, cursor not stored: the window is polled and sent again; the worker drops the repeats by their deterministic event ids |
| 4 | the cursor is stored: polling resumes after it |

A *push receiver* (Qlik Cloud webhooks, TrueNAS websocket) has no cursor of its own to
poll from: it uses ``RawProducer`` and acknowledges its sender only after Kafka did.

What every HTTP poller shares sits at the end: ``http_call`` (one request, its failures
classified), ``OffsetPaginator``, the ``Watermark`` cursor, ``CallBudget`` (a vendor's
calls-per-minute limit), ``load_config`` (a TOML table + ``JOBSTREAM_<SECTION>_*``, secrets
never from the file) and ``run_source`` (one poller against Kafka).

Errors: ``TransientError`` (timeouts, connection errors, 5xx, 429; may carry
``retry_after``) backs off with jitter and never earlier than the vendor asked;
``TerminalError`` (401/403, 405 API not enabled, a configured task that does not exist)
ends the ingestor with one clear line. Secrets never reach a log line: every message
passes through ``Redactor``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import random
import time
import tomllib
from contextvars import ContextVar
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from pipeline import errors
from pipeline.errors import JobstreamError
from pipeline import catalog, vendors
from pipeline.kafka import clients
from pipeline.kafka.reading import EndNotReached, read_to_end
from pipeline.ops.stopping import sleep_unless
from pipeline.model import UTC, RawEnvelope, encode_envelope, heartbeat_key
from pipeline.vendors import Context, Rejected
from pipeline.vendors._common import receive_now

log = logging.getLogger("pipeline.ingest")

MAX_REQUEST_BYTES = 1_048_576
"""Kafka's default ``max.request.size``: a raw record larger than this cannot be sent."""

_RECORD_OVERHEAD = 512  # record and batch headers, generous


class SourceError(JobstreamError):
    """Something went wrong talking to a vendor; the message is already redacted."""


class TransientError(SourceError):
    """Worth retrying: timeouts, refused connections, 5xx, 429, "page is not cached"."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerminalError(SourceError):
    """Retrying cannot help (bad credentials, API not enabled, unknown task): stop."""


class DocumentTooLarge(SourceError):
    """One raw record would exceed the broker's request size; it is reported and skipped."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, never shorter than a vendor's Retry-After."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    factor: float = 2.0

    def delay(self, failures: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 = the first)."""
        ceiling = min(self.maximum_s, self.initial_s * self.factor ** max(failures - 1, 0))
        jittered = (rng or random).uniform(ceiling / 2, ceiling)
        return max(jittered, retry_after or 0.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(seconds, 0.0)


class Redactor:
    """Replaces every known secret in a text by ``***``; also a logging filter.

    Secrets shorter than 4 characters are not replaced (they would mangle every
    message) and are refused by the settings that read them.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret and len(secret) >= 4 and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self(record.getMessage())
        record.args = None
        return True


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One raw document piece to send, keyed by the job it concerns (None: unkeyable)."""

    key: str | None
    payload: Any
    received_at: datetime


def records_for(vendor: str, doc: Any, ctx: Context) -> list[Record]:
    """Cut a vendor document into one record per job, keyed by its job key.

    A document the vendor module refuses is still sent, whole and unkeyed: the worker
    dead-letters it with the reason and its bytes, so nothing received is lost.
    """
    received_at = ctx.received_at or receive_now()
    try:
        pieces = vendors.keyed_documents(vendor, doc, ctx)
    except Rejected:
        return [Record(key=None, payload=doc, received_at=received_at)]
    return [Record(key=key, payload=piece, received_at=received_at) for key, piece in pieces]


@dataclass(slots=True)
class SendReport:
    sent: int = 0
    too_large: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


class RawProducer:
    """Writes RawEnvelopes to ``raw.<vendor>``: acks=all, idempotent where the broker
    serves it (``kafka.clients``), every send awaited before the caller moves its cursor."""

    def __init__(
        self, bootstrap: str, vendor: str, source: str, *, client_id: str | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES, request_timeout_s: float = 30.0,
    ) -> None:
        self.vendor = vendor
        self.source = source
        self.topic = catalog.raw_topic(vendor)
        self.max_request_bytes = max_request_bytes
        self._producer = clients.producer(
            bootstrap, client_id=client_id or f"jobstream-ingest-{vendor}", max_request_size=max_request_bytes,
            request_timeout_ms=int(request_timeout_s * 1000), linger_ms=5,
        )

    async def start(self) -> "RawProducer":
        await self._producer.start()
        return self

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> "RawProducer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def encode(self, record: Record) -> bytes:
        """The envelope bytes, or DocumentTooLarge when they cannot fit one request."""
        value = encode_envelope(RawEnvelope(
            vendor=self.vendor, source=self.source, received_at=record.received_at, payload=record.payload,
        ))
        size = len(value) + len(record.key or "") * 4 + _RECORD_OVERHEAD
        if size > self.max_request_bytes:
            raise DocumentTooLarge(
                f"a {self.vendor} record of {size:,} bytes exceeds the {self.max_request_bytes:,}-byte request limit"
            )
        return value

    async def send(self, records: Sequence[Record]) -> SendReport:
        """Send every record and wait until Kafka acknowledged all of them.

        Records too large to send are skipped and listed in the report (with their
        index) so the caller can log them; any other failure raises and nothing of
        this call may be taken as sent.
        """
        report = SendReport()
        futures = []
        for index, record in enumerate(records):
            try:
                value = self.encode(record)
            except DocumentTooLarge as exc:
                report.too_large.append((index, str(exc)))
                continue
            key = record.key.encode("utf-8", "surrogatepass") if record.key is not None else None
            futures.append(await self._producer.send(self.topic, value, key=key))
        if futures:
            await asyncio.gather(*futures)
        report.sent = len(futures)
        return report

    async def heartbeat(self, at: datetime | None = None) -> int:
        """One heartbeat per partition of the raw topic; returns how many were sent."""
        at = at or receive_now()  # the demo's vendor timeline when set
        value = encode_envelope(RawEnvelope(
            vendor=self.vendor, source=self.source, received_at=at, payload=None, heartbeat=True,
        ))
        partitions = await self._producer.partitions_for(self.topic)
        key = heartbeat_key(self.source)
        futures = [
            await self._producer.send(self.topic, value, key=key, partition=partition)
            for partition in sorted(partitions)
        ]
        await asyncio.gather(*futures)
        return len(futures)


class CursorStore:
    """Cursors in the compacted ``ingest.cursors`` topic, keyed ``<ingestor>:<source>``
    (where Kafka Connect keeps source offsets): they survive restarts and redeploys."""

    def __init__(self, bootstrap: str, *, request_timeout_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = catalog.CURSORS
        self._producer = clients.producer(
            bootstrap, client_id="jobstream-cursors", request_timeout_ms=int(request_timeout_s * 1000),
        )

    async def start(self) -> "CursorStore":
        await self._producer.start()
        return self

    async def stop(self) -> None:
        await self._producer.stop()

    async def save(self, key: str, cursor: Any) -> None:
        await self._producer.send_and_wait(self.topic, orjson.dumps(cursor), key=key.encode())

    async def load(self, key: str, *, timeout_s: float = 30.0) -> Any | None:
        """The last cursor stored under ``key``, read from the start of the topic to its
        end (found with the fetch high-water mark, which Tansu answers right)."""
        consumer = clients.consumer(self.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or {0})]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            wanted = key.encode()
            found: Any | None = None
            async for record in read_to_end(consumer, partitions, timeout_s=timeout_s):
                if record.key == wanted:
                    found = None if record.value is None else orjson.loads(record.value)
            return found
        except EndNotReached as exc:
            raise TransientError(str(exc)) from None
        finally:
            await consumer.stop()


class SourceMetrics(Protocol):
    """The hook an ingestor counts its polls and pushes with (``pipeline.ops.health.RoleMetrics``)."""

    def polled(self, ok: bool, *, topic: str | None = None, sent: int = 0, next_in_s: float = 0.0,
               error: str | None = None) -> None: ...

    def acknowledged(self) -> None: ...


SOURCE_METRICS: ContextVar[SourceMetrics | None] = ContextVar("jobstream_source_metrics", default=None)
"""Set by the command that runs an ingestor (``ops.runtime.run_with_operations``): pollers and
push links count there without every vendor module passing it along."""


class Poll(msgspec.Struct, frozen=True, kw_only=True):
    """What one poll found: records to send, the cursor covering them, when to poll next."""

    records: list[Record]
    cursor: Any
    next_in_s: float


class PollingSource(Protocol):
    """What each poller implements (pure of Kafka: ``run_poller`` does the sending)."""

    vendor: str
    source: str

    @property
    def cursor_key(self) -> str: ...

    def initial_cursor(self) -> Any: ...

    async def poll(self, cursor: Any) -> Poll: ...


async def run_poller(
    source: PollingSource,
    producer: RawProducer,
    cursors: CursorStore,
    *,
    stop: asyncio.Event,
    backoff: Backoff = Backoff(),
    redact: Redactor | None = None,
    on_poll: Callable[[Poll, SendReport], Awaitable[None] | None] | None = None,
) -> None:
    """Poll, send, heartbeat, store the cursor, in that order, until ``stop`` is set.

    A ``TerminalError`` propagates (the command prints one line and exits non-zero);
    transient errors back off and retry from the last stored cursor.
    """
    redact = redact or Redactor()
    metrics = SOURCE_METRICS.get()
    cursor = await cursors.load(source.cursor_key)
    if cursor is None:
        cursor = source.initial_cursor()
    failures = 0
    while not stop.is_set():
        try:
            poll = await source.poll(cursor)
            report = await producer.send(poll.records)
            for index, reason in report.too_large:
                log.error("%s: record %d of this poll not sent: %s", source.cursor_key, index, reason)
            await producer.heartbeat()
            await cursors.save(source.cursor_key, poll.cursor)
        except (TransientError, KafkaError, asyncio.TimeoutError) as exc:
            # Kafka not acknowledging is transient too: the cursor did not move.
            failures += 1
            if metrics is not None:
                metrics.polled(False, error=redact(str(exc) or type(exc).__name__))
            wait = backoff.delay(failures, getattr(exc, "retry_after", None))
            log.warning("%s: %s; retrying in %.1f s", source.cursor_key, redact(str(exc) or type(exc).__name__), wait)
            await sleep_unless(stop, wait)
            continue
        failures = 0
        cursor = poll.cursor
        if metrics is not None:
            metrics.polled(True, topic=producer.topic, sent=report.sent, next_in_s=poll.next_in_s)
        if on_poll is not None:
            result = on_poll(poll, report)
            if asyncio.iscoroutine(result):
                await result
        await sleep_unless(stop, poll.next_in_s)



# --- what every HTTP poller shares: one call, its errors, paging, cursors, a budget ----


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, read whole (bodies are small: status lists, one page of events)."""

    status: int
    headers: Any  # a case-insensitive multidict
    body: bytes

    def json(self, what: str) -> Any:
        """The body as JSON, or ``BadAnswer`` naming the call."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadAnswer(f"{what}: the answer is not JSON ({exc})", body=self.body) from None


class BadAnswer(SourceError):
    """The vendor answered with a body that is not the API's shape; ``body`` keeps it
    so the poller can send it on to be dead-lettered with the reason."""

    def __init__(self, message: str, *, body: bytes | str | None = None) -> None:
        super().__init__(message)
        self.body = body


async def http_call(
    session: aiohttp.ClientSession, method: str, url: str, *, what: str, timeout_s: float, redact: Redactor,
    passthrough: tuple[int, ...] = (), **kwargs: Any,
) -> Answer:
    """One request with a deadline; transport failures, 429 and 5xx are transient
    (with the vendor's Retry-After), 401/403 terminal unless listed in ``passthrough``
    (an expired token is worth one renewal); other statuses are the caller's."""
    try:
        async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs) as resp:
            answer = Answer(resp.status, resp.headers, await resp.read())
    except asyncio.TimeoutError:
        raise TransientError(f"{what}: no answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise TransientError(f"{what}: {redact(str(exc)) or type(exc).__name__}") from None
    if answer.status == 429 or answer.status >= 500:
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        raise TransientError(f"{what}: HTTP {answer.status} {_snippet(answer, redact)}".rstrip(), retry_after=retry_after)
    if answer.status in (401, 403) and answer.status not in passthrough:
        raise TerminalError(f"{what}: HTTP {answer.status}, credentials refused {_snippet(answer, redact)}".rstrip())
    return answer


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _snippet(answer: Answer, redact: Redactor) -> str:
    text = " ".join(answer.body[:200].decode("utf-8", "replace").split())
    return f"({redact(text)})" if text else ""


@dataclass(frozen=True, slots=True)
class OffsetPaginator:
    """Offset paging as Informatica's events API does it (dlt's ``OffsetPaginator``):
    a page shorter than ``limit`` is the last one."""

    limit: int
    offset_param: str = "firstResult"
    limit_param: str = "maxResults"

    def first(self) -> dict[str, int]:
        return {self.offset_param: 0, self.limit_param: self.limit}

    def next(self, params: dict[str, int], page_size: int) -> dict[str, int] | None:
        if page_size < self.limit:
            return None
        return {**params, self.offset_param: params[self.offset_param] + self.limit}


class Watermark(msgspec.Struct, frozen=True, kw_only=True):
    """An incremental cursor on a "modified" time (QRS ``modifiedDate``).

    The next query asks from ``mark - overlap`` (``ge``, so nothing modified at the very
    instant of the mark is lost), and ``seen`` remembers which (id, time) pairs inside
    that overlap were already sent, so re-reading them sends nothing twice.
    """

    mark: datetime | None = None
    seen: dict[str, str] = {}

    def query_from(self, overlap_s: float) -> datetime | None:

        return None if self.mark is None else self.mark - timedelta(seconds=overlap_s)

    def admit(self, items: Iterable[tuple[str, datetime]], overlap_s: float) -> tuple[list[int], "Watermark"]:
        """Indexes of the new items, and the watermark that covers all of them."""

        new: list[int] = []
        seen = dict(self.seen)
        mark = self.mark
        for index, (item_id, modified) in enumerate(items):
            stamp = modified.isoformat()
            if seen.get(item_id) == stamp:
                continue
            seen[item_id] = stamp
            new.append(index)
            mark = modified if mark is None else max(mark, modified)
        if mark is not None:
            floor = mark - timedelta(seconds=overlap_s)
            seen = {k: v for k, v in seen.items() if datetime.fromisoformat(v) >= floor}
        return new, Watermark(mark=mark, seen=seen)


class CallBudget:
    """At most ``calls`` requests in any ``per_s`` seconds (Informatica: 5 a minute),
    and none before a vendor's Retry-After has passed.

    Calls are counted when their answer arrives: the vendor counts them when they
    arrive, which is never later, so the budget can never run ahead of the vendor's.
    """

    def __init__(self, calls: int, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.calls = calls
        self.per_s = per_s
        self._clock = clock
        self._done: list[float] = []
        self._blocked_until = 0.0

    def wait_s(self) -> float:
        now = self._clock()
        self._done = [t for t in self._done if t > now - self.per_s]
        wait = self._blocked_until - now
        if len(self._done) >= self.calls:
            wait = max(wait, self._done[-self.calls] + self.per_s - now)
        return max(wait, 0.0)

    async def acquire(self) -> None:
        while (wait := self.wait_s()) > 0:
            await asyncio.sleep(wait)

    def spent(self) -> None:
        self._done.append(self._clock())

    def block_for(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


# --- settings of one ingestor: a TOML file, JOBSTREAM_<SECTION>_* env, secrets never in plain text


class ConfigError(errors.ConfigError):
    """An ingestor's configuration is unusable; the message names the setting."""


def password_problems(section: str, what: str, password: str) -> list[str]:
    """The one rule for a vendor password: given, and at least 4 characters (shorter ones
    cannot be redacted from logs); the message says which of the two it broke."""
    where = f"set JOBSTREAM_{section.upper()}_PASSWORD or password_file"
    if not password:
        return [f"[{section}] the {what} password is missing: {where}"]
    if len(password) < 4:
        return [f"[{section}] the {what} password is shorter than 4 characters ({where})"]
    return []


def load_config(cls: type, path: Any | None, section: str, env: dict[str, str] | None = None) -> Any:
    """Build the frozen dataclass ``cls`` from table ``[section]`` of a TOML file and
    ``JOBSTREAM_<SECTION>_<FIELD>`` variables (env wins).

    Fields listed in ``cls.SECRETS`` are read only from their variable or from a file
    named by ``<field>_file`` (TOML) / ``JOBSTREAM_<SECTION>_<FIELD>_FILE``: a secret
    written in the TOML itself is refused, so config files can be shared and committed.
    """
    env = dict(os.environ) if env is None else env
    table: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table")
    secrets = set(getattr(cls, "SECRETS", ()))
    names = {f.name: f for f in dataclasses.fields(cls)}
    problems: list[str] = []  # every one, one line each
    for key in table:
        if key in secrets:
            problems.append(
                f"[{section}] {key}: secrets are not read from the config file; set "
                f"JOBSTREAM_{section.upper()}_{key.upper()} or {key}_file"
            )
        elif key not in names and not (key.endswith("_file") and key[:-5] in secrets):
            problems.append(f"[{section}] {key}: unknown setting (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for name, f in names.items():
        variable = f"JOBSTREAM_{section.upper()}_{name.upper()}"
        if name in secrets:
            file_name = env.get(variable + "_FILE") or table.get(name + "_file")
            if variable in env:
                values[name] = env[variable]
            elif file_name:
                try:
                    values[name] = Path(file_name).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    problems.append(f"[{section}] cannot read {name}_file {file_name}: {exc.strerror or exc}")
            continue
        try:
            if variable in env:
                values[name] = _config_value(variable, f.type, env[variable])
            elif name in table:
                values[name] = _config_value(f"[{section}] {name}", f.type, table[name])
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        settings = cls(**values)
    except TypeError as exc:
        missing = str(exc).split(":")[-1].strip()
        raise ConfigError(f"[{section}] missing required setting(s): {missing}") from None
    check = getattr(settings, "check", None)
    if check is not None:
        check()
    return settings


def _config_value(name: str, kind: Any, raw: Any) -> Any:
    kind = str(kind)
    try:
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("int"):
            return int(raw)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None


async def run_source(
    source: PollingSource, bootstrap: str, *, stop: asyncio.Event, redact: Redactor,
    backoff: Backoff = Backoff(),
    on_poll: Callable[[Poll, SendReport], Awaitable[None] | None] | None = None,
) -> None:
    """Run one poller against Kafka until ``stop``: the producer and cursor store
    started and stopped around ``run_poller``."""
    connected = await _connect_until_stopped(source, bootstrap, stop, redact)
    if connected is None:
        return
    producer, cursors = connected
    try:
        await run_poller(source, producer, cursors, stop=stop, backoff=backoff, redact=redact, on_poll=on_poll)
    finally:
        await cursors.stop()
        await producer.stop()


KAFKA_RETRY_MAX_S = 30.0
"""Longest wait between two attempts to reach Kafka at an ingestor's start."""


async def _connect_until_stopped(
    source: PollingSource, bootstrap: str, stop: asyncio.Event, redact: Redactor,
) -> tuple[RawProducer, CursorStore] | None:
    """The producer and the cursor store, started once Kafka answers. An ingestor started
    while Kafka is away keeps trying (1 s, doubling to 30 s; said on the first try and every
    tenth), as README promises, instead of a traceback and exit 1. None when stopped first."""
    delay, attempts = 1.0, 0
    while not stop.is_set():
        producer = RawProducer(bootstrap, source.vendor, source.source)
        try:
            await producer.start()
            cursors = CursorStore(bootstrap)  # made only now: an unstarted client warns when collected
            try:
                await cursors.start()
            except BaseException:
                await producer.stop()
                raise
            return producer, cursors
        except (KafkaError, OSError) as exc:
            try:  # a producer that failed to start still holds its client
                await producer.stop()
            except Exception as failed:  # noqa: BLE001 - it failed already; say why only in debug
                log.debug("stopping a producer that did not start: %s", failed)
            attempts += 1
            if attempts == 1 or attempts % 10 == 0:
                log.warning(redact(f"Kafka at {bootstrap} does not answer ({exc or type(exc).__name__}); "
                                   f"{source.vendor} keeps trying (attempt {attempts}, next in {delay:.0f} s)"))
            if await sleep_unless(stop, delay):
                return None
            delay = min(delay * 2, KAFKA_RETRY_MAX_S)
    return None
