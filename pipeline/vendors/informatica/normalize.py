"""Informatica Cloud Integration Hub (CIH) publication/subscription events -> JobEvents.

Names used here: job = one publication or subscription, ``informatica:<source>:
<applicationName>/<pubSubName>``; run = one CIH event (``informatica:<source>:<eventId>``);
source = ``ctx.source`` or "default" (the documents never name the organization).
attrs["job_name"] = the publication's or subscription's name (``pubSubName``).

Shapes accepted (``normalize`` and ``split`` take the parsed value or the raw text/bytes):

- one event object, as the Events REST API documents it (``eventId``, ``eventType``,
  ``applicationName``, ``topicName``, ``pubSubName``, ``createTime``, ``completionTime``,
  ``eventStatus``, ``parentEventId``, ``descendantState``, ``childEvents``,
  ``eventHistory``, the four source/target counts, ``runId``; the syntax block spells it
  ``runID``, both are read);
- a list of them (``POST /dih-console/api/v1/events`` pages with ``firstResult`` and
  ``maxResults``). The docs show no wrapper object; ``{"events": [...]}`` and the other
  ``WRAPPER_KEYS`` are accepted defensively, holding a list or one event;
- the Event Status API answer (``GET /dih-console/api/v1/event/<eventId>``), which names
  the job ``publicationName`` / ``subscriptionName`` and gives epoch-millisecond
  ``eventStartTimeLong`` / ``eventEndTimeLong``; ``referencedEventsList`` goes to attrs;
  the on-premises Data Integration Hub spellings (``eventTypeName``, ``startTime``,
  ``completedTime``, ``descendantsEventState``) are read as the same fields;
- ``eventHistory`` as a list of entries or as one entry object (the syntax block shows
  an object); ids as numbers or numeric strings ("Long"); times with or without ``Z``,
  with or without milliseconds, or epoch milliseconds. Naive times are read in ``ctx.tz``.

Rules:

- states (``STATES``, looked up case-insensitively): Pending, Delayed -> PENDING;
  Processing -> RUNNING; Completed (the seed writes Complete) -> SUCCEEDED; Error ->
  FAILED; Discarded -> SKIPPED (CIH discards the parallel instances it will not run).
  An unknown or missing current ``eventStatus`` is RUNNING while there is no
  ``completionTime``, else FAILED; an unknown status in ``eventHistory`` is RUNNING (a
  step on the way; only the current status decides how the event ended). A missing
  ``eventStatus`` falls back to the last history entry's, else ``native_state`` is "".
- every event, nested ``childEvents`` included (flattened, depth-first, at most
  ``MAX_DEPTH`` levels), is its own run; a child's ``parent_run_key`` is its parent's
  ``run_key`` (a top-level event with ``parentEventId`` points at that event's run).
- each history entry becomes one JobEvent at its ``timeStamp``, in time order; entries
  without a time are skipped and counted in attrs["history_skipped"]. The current
  ``eventStatus`` adds one more JobEvent unless the last history entry already has that
  status. Its time is ``completionTime`` when the state is terminal, else the latest
  time the event carries (history or ``createTime``), else ``ctx.received_at``.
- started_at = ``createTime``; finished_at = ``completionTime`` (else the entry's own
  time) on terminal JobEvents only. ``comments`` become error_message on Error entries,
  attrs["comment"] otherwise.
- counts (source_success, source_failed, target_success, target_failed), rows
  (= targetSuccessCount), descendantState and referencedEventsList describe the event
  as polled now, so they ride on the run's latest JobEvent only.
- event_id = source + eventId + status (case-folded, Complete read as Completed) + time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipeline.model import InvalidEvent, JobEvent, State, iso_time, make_event_id
from pipeline.vendors._common import (
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    load_json,
    optional_int,
    parse_time,
    source_of,
)

VENDOR = "informatica"

# How long a run may go unconfirmed before it is STALE (the settings read it through
# ``vendors.get(v).STALE_AFTER``). The events API allows 5 calls a minute for every
# publication and subscription of a hub, so a poller revisits a Processing event only
# every few minutes; a run is STALE after about three missed revisits.
STALE_AFTER = timedelta(seconds=600)

STATES: dict[str, State] = {
    "Pending": State.PENDING,
    "Delayed": State.PENDING,
    "Processing": State.RUNNING,
    "Completed": State.SUCCEEDED,
    "Complete": State.SUCCEEDED,
    "Error": State.FAILED,
    "Discarded": State.SKIPPED,
}

_STATE_BY_KEY = {native.casefold(): state for native, state in STATES.items()}
# Spellings that name the same status, so they give the same event_id.
_SAME_STATUS = {"complete": "completed"}

WRAPPER_KEYS = ("events", "eventDetails", "eventList", "content", "data", "items", "results")
MAX_DEPTH = 32  # childEvents levels; CIH nests publication -> subscription (-> file) events
COUNT_FIELDS = {
    "sourceSuccessCount": "source_success",
    "sourceFailedCount": "source_failed",
    "targetSuccessCount": "target_success",
    "targetFailedCount": "target_failed",
}
_MAX_TEXT = 2000
_MAX_NAME = 500


class _Node:
    """One CIH event found in a document, with the id of the event it is nested in."""

    __slots__ = ("fields", "event_id", "parent_id", "nested_in")

    def __init__(
        self, fields: dict[str, Any], event_id: str, parent_id: str | None, nested_in: dict[str, Any] | None
    ) -> None:
        self.fields = fields
        self.event_id = event_id
        self.parent_id = parent_id
        self.nested_in = nested_in


def canonical_state(native: str | None, finished: bool, *, current: bool = True) -> State:
    """Documented statuses by table; unknown ones by the rule in the module docstring."""
    state = _STATE_BY_KEY.get(native.casefold()) if native else None
    if state is not None:
        return state
    return State.FAILED if finished and current else State.RUNNING


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """All JobEvents of every event (children included) in the document."""
    source = source_of(ctx)
    events: list[JobEvent] = []
    for node in _flatten(_event_objects(_parsed(doc))):
        events.extend(_run_events(node, source, ctx))
    return events


def split(doc: Any) -> list[dict[str, Any]]:
    """One piece per event: parents without ``childEvents``, children with ``parentEventId``."""
    pieces = []
    for node in _flatten(_event_objects(_parsed(doc))):
        piece = {key: value for key, value in node.fields.items() if key != "childEvents"}
        if node.nested_in is not None:
            piece["parentEventId"] = node.nested_in["eventId"]
        pieces.append(piece)
    return pieces


# --- document shapes ---------------------------------------------------------------


def _parsed(doc: Any) -> Any:
    if isinstance(doc, memoryview):
        doc = bytes(doc)
    if isinstance(doc, (str, bytes, bytearray)):
        return load_json(doc)
    return doc


def _event_objects(doc: Any) -> list[dict[str, Any]]:
    """The top-level event objects of a single event, a list, or a wrapper object."""
    if isinstance(doc, list):
        return _event_list(doc, "event list")
    if not isinstance(doc, dict):
        raise Rejected(f"an Informatica document must be a JSON object or list, got {type(doc).__name__}")
    if "eventId" in doc:
        return [doc]
    for key in WRAPPER_KEYS:
        if key in doc:
            inner = doc[key]
            if isinstance(inner, list):
                return _event_list(inner, f"{key!r} list")
            if isinstance(inner, dict) and "eventId" in inner:
                return [inner]
            raise Rejected(f"wrapper field {key!r} holds no events (got {type(inner).__name__})")
    detail = doc.get("message", doc.get("error", doc.get("responseCode")))
    if detail is not None:
        raise Rejected(f"not an event but an API answer: {_one_line(str(detail))}")
    raise Rejected("object has no eventId and no events list")


def _event_list(items: list[Any], what: str) -> list[dict[str, Any]]:
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(f"item {index} of the {what} must be an object, got {type(item).__name__}")
    return items


def _flatten(roots: list[dict[str, Any]]) -> list[_Node]:
    """Every event, parents before their children, without recursion."""
    nodes: list[_Node] = []
    stack: list[tuple[dict[str, Any], _Node | None, int]] = [(root, None, 0) for root in reversed(roots)]
    while stack:
        fields, parent, depth = stack.pop()
        event_id = _native_id(fields.get("eventId"), "eventId")
        if event_id is None:
            raise Rejected("event has no eventId")
        if parent is None:
            parent_id = _native_id(fields.get("parentEventId"), f"event {event_id}: parentEventId")
            node = _Node(fields, event_id, parent_id, None)
        else:
            node = _Node(fields, event_id, parent.event_id, parent.fields)
        nodes.append(node)
        children = fields.get("childEvents")
        if children is None:
            continue
        if not isinstance(children, list):
            raise Rejected(f"event {event_id}: childEvents must be a list, got {type(children).__name__}")
        if children and depth + 1 > MAX_DEPTH:
            raise Rejected(f"event {event_id}: childEvents nested deeper than {MAX_DEPTH} levels")
        for index in range(len(children) - 1, -1, -1):
            child = children[index]
            if not isinstance(child, dict):
                raise Rejected(f"event {event_id}: child {index} must be an object, got {type(child).__name__}")
            stack.append((child, node, depth + 1))
    return nodes


# --- one event (run) -------------------------------------------------------------------


class _Step:
    """One status the run went through: a history entry or the current status."""

    __slots__ = ("native", "at", "comments", "current")

    def __init__(self, native: str, at: datetime | None, comments: str | None, current: bool) -> None:
        self.native = native
        self.at = at
        self.comments = comments
        self.current = current


def _run_events(node: _Node, source: str, ctx: Context) -> list[JobEvent]:
    fields = node.fields
    event_id = node.event_id
    application = _name(fields, ("applicationName",), event_id, "applicationName")
    pub_sub = _name(fields, ("pubSubName", "publicationName", "subscriptionName"), event_id, "pubSubName")
    created = _time(fields, ("createTime", "eventStartTimeLong", "startTime"), ctx, event_id)
    completed = _time(fields, ("completionTime", "eventEndTimeLong", "completedTime"), ctx, event_id)

    history, skipped = _history(fields.get("eventHistory"), event_id, ctx)
    current_native = _text(fields.get("eventStatus"), "eventStatus", event_id, limit=100)
    if current_native is None and history:
        current_native = history[-1].native
    steps = list(history)
    if history and _status_key(history[-1].native) == _status_key(current_native or ""):
        steps[-1].current = True
    else:
        steps.append(_Step(current_native or "", None, None, True))

    run_key = f"{VENDOR}:{source}:{event_id}"
    base_attrs = _identity_attrs(fields, event_id, node.parent_id)
    base_attrs["job_name"] = pub_sub  # the publication's or subscription's name
    if skipped:
        base_attrs["history_skipped"] = skipped
    common = {
        "vendor": VENDOR,
        "source": source,
        "job_key": f"{VENDOR}:{source}:{application}/{pub_sub}",
        "run_key": run_key,
        "received_at": ctx.received_at,
        "started_at": created,
        "parent_run_key": f"{VENDOR}:{source}:{node.parent_id}" if node.parent_id is not None else None,
        "raw_ref": ctx.raw_ref,
    }

    latest_time = max((step.at for step in history if step.at is not None), default=None)
    planned: dict[str, dict[str, Any]] = {}
    for step in steps:
        state = canonical_state(step.native, completed is not None, current=step.current)
        occurred_at = step.at
        if occurred_at is None:
            occurred_at = (completed if state.terminal else None) or _latest(latest_time, created) or ctx.received_at
        if occurred_at is None:
            raise Rejected(f"event {event_id} has no time and the context no received_at")
        identity = make_event_id(VENDOR, source, event_id, _status_key(step.native), iso_time(occurred_at))
        if identity in planned:
            continue
        attrs = dict(base_attrs)
        error_message = None
        if step.comments:
            if state is State.FAILED:
                error_message = step.comments
            else:
                attrs["comment"] = step.comments
        elif state is State.FAILED and step.current:
            error_message = _last_error_comment(history)
        planned[identity] = {
            "event_id": identity,
            "native_state": step.native,
            "state": state,
            "occurred_at": occurred_at,
            "finished_at": (completed or occurred_at) if state.terminal else None,
            "error_message": error_message,
            "attrs": attrs,
        }
    last = list(planned.values())[-1]
    last.update(_snapshot(fields, event_id, last["attrs"]))
    try:
        return [JobEvent(**kwargs, **common) for kwargs in planned.values()]
    except InvalidEvent as exc:
        raise Rejected(f"event {event_id}: {_one_line(str(exc))}") from None


def _history(value: Any, event_id: str, ctx: Context) -> tuple[list[_Step], int]:
    """History entries in time order (stable for equal times), and how many had no time."""
    if value is None:
        return [], 0
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise Rejected(f"event {event_id}: eventHistory must be a list or an object, got {type(value).__name__}")
    steps: list[_Step] = []
    skipped = 0
    for index, entry in enumerate(value):
        where = f"event {event_id}: eventHistory[{index}]"
        if not isinstance(entry, dict):
            raise Rejected(f"{where} must be an object, got {type(entry).__name__}")
        entry_id = _native_id(entry.get("eventId"), f"{where}.eventId")
        if entry_id is not None and entry_id != event_id:
            raise Rejected(f"{where} belongs to event {entry_id}")
        native = _text(entry.get("eventStatusName"), f"{where}.eventStatusName", event_id, limit=100)
        at = _parse(entry.get("timeStamp"), ctx, f"{where}.timeStamp")
        comments = _text(entry.get("comments"), f"{where}.comments", event_id, limit=_MAX_TEXT)
        if at is None:
            skipped += 1
            continue
        steps.append(_Step(native or "", at, comments or None, False))
    steps.sort(key=lambda step: step.at)  # type: ignore[arg-type, return-value]
    return steps, skipped


def _snapshot(fields: dict[str, Any], event_id: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Counts, rows and the child roll-up: what the poll says about the event now."""
    counts: dict[str, int] = {}
    for field, name in COUNT_FIELDS.items():
        value = optional_int(fields.get(field), field=f"event {event_id}: {field}")
        if value is not None:
            counts[name] = value
    descendant = _text(fields.get("descendantState"), "descendantState", event_id, limit=100)
    if descendant is None:
        descendant = _text(fields.get("descendantsEventState"), "descendantsEventState", event_id, limit=100)
    if descendant:
        attrs["descendant_state"] = descendant
    referenced = fields.get("referencedEventsList")
    if isinstance(referenced, list) and referenced:
        attrs["referenced_event_ids"] = [
            str(item) for item in referenced[:100] if isinstance(item, (int, str)) and not isinstance(item, bool)
        ]
    return {"counts": counts, "rows": counts.get("target_success")}


