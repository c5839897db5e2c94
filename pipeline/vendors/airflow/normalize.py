"""Apache Airflow DAG runs, task instances and audit-log entries -> JobEvents (pure, no I/O).

Names used here (source = ``ctx.source`` or "default": the documents never name the
Airflow instance):

- a DAG run is a run of the job ``airflow:<source>:<dag_id>``; its run key is
  ``airflow:<source>:<dag_id>:<dag_run_id>``; ``run_type``, the logical date and the data
  interval go to ``attrs``; attrs["job_name"] = the dag_id;
- a task instance is a run of the job ``airflow:<source>:<dag_id>.<task_id>``; its run key is
  ``<DAG run key>:<task_id>`` and, for a mapped task (``map_index`` >= 0),
  ``<DAG run key>:<task_id>[<map_index>]``; its ``parent_run_key`` is its DAG run's key;
  ``attempt`` = ``try_number`` (Airflow 2.10+ and 3 count it up when a try is scheduled;
  0 means "never tried" and leaves the attempt to the lifecycle); attrs["job_name"] =
  ``<dag_id>.<task_id>``.

Shapes accepted (``normalize`` and ``split`` take the parsed value or the raw text/bytes):
one object of the stable REST API (``/api/v1`` of Airflow 2, ``/api/v2`` of Airflow 3: a
``TaskInstance``/``TaskInstanceResponse``, a ``DAGRun``/``DAGRunResponse`` or an
``EventLog``/``EventLogResponse``), a list of them, or a collection answer
(``{"task_instances": [...]}``, ``{"dag_runs": [...]}``, ``{"event_logs": [...]}``, with
``total_entries``). Unknown fields are ignored; ``conf`` and ``rendered_fields`` are never
copied (they may hold credentials).

Time of a snapshot (``occurred_at``): the latest of the times the document carries for the
run (task instance: ``scheduled_when`` (v2), ``queued_when``, ``start_date``, ``end_date``;
DAG run: ``queued_at``, ``start_date``, ``end_date``), else ``ctx.received_at``. Airflow
only moves these forward, so the snapshots of one try come in time order; a snapshot
without times (a task that is only ``scheduled``) was seen before its next change, so the
receive time is in order too. ``started_at`` = ``start_date`` on running and terminal
snapshots; ``finished_at`` = ``end_date`` on terminal ones; ``queued_when`` is the queued
snapshot's time, which the lifecycle reads as the queue time.

Zombies and runs failed by hand: the run documents cannot tell them from other failures,
Airflow's audit log (``/eventLogs``) can. An entry whose ``event`` names a zombie or a
heartbeat timeout fails that try with error_code ``ZOMBIE``; an entry that records a user
setting a DAG run or task instance to failed or success (its ``extra`` holds
``"state": "failed"|"success"``, its ``owner`` is the user) moves that run there with
error_code ``MARKED_FAILED`` (or attrs["marked_by"] for success). ``relevant_log`` says
which entries those are (the poller sends only them); any other entry is rejected.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from pipeline.model import JobEvent, State, iso_time, make_event_id
from pipeline.vendors._common import (
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    identifier,
    load_json,
    optional_int,
    parse_time,
    source_of,
)

VENDOR = "airflow"

# How long a PENDING/RUNNING run may go unconfirmed before it is STALE (the settings read it
# through ``vendors.get(v).STALE_AFTER``). The poller sees a task instance only when Airflow
# writes its row (``updated_at``): a task that runs for an hour is silent for that hour, and
# Airflow's own heartbeat check reports the dead ones (as zombies, see above). Two hours
# keeps ordinary long tasks out of STALE; a setting changes it per deployment.
STALE_AFTER = timedelta(hours=2)

# Every TaskInstanceState of Airflow 2 (/api/v1 ``TaskState``) and 3 (/api/v2
# ``TaskInstanceState``), plus the older spellings servers still send. Why each:
TASK_STATES: dict[str, State] = {
    "none": State.PENDING,  # created with the DAG run, dependencies not met yet (null in JSON)
    "scheduled": State.PENDING,  # dependencies met, waiting for the executor to take it
    "queued": State.PENDING,  # handed to the executor, waiting for a worker: queue time runs
    "running": State.RUNNING,  # a worker runs this try
    "deferred": State.RUNNING,  # this try waits on a trigger in the triggerer: still in progress, resumes on the same try
    "up_for_reschedule": State.PENDING,  # a reschedule-mode sensor between pokes: same try, holds no worker slot, waits to be scheduled again
    "restarting": State.CANCELED,  # cleared while running: this try is stopped; the next try_number is a new attempt
    "up_for_retry": State.FAILED,  # this try failed and another is due: the attempt's outcome; the next try opens attempt n+1
    "success": State.SUCCEEDED,
    "failed": State.FAILED,  # this try failed with no retries left (or was marked failed: see the audit log)
    "upstream_failed": State.SKIPPED,  # never ran because an upstream task failed: not its own failure (error_code UPSTREAM_FAILED)
    "skipped": State.SKIPPED,  # never ran: a branch or a short-circuit chose not to
    "removed": State.SKIPPED,  # its task left the DAG (or a mapped expansion shrank): it will never run
    "shutdown": State.CANCELED,  # Airflow < 2.8: an external request stopped this try
    "sensing": State.RUNNING,  # Airflow < 2.4 smart sensors: a sensor poking
}

# Every DagRunState (v1 ``DagState``, v2 ``DagRunState``).
DAG_RUN_STATES: dict[str, State] = {
    "queued": State.PENDING,  # created, waiting for a slot under max_active_runs
    "running": State.RUNNING,
    "success": State.SUCCEEDED,
    "failed": State.FAILED,  # a task failed (or a user marked it failed: see the audit log)
}

STATES: dict[str, State] = {**{f"task:{k}": v for k, v in TASK_STATES.items()},
                            **{f"dag_run:{k}": v for k, v in DAG_RUN_STATES.items()}}
"""Both tables in one (the conformance contract reads ``STATES``): ``task:<state>`` and
``dag_run:<state>``."""

ERROR_CODES = {"upstream_failed": "UPSTREAM_FAILED", "removed": "REMOVED", "restarting": "CLEARED_WHILE_RUNNING"}
ZOMBIE_WORDS = ("zombie", "heartbeat timeout", "heartbeat_timeout")
MARKED_STATES = {"failed": State.FAILED, "success": State.SUCCEEDED}
COLLECTION_KEYS = ("task_instances", "dag_runs", "event_logs")
UNMAPPED = -1
_MAX_TEXT = 500


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """One JobEvent per DAG run, task instance or relevant audit-log entry in ``doc``."""
    source = source_of(ctx)
    return [_event(item, kind, source, ctx) for item, kind in _kinds(_parsed(doc))]


def split(doc: Any) -> list[dict[str, Any]]:
    """One piece per run document (each concerns one job)."""
    return [item for item, _kind in _kinds(_parsed(doc))]


def kind_of(item: dict[str, Any]) -> str:
    """``task_instance``, ``dag_run`` or ``event_log``: what one API object is."""
    if "event_log_id" in item and "event" in item:
        return "event_log"
    if "task_id" in item:
        return "task_instance"
    if "dag_run_id" in item or "run_id" in item:
        return "dag_run"
    raise Rejected("object is neither a task instance, a DAG run nor an audit-log entry (no task_id, dag_run_id or event_log_id)")


def relevant_log(entry: dict[str, Any]) -> bool:
    """Whether an audit-log entry says something about a run's state (a zombie, a run marked
    failed or success by hand): the only entries the poller sends."""
    try:
        return _log_meaning(entry) is not None
    except Rejected:
        return False


def run_key_of(source: str, dag_id: str, run_id: str, task_id: str | None = None, map_index: int = UNMAPPED) -> str:
    base = f"{VENDOR}:{source}:{dag_id}:{run_id}"
    if task_id is None:
        return base
    return f"{base}:{task_id}" if map_index == UNMAPPED else f"{base}:{task_id}[{map_index}]"


# --- document shapes ---------------------------------------------------------------


def _parsed(doc: Any) -> Any:
    if isinstance(doc, memoryview):
        doc = bytes(doc)
    if isinstance(doc, (str, bytes, bytearray)):
        return load_json(doc)
    return doc


def _kinds(doc: Any) -> list[tuple[dict[str, Any], str]]:
    """Each item of ``doc`` with its ``kind_of`` (asked once: all are checked before any is normalized)."""
    if isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        wrapped = [key for key in COLLECTION_KEYS if key in doc]
        if wrapped:
            items = doc[wrapped[0]]
            if not isinstance(items, list):
                raise Rejected(f"{wrapped[0]!r} must be a list, got {type(items).__name__}")
        elif "detail" in doc and "title" in doc:
            raise Rejected(f"not a run but an API error: {_short(doc.get('title'))}: {_short(doc.get('detail'))}")
        else:
            items = [doc]
    else:
        raise Rejected(f"an Airflow document must be a JSON object or list, got {type(doc).__name__}")
    kinds = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(f"item {index} must be an object, got {type(item).__name__}")
        kinds.append((item, kind_of(item)))
    return kinds


def _event(item: dict[str, Any], kind: str, source: str, ctx: Context) -> JobEvent:
    if kind == "event_log":
        return _log_event(item, source, ctx)
    if kind == "task_instance":
        return _task_event(item, source, ctx)
    return _dag_run_event(item, source, ctx)


# --- DAG runs and task instances ---------------------------------------------------


def _native(value: Any, table: dict[str, State], what: str) -> tuple[str, State]:
    if value is None:
        value = "none"
    if not isinstance(value, str):
        raise Rejected(f"{what} state must be a string or null, got {type(value).__name__}")
    native = value.strip().lower()
    if native.startswith(("taskinstancestate.", "dagrunstate.")):  # an enum printed by name
        native = native.split(".", 1)[1]
    state = table.get(native)
    if state is None:
        raise Rejected(f"unknown {what} state {_short(value)!r} (known: {', '.join(sorted(table))})")
    return native, state


def _times(item: dict[str, Any], fields: tuple[str, ...]) -> dict[str, datetime]:
    found = {}
    for name in fields:
        parsed = parse_time(item.get(name), field=name)
        if parsed is not None:
            found[name] = parsed
    return found


def _occurred(times: dict[str, datetime], ctx: Context, what: str) -> datetime:
    if times:
        return max(times.values())
    if ctx.received_at is not None:
        return ctx.received_at
    raise Rejected(f"{what} carries no time and the context gives no received_at")


def _map_index(item: dict[str, Any]) -> int:
    value = item.get("map_index", UNMAPPED)
    if value is None:
        return UNMAPPED
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected(f"map_index must be an integer, got {type(value).__name__}")
    if value < UNMAPPED or value > 2**31:
        raise Rejected(f"map_index out of range: {value}")
    return value


def _run_id(item: dict[str, Any]) -> str:
    return identifier(item.get("dag_run_id", item.get("run_id")), "dag_run_id")


def _attrs(item: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name in fields:
        value = item.get(name)
        if value is None:  # absent or null: most of the fields named, checked first
            continue
        if isinstance(value, str) and value:
            attrs[name] = _short(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2**53:
            attrs[name] = value
        elif isinstance(value, bool):
            attrs[name] = value
    return attrs


TASK_TIMES = ("scheduled_when", "queued_when", "start_date", "end_date")
TASK_ATTRS = ("dag_id", "task_id", "dag_run_id", "task_display_name", "rendered_map_index", "max_tries", "operator",
              "operator_name", "pool", "queue", "hostname", "executor", "queued_when", "scheduled_when", "duration",
              "note", "logical_date", "execution_date", "id")


def _task_event(item: dict[str, Any], source: str, ctx: Context) -> JobEvent:
    dag_id = identifier(item.get("dag_id"), "dag_id")
    task_id = identifier(item.get("task_id"), "task_id")
    run_id = _run_id(item)
    map_index = _map_index(item)
    native, state = _native(item.get("state"), TASK_STATES, "task instance")
    try_number = optional_int(item.get("try_number"), field="try_number")
    if try_number is not None and try_number > 2**31:
        raise Rejected(f"try_number out of range: {try_number}")
    times = _times(item, TASK_TIMES)
    occurred_at = _occurred(times, ctx, "task instance")
    run_key = run_key_of(source, dag_id, run_id, task_id, map_index)
    attrs = {"job_name": f"{dag_id}.{task_id}", **_attrs(item, TASK_ATTRS), "map_index": map_index,
             "try_number": try_number, "kind": "task_instance"}
    return JobEvent(
        event_id=make_event_id(VENDOR, source, run_key, try_number, native, iso_time(occurred_at)),
        vendor=VENDOR, source=source, job_key=f"{VENDOR}:{source}:{dag_id}.{task_id}", run_key=run_key,
        native_state=native, state=state, occurred_at=occurred_at,
        attempt=try_number if try_number else None, received_at=ctx.received_at,
        started_at=times.get("start_date") if state is State.RUNNING or state.terminal else None,
        finished_at=times.get("end_date") if state.terminal else None,
        error_code=ERROR_CODES.get(native), parent_run_key=run_key_of(source, dag_id, run_id),
        raw_ref=ctx.raw_ref, attrs=attrs,
    )


DAG_RUN_TIMES = ("queued_at", "start_date", "end_date")
DAG_RUN_ATTRS = ("dag_id", "dag_run_id", "run_type", "logical_date", "execution_date", "data_interval_start",
                 "data_interval_end", "run_after", "triggered_by", "triggering_user_name", "external_trigger", "note",
                 "queued_at", "dag_display_name")


def _dag_run_event(item: dict[str, Any], source: str, ctx: Context) -> JobEvent:
    dag_id = identifier(item.get("dag_id"), "dag_id")
    run_id = _run_id(item)
    native, state = _native(item.get("state"), DAG_RUN_STATES, "DAG run")
    times = _times(item, DAG_RUN_TIMES)
    occurred_at = _occurred(times, ctx, "DAG run")
    run_key = run_key_of(source, dag_id, run_id)
    return JobEvent(
        event_id=make_event_id(VENDOR, source, run_key, native, iso_time(occurred_at)),
        vendor=VENDOR, source=source, job_key=f"{VENDOR}:{source}:{dag_id}", run_key=run_key,
        native_state=native, state=state, occurred_at=occurred_at, received_at=ctx.received_at,
        started_at=times.get("start_date") if state is not State.PENDING else None,
        finished_at=times.get("end_date") if state.terminal else None,
        raw_ref=ctx.raw_ref, attrs={"job_name": dag_id, **_attrs(item, DAG_RUN_ATTRS), "kind": "dag_run"},
    )


# --- the audit log: zombies and runs marked by hand ---------------------------------


def _extra(entry: dict[str, Any]) -> dict[str, Any]:
    extra = entry.get("extra")
    if isinstance(extra, str):
        try:
            extra = orjson.loads(extra)
        except orjson.JSONDecodeError:
            return {}
    return extra if isinstance(extra, dict) else {}


def _log_meaning(entry: dict[str, Any]) -> tuple[str, State, str | None] | None:
    """(native_state, state, error_code) of an entry about a run's state, else None."""
    event = entry.get("event")
    if not isinstance(event, str):
        raise Rejected(f"audit-log event must be a string, got {type(event).__name__}")
    name = event.strip().lower()
    if any(word in name for word in ZOMBIE_WORDS):
        return "zombie", State.FAILED, "ZOMBIE"
    wanted = _extra(entry)
    new_state = wanted.get("state", wanted.get("new_state"))
    if isinstance(new_state, str) and new_state.lower() in MARKED_STATES and entry.get("dag_id"):
        marked = new_state.lower()
        return f"marked_{marked}", MARKED_STATES[marked], "MARKED_FAILED" if marked == "failed" else None
    return None


