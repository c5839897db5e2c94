"""TrueNAS middleware jobs (``core.get_jobs``) -> JobEvents.

Names used here: job = the job's ``method`` on one host, plus the task it runs where the
method's first argument names one (``truenas:<host>:<method>`` or
``truenas:<host>:<method>:<task>``, see ``TASK_METHODS``); run = the job ``id`` within one
middleware run; source = ``ctx.source``: the host, or ``<host>@<boot marker>`` as the
ingestor writes it. The boot marker belongs to the run key, never to the job key: a job
keeps its identity across middleware restarts. attrs["job_name"] is the method, with the
task in brackets when known (``replication.run [3]``).

Shapes accepted (``normalize`` and ``split`` take the parsed value or the raw text/bytes):

- one job object, as ``core.get_jobs`` lists them (``id``, ``method``, ``state``, ...);
- a list of them (the ``core.get_jobs`` answer), also wrapped in a JSON-RPC response
  ``{"jsonrpc": "2.0", "id": .., "result": [...]}`` or the legacy websocket answer
  ``{"msg": "result", "id": .., "result": [...]}`` (a single job as ``result`` too);
- subscription messages, as a JSON-RPC notification ``{"jsonrpc": "2.0", "method":
  "collection_update", "params": {"msg": "added|changed|removed", "collection":
  "core.get_jobs", "id": N, "fields": {...}}}`` or in the legacy form ``{"msg": ...,
  "collection": "core.get_jobs", "id": N, "fields": {...}}``.
- the ingestor's own ``{"msg": "lost", "collection": "core.get_jobs", "id": N, "fields":
  {last snapshot}}``: a job of an earlier middleware run that the new run does not know
  (middlewared forgets every job when it restarts, so the job can never finish). It
  gives a FAILED event with error_code ``LOST_IN_RESTART`` at ``ctx.received_at``
  (when the restart was seen): FAILED, not CANCELED, because the work did not complete
  and nobody asked it to stop; the code tells it apart from a job that failed by itself.
JSON-RPC error answers, other collections and other websocket messages are rejected.

Rules:

- states: WAITING -> PENDING, RUNNING -> RUNNING, SUCCESS -> SUCCEEDED, FAILED -> FAILED,
  ABORTED -> CANCELED; the middleware's numeric values 1..5 are decoded to those names.
  An unknown or missing state (a ``changed`` may carry only some fields) is RUNNING while
  ``time_finished`` is empty, else FAILED; a missing state gives ``native_state`` "".
- a ``changed`` without ``method`` cannot be keyed by job and is rejected: the ingestor
  must merge it into the job's last full snapshot (the middleware itself always sends
  the whole job, so this only happens with partial senders).
- ``removed`` gives no event: it means the middleware forgot the job (transient jobs
  and its 1,000-job memory), not how the job ended, which its last ``changed`` said.
  ``split`` drops it too, so nothing is keyed for it.
- times are ``{"$date": epoch_ms}`` (ISO strings are accepted). occurred_at =
  ``ctx.received_at``, else ``time_finished``, else ``time_started``: the messages carry
  no event time, and taking the finish time from the NAS clock but the earlier updates'
  times from the ingestor's would make a finish look older than the progress before it
  whenever the two clocks differ (the lifecycle would then refuse it as late).
- ``time_started`` is set once, when middlewared creates the job, not when it starts to
  run. A WAITING job keeps it as attrs["queued_at"] (started_at None); later updates
  report it as started_at, and the lifecycle (its R3) reads a reported start at or
  before the run's first PENDING event as that creation time: a job seen waiting
  starts at its first RUNNING update, so its duration leaves out the queue time,
  which ``jobs.runs`` reports as ``queue_s``. A job first seen running has only
  ``time_started`` to go by.
- progress.percent is clamped to 0..100; non-numbers are dropped.
- error_code = ``exc_info.type`` (with ``:errno`` when there is one); error_message =
  ``error``; exc_info.repr, the traceback tail, logs excerpt and small results go to attrs.
- ``credentials`` and ``arguments`` are never copied anywhere (they may hold secrets).
- event_id = host + job id + a fingerprint of the job's fields (without credentials and
  arguments): the same snapshot gives the same id whether it came as ``added``,
  ``changed`` or in a ``core.get_jobs`` list, and any change of the job gives a new one.
  Job ids restart at 1 when the middleware restarts (and it keeps at most 1,000 jobs),
  so the run is keyed by (host, ``time_started`` in epoch ms, id):
  ``truenas:<host>:<time_started ms>:<id>``. ``time_started`` is set once, when the job
  is created, so every update of one job carries it and a job that reuses an id after
  a restart is another run. A partial update without ``time_started`` falls back to
  ``truenas:<host>:<id>`` (``attrs["run_key_basis"] = "job_id"``): merge partial updates
  into the job's last snapshot first, as for ``method``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from pipeline.model import JobEvent, State, make_event_id
from pipeline.vendors._common import (
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    load_json,
    optional_int,
    parse_time,
    source_of,
)

VENDOR = "truenas"

# How long a run may go unconfirmed before it is STALE (the settings read it through
# ``vendors.get(v).STALE_AFTER``). middlewared pushes a job only when its state or progress
# changes, and many long jobs (replication, scrub) report no progress for many minutes;
# between pushes the ingestor's ``core.get_jobs`` resync (every few minutes) confirms them.
STALE_AFTER = timedelta(seconds=900)
COLLECTION = "core.get_jobs"

STATES: dict[str, State] = {
    "WAITING": State.PENDING,
    "RUNNING": State.RUNNING,
    "SUCCESS": State.SUCCEEDED,
    "FAILED": State.FAILED,
    "ABORTED": State.CANCELED,
}

# middlewared.job.State enum values, for senders that write the number.
NUMERIC_STATES: dict[int, str] = {1: "WAITING", 2: "RUNNING", 3: "SUCCESS", 4: "FAILED", 5: "ABORTED"}

UPDATE_KINDS = ("added", "changed", "removed", "lost")
LOST = "lost"  # the ingestor's kind for a job a middleware restart took away
LOST_IN_RESTART = "LOST_IN_RESTART"

# Methods whose first argument names the task they run (a replication / cloud sync /
# snapshot / rsync task id, or the pool a scrub runs on): the task is part of the job.
TASK_METHODS = frozenset({
    "replication.run", "replication.run_onetime", "cloudsync.sync", "cloud_backup.sync",
    "pool.snapshottask.run", "pool.dataset.snapshot_task.run", "rsynctask.run",
    "pool.scrub.run", "pool.scrub.scrub",
})
TASK_FIELD = "task"  # where the ingestor keeps that first argument (``arguments`` never leave it)
_MAX_TASK = 100


def task_of(method: Any, arguments: Any) -> str | None:
    """The task a job runs, from its first argument, for ``TASK_METHODS`` only (other
    arguments may hold secrets and are never read)."""
    if method not in TASK_METHODS or not isinstance(arguments, list) or not arguments:
        return None
    first = arguments[0]
    if isinstance(first, bool) or not isinstance(first, (int, str)):
        return None
    text = str(first).strip()
    if not text or len(text) > _MAX_TASK or any(char in text for char in ": \t\n"):
        return None
    return text

# Never copied into an event (nor into its fingerprint): they may hold secrets.
SECRET_FIELDS = frozenset({"credentials", "arguments"})

_MAX_TEXT = 2000
_MAX_SMALL_JSON = 1024  # bytes: results and extras up to this size are kept in attrs


class _Piece:
    """One job snapshot found in a document, with the message it came in."""

    __slots__ = ("original", "fields", "message_id", "update")

    def __init__(self, original: Any, fields: dict[str, Any], message_id: Any, update: str | None) -> None:
        self.original = original
        self.fields = fields
        self.message_id = message_id
        self.update = update


def canonical_state(native: str | None, finished: bool) -> State:
    """Documented states by table; unknown or missing ones by the finish time."""
    state = STATES.get(native) if native is not None else None
    if state is not None:
        return state
    return State.FAILED if finished else State.RUNNING


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """One event per job snapshot in the document; none for ``removed``."""
    source = source_of(ctx)
    return [_event(piece, source, ctx) for piece in _pieces(_parsed(doc)) if piece.update != "removed"]


def split(doc: Any) -> list[Any]:
    """One piece per job: list items alone, notifications whole, ``removed`` dropped."""
    return [piece.original for piece in _pieces(_parsed(doc)) if piece.update != "removed"]


# --- document shapes ---------------------------------------------------------------


def _parsed(doc: Any) -> Any:
    if isinstance(doc, (str, bytes, bytearray, memoryview)):
        if isinstance(doc, memoryview):
            doc = bytes(doc)
        return load_json(doc)
    return doc


def _pieces(doc: Any) -> list[_Piece]:
    if isinstance(doc, list):
        return _job_list(doc)
    if not isinstance(doc, dict):
        raise Rejected(f"a TrueNAS document must be a JSON object or list, got {type(doc).__name__}")
    if "jsonrpc" in doc:
        if "method" in doc:
            if doc["method"] != "collection_update":
                raise Rejected(f"JSON-RPC notification {str(doc['method'])[:60]!r} is not a collection_update")
            params = doc.get("params")
            if not isinstance(params, dict):
                raise Rejected("collection_update has no params object")
            return _update(doc, params)
        return _answer(doc, "JSON-RPC")
    if "msg" in doc:
        kind = doc["msg"]
        if kind in UPDATE_KINDS:
            return _update(doc, doc)
        if kind == "result":
            return _answer(doc, "websocket")
        raise Rejected(f"websocket message {str(kind)[:40]!r} is not a job update")
    if "collection" in doc:
        raise Rejected("collection message without 'msg'")
    return [_Piece(doc, doc, None, None)]


def _job_list(items: list[Any]) -> list[_Piece]:
    pieces = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(f"job {index} of the list must be an object, got {type(item).__name__}")
        pieces.append(_Piece(item, item, None, None))
    return pieces


def _answer(doc: dict[str, Any], protocol: str) -> list[_Piece]:
    """A method call's answer: the ``core.get_jobs`` list (or one job), or an error."""
    error = doc.get("error")
    if error is not None:
        detail = error.get("message", error.get("reason")) if isinstance(error, dict) else error
        raise Rejected(f"{protocol} error answer: {str(detail)[:200]}")
    result = doc.get("result")
    if isinstance(result, list):
        return _job_list(result)
    if isinstance(result, dict):
        return [_Piece(result, result, None, None)]
    raise Rejected(f"{protocol} answer has no job list as result (got {type(result).__name__})")