def _identity_attrs(fields: dict[str, Any], event_id: str, parent_id: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"native_event_id": event_id}
    for field, name in (
        ("eventType", "event_type"),
        ("eventTypeName", "event_type"),
        ("topicName", "topic"),
        ("runId", "run_id"),
        ("runID", "run_id"),
    ):
        if name in attrs:
            continue
        value = fields.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        text = _text(value, field, event_id, limit=_MAX_NAME)
        if text:
            attrs[name] = text
    if parent_id is not None:
        attrs["parent_event_id"] = parent_id
    return attrs


def _last_error_comment(history: list[_Step]) -> str | None:
    for step in reversed(history):
        if step.comments and canonical_state(step.native, False) is State.FAILED:
            return step.comments
    return None


# --- small parsers -----------------------------------------------------------------------


def _status_key(native: str) -> str:
    key = native.casefold()
    return _SAME_STATUS.get(key, key)


def _native_id(value: Any, field: str) -> str | None:
    """A CIH id ("Long") as text: numbers and numeric strings give the same id."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Rejected(f"{field} must be an id, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and text.isascii():
            return str(int(text))
        if text and len(text) <= 100 and text.isprintable():
            return text
    raise Rejected(f"{field} must be an id, got {str(value)[:40]!r}")


def _one_line(text: str, limit: int = 200) -> str:
    """Vendor text fit for a one-line rejection reason."""
    return " ".join(text.split())[:limit]


def _name(fields: dict[str, Any], names: tuple[str, ...], event_id: str, what: str) -> str:
    for field in names:
        text = _text(fields.get(field), field, event_id, limit=_MAX_NAME)
        if text and text.strip():
            return text
    raise Rejected(f"event {event_id} has no {what}: cannot name its job")


def _text(value: Any, field: str, event_id: str, *, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"event {event_id}: {field} must be a string, got {type(value).__name__}")
    return value if len(value) <= limit else value[:limit] + "…"


def _time(fields: dict[str, Any], names: tuple[str, ...], ctx: Context, event_id: str) -> datetime | None:
    for field in names:
        parsed = _parse(fields.get(field), ctx, f"event {event_id}: {field}")
        if parsed is not None:
            return parsed
    return None


def _parse(value: Any, ctx: Context, field: str) -> datetime | None:
    return parse_time(value, tz=ctx.tz, field=field)


def _latest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None or second is None:
        return first or second
    return max(first, second)


__all__ = ["VENDOR", "STATES", "WRAPPER_KEYS", "canonical_state", "normalize", "split"]
