"""Zuora RevPro BI Views v2 activity monitoring (``biviews-status``) -> JobEvents.

A BI Views v2 query is tracked by its continuation token (``task_id``) while Zuora moves
it between four queues: active, completed, draining and stale. Names used here:
job = the BI view (``query_config.object_name``), run = the token, source = the tenant
(``ctx.source``; the documents never name it). attrs["job_name"] = the BI view.

Shapes accepted (``normalize`` and ``split`` take the parsed value or the raw text/bytes):

- the queue document ``{"active": [...], "completed": [...], "draining": [...],
  "stale": [...]}`` (any subset of the four; ``GET biviews-status``; the per-token
  ``GET biviews-status/<task_id>`` answers in this shape too, per Zuora's API reference);
- the same wrapped as ``{"result": {...}}`` (the API reference's response sample);
- one task object (``{"task_id": ..., "status": ..., ...}``; the newer API reference's
  per-token answer), bare or wrapped in ``{"result": {...}}``, and a list of task objects.
  Without a queue the state comes from ``status`` alone (see ``STATES``);
- a queue holding one task object instead of a list;
- the seed document's malformed text, whose arrays hold key-value pairs
  (``"active": [ "accumulate": 0, ... ]``). When orjson refuses a text, a small tolerant
  parser reads such an array as objects; a key seen again in the same array starts the
  next object. Anything else that is not JSON is rejected with the position of the fault.

Task fields: ``initated_time`` (Zuora's spelling) or ``initiated_time``;
``filter_params`` (seed) or ``filter_param`` (API reference); naive times are read in
``ctx.tz``; ``elapsed_time`` is ``H:MM:SS.ffffff`` (or a number of seconds).

State rules (``canonical_state``):

1. a final status wins whatever the queue: COMPLETED -> SUCCEEDED, CANCELLED (or
   CANCELED) -> CANCELED, FAILED -> FAILED;
2. otherwise the queue decides: active -> RUNNING, stale -> STALE, completed ->
   SUCCEEDED (all data is cached), draining -> FAILED with ``error_code`` DRAINED_STALE
   (a token drains when completed or stale; a completed one says COMPLETED, so one that
   still shows an in-progress status went stale and never resumed);
3. without a queue every non-final status, documented or unknown, is RUNNING.
Unknown statuses therefore follow rule 2/3 like the in-progress ones and keep their
spelling in ``native_state``. A token that returns from stale to active simply says
RUNNING again; the lifecycle counts the reactivation.

Times (which clock dates what):

=====================================  ==============================================
snapshot                               occurred_at (and finished_at when terminal)
=====================================  ==============================================
active, or a final status (COMPLETED,  ``last_activity``: Zuora's time of the change
CANCELLED, FAILED) in any queue        (else the initiated time, else observed)
completed queue, non-final status      ``last_activity`` (all data was cached by then)
stale queue, non-final status          ``last_activity`` + 240 s: Zuora lists a token
                                       stale after 240 s without activity, so its rule
                                       dates the change, on Zuora's clock (at most the
                                       observed time)
draining queue, non-final status       observed: Zuora gives no time for the drain, so
                                       the time the poll saw it (not before
                                       ``last_activity``)
=====================================  ==============================================

"observed" = the task's ``observed_at`` (added by the ingestor: the poll answer's
``Date``, the vendor's clock) else ``ctx.received_at`` (the envelope's receive time),
else ``last_activity`` for a document read with neither. Why not the observed time for
stale too: a stale token that resumes or completes reports that activity on Zuora's
clock; dated by a later poll (or by another clock), the stale event could lie after the
resumption, which the lifecycle would then refuse as late and the run would stay STALE.
started_at = initiated time; rows = ``accumulate``; counts["last_page_rows"] = ``metric``; queue,
filter params, page number, elapsed seconds and message go to attrs. ``event_id`` is made
of token, queue, status, accumulate, metric, last activity and message: re-reading the same
snapshot gives the same id, while ``elapsed_time`` (which grows on every poll of an idle
token) is left out on purpose.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import orjson

from pipeline.model import JobEvent, State, iso_time, make_event_id
from pipeline.vendors._common import (
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    optional_int,
    parse_duration,
    parse_time,
    source_of,
)

VENDOR = "zuora"

# How long a run may go unconfirmed before it is STALE (the settings read it through
# ``vendors.get(v).STALE_AFTER``). Zuora moves a token to its own stale queue after 240 s
# without activity, and that queue is the vendor's word: the timer is only the fallback
# for a poller that stopped confirming the token, so it waits two and a half times that.
STALE_AFTER = timedelta(seconds=600)
STALE_IDLE = timedelta(seconds=240)  # Zuora lists a token stale after this long without activity

QUEUES: tuple[str, ...] = ("active", "stale", "draining", "completed")

IN_PROGRESS_STATUSES: tuple[str, ...] = (
    "ADDED-TO-QUEUE",
    "META-DATA-SCANNED",
    "SCANNING-PAGE-n",
    "COMMITING-PAGE-n",  # Zuora's spelling
    "COMMITTING-PAGE-n",  # the dictionary's, in case Zuora fixes it
    "MAX-REQUESTED-PAGE-REACHED",
    "NO-RECORD-FOUND",
    "END-OF-QUERY-DATA",
)

FINAL_STATES: dict[str, State] = {
    "COMPLETED": State.SUCCEEDED,
    "CANCELLED": State.CANCELED,
    "CANCELED": State.CANCELED,
    "FAILED": State.FAILED,
}

# Status alone -> state: the answer for a task read without its queue (rule 1 and 3).
# Page-numbered statuses are keyed by their pattern; see ``status_key``.
STATES: dict[str, State] = {
    **{status: State.RUNNING for status in IN_PROGRESS_STATUSES},
    **FINAL_STATES,
}

# Queue -> state for any status that is not final (rule 2).
QUEUE_STATES: dict[str, State] = {
    "active": State.RUNNING,
    "stale": State.STALE,
    "completed": State.SUCCEEDED,
    "draining": State.FAILED,
}

DRAINED_STALE = "DRAINED_STALE"

_PAGE_STATUS = re.compile(r"^(SCANNING|COMMITING|COMMITTING)-PAGE-(\d+)$")
_MAX_TEXT = 2000
_MAX_COUNT = 2**63 - 1  # what the analytics store's BIGINT holds


def status_key(status: str) -> tuple[str, int | None]:
    """The ``STATES`` key for a status as written, and its page number if it has one."""
    text = status.strip().upper()
    match = _PAGE_STATUS.match(text)
    if match:
        page = int(match.group(2))
        if page > _MAX_COUNT:
            raise Rejected(f"status {text[:60]!r}: page number out of range")
        return f"{match.group(1)}-PAGE-n", page
    return text, None


def canonical_state(queue: str | None, status: str) -> tuple[State, str | None]:
    """The canonical state and error code of a task in ``queue`` showing ``status``."""
    return _canonical_state_of_key(queue, status_key(status)[0])


def _canonical_state_of_key(queue: str | None, key: str) -> tuple[State, str | None]:
    final = FINAL_STATES.get(key)
    if final is not None:
        return final, None
    if queue is None:
        return State.RUNNING, None
    if queue == "draining":
        return State.FAILED, DRAINED_STALE
    return QUEUE_STATES[queue], None


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """One event per task in the document (an empty queue document gives none)."""
    source = source_of(ctx)
    return [_event(task, queue, source, ctx) for queue, task in _tasks(_parsed(doc))]


def split(doc: Any) -> list[Any]:
    """One well-formed piece per task: ``{queue: [task]}``, or the task when it has no queue."""
    return [task if queue is None else {queue: [task]} for queue, task in _tasks(_parsed(doc))]


# --- document shapes ---------------------------------------------------------------


def _parsed(doc: Any) -> Any:
    if isinstance(doc, (str, bytes, bytearray, memoryview)):
        return load_text(doc)
    return doc


def load_text(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse strict JSON with orjson, else the seed's key-value-array form."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        strict_error = str(exc)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(f"not UTF-8 text: invalid byte at offset {exc.start}") from None
    if not text.strip():
        raise Rejected("empty document")
    try:
        return _TolerantParser(text).document()
    except Rejected as exc:
        raise Rejected(f"not valid JSON ({strict_error}) nor the key-value-array form: {exc.reason}") from None


def _tasks(doc: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """(queue, task) pairs of any accepted shape; queue is None for a bare task."""
    for _ in range(2):
        if isinstance(doc, dict) and "result" in doc and not _is_queue_doc(doc) and "task_id" not in doc:
            doc = doc["result"]
    if isinstance(doc, dict) and _is_queue_doc(doc):
        pairs: list[tuple[str | None, dict[str, Any]]] = []
        for queue in QUEUES:
            members = doc.get(queue)
            if members is None:
                continue
            if isinstance(members, dict):
                members = [members]
            if not isinstance(members, list):
                raise Rejected(f"queue {queue!r} must be a list of tasks, got {type(members).__name__}")
            for index, task in enumerate(members):
                if not isinstance(task, dict):
                    raise Rejected(f"{queue}[{index}] must be a task object, got {type(task).__name__}")
                pairs.append((queue, task))
        return pairs
    if isinstance(doc, dict) and "task_id" in doc:
        return [(None, doc)]
    if isinstance(doc, list):
        for index, task in enumerate(doc):
            if not isinstance(task, dict):
                raise Rejected(f"item {index} must be a task object, got {type(task).__name__}")
        return [(None, task) for task in doc]
    if isinstance(doc, dict):
        raise Rejected("neither a biviews-status queue document (active/completed/draining/stale) nor a task object")
    raise Rejected(f"a biviews-status document must be a JSON object or list, got {type(doc).__name__}")


def _is_queue_doc(doc: dict[str, Any]) -> bool:
    return any(queue in doc for queue in QUEUES)


# --- one task ------------------------------------------------------------------------


def _event(task: dict[str, Any], queue: str | None, source: str, ctx: Context) -> JobEvent:
    task_id = task.get("task_id")
    if not isinstance(task_id, str) or not task_id.strip():
        raise Rejected(f"task in {queue or 'document'} has no task_id (continuation token)")
    status = task.get("status")
    if status is None:
        status = ""
    if not isinstance(status, str):
        raise Rejected(f"task {task_id[:60]}: status must be a string, got {type(status).__name__}")
    key, page = status_key(status)
    state, error_code = _canonical_state_of_key(queue, key)

    config = _object(task, "query_config", task_id)
    view = config.get("object_name")
    if not isinstance(view, str) or not view.strip():
        raise Rejected(f"task {task_id[:60]} has no query_config.object_name (the BI view)")
    tracker = _object(task, "activity_tracker", task_id)
    initiated_raw = tracker.get("initated_time")
    if initiated_raw is None:
        initiated_raw = tracker.get("initiated_time")
    initiated = parse_time(initiated_raw, tz=ctx.tz, field="initated_time")
    last_activity = parse_time(tracker.get("last_activity"), tz=ctx.tz, field="last_activity")
    elapsed = _elapsed(tracker.get("elapsed_time"))
    observed = parse_time(task.get("observed_at"), field="observed_at") or ctx.received_at
    occurred_at = last_activity or initiated or observed
    if occurred_at is None:
        raise Rejected(f"task {task_id[:60]} has no activity time and the context no received_at")
    finished_at = occurred_at if state.terminal else None
    if key not in FINAL_STATES:
        if queue == "stale" and last_activity is not None:
            occurred_at = last_activity + STALE_IDLE  # Zuora's own rule dates it
            if observed is not None and observed < occurred_at:
                occurred_at = max(observed, last_activity)
        elif queue == "draining" and observed is not None:
            occurred_at = max(observed, last_activity) if last_activity is not None else observed
            finished_at = occurred_at  # when the drain was seen: Zuora gives it no time

    rows = _count(task.get("accumulate"), "accumulate")
    last_page_rows = _count(task.get("metric"), "metric")
    message = task.get("message")
    if message is not None and not isinstance(message, str):
        raise Rejected(f"task {task_id[:60]}: message must be a string, got {type(message).__name__}")

    attrs: dict[str, Any] = {"queue": queue, "job_name": view}
    if page is not None:
        attrs["page"] = page
    filters = config.get("filter_params", config.get("filter_param"))
    if isinstance(filters, dict):
        attrs["filter_params"] = {str(k)[:100]: _scalar(v) for k, v in list(filters.items())[:20]}
    if elapsed is not None:
        attrs["elapsed_seconds"] = elapsed.total_seconds()
    if message:
        attrs["message"] = message[:_MAX_TEXT]
    error_message = None
    if state is State.FAILED:
        error_message = (message or "token drained after going stale")[:_MAX_TEXT]

    return JobEvent(
        event_id=make_event_id(
            VENDOR,
            source,
            task_id,
            queue,
            status,
            rows,
            last_page_rows,
            iso_time(last_activity) if last_activity else None,
            message,
        ),
        vendor=VENDOR,
        source=source,
        job_key=f"{VENDOR}:{source}:{view}",
        run_key=f"{VENDOR}:{source}:{task_id}",
        native_state=status,
        state=state,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        started_at=initiated,
        finished_at=finished_at,
        rows=rows,
        counts={} if last_page_rows is None else {"last_page_rows": last_page_rows},
        error_code=error_code,
        error_message=error_message,
        raw_ref=ctx.raw_ref,
        attrs=attrs,
    )


def _object(task: dict[str, Any], field: str, task_id: str) -> dict[str, Any]:
    value = task.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(f"task {task_id[:60]}: {field} must be an object, got {type(value).__name__}")
    return value


def _count(value: Any, field: str) -> int | None:
    count = optional_int(value, field=field)
    if count is not None and count > _MAX_COUNT:
        raise Rejected(f"{field} is implausibly large: {count}")
    return count


def _elapsed(value: Any) -> timedelta | None:
    """``H:MM:SS.ffffff`` as Zuora writes it; a plain number is taken as seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value < 10**9:
            raise Rejected(f"elapsed_time out of range: {value!r}")
        return timedelta(seconds=value)
    return parse_duration(value, field="elapsed_time")