def _update(original: dict[str, Any], message: dict[str, Any]) -> list[_Piece]:
    collection = message.get("collection")
    if collection != COLLECTION:
        raise Rejected(f"update for collection {str(collection)[:60]!r}, expected {COLLECTION!r}")
    kind = message.get("msg")
    if kind not in UPDATE_KINDS:
        raise Rejected(f"update kind {str(kind)[:40]!r} is not one of {', '.join(UPDATE_KINDS)}")
    message_id = optional_int(message.get("id"), field="id")
    fields = message.get("fields")
    if kind == "removed":
        if message_id is None:
            raise Rejected("removed message has no job id")
        return [_Piece(original, fields if isinstance(fields, dict) else {}, message_id, kind)]
    if not isinstance(fields, dict):
        raise Rejected(f"{kind} message for job {message_id} has no fields object")
    return [_Piece(original, fields, message_id, kind)]


# --- one job -------------------------------------------------------------------------


def _event(piece: _Piece, source: str, ctx: Context) -> JobEvent:
    fields = piece.fields
    job_id = optional_int(fields.get("id"), field="id")
    if job_id is None:
        job_id = piece.message_id
    elif piece.message_id is not None and piece.message_id != job_id:
        raise Rejected(f"fields id {job_id} differs from message id {piece.message_id}")
    if job_id is None:
        raise Rejected("job has no id")
    method = fields.get("method")
    if not isinstance(method, str) or not method.strip():
        raise Rejected(
            f"job {job_id} has no method (a partial update must be merged with the job's last snapshot first)"
        )

    native = _native_state(fields.get("state"), job_id)
    started = parse_time(fields.get("time_started"), field="time_started")
    finished = parse_time(fields.get("time_finished"), field="time_finished")
    state = canonical_state(native, finished is not None)
    lost = piece.update == LOST
    if lost:
        if ctx.received_at is None:
            raise Rejected(f"lost job {job_id}: the context has no received_at (when the restart was seen)")
        last_native = native
        native, state, finished = LOST_IN_RESTART, State.FAILED, ctx.received_at
    occurred_at = ctx.received_at or finished or started
    if occurred_at is None:
        raise Rejected(f"job {job_id} has no time and the context no received_at")

    task = _task(fields, method)
    attrs: dict[str, Any] = {"job_name": f"{method} [{task}]" if task else method}
    if task:
        attrs["task"] = task
    if piece.update is not None:
        attrs["update"] = piece.update
    queued_at = None
    if (state is State.PENDING or (lost and last_native == "WAITING")) and started is not None:
        attrs["queued_at"] = started.isoformat()
        queued_at, started = started, None
    progress = _progress(fields.get("progress"), attrs, job_id)
    error_code = _exc_info(fields.get("exc_info"), attrs, job_id)
    error_message = _text(fields.get("error"), "error", job_id)
    if lost:
        error_code = LOST_IN_RESTART
        error_message = f"lost in a middleware restart (last seen {last_native or 'without a state'})"
        attrs["cause"] = "lost_in_restart"
        attrs["last_native_state"] = last_native or ""
    _copy_extras(fields, attrs, job_id)

    created = queued_at if queued_at is not None else started
    if created is None:
        attrs["run_key_basis"] = "job_id"  # a partial update without time_started
    host = source.partition("@")[0] or source
    fingerprint = _fingerprint(fields, job_id)
    return JobEvent(
        event_id=make_event_id(VENDOR, source, job_id, LOST, fingerprint) if lost else make_event_id(VENDOR, source, job_id, fingerprint),
        vendor=VENDOR,
        source=source,
        job_key=f"{VENDOR}:{host}:{method}" + (f":{task}" if task else ""),
        run_key=f"{VENDOR}:{source}:{job_id}" if created is None else f"{VENDOR}:{source}:{_epoch_ms(created)}:{job_id}",
        native_state=native or "",
        state=state,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        started_at=started,
        finished_at=finished,
        progress=progress,
        error_code=error_code,
        error_message=error_message,
        raw_ref=ctx.raw_ref,
        attrs=attrs,
    )