def _log_event(entry: dict[str, Any], source: str, ctx: Context) -> JobEvent:
    meaning = _log_meaning(entry)
    if meaning is None:
        raise Rejected(f"audit-log entry {_short(entry.get('event'))!r} says nothing about a run's state")
    native, state, error_code = meaning
    log_id = identifier(entry.get("event_log_id"), "event_log_id", numbers=True)
    dag_id = identifier(entry.get("dag_id"), "dag_id")
    run_id = identifier(entry.get("run_id", entry.get("dag_run_id")), "run_id")
    occurred_at = parse_time(entry.get("when"), field="when") or ctx.received_at
    if occurred_at is None:
        raise Rejected("audit-log entry has no time ('when')")
    task_id = entry.get("task_id")
    owner = entry.get("owner") if isinstance(entry.get("owner"), str) else None
    attrs: dict[str, Any] = {"kind": "event_log", "event": _short(entry.get("event")), "event_log_id": log_id,
                             "dag_id": dag_id, "dag_run_id": run_id}
    if owner and native.startswith("marked_"):
        attrs["marked_by"] = _short(owner)
    if task_id is None:
        if error_code == "ZOMBIE":
            raise Rejected("a zombie entry must name its task_id")
        run_key, job_key, parent, attempt = run_key_of(source, dag_id, run_id), f"{VENDOR}:{source}:{dag_id}", None, None
        attrs["job_name"] = dag_id
    else:
        task_id = identifier(task_id, "task_id")
        map_index = _map_index(entry)
        try_number = optional_int(entry.get("try_number"), field="try_number")
        if try_number is not None and try_number > 2**31:
            raise Rejected(f"try_number out of range: {try_number}")
        run_key = run_key_of(source, dag_id, run_id, task_id, map_index)
        job_key, parent, attempt = f"{VENDOR}:{source}:{dag_id}.{task_id}", run_key_of(source, dag_id, run_id), try_number or None
        attrs.update(job_name=f"{dag_id}.{task_id}", task_id=task_id, map_index=map_index)
    message = {
        "ZOMBIE": "the task's process stopped heartbeating; Airflow failed the try (zombie)",
        "MARKED_FAILED": f"marked failed by {owner or 'a user'}",
    }.get(error_code or "")
    return JobEvent(
        event_id=make_event_id(VENDOR, source, "event_log", log_id), vendor=VENDOR, source=source, job_key=job_key,
        run_key=run_key, native_state=native, state=state, occurred_at=occurred_at, attempt=attempt,
        received_at=ctx.received_at, finished_at=occurred_at if state.terminal else None,
        error_code=error_code, error_message=message, parent_run_key=parent, raw_ref=ctx.raw_ref, attrs=attrs,
    )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) <= _MAX_TEXT and text.isascii() and text.isprintable() and "  " not in text and (
        not text or (text[0] != " " and text[-1] != " ")
    ):
        return text  # already one clean line: most values, at a tenth of the cost
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())[:_MAX_TEXT]