def _scalar(value: Any) -> Any:
    """A filter value as kept in attrs: scalars as they are, anything else as short JSON text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:200]
    try:
        return orjson.dumps(value)[:200].decode("utf-8", "ignore")
    except (orjson.JSONEncodeError, TypeError):
        return None


# --- the tolerant parser -------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # ASCII digits: \d also matches "٠"
_SPACE = re.compile(r"[ \t\r\n]*")
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_MAX_DEPTH = 64


class _TolerantParser:
    """JSON, except that an array may hold ``"key": value`` pairs (read as objects).

    Only reached when orjson refuses the text, so it favours clarity over speed.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> Any:
        value = self.value(0)
        self.space()
        if self.pos != len(self.text):
            raise self.fault("unexpected text after the document")
        return value

    def fault(self, what: str) -> Rejected:
        return Rejected(f"{what} at offset {self.pos}")

    def space(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        self.space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fault(f"expected {char!r}")
        self.pos += 1

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fault("nested too deeply")
        char = self.peek()
        if char == "{":
            self.pos += 1
            members = self.members("}", depth)
            return dict(members)
        if char == "[":
            return self.array(depth)
        if char == '"':
            return self.string()
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return literal
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return orjson.loads(match.group())
        raise self.fault("expected a value" if char else "unexpected end of document")

    def string(self) -> str:
        match = _STRING.match(self.text, self.pos)
        if not match:
            raise self.fault("unterminated or invalid string")
        try:
            value = orjson.loads(match.group())
        except orjson.JSONDecodeError:
            raise self.fault("invalid string escape") from None
        self.pos = match.end()
        return value

    def members(self, closer: str, depth: int) -> list[tuple[str, Any]]:
        """``"key": value`` pairs up to ``closer`` (the opening bracket is consumed)."""
        pairs: list[tuple[str, Any]] = []
        if self.peek() == closer:
            self.pos += 1
            return pairs
        while True:
            if self.peek() != '"':
                raise self.fault("expected a quoted key")
            key = self.string()
            self.expect(":")
            pairs.append((key, self.value(depth + 1)))
            char = self.peek()
            self.pos += 1
            if char == closer:
                return pairs
            if char != ",":
                self.pos -= 1
                raise self.fault(f"expected ',' or {closer!r}")

    def array(self, depth: int) -> list[Any]:
        self.pos += 1
        if self.holds_pairs():
            return self.group(self.members("]", depth))
        items: list[Any] = []
        if self.peek() == "]":
            self.pos += 1
            return items
        while True:
            items.append(self.value(depth + 1))
            char = self.peek()
            self.pos += 1
            if char == "]":
                return items
            if char != ",":
                self.pos -= 1
                raise self.fault("expected ',' or ']'")

    def holds_pairs(self) -> bool:
        """Whether the array just opened starts with ``"key":`` (the seed's malformed form)."""
        if self.peek() != '"':
            return False
        start = self.pos
        match = _STRING.match(self.text, start)
        if not match:
            return False
        self.pos = match.end()
        answer = self.peek() == ":"
        self.pos = start
        return answer

    @staticmethod
    def group(pairs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Cut key-value pairs into objects; a key seen again starts the next object."""
        objects: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        for key, value in pairs:
            if key in current:
                objects.append(current)
                current = {}
            current[key] = value
        if current:
            objects.append(current)
        return objects


__all__ = ["VENDOR", "STATES", "QUEUE_STATES", "canonical_state", "status_key", "normalize", "split"]