def _task(fields: dict[str, Any], method: str) -> str | None:
    """The task: as the ingestor kept it (``TASK_FIELD``), else from ``arguments``."""
    kept = fields.get(TASK_FIELD)
    if kept is not None:
        return task_of(method, [kept])
    return task_of(method, fields.get("arguments"))


def _epoch_ms(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _native_state(value: Any, job_id: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in NUMERIC_STATES:
            raise Rejected(f"job {job_id}: unknown numeric state {value}")
        return NUMERIC_STATES[value]
    if not isinstance(value, str):
        raise Rejected(f"job {job_id}: state must be a string, got {type(value).__name__}")
    return value[:100]


def _progress(value: Any, attrs: dict[str, Any], job_id: int) -> float | None:
    """progress.percent clamped to 0..100 (None when absent or not a number)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Rejected(f"job {job_id}: progress must be an object, got {type(value).__name__}")
    description = value.get("description")
    if isinstance(description, str) and description:
        attrs["progress_description"] = description[:_MAX_TEXT]
    extra = _small_json(value.get("extra"))
    if extra is not None:
        attrs["progress_extra"] = extra
    percent = value.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        return None
    if not math.isfinite(percent):
        return None
    return float(min(100.0, max(0.0, percent)))


def _exc_info(value: Any, attrs: dict[str, Any], job_id: int) -> str | None:
    """error_code from exc_info type and errno; the rest of exc_info to attrs."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Rejected(f"job {job_id}: exc_info must be an object, got {type(value).__name__}")
    kind = value.get("type")
    errno = value.get("errno")
    if isinstance(errno, bool) or not isinstance(errno, (int, type(None))):
        raise Rejected(f"job {job_id}: exc_info.errno must be an integer, got {type(errno).__name__}")
    representation = value.get("repr")
    if isinstance(representation, str) and representation:
        attrs["exc_repr"] = representation[:_MAX_TEXT]
    extra = _small_json(value.get("extra"))
    if extra is not None:
        attrs["exc_extra"] = extra
    kind_text = str(kind)[:100] if isinstance(kind, str) and kind else None
    if kind_text and errno is not None:
        return f"{kind_text}:{errno}"
    if errno is not None:
        return f"errno:{errno}"
    return kind_text


def _copy_extras(fields: dict[str, Any], attrs: dict[str, Any], job_id: int) -> None:
    """Descriptive fields worth keeping; never ``SECRET_FIELDS``."""
    for name in ("description", "logs_path", "result_encoding_error"):
        text = _text(fields.get(name), name, job_id)
        if text:
            attrs[name] = text
    excerpt = _text(fields.get("logs_excerpt"), "logs_excerpt", job_id, keep_tail=True)
    if excerpt:
        attrs["logs_excerpt"] = excerpt
    exception = _text(fields.get("exception"), "exception", job_id, keep_tail=True)
    if exception:
        attrs["exception"] = exception
    for name in ("transient", "abortable"):
        flag = fields.get(name)
        if isinstance(flag, bool):
            attrs[name] = flag
    message_ids = fields.get("message_ids")
    if isinstance(message_ids, list) and message_ids:
        kept = _small_json(message_ids)
        if kept is not None:
            attrs["message_ids"] = kept
    result = fields.get("result")
    if result is not None:
        kept = _small_json(result)
        if kept is not None:
            attrs["result"] = kept
        else:
            attrs["result_omitted"] = True


def _text(value: Any, field: str, job_id: int, *, keep_tail: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"job {job_id}: {field} must be a string, got {type(value).__name__}")
    if len(value) <= _MAX_TEXT:
        return value
    return "…" + value[-_MAX_TEXT:] if keep_tail else value[:_MAX_TEXT] + "…"


def _small_json(value: Any) -> Any:
    """``value`` when it is JSON of at most ``_MAX_SMALL_JSON`` bytes, else None."""
    if value is None:
        return None
    try:
        encoded = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return value if len(encoded) <= _MAX_SMALL_JSON else None


def _fingerprint(fields: dict[str, Any], job_id: int) -> str:
    """The job's fields (minus secrets) as canonical JSON text: the identity of a snapshot."""
    visible = {key: value for key, value in fields.items() if key not in SECRET_FIELDS and key != "id"}
    try:
        return orjson.dumps(visible, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise Rejected(f"job {job_id}: fields cannot be encoded ({str(exc)[:80]})") from None


__all__ = ["VENDOR", "STATES", "NUMERIC_STATES", "LOST_IN_RESTART", "TASK_METHODS", "canonical_state", "normalize", "split", "task_of"]

