"""Qlik Cloud ``com.qlik.v1.reload.finished`` CloudEvents (and the older
``com.qlik.v1.app.reload.finished``) -> JobEvents.

Names used here: source = the tenant (``tenantid``), job = the app
(``qlik_cloud:<tenant>:<data.appId>``), run = the reload (``data.id``); attrs["job_name"]
= the app's name when the event carries it (the legacy ``data.name``). Qlik publishes
one finished event per reload ("while a reload might be executed multiple times,
there will be only one reload finished event"), so every event is terminal and
``attempt`` is None.

Where the tables come from: the event schema on qlik.dev (``/apis/event/reloads``,
AsyncAPI spec ``/specs/event/reloads.json``; our seed ``000``): ``data.status`` is one of
SUCCEEDED, FAILED, CANCELED, EXCEEDED_LIMIT; ``data.type`` one of hub, chronos,
external, automations, data-refresh, choreographer. CloudEvents 1.0 (JSON format and
HTTP binding) gives the envelope rules.

Shapes accepted (``normalize`` and ``split`` take the parsed value or raw text/bytes):

- structured mode: one CloudEvent JSON object (``specversion``, ``id``, ``source``,
  ``type``, ``time``, Qlik's extensions such as ``tenantid``, and ``data``; ``data`` may
  also be a JSON string, or ``data_base64`` holding JSON);
- binary mode, as the webhook receiver records an HTTP request:
  ``{"headers": {"ce-id": .., "ce-type": .., "ce-source": .., "ce-specversion": ..,
  "ce-time": .., "ce-tenantid": .., "content-type": ..}, "data": {...}}`` with header
  names in any case, headers as an object or a list of ``[name, value]`` pairs, the
  body under ``data`` or ``body``, as an object or as JSON text. A wrapper whose
  headers carry no ``ce-`` attributes and whose body is a structured event or a batch
  (``content-type: application/cloudevents+json`` / ``cloudevents-batch+json``) is
  read as that body;
- a CloudEvents batch: a JSON list of events (each in either form above). One
  unusable event rejects the whole batch, naming its index; producers ``split``
  first, so each event is dead-lettered on its own.

Rules:

- required, as CloudEvents and the seed say: ``id``, ``source``, ``type``,
  ``specversion`` (1.x), ``tenantid``; ``data.id``, ``data.appId``, ``data.userId``
  (strings) and ``data.succeeded`` (boolean). Other event types are rejected, naming
  the type.
- states (``STATES``): SUCCEEDED -> SUCCEEDED, FAILED -> FAILED, CANCELED ->
  CANCELED, EXCEEDED_LIMIT -> FAILED (the reload hit a tenant limit and did not
  complete). Status names are matched case-insensitively and kept as written in
  ``native_state``. A missing status is taken from ``succeeded`` (native_state
  SUCCEEDED or FAILED, ``attrs["status_derived"] = True``). An unknown status is kept
  as native_state and mapped by ``succeeded``: SUCCEEDED when true, else FAILED (the
  event always means "finished", so never RUNNING).
- occurred_at = the CloudEvent ``time``; without one ``ctx.received_at``; without both
  the event is rejected. started_at = ``data.startTime``, else ``data.creationTime``;
  finished_at = ``data.endTime`` when present, else the event time (Qlik publishes the
  event when the reload finished). ``durationSeconds``, ``creationTime``,
  ``lastReloadTime``, reload ``type``, ``partial``, ``taskId``, ``weight``,
  ``appUsage``, ``crashedOnMaxSizeEngine``, ``userId`` and the envelope's descriptive
  extensions (host, reason, spaceid, ownerid, userid, authtype, clientid,
  toplevelresourceid, traceparent, tracestate) go to ``attrs``.
- never copied anywhere: ``authclaims`` (the principal's claims: name, e-mail),
  ``originip``, ``sessionid`` and any HTTP header that is not a ``ce-`` attribute.
- error_code / error_message = ``data.errorCode`` / ``data.errorMessage``.
- the older ``com.qlik.v1.app.reload.finished`` (``LEGACY_EVENT_TYPE``), in its legacy
  envelope ``{eventType, eventTypeVersion, eventTime, source, extensions: {tenantId,
  userId, ownerId, spaceId, topLevelResourceId}, data: {status, reloadId, name, duration,
  errors, warnings, isPartialReload, peakMemoryBytes}}`` or the hybrid one Qlik migrates
  through (the same plus CloudEvents 1.0.2 ``id``, ``time``, ``type``, ``specversion``
  and lowercase extensions at the top level, which win): job = the app
  (``topLevelResourceId``), run = ``data.reloadId``; status ``ok`` -> SUCCEEDED,
  ``error`` -> FAILED (anything else FAILED, ``attrs["status_unknown"]``), except a
  cancel: the legacy status has no value for it, so ``error`` whose ``errors`` carry a
  cancel code (``CANCEL_CODES``, the reloads API's CANCELED status among them) or a
  message saying the reload was cancelled/aborted (what the engine's CancelReload echoes
  to the script log) is CANCELED, with error_code ``RELOAD_CANCELED`` (or the code
  given); a ``canceled``/``cancelled`` status is CANCELED too;
  finished_at = the event time, started_at = finished_at - ``duration`` when it is a Go
  duration ("40s", "1m20.5s"); error_message = the ``errors`` joined by "; ". Its
  event_id is (tenant, type, reloadId), so the legacy and hybrid forms of one reload
  are one event.
- event_id = (tenant, CloudEvent source, CloudEvent id): CloudEvents makes id+source
  unique, so a redelivery gives the same event_id whether it came structured, binary
  or in a batch.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import timedelta
from typing import Any

from pipeline.model import JobEvent, State, make_event_id
from pipeline.vendors._common import (
    MAX_ID,
    clean_text,
    identifier,
    DEFAULT_CONTEXT,
    Context,
    Rejected,
    load_json,
    parse_time,
)

VENDOR = "qlik_cloud"

# How long a run may go unconfirmed before it is STALE (the settings read it through
# ``vendors.get(v).STALE_AFTER``). Qlik Cloud pushes one event per finished reload: a run
# opens and ends in that one event and never waits on a timer, so the default serves.
STALE_AFTER = timedelta(seconds=240)
EVENT_TYPE = "com.qlik.v1.reload.finished"
LEGACY_EVENT_TYPE = "com.qlik.v1.app.reload.finished"
LEGACY_STATES: dict[str, State] = {
    "ok": State.SUCCEEDED, "error": State.FAILED, "canceled": State.CANCELED, "cancelled": State.CANCELED,
}
# error codes in a legacy event's errors[] that mean the reload was cancelled, not failed
CANCEL_CODES = frozenset({"CANCELED", "CANCELLED", "RELOAD_CANCELED", "RELOAD_CANCELLED", "RELOAD_ABORTED", "ABORTED"})
RELOAD_CANCELED = "RELOAD_CANCELED"
_CANCEL_TEXT = re.compile(r"\b(cancell?ed|aborted)\b", re.IGNORECASE)

STATES: dict[str, State] = {
    "SUCCEEDED": State.SUCCEEDED,
    "FAILED": State.FAILED,
    "CANCELED": State.CANCELED,
    "EXCEEDED_LIMIT": State.FAILED,
}

# What initiated the reload (data.type), as documented; other values are kept too.
RELOAD_TYPES = ("hub", "chronos", "external", "automations", "data-refresh", "choreographer")

# Envelope extensions worth keeping (descriptive ids, no identity claims, no addresses).
KEPT_ENVELOPE = (
    "host",
    "reason",
    "spaceid",
    "ownerid",
    "userid",
    "authtype",
    "clientid",
    "toplevelresourceid",
    "traceparent",
    "tracestate",
    "datacontenttype",
)
# Never copied: the principal's claims, the caller's address, its session.
DROPPED_ENVELOPE = frozenset({"authclaims", "originip", "sessionid"})

# data fields read into the event or attrs by name; other scalar data fields are kept
# under attrs["data_extra"] unless their name suggests a secret.
_KNOWN_DATA = frozenset(
    {
        "id", "appId", "userId", "succeeded", "status", "type", "partial", "taskId",
        "weight", "appUsage", "tenantId", "errorCode", "errorMessage", "startTime",
        "creationTime", "endTime", "lastReloadTime", "durationSeconds",
        "crashedOnMaxSizeEngine",
    }
)
_SECRET_HINTS = ("auth", "claim", "token", "secret", "password", "credential", "session", "email")
_SECRET_NAMES = frozenset({"ip", "originip", "clientip", "ipaddress", "remoteip"})


_MAX_TEXT = 2000
_MAX_EXTRA = 20


def canonical_state(native: str | None, succeeded: bool) -> State:
    """Documented statuses by table; unknown or missing ones by ``succeeded``."""
    if native is not None:
        state = STATES.get(native.upper())
        if state is not None:
            return state
    return State.SUCCEEDED if succeeded else State.FAILED


def normalize(doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """One event per CloudEvent in the document (a batch gives several)."""
    pieces = _pieces(_parsed(doc))
    if len(pieces) == 1:
        return [_event(_envelope(pieces[0]), ctx)]
    events = []
    for index, piece in enumerate(pieces):
        try:
            events.append(_event(_envelope(piece), ctx))
        except Rejected as exc:
            raise Rejected(f"batch event {index}: {exc.reason}") from None
    return events


def split(doc: Any) -> list[Any]:
    """One piece per CloudEvent (each concerns one app): batch items alone, others whole."""
    return _pieces(_parsed(doc))


# --- document shapes ---------------------------------------------------------------


def _parsed(doc: Any) -> Any:
    if isinstance(doc, memoryview):
        doc = bytes(doc)
    if isinstance(doc, (str, bytes, bytearray)):
        return load_json(doc)
    return doc


def _pieces(doc: Any) -> list[Any]:
    """The CloudEvents in ``doc`` (each still in its own form)."""
    if isinstance(doc, list):
        for index, item in enumerate(doc):
            if not isinstance(item, dict):
                raise Rejected(f"batch event {index} must be a JSON object, got {type(item).__name__}")
        return list(doc)
    if not isinstance(doc, dict):
        raise Rejected(f"a Qlik Cloud event must be a JSON object or a batch list, got {type(doc).__name__}")
    if "headers" in doc and "specversion" not in doc:
        headers = _headers(doc.get("headers"))
        if not any(name.startswith("ce-") for name in headers):
            body = _body(doc)
            if isinstance(body, list):
                return _pieces(body)
            if isinstance(body, dict) and "specversion" in body:
                return [body]
            raise Rejected("HTTP wrapper has no ce- headers and its body is not a structured CloudEvent")
    return [doc]


def _envelope(doc: dict[str, Any]) -> dict[str, Any]:
    """The event's attributes and data as one structured-mode object."""
    if "headers" in doc and "specversion" not in doc:
        headers = _headers(doc.get("headers"))
        envelope: dict[str, Any] = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        if "content-type" in headers:
            envelope["datacontenttype"] = headers["content-type"]
        envelope["data"] = _body(doc)
        return envelope
    return doc


