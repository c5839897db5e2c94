"""Qlik Sense Repository Service (QRS) task executions -> JobEvents.

Names used here: job = the task (``qlik_qrs:<source>:<taskID>``), run = the execution
session (``qlik_qrs:<source>:<executionID>``); source = the repository host, which
the entities never name: ``ctx.source`` (or a wrapper's ``host``/``source``), else
"default". attrs["job_name"] = the task's name where the document gives it (sessions
and reload tasks do; bare execution results name only the task id).

Where the enum comes from: ``ExecutionResult.status`` is QRS's ``TaskExecutionStatus``
as help.qlik.com documents it (Repository Service API reference, model
"TaskExecutionStatus", May 2023 and later) and the server lists at
``GET /qrs/about/api/enums``: 0..12 in every release (ptarmiganlabs/butler's
``taskStatusLookup`` agrees), 13 DistributionQueue and 14 DistributionRunning on newer
servers. Entity fields are from the same reference: ExecutionResult,
ExecutionResultCondensed, ExecutionSession (``abortReason`` 0 Undefined, 1 Manual,
2 Timeout, 3 DeletedTask; ``retries``), ReloadTask (``operational.lastExecutionResult``),
ExecutionResultDetail (``detailsType`` 0 Error, 1 Warning, 2 Information), and the
"Task: Start" page (``POST /qrs/task/{id}/start/synchronous``).

State table (``STATES``; numbers are decoded to these names, names are matched
case-insensitively and without spaces/underscores):

==  ===================  =========  ================================================
 0  NeverStarted         PENDING    the entity's initial value: nothing ran yet
 1  Triggered            PENDING
 2  Started              RUNNING
 3  Queued               PENDING
 4  AbortInitiated       RUNNING    still running until the abort completes
 5  Aborting             RUNNING
 6  Aborted              CANCELED
 7  FinishedSuccess      SUCCEEDED
 8  FinishedFail         FAILED
 9  Skipped              SKIPPED
10  Retry                FAILED     this attempt failed; the retry is a new result
                                    (the lifecycle opens the next attempt)
11  Error                FAILED
12  Reset                FAILED     the scheduler reset the execution (service
                                    restart, lost node): it did not complete and
                                    nobody asked it to stop
13  DistributionQueue    RUNNING    reload done, distribution still to come
14  DistributionRunning  RUNNING
==  ===================  =========  ================================================

Unknown values (a number beyond 14, an unknown name) keep native_state as written and
map to RUNNING while there is no stopTime, else FAILED; a missing status gives
native_state "" by the same rule. 1753-01-01T00:00:00(.000Z), QRS's "no date"
(and any earlier time), is read as absent.

Shapes accepted (``normalize``/``split`` take the parsed value or raw text/bytes; field
names are matched case-insensitively, so database dumps in PascalCase work too):

- ExecutionResult (``/qrs/executionresult/full``): job = ``taskID``, run =
  ``executionID``, attempt None. Attempts are never numbered here: a result carries no
  retry index (each retry is a new result of the same executionID), and numbering the
  results of one list would depend on how the poller windows its reads (a
  modifiedDate cursor that returns ``[r2 failed, r3 started]`` would call r2 attempt 1).
  The lifecycle infers them instead (its R7: a FAILED run whose next result started
  after the failure opens the next attempt), which needs the results in time order:
  ``normalize`` returns each run's events sorted by occurred_at, so a list gives
  the same attempts as its results sent one by one, and polls with a modifiedDate
  cursor (which QRS answers in no particular order) arrive in time order.
- ExecutionSession (``/qrs/executionsession/full``: a session exists while its task
  executes; ``id`` is the executionID): job = ``reloadTask.id`` (or
  ``externalProgramTask``/``userSyncTask``), state from ``executionResult.status``
  (RUNNING when the session has no result yet), attempt = ``retries`` + 1.
- ReloadTask (``/qrs/reloadtask/full``): one event for ``operational.lastExecutionResult``;
  none for a task that never ran (NeverStarted without startTime; ``split`` drops it).
  That condensed result carries no executionID (public clients such as Qlik-Cli read
  its ``id`` and fetch ``/qrs/executionresult/{id}`` for the rest), so unless one is
  present the run is keyed by the result's own id (``<source>:result:<id>``, attrs
  ``run_key_basis``).
- lists of any of these, mixed (the ``/full`` endpoints return lists).
- the start-task response wrapped with the task it started: ``{"taskId": .., "value":
  guid}`` or ``{"taskId": .., "response": guid | {"value": guid}}`` (optional ``host``,
  ``time``). A session GUID gives a PENDING event (native_state ``StartAccepted``) for
  that session. The empty GUID means QRS did not start the task (disabled, no
  scheduler, app unavailable): a FAILED event (native_state ``StartRefused``,
  error_code ``TASK_NOT_STARTED``) on a run of its own keyed by task and time, since
  the operator asked for a run that did not happen. A bare GUID (or ``{"value": ..}``)
  names no task and is rejected.
- the poller's record that a session vanished: ``{"executionSessionId"|"id": ..,
  "taskId": .., "httpStatus": 404}`` (optional ``host``, ``time``). QRS deletes the
  session when execution finishes, but the outcome is only in its execution results.
  The record is checked (a malformed one is rejected) and gives no event: a RUNNING
  "session ended" would either open a false retry after a FAILED result or, observed
  after the results' modifiedDate, make the results look late so they could not close
  the run. The poller's duty is to fetch the results next; if none ever arrive the
  lifecycle's timer makes the run STALE, which is the truth: unknown. ``split`` drops it.

One execution, one run, whichever endpoint shows it: the result id is the one name all
three endpoints carry (a result's ``id``, a session's ``executionResult.id``, the
condensed result's ``id``). Every event that knows both names its run by executionID, and
every event lists ``<source>:result:<result id>`` in ``attrs["same_run_as"]`` (for the
condensed result, its own key); the lifecycle applies an event whose run key it does not
hold to the run that answers to that name (its R17), in either arrival order.

Times: occurred_at = ``modifiedDate``, else stopTime, else startTime, else
``createdDate``, else ``ctx.received_at``; without any the document is rejected.
started_at/finished_at = startTime/stopTime. Details (sorted by detailCreatedDate,
the last 20), duration (ms), the script log's availability/location/size, node and app
ids go to attrs; error_message = the last Error detail of a failed or aborted result
(else its last detail). The session's ``user`` is never copied (user identity).

event_id = source + entity id + the fields that make a snapshot distinct (status,
start/stop, retries ...): polling the same state twice gives the same id, any state
change a new one (a repeated poll of a running session is how the lifecycle hears that
the run is still alive, its R2).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, tzinfo
from typing import Any

from pipeline.model import UTC, JobEvent, State, iso_time, make_event_id
from pipeline.vendors._common import (
    clean_text,
    identifier,
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    load_json,
    parse_time,
)

VENDOR = "qlik_qrs"

# How long a run may go unconfirmed before it is STALE (the settings read it through
# ``vendors.get(v).STALE_AFTER``). A reload shows no progress: while it runs, the
# poller's reads of /qrs/executionsession/full (about every 30 s) are what confirm it,
# so a run is STALE after ten missed polls, not after 4 minutes of unchanged state.
STALE_AFTER = timedelta(seconds=300)

# TaskExecutionStatus, number -> name.
STATUS_NAMES: dict[int, str] = {
    0: "NeverStarted",
    1: "Triggered",
    2: "Started",
    3: "Queued",
    4: "AbortInitiated",
    5: "Aborting",
    6: "Aborted",
    7: "FinishedSuccess",
    8: "FinishedFail",
    9: "Skipped",
    10: "Retry",
    11: "Error",
    12: "Reset",
    13: "DistributionQueue",
    14: "DistributionRunning",
}

STATES: dict[str, State] = {
    "NeverStarted": State.PENDING,
    "Triggered": State.PENDING,
    "Started": State.RUNNING,
    "Queued": State.PENDING,
    "AbortInitiated": State.RUNNING,
    "Aborting": State.RUNNING,
    "Aborted": State.CANCELED,
    "FinishedSuccess": State.SUCCEEDED,
    "FinishedFail": State.FAILED,
    "Skipped": State.SKIPPED,
    "Retry": State.FAILED,
    "Error": State.FAILED,
    "Reset": State.FAILED,
    "DistributionQueue": State.RUNNING,
    "DistributionRunning": State.RUNNING,
}

# native_state of the poller's own records (start-task responses, vanished sessions).
RECORD_STATES: dict[str, State] = {
    "StartAccepted": State.PENDING,
    "StartRefused": State.FAILED,
}

ABORT_REASONS: dict[int, str] = {0: "Undefined", 1: "Manual", 2: "Timeout", 3: "DeletedTask"}
DETAIL_TYPES: dict[int, str] = {0: "Error", 1: "Warning", 2: "Information"}
TASK_TYPES: dict[int, str] = {0: "Reload", 1: "ExternalProgram", 2: "UserSync", 3: "Distribute"}
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

_FOLDED_NAMES = {name.lower(): name for name in STATES}
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")
_NOT_NAME = re.compile(r"[\s_\-]")
_SESSION_KEYS = frozenset(
    {"reloadtask", "usersynctask", "externalprogramtask", "executionresult", "retries", "abortreason", "executingnode", "abortat"}
)
_TASK_KINDS = (
    ("reloadtask", "reloadTask", "Reload"),
    ("externalprogramtask", "externalProgramTask", "ExternalProgram"),
    ("usersynctask", "userSyncTask", "UserSync"),
)
_NO_DATE_YEAR = 1753
_MAX_TEXT = 2000
_MAX_DETAIL = 500
_MAX_DETAILS = 20


def decode_status(value: Any) -> str | None:
    """The status as a name: numbers (and numeric strings) decoded, names folded to
    their documented spelling; unknown values kept as written; None when absent."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, bool):
        raise Rejected("status must be a number or a name, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _is_ascii_number(value.strip()):
        value = int(value.strip())
    if isinstance(value, int):
        return STATUS_NAMES.get(value, str(value))
    if isinstance(value, str):
        text = clean_text(value.strip())[:100]
        return _FOLDED_NAMES.get(_NOT_NAME.sub("", text).lower(), text)
    raise Rejected(f"status must be a number or a name, got {type(value).__name__}")


def canonical_state(native: str | None, stopped: bool) -> State:
    """Documented names by table; unknown or missing ones by the stop time."""
    if native is not None:
        state = STATES.get(native) or RECORD_STATES.get(native)
        if state is not None:
            return state
    return State.FAILED if stopped else State.RUNNING


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """One event per entity or record in the document; none for tasks that never ran."""
    pieces = _pieces(_parsed(doc))
    events: list[JobEvent] = []
    for index, piece in enumerate(pieces):
        try:
            event = _event(piece, ctx)
        except Rejected as exc:
            if len(pieces) == 1:
                raise
            raise Rejected(f"item {index}: {exc.reason}") from None
        if event is not None:
            events.append(event)
    return _in_time_order_per_run(events)


def _in_time_order_per_run(events: list[JobEvent]) -> list[JobEvent]:
    """Each run's events sorted by occurred_at (list order breaks ties), runs in the
    order they first appear: the lifecycle infers attempts in arrival order."""
    if len(events) < 2:
        return events
    runs: dict[str, list[JobEvent]] = {}
    for event in events:
        runs.setdefault(event.run_key, []).append(event)
    return [event for run in runs.values() for event in sorted(run, key=lambda event: event.occurred_at)]


def split(doc: Any) -> list[Any]:
    """One piece per task: a list's items grouped by task (a group of one is the item
    itself, so results of one session stay together); tasks that never ran dropped."""
    parsed = _parsed(doc)
    pieces = _pieces(parsed)
    if not isinstance(parsed, list):
        return [parsed] if any(_emits(piece) for piece in pieces) else []
    groups: dict[str, list[Any]] = {}
    for piece in pieces:
        if _emits(piece):
            groups.setdefault(_job_id(piece), []).append(piece.original)
    return [items[0] if len(items) == 1 else items for items in groups.values()]


# --- document shapes ---------------------------------------------------------------


class _Piece:
    """One entity or record of the document, with its keys lowercased."""

    __slots__ = ("kind", "fields", "original")

    def __init__(self, kind: str, fields: dict[str, Any], original: Any) -> None:
        self.kind = kind
        self.fields = fields
        self.original = original


def _parsed(doc: Any) -> Any:
    if isinstance(doc, memoryview):
        doc = bytes(doc)
    if isinstance(doc, (str, bytes, bytearray)):
        text = doc.strip()
        if len(text) <= 40 and _is_guid(text if isinstance(text, str) else text.decode("latin-1")):
            raise Rejected(_BARE_START)
        return load_json(doc)
    return doc


_BARE_START = (
    "a bare start-task response (session GUID) names no task: "
    'send it as {"taskId": <task id>, "value": <guid>}'
)


def _pieces(doc: Any) -> list[_Piece]:
    if isinstance(doc, list):
        pieces = []
        for index, item in enumerate(doc):
            if not isinstance(item, dict):
                raise Rejected(f"item {index} of the list must be a JSON object, got {type(item).__name__}")
            try:
                pieces.append(_classify(item))
            except Rejected as exc:
                raise Rejected(f"item {index}: {exc.reason}") from None
        return pieces
    if isinstance(doc, str) and _is_guid(doc.strip()):
        raise Rejected(_BARE_START)
    if not isinstance(doc, dict):
        raise Rejected(f"a QRS document must be a JSON object or list, got {type(doc).__name__}")
    return [_classify(doc)]


def _classify(doc: dict[str, Any]) -> _Piece:
    fields = _lower(doc)
    if "httpstatus" in fields:
        return _Piece("vanished", fields, doc)
    if "taskid" in fields and ("response" in fields or "value" in fields) and not (
        "executionid" in fields or "status" in fields
    ):
        return _Piece("start", fields, doc)
    if "value" in fields and "taskid" not in fields and "status" not in fields:
        raise Rejected(_BARE_START)
    if "operational" in fields:
        return _Piece("task", fields, doc)
    if _SESSION_KEYS & fields.keys():
        return _Piece("session", fields, doc)
    if "executionid" in fields or "status" in fields:
        return _Piece("result", fields, doc)
    names = ", ".join(repr(key[:30]) for key in sorted(fields)[:8])
    raise Rejected(
        "not a QRS execution result, execution session, reload task, start-task response "
        f"or vanished-session record (fields: {names or 'none'})"
    )


def _job_id(piece: _Piece) -> str:
    """The task id a piece concerns (for grouping in ``split``)."""
    fields = piece.fields
    if piece.kind == "task":
        return identifier(fields.get("id"), "id", numbers=True)
    if piece.kind == "session":
        return _session_task(fields)[0]
    return identifier(fields.get("taskid"), "taskID", numbers=True)


def _emits(piece: _Piece) -> bool:
    """False for a reload task that never ran and for a vanished-session record."""
    if piece.kind == "vanished":
        return False
    if piece.kind != "task":
        return True
    return _last_result(piece.fields) is not None


# --- events --------------------------------------------------------------------------


def _event(piece: _Piece, ctx: Context) -> JobEvent | None:
    if piece.kind == "result":
        return _result_event(piece.fields, ctx)
    if piece.kind == "session":
        return _session_event(piece.fields, ctx)
    if piece.kind == "task":
        return _task_event(piece.fields, ctx)
    if piece.kind == "start":
        return _start_event(piece.fields, ctx)
    return _vanished_event(piece.fields, ctx)


class _Result:
    """What an ExecutionResult (full or condensed) says."""

    __slots__ = ("result_id", "native", "state", "started", "stopped", "modified", "created", "attrs", "error")

    def __init__(self, fields: dict[str, Any], tz: tzinfo) -> None:
        result_id = fields.get("id")
        self.result_id = identifier(result_id, "id", numbers=True) if result_id not in (None, "") else None
        self.native = decode_status(fields.get("status"))
        self.started = _time(fields.get("starttime"), "startTime", tz)
        self.stopped = _time(fields.get("stoptime"), "stopTime", tz)
        self.modified = _time(fields.get("modifieddate"), "modifiedDate", tz)
        self.created = _time(fields.get("createddate"), "createdDate", tz)
        self.state = canonical_state(self.native, self.stopped is not None)
        self.attrs: dict[str, Any] = {}
        if self.result_id:
            self.attrs["execution_result_id"] = self.result_id
        if self.native is not None and self.native not in STATES:
            self.attrs["status_unknown"] = True
        duration = fields.get("duration")
        if type(duration) is int and 0 <= duration < 2**53:
            self.attrs["duration_ms"] = duration
        elif isinstance(duration, float) and math.isfinite(duration) and duration >= 0:
            self.attrs["duration_ms"] = int(duration)
        for name, key in (
            ("executingnodename", "executing_node_name"),
            ("executingnodeid", "executing_node_id"),
            ("appid", "app_id"),
            ("scriptloglocation", "script_log_location"),
            ("filereferenceid", "file_reference_id"),
        ):
            text = fields.get(name)
            if isinstance(text, str) and text and text != EMPTY_GUID:
                self.attrs[key] = clean_text(text)[:_MAX_TEXT]
        available = fields.get("scriptlogavailable")
        if isinstance(available, bool):
            self.attrs["script_log_available"] = available
        size = fields.get("scriptlogsize")
        if type(size) is int and 0 <= size < 2**63:
            self.attrs["script_log_size"] = size
        details = _details(fields.get("details"), tz)
        if details:
            self.attrs["details"] = details
        self.error = _error_message(details) if self.state in (State.FAILED, State.CANCELED) else None

    def occurred_at(self, ctx: Context) -> datetime | None:
        return self.modified or self.stopped or self.started or self.created or ctx.received_at


def _result_event(fields: dict[str, Any], ctx: Context) -> JobEvent:
    task_id = identifier(fields.get("taskid"), "taskID", numbers=True)
    execution_id = _guid_ident(fields.get("executionid"), "executionID")
    return _from_result(_Result(fields, ctx.tz), task_id, execution_id, _source(ctx), ctx, None, {})


def _from_result(
    result: _Result,
    task_id: str,
    run_id: str,
    source: str,
    ctx: Context,
    attempt: int | None,
    extra: dict[str, Any],
) -> JobEvent:
    occurred_at = result.occurred_at(ctx)
    if occurred_at is None:
        raise Rejected(f"execution result of task {task_id} has no time and the context no received_at")
    event_id = make_event_id(
        VENDOR, source, "result", run_id, result.result_id, result.native, _iso(result.started), _iso(result.stopped),
    )
    return _result_job_event(result, event_id, source, task_id, run_id, attempt, occurred_at, ctx, {**result.attrs, **extra})


def _result_job_event(
    result: _Result, event_id: str, source: str, task_id: str, run_id: str, attempt: int | None,
    occurred_at: datetime, ctx: Context, attrs: dict[str, Any],
) -> JobEvent:
    """The JobEvent of what an execution result says (a result's own, or a session's)."""
    if result.result_id is not None:  # the lifecycle's R17: the name every endpoint shares
        attrs["same_run_as"] = [f"{VENDOR}:{source}:result:{result.result_id}"]
    if attrs.get("task_name"):  # the job's human name, where the document gives it
        attrs["job_name"] = attrs["task_name"]
    return JobEvent(
        event_id=event_id,
        vendor=VENDOR,
        source=source,
        job_key=f"{VENDOR}:{source}:{task_id}",
        run_key=f"{VENDOR}:{source}:{run_id}",
        attempt=attempt,
        native_state=result.native or "",
        state=result.state,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        started_at=result.started,
        finished_at=result.stopped,
        error_message=result.error,
        raw_ref=ctx.raw_ref,
        attrs=attrs,
    )


def _session_event(fields: dict[str, Any], ctx: Context) -> JobEvent:
    session_id = _guid_ident(fields.get("id"), "id")
    task_id, task_kind, task = _session_task(fields)
    result_fields = fields.get("executionresult")
    if result_fields is not None and not isinstance(result_fields, dict):
        raise Rejected(f"executionResult must be an object, got {type(result_fields).__name__}")
    result = _Result(_lower(result_fields or {}), ctx.tz)
    source = _source(ctx)

    attrs = dict(result.attrs)
    attrs["task_type"] = task_kind
    name = task.get("name")
    if isinstance(name, str) and name:
        attrs["task_name"] = clean_text(name)[:_MAX_TEXT]
    retries = fields.get("retries")
    attempt = retries + 1 if type(retries) is int and 0 <= retries < 10**6 else None
    if attempt is not None:
        attrs["retries"] = retries
    reason = fields.get("abortreason")
    if type(reason) is int:
        attrs["abort_reason"] = ABORT_REASONS.get(reason, str(reason))
    abort_at = _time(fields.get("abortat"), "abortAt", ctx.tz)
    if abort_at is not None:
        attrs["abort_at"] = abort_at.isoformat()
    node = fields.get("executingnode")
    if isinstance(node, dict):
        node_fields = _lower(node)
        for key, attr in (("hostname", "executing_node_host"), ("name", "executing_node_name"), ("id", "executing_node_id")):
            value = node_fields.get(key)
            if isinstance(value, str) and value:
                attrs.setdefault(attr, clean_text(value)[:_MAX_TEXT])
    _app_attrs(fields.get("app"), attrs)

    modified = _time(fields.get("modifieddate"), "modifiedDate", ctx.tz)
    created = _time(fields.get("createddate"), "createdDate", ctx.tz)
    occurred_at = modified or result.stopped or result.started or created or ctx.received_at
    if occurred_at is None:
        raise Rejected(f"execution session {session_id} has no time and the context no received_at")
    event_id = make_event_id(
        VENDOR, source, "session", session_id, result.native, retries if attempt else None,
        result.result_id, _iso(result.started), _iso(result.stopped), _iso(abort_at),
    )
    return _result_job_event(result, event_id, source, task_id, session_id, attempt, occurred_at, ctx, attrs)


def _session_task(fields: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(task id, task kind, task fields) of a session: whichever task it names."""
    for key, name, kind in _TASK_KINDS:
        task = fields.get(key)
        if task is None:
            continue
        if not isinstance(task, dict):
            raise Rejected(f"{name} must be an object, got {type(task).__name__}")
        task_fields = _lower(task)
        if task_fields.get("id") not in (None, ""):
            return identifier(task_fields.get("id"), f"{name}.id", numbers=True), kind, task_fields
    raise Rejected("execution session names no task (reloadTask, externalProgramTask or userSyncTask with an id)")


def _last_result(fields: dict[str, Any]) -> dict[str, Any] | None:
    """A reload task's last execution result, or None when the task never ran."""
    operational = fields.get("operational")
    if operational is None:
        return None
    if not isinstance(operational, dict):
        raise Rejected(f"operational must be an object, got {type(operational).__name__}")
    last = _lower(operational).get("lastexecutionresult")
    if last is None:
        return None
    if not isinstance(last, dict):
        raise Rejected(f"operational.lastExecutionResult must be an object, got {type(last).__name__}")
    last_fields = _lower(last)
    native = decode_status(last_fields.get("status"))
    if native in (None, "NeverStarted") and _time(last_fields.get("starttime"), "startTime") is None:
        return None
    return last_fields


def _task_event(fields: dict[str, Any], ctx: Context) -> JobEvent | None:
    task_id = identifier(fields.get("id"), "id", numbers=True)
    last = _last_result(fields)
    if last is None:
        return None
    result = _Result(last, ctx.tz)
    extra: dict[str, Any] = {}
    execution_id = last.get("executionid")
    if execution_id not in (None, "", EMPTY_GUID):
        run_id = _guid_ident(execution_id, "lastExecutionResult.executionID")
    elif result.result_id:
        run_id = f"result:{result.result_id}"
        extra["run_key_basis"] = "execution_result_id"
    else:
        raise Rejected(f"reload task {task_id}: lastExecutionResult has neither executionID nor id")
    name = fields.get("name")
    if isinstance(name, str) and name:
        extra["task_name"] = clean_text(name)[:_MAX_TEXT]
    for key, attr in (("enabled", "task_enabled"), ("ispartialreload", "is_partial_reload"), ("ismanuallytriggered", "is_manually_triggered")):
        flag = fields.get(key)
        if isinstance(flag, bool):
            extra[attr] = flag
    task_type = fields.get("tasktype")
    if type(task_type) is int:
        extra["task_type"] = TASK_TYPES.get(task_type, str(task_type))
    max_retries = fields.get("maxretries")
    if type(max_retries) is int and 0 <= max_retries < 2**31:
        extra["max_retries"] = max_retries
    operational = _lower(fields["operational"])
    next_execution = _time(operational.get("nextexecution"), "nextExecution", ctx.tz)
    if next_execution is not None:
        extra["next_execution"] = next_execution.isoformat()
    _app_attrs(fields.get("app"), extra)
    return _from_result(result, task_id, run_id, _source(ctx), ctx, None, extra)


def _start_event(fields: dict[str, Any], ctx: Context) -> JobEvent:
    task_id = identifier(fields.get("taskid"), "taskId", numbers=True)
    response = fields["response"] if "response" in fields else fields.get("value")
    if isinstance(response, dict):
        response = _lower(response).get("value")
    if not isinstance(response, str) or not _is_guid(response.strip()):
        raise Rejected(f"start-task response for task {task_id} is not a session GUID")
    session_id = response.strip().strip("{}").lower()
    source = _wrapper_source(fields, ctx)
    occurred_at = _wrapper_time(fields, ctx, ("time", "requestedat"))
    common = dict(
        vendor=VENDOR,
        source=source,
        job_key=f"{VENDOR}:{source}:{task_id}",
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        raw_ref=ctx.raw_ref,
    )
    if session_id == EMPTY_GUID:
        return JobEvent(
            event_id=make_event_id(VENDOR, source, "start-refused", task_id, iso_time(occurred_at)),
            run_key=f"{VENDOR}:{source}:not-started:{task_id}:{iso_time(occurred_at)}",
            native_state="StartRefused",
            state=RECORD_STATES["StartRefused"],
            finished_at=occurred_at,
            error_code="TASK_NOT_STARTED",
            error_message=(
                "QRS answered the empty GUID: the task did not start "
                "(disabled, no scheduler available, or the app is not available)"
            ),
            attrs={"start_response": EMPTY_GUID},
            **common,
        )
    return JobEvent(
        event_id=make_event_id(VENDOR, source, "start", session_id),
        run_key=f"{VENDOR}:{source}:{session_id}",
        native_state="StartAccepted",
        state=RECORD_STATES["StartAccepted"],
        attrs={"start_response": session_id},
        **common,
    )


def _vanished_event(fields: dict[str, Any], ctx: Context) -> None:
    """Check a vanished-session record; it gives no event (see the module docstring)."""
    status = fields.get("httpstatus")
    if isinstance(status, str) and _is_ascii_number(status.strip()):
        status = int(status.strip())
    if status != 404 or isinstance(status, bool):
        raise Rejected(f"httpStatus {str(status)[:20]!r} is not the 404 that means the session finished")
    for key in ("executionsessionid", "sessionid", "executionid", "id"):
        if fields.get(key) not in (None, ""):
            _guid_ident(fields[key], key)
            break
    else:
        raise Rejected("vanished-session record has no executionSessionId")
    identifier(fields.get("taskid"), "taskId", numbers=True)
    _wrapper_source(fields, ctx)
    _wrapper_time(fields, ctx, ("time", "observedat", "checkedat"))
    return None


# --- field helpers ---------------------------------------------------------------------


def _lower(doc: dict[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in doc.items() if isinstance(key, str)}


def _source(ctx: Context) -> str:
    return ctx.source or "default"


def _wrapper_source(fields: dict[str, Any], ctx: Context) -> str:
    for key in ("host", "source"):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            return identifier(value, key, numbers=True)
    return _source(ctx)


def _wrapper_time(fields: dict[str, Any], ctx: Context, keys: tuple[str, ...]) -> datetime:
    for key in keys:
        value = _time(fields.get(key), key, ctx.tz)
        if value is not None:
            return value
    if ctx.received_at is None:
        raise Rejected("record has no time and the context no received_at")
    return ctx.received_at


def _time(value: Any, field: str, tz: tzinfo = UTC) -> datetime | None:
    """A QRS time; its "no date" (1753-01-01, or anything that early) is None.
    The API writes UTC with ``Z``; naive times (database dumps, Qlik-Cli's
    ``2020/03/03 19:45``) are read in ``tz``."""
    parsed = parse_time(value, field=field, tz=tz)
    if parsed is None or parsed.year <= _NO_DATE_YEAR:
        return None
    return parsed


def _iso(value: datetime | None) -> str | None:
    return iso_time(value) if value is not None else None


def _guid_ident(value: Any, field: str) -> str:
    """An execution/session id: any identifier, but never the empty GUID."""
    text = identifier(value, field, numbers=True)
    if text == EMPTY_GUID:
        raise Rejected(f"{field} is the empty GUID")
    return text


def _is_ascii_number(text: str) -> bool:
    """ASCII decimal digits only: ``isdigit()`` also accepts "²", which ``int()`` refuses."""
    return text.isascii() and text.isdecimal() and len(text) <= 18


def _is_guid(text: str) -> bool:
    return len(text) <= 38 and _GUID.match(text) is not None


def _details(value: Any, tz: tzinfo) -> list[dict[str, Any]]:
    """The result's details, oldest first, the last ``_MAX_DETAILS``, messages shortened."""
    if not isinstance(value, list):
        return []
    kept: list[tuple[datetime | None, int, dict[str, Any]]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        fields = _lower(item)
        message = fields.get("message")
        if not isinstance(message, str):
            continue
        created = _time(fields.get("detailcreateddate"), "detailCreatedDate", tz)
        kind = fields.get("detailstype")
        detail: dict[str, Any] = {
            "type": DETAIL_TYPES.get(kind, str(kind)) if type(kind) is int else "Unknown",
            "message": clean_text(message)[:_MAX_DETAIL],
        }
        if created is not None:
            detail["at"] = created.isoformat()
        kept.append((created, index, detail))
    kept.sort(key=lambda item: (item[0] is not None, item[0] or datetime.min, item[1]))
    return [detail for _, _, detail in kept[-_MAX_DETAILS:]]


def _error_message(details: list[dict[str, Any]]) -> str | None:
    for detail in reversed(details):
        if detail["type"] == "Error":
            return detail["message"]
    return details[-1]["message"] if details else None


def _app_attrs(app: Any, attrs: dict[str, Any]) -> None:
    if not isinstance(app, dict):
        return
    fields = _lower(app)
    for key, attr in (("id", "app_id"), ("name", "app_name")):
        value = fields.get(key)
        if isinstance(value, str) and value:
            attrs.setdefault(attr, clean_text(value)[:_MAX_TEXT])


__all__ = [
    "VENDOR",
    "STATES",
    "STATUS_NAMES",
    "RECORD_STATES",
    "EMPTY_GUID",
    "canonical_state",
    "decode_status",
    "normalize",
    "split",
]