def _headers(value: Any) -> dict[str, Any]:
    """Header names lowercased; ``[name, value]`` pair lists and multi-values accepted."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = []
        for pair in value:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise Rejected("headers list must hold [name, value] pairs")
            items.append((pair[0], pair[1]))
    else:
        raise Rejected(f"headers must be an object or a list of pairs, got {type(value).__name__}")
    headers: dict[str, Any] = {}
    for name, header_value in items:
        if not isinstance(name, str):
            raise Rejected("header names must be strings")
        if isinstance(header_value, list):
            header_value = header_value[0] if header_value else None
        headers[name.strip().lower()] = header_value
    return headers


def _body(doc: dict[str, Any]) -> Any:
    body = doc["data"] if "data" in doc else doc.get("body")
    if isinstance(body, memoryview):
        body = bytes(body)
    if isinstance(body, (str, bytes, bytearray)):
        return load_json(body)
    return body


# --- one event -----------------------------------------------------------------------


def _event(envelope: dict[str, Any], ctx: Context) -> JobEvent:
    if envelope.get("type", envelope.get("eventType")) == LEGACY_EVENT_TYPE:
        return _legacy_event(envelope, ctx)
    event_id = identifier(envelope.get("id"), "id")
    event_source = identifier(envelope.get("source"), "source")
    event_type = identifier(envelope.get("type"), "type")
    specversion = identifier(envelope.get("specversion"), "specversion")
    if not (specversion == "1" or specversion.startswith("1.")):
        raise Rejected(f"specversion {specversion[:20]!r} is not CloudEvents 1.x")
    if event_type != EVENT_TYPE:
        raise Rejected(f"event type {event_type[:100]!r} is not {EVENT_TYPE} (nor {LEGACY_EVENT_TYPE})")
    tenant = identifier(envelope.get("tenantid"), "tenantid")
    data = _data(envelope)

    reload_id = identifier(data.get("id"), "data.id")
    app_id = identifier(data.get("appId"), "data.appId")
    user_id = identifier(data.get("userId"), "data.userId")
    succeeded = data.get("succeeded")
    if not isinstance(succeeded, bool):
        if succeeded is None:
            raise Rejected("missing required field 'data.succeeded'")
        raise Rejected(f"data.succeeded must be a boolean, got {type(succeeded).__name__}")

    attrs: dict[str, Any] = {"user_id": user_id}
    status = data.get("status")
    if status is None or status == "":
        native = "SUCCEEDED" if succeeded else "FAILED"
        attrs["status_derived"] = True
    elif isinstance(status, str):
        native = clean_text(status.strip())[:100]
    else:
        raise Rejected(f"data.status must be a string, got {type(status).__name__}")
    state = canonical_state(native, succeeded)
    if native.upper() not in STATES:
        attrs["status_unknown"] = True
    attrs["succeeded"] = succeeded

    event_time = parse_time(envelope.get("time"), field="time", tz=ctx.tz)
    ended = parse_time(data.get("endTime"), field="data.endTime", tz=ctx.tz)
    started = parse_time(data.get("startTime"), field="data.startTime", tz=ctx.tz)
    created = parse_time(data.get("creationTime"), field="data.creationTime", tz=ctx.tz)
    last_reload = parse_time(data.get("lastReloadTime"), field="data.lastReloadTime", tz=ctx.tz)
    occurred_at = event_time or ctx.received_at
    if occurred_at is None:
        raise Rejected("event has no time and the context no received_at")
    if created is not None:
        attrs["created_at"] = created.isoformat()
    if last_reload is not None:
        attrs["last_reload_time"] = last_reload.isoformat()
    if event_time is None:
        attrs["time_from"] = "received_at"

    _data_attrs(data, attrs)
    _envelope_attrs(envelope, attrs)

    return JobEvent(
        event_id=make_event_id(VENDOR, tenant, event_source, event_id),
        vendor=VENDOR,
        source=tenant,
        job_key=f"{VENDOR}:{tenant}:{app_id}",
        run_key=f"{VENDOR}:{tenant}:{reload_id}",
        native_state=native,
        state=state,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        started_at=started or created,
        finished_at=ended or event_time,
        error_code=_optional_text(data.get("errorCode"), "data.errorCode", 200),
        error_message=_optional_text(data.get("errorMessage"), "data.errorMessage", _MAX_TEXT),
        raw_ref=ctx.raw_ref,
        attrs=attrs,
    )


def _legacy_event(envelope: dict[str, Any], ctx: Context) -> JobEvent:
    """``com.qlik.v1.app.reload.finished``: the legacy envelope, or the hybrid one that
    also carries CloudEvents 1.0.2 attributes (which win where both are given)."""
    extensions = envelope.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise Rejected(f"extensions must be an object, got {type(extensions).__name__}")
    legacy = {key.lower(): value for key, value in (extensions or {}).items() if isinstance(key, str)}

    def attribute(name: str) -> Any:
        value = envelope.get(name)
        return legacy.get(name) if value is None or value == "" else value

    tenant = identifier(attribute("tenantid"), "tenantid")
    app_id = identifier(attribute("toplevelresourceid"), "topLevelResourceId")
    data = _data(envelope)
    reload_id = identifier(data.get("reloadId"), "data.reloadId")
    status = data.get("status")
    if not isinstance(status, str) or not status.strip():
        raise Rejected("data.status must be 'ok' or 'error'")
    native = clean_text(status.strip())[:100]
    state = LEGACY_STATES.get(native.lower(), State.FAILED)

    event_time = parse_time(envelope.get("time") or envelope.get("eventTime"), field="eventTime", tz=ctx.tz)
    occurred_at = event_time or ctx.received_at
    if occurred_at is None:
        raise Rejected("event has no time and the context no received_at")
    attrs: dict[str, Any] = {"event_type": LEGACY_EVENT_TYPE}
    if native.lower() not in LEGACY_STATES:
        attrs["status_unknown"] = True
    if event_time is None:
        attrs["time_from"] = "received_at"
    for name, key in (("userid", "user_id"), ("ownerid", "ownerid"), ("spaceid", "spaceid")):
        value = attribute(name)
        if isinstance(value, str) and value:
            attrs[key] = clean_text(value)[:MAX_ID]
    name = data.get("name")
    if isinstance(name, str) and name:
        attrs["app_name"] = attrs["job_name"] = clean_text(name)[:_MAX_TEXT]
    partial = data.get("isPartialReload")
    if isinstance(partial, bool):
        attrs["partial"] = partial
    memory = data.get("peakMemoryBytes")
    if type(memory) is int and 0 <= memory < 2**63:
        attrs["peak_memory_bytes"] = memory
    warnings = _messages(data.get("warnings"))
    if warnings:
        attrs["warnings"] = warnings
    errors = _messages(data.get("errors"))
    error_code = None
    if state is State.FAILED and native.lower() == "error":
        error_code = _cancel_code(data.get("errors"))
        if error_code is not None:
            state = State.CANCELED
    elif state is State.CANCELED:
        error_code = RELOAD_CANCELED
    duration = _go_duration(data.get("duration"))
    if duration is not None:
        attrs["duration_seconds"] = duration.total_seconds()
    finished = event_time
    return JobEvent(
        # one finished event per reload: the legacy and the hybrid form of it are the same event
        event_id=make_event_id(VENDOR, tenant, LEGACY_EVENT_TYPE, reload_id),
        vendor=VENDOR,
        source=tenant,
        job_key=f"{VENDOR}:{tenant}:{app_id}",
        run_key=f"{VENDOR}:{tenant}:{reload_id}",
        native_state=native,
        state=state,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        started_at=finished - duration if finished is not None and duration is not None else None,
        finished_at=finished,
        error_code=error_code,
        error_message=("; ".join(errors))[:_MAX_TEXT] if errors else None,
        raw_ref=ctx.raw_ref,
        attrs=attrs,
    )


def _cancel_code(value: Any) -> str | None:
    """The error code that says a legacy ``error`` reload was cancelled, else None."""
    if not isinstance(value, list):
        return None
    for item in value[:_MAX_EXTRA]:
        code, text = None, item
        if isinstance(item, dict):
            raw_code = item.get("errorCode", item.get("code"))
            code = str(raw_code).strip().upper() if isinstance(raw_code, (str, int)) and not isinstance(raw_code, bool) else None
            text = item.get("message", item.get("errorMessage"))
        if code in CANCEL_CODES:
            return code
        if isinstance(text, str) and _CANCEL_TEXT.search(text):
            return RELOAD_CANCELED
    return None


def _messages(value: Any) -> list[str]:
    """A legacy event's errors or warnings as short texts (strings, or objects' messages)."""
    if not isinstance(value, list):
        return []
    texts = []
    for item in value[:_MAX_EXTRA]:
        if isinstance(item, dict):
            item = item.get("message", item.get("errorMessage"))
        if isinstance(item, str) and item:
            texts.append(clean_text(item)[:500])
    return texts


_GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?$", re.ASCII)


def _go_duration(value: Any) -> timedelta | None:
    """A duration as Go prints it ("40s", "1m20.5s", "2h0m3s"), else None (kept out)."""
    if not isinstance(value, str) or not value:
        return None
    match = _GO_DURATION.match(value.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = match.groups()
    if len(hours or "") > 6:
        return None
    return timedelta(hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0))


def _data(envelope: dict[str, Any]) -> dict[str, Any]:
    """``data`` as an object: given inline, as JSON text, or as base64 JSON."""
    data = envelope.get("data")
    if data is None and "data_base64" in envelope:
        encoded = envelope["data_base64"]
        if not isinstance(encoded, str):
            raise Rejected("data_base64 must be a string")
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("data_base64 is not valid base64") from None
        data = load_json(decoded)
    elif isinstance(data, (str, bytes, bytearray)):
        data = load_json(data)
    if data is None:
        raise Rejected("missing required field 'data'")
    if not isinstance(data, dict):
        raise Rejected(f"data must be a JSON object, got {type(data).__name__}")
    return data


def _data_attrs(data: dict[str, Any], attrs: dict[str, Any]) -> None:
    reload_type = data.get("type")
    if isinstance(reload_type, str) and reload_type:
        attrs["reload_type"] = clean_text(reload_type)[:100]
        if reload_type not in RELOAD_TYPES:
            attrs["reload_type_unknown"] = True
    for name, key in (("partial", "partial"), ("crashedOnMaxSizeEngine", "crashed_on_max_size_engine")):
        flag = data.get(name)
        if isinstance(flag, bool):
            attrs[key] = flag
    for name, key in (("taskId", "task_id"), ("appUsage", "app_usage"), ("tenantId", "data_tenant_id")):
        text = data.get(name)
        if isinstance(text, str) and text:
            attrs[key] = clean_text(text)[:MAX_ID]
    weight = data.get("weight")
    if type(weight) is int and -(2**63) <= weight < 2**63:
        attrs["weight"] = weight
    duration = data.get("durationSeconds")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and math.isfinite(duration):
        attrs["duration_seconds"] = float(duration)
    extra: dict[str, Any] = {}
    for name, value in data.items():
        if len(extra) >= _MAX_EXTRA:
            break
        if name in _KNOWN_DATA or not isinstance(name, str) or _looks_secret(name):
            continue
        kept = _scalar(value)
        if kept is not None:
            extra[clean_text(name)[:100]] = kept
    if extra:
        attrs["data_extra"] = extra


def _envelope_attrs(envelope: dict[str, Any], attrs: dict[str, Any]) -> None:
    for name in KEPT_ENVELOPE:
        value = envelope.get(name)
        if isinstance(value, str) and value:
            attrs[name] = clean_text(value)[:_MAX_TEXT]


# --- small helpers ---------------------------------------------------------------------


def _optional_text(value: Any, field: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected(f"{field} must be a string, got {type(value).__name__}")
    text = clean_text(str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def _scalar(value: Any) -> Any:
    """A JSON scalar worth keeping in attrs (strings shortened), else None."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)[:_MAX_TEXT]
    return None


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(hint in lowered for hint in _SECRET_HINTS)


__all__ = ["VENDOR", "STATES", "EVENT_TYPE", "LEGACY_EVENT_TYPE", "LEGACY_STATES", "RELOAD_TYPES", "canonical_state", "normalize", "split"]
