"""Qlik Cloud reload.finished CloudEvents: every documented shape, status and field."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import JobEvent, State, encode_event
from pipeline.vendors import keyed_documents
from pipeline.vendors.qlik_cloud import normalize as qlik_cloud
from pipeline.vendors._common import Context, Rejected
from tests.support.vendors import assert_allowed_outcome

FIXTURES = Path(__file__).parent / "fixtures" / "qlik_cloud"
RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
CTX = Context(received_at=RECEIVED)
TENANT = "xqGQ0k66vSR8f9G7J-vYtHZQkiYrCpct"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def only(doc: Any, ctx: Context = CTX) -> JobEvent:
    events = qlik_cloud.normalize(doc, ctx)
    assert len(events) == 1
    return events[0]


def minimal(**data_overrides: Any) -> dict[str, Any]:
    data = {"id": "r1", "appId": "a1", "userId": "u1", "succeeded": True}
    data.update(data_overrides)
    return {
        "id": "e1",
        "source": "com.qlik/reloads",
        "type": "com.qlik.v1.reload.finished",
        "specversion": "1.0",
        "time": "2024-01-01T00:00:00Z",
        "tenantid": "t1",
        "data": data,
    }


# --- fixtures -------------------------------------------------------------------------


def test_seed_example_is_a_succeeded_reload_of_app1() -> None:
    event = only(load("seed_reload_finished.json"))
    assert event.vendor == "qlik_cloud"
    assert event.source == "id123"
    assert event.job_key == "qlik_cloud:id123:app1"
    assert event.run_key == "qlik_cloud:id123:id123"
    assert event.attempt is None
    assert event.native_state == "SUCCEEDED"
    assert event.state is State.SUCCEEDED
    assert event.occurred_at == datetime(2018, 10, 30, 7, 6, 22, tzinfo=timezone.utc)
    assert event.finished_at == event.occurred_at
    assert event.received_at == RECEIVED
    assert event.attrs["status_derived"] is True
    assert event.attrs["user_id"] == "user1"
    assert event.attrs["reason"] == "User initiated reload"
    assert event.attrs["host"] == "qlik.example.com"


def test_seed_example_never_leaks_auth_claims_origin_ip_or_session() -> None:
    event = only(load("seed_reload_finished.json"))
    text = encode_event(event).decode()
    assert "John Doe" not in text and "john.doe@example.com" not in text
    assert "192.168.1.1" not in text
    assert not {"authclaims", "originip", "sessionid"} & event.attrs.keys()


def test_failed_event_with_every_field() -> None:
    event = only(load("failed_all_fields.json"))
    assert event.source == TENANT
    assert event.job_key == f"qlik_cloud:{TENANT}:3f1c2a5e-8b7d-4c6e-9f0a-1b2c3d4e5f60"
    assert event.run_key == f"qlik_cloud:{TENANT}:65f01a2b3c4d5e6f7a8b9c0d"
    assert (event.native_state, event.state) == ("FAILED", State.FAILED)
    assert event.error_code == "EngineReloadFailure"
    assert event.error_message.startswith("The following error occurred: Cannot open file")
    # Qlik writes seven fraction digits; started_at comes from startTime.
    assert event.started_at == datetime(2024, 3, 12, 8, 14, 1, 552123, tzinfo=timezone.utc)
    assert event.finished_at == datetime(2024, 3, 12, 8, 15, 42, 123456, tzinfo=timezone.utc)
    assert event.attrs["reload_type"] == "chronos"
    assert event.attrs["duration_seconds"] == 100.6
    assert event.attrs["partial"] is False
    assert event.attrs["task_id"] == "65e0aa11bb22cc33dd44ee55"
    assert event.attrs["weight"] == 1
    assert event.attrs["app_usage"] == "ANALYTICS"
    assert event.attrs["crashed_on_max_size_engine"] is False
    assert event.attrs["created_at"] == "2024-03-12T08:13:58+00:00"
    assert event.attrs["succeeded"] is False
    assert "Jane Analyst" not in encode_event(event).decode()
    assert "10.12.3.4" not in encode_event(event).decode()


def test_succeeded_partial_reload_keeps_partial_and_last_reload_time() -> None:
    event = only(load("succeeded_partial_all_fields.json"))
    assert event.state is State.SUCCEEDED
    assert event.attrs["partial"] is True
    assert event.attrs["reload_type"] == "hub"
    assert event.attrs["last_reload_time"] == "2024-03-12T09:00:06.987000+00:00"
    assert event.attrs["duration_seconds"] == 65.0
    assert event.error_code is None and event.error_message is None


def test_canceled_and_exceeded_limit() -> None:
    canceled = only(load("canceled_external.json"))
    assert (canceled.native_state, canceled.state) == ("CANCELED", State.CANCELED)
    assert canceled.attrs["reload_type"] == "external"
    exceeded = only(load("exceeded_limit_automations.json"))
    assert (exceeded.native_state, exceeded.state) == ("EXCEEDED_LIMIT", State.FAILED)
    assert exceeded.error_code == "ReloadLimitExceeded"
    assert exceeded.attrs["crashed_on_max_size_engine"] is True


def test_binary_mode_gives_the_same_event_as_structured_mode() -> None:
    structured = only(load("failed_all_fields.json"))
    binary = only(load("binary_mode_failed.json"))
    assert binary.event_id == structured.event_id
    assert (binary.job_key, binary.run_key, binary.state) == (structured.job_key, structured.run_key, structured.state)
    assert binary.occurred_at == structured.occurred_at
    text = encode_event(binary).decode()
    assert "Bearer" not in text and "Qlik-Signature" not in text and "3c0e0f1d2a" not in text
    assert "Jane Analyst" not in text and "10.12.3.4" not in text


def test_binary_mode_with_header_pairs_and_body_as_json_text() -> None:
    event = only(load("binary_mode_body_string.json"))
    assert event.job_key == f"qlik_cloud:{TENANT}:a4"
    assert event.attrs["reload_type"] == "data-refresh"
    assert event.attrs["datacontenttype"] == "application/json; charset=utf-8"
    assert event.occurred_at == datetime(2024, 3, 12, 10, tzinfo=timezone.utc)


def test_structured_event_inside_an_http_wrapper() -> None:
    assert only(load("structured_in_http_wrapper.json")).event_id == only(load("succeeded_partial_all_fields.json")).event_id


def test_batch_gives_one_event_per_cloud_event() -> None:
    events = qlik_cloud.normalize(load("batch_three_events.json"), CTX)
    assert [e.run_key.rsplit(":", 1)[1] for e in events] == ["r-b1", "r-b2", "r-b3"]
    assert [e.state for e in events] == [State.SUCCEEDED, State.FAILED, State.SUCCEEDED]
    assert [e.attrs["reload_type"] for e in events] == ["choreographer", "hub", "chronos"]
    assert len({e.event_id for e in events}) == 3


def test_batch_in_an_http_wrapper_and_empty_batch() -> None:
    wrapped = {"headers": {"Content-Type": "application/cloudevents-batch+json"}, "body": load("batch_three_events.json")}
    assert len(qlik_cloud.normalize(wrapped, CTX)) == 3
    assert qlik_cloud.normalize([], CTX) == []


def test_raw_bytes_and_text_are_parsed() -> None:
    raw = (FIXTURES / "failed_all_fields.json").read_bytes()
    assert only(raw).event_id == only(raw.decode()).event_id == only(load("failed_all_fields.json")).event_id


def test_data_as_json_string_and_as_base64() -> None:
    doc = minimal()
    as_text = dict(doc, data=json.dumps(doc["data"]))
    import base64

    as_b64 = {k: v for k, v in doc.items() if k != "data"}
    as_b64["data_base64"] = base64.b64encode(json.dumps(doc["data"]).encode()).decode()
    assert only(as_text).event_id == only(as_b64).event_id == only(doc).event_id


def test_missing_time_falls_back_to_received_at_and_is_marked() -> None:
    doc = minimal()
    del doc["time"]
    event = only(doc)
    assert event.occurred_at == RECEIVED
    assert event.finished_at is None
    assert event.attrs["time_from"] == "received_at"


def test_started_at_falls_back_to_creation_time() -> None:
    event = only(minimal(creationTime="2024-01-01T00:00:00Z"))
    assert event.started_at == datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_unknown_data_fields_are_kept_but_secret_looking_ones_are_not() -> None:
    event = only(minimal(engineVersion="12.1", accessToken="s3cret", clientIp="1.2.3.4", description="nightly", nested={"a": 1}))
    assert event.attrs["data_extra"] == {"engineVersion": "12.1", "description": "nightly"}
    assert "s3cret" not in encode_event(event).decode()


# --- state table --------------------------------------------------------------------------


def test_state_table_is_exactly_the_documented_statuses() -> None:
    assert set(qlik_cloud.STATES) == {"SUCCEEDED", "FAILED", "CANCELED", "EXCEEDED_LIMIT"}


@pytest.mark.parametrize(
    ("status", "succeeded", "state"),
    [
        ("SUCCEEDED", True, State.SUCCEEDED),
        ("FAILED", False, State.FAILED),
        ("CANCELED", False, State.CANCELED),
        ("EXCEEDED_LIMIT", False, State.FAILED),
        ("succeeded", True, State.SUCCEEDED),
        ("Canceled", False, State.CANCELED),
        ("exceeded_limit", False, State.FAILED),
        # the status decides even when succeeded disagrees
        ("FAILED", True, State.FAILED),
        ("CANCELED", True, State.CANCELED),
    ],
)
def test_every_status_maps_to_its_state(status: str, succeeded: bool, state: State) -> None:
    event = only(minimal(status=status, succeeded=succeeded))
    assert event.state is state
    assert event.native_state == status
    assert "status_unknown" not in event.attrs


@pytest.mark.parametrize(("succeeded", "state"), [(True, State.SUCCEEDED), (False, State.FAILED)])
def test_missing_status_comes_from_succeeded(succeeded: bool, state: State) -> None:
    event = only(minimal(succeeded=succeeded))
    assert event.state is state
    assert event.native_state == state.value
    assert event.attrs["status_derived"] is True


@pytest.mark.parametrize(("succeeded", "state"), [(True, State.SUCCEEDED), (False, State.FAILED)])
def test_unknown_status_is_kept_and_mapped_by_succeeded(succeeded: bool, state: State) -> None:
    event = only(minimal(status="QUEUED_FOR_RETRY", succeeded=succeeded))
    assert event.native_state == "QUEUED_FOR_RETRY"
    assert event.state is state
    assert event.attrs["status_unknown"] is True


@pytest.mark.parametrize("reload_type", qlik_cloud.RELOAD_TYPES)
def test_every_documented_reload_type_is_kept(reload_type: str) -> None:
    event = only(minimal(type=reload_type))
    assert event.attrs["reload_type"] == reload_type
    assert "reload_type_unknown" not in event.attrs


# --- rejections --------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    doc = minimal()
    if path.startswith("data."):
        del doc["data"][path[5:]]
    else:
        del doc[path]
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (_without("id"), "missing required field 'id'"),
        (_without("source"), "missing required field 'source'"),
        (_without("type"), "missing required field 'type'"),
        (_without("specversion"), "missing required field 'specversion'"),
        (_without("tenantid"), "missing required field 'tenantid'"),
        (_without("data"), "missing required field 'data'"),
        (_without("data.id"), "missing required field 'data.id'"),
        (_without("data.appId"), "missing required field 'data.appId'"),
        (_without("data.userId"), "missing required field 'data.userId'"),
        (_without("data.succeeded"), "missing required field 'data.succeeded'"),
        (minimal(succeeded="true"), "data.succeeded must be a boolean"),
        (minimal(appId=42), "data.appId must be a string"),
        (minimal(status=7), "data.status must be a string"),
        (minimal(startTime="yesterday"), "data.startTime is not a time"),
        (minimal(errorMessage={"text": "x"}), "data.errorMessage must be a string"),
        (dict(minimal(), specversion="0.3"), "is not CloudEvents 1.x"),
        (dict(minimal(), type="com.qlik.v1.app.created"), "is not com.qlik.v1.reload.finished"),
        (dict(minimal(), data=[1, 2]), "data must be a JSON object"),
        (dict(minimal(), data="{not json"), "not valid JSON"),
        (dict(minimal(), tenantid="x" * 300), "tenantid is 300 characters long"),
        ({"headers": {"ce-id": "1"}, "data": {}}, "missing required field 'source'"),
        ({"headers": "ce-id: 1", "data": {}}, "headers must be an object or a list of pairs"),
        ({"headers": {"content-type": "application/json"}, "body": {"x": 1}}, "no ce- headers"),
        ([minimal(), "not an event"], "batch event 1 must be a JSON object"),
        ([minimal(), dict(minimal(), tenantid="")], "batch event 1: missing required field 'tenantid'"),
        ("[1, 2", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (42, "must be a JSON object or a batch list"),
    ],
)
def test_rejections_name_the_reason(doc: Any, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        qlik_cloud.normalize(doc, CTX)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_other_event_type_fixture_is_rejected() -> None:
    with pytest.raises(Rejected, match="com.qlik.v1.app.created"):
        qlik_cloud.normalize({**load("other_event_type.json"), "type": "com.qlik.v1.app.created"}, CTX)


def test_an_app_reload_finished_with_the_new_data_shape_names_what_is_missing() -> None:
    with pytest.raises(Rejected, match="data.reloadId"):
        qlik_cloud.normalize(load("other_event_type.json"), CTX)


def test_no_time_anywhere_is_rejected() -> None:
    doc = minimal()
    del doc["time"]
    with pytest.raises(Rejected, match="no time"):
        qlik_cloud.normalize(doc, Context())


# --- identity ------------------------------------------------------------------------------


def test_redelivery_gives_the_same_event_id_and_other_events_other_ids() -> None:
    first = only(load("failed_all_fields.json"))
    again = only(load("failed_all_fields.json"), Context(received_at=datetime(2025, 1, 1, tzinfo=timezone.utc)))
    assert first.event_id == again.event_id
    other_id = dict(load("failed_all_fields.json"), id="another-id")
    other_source = dict(load("failed_all_fields.json"), source="com.qlik/other")
    other_tenant = dict(load("failed_all_fields.json"), tenantid="other-tenant")
    ids = {first.event_id, only(other_id).event_id, only(other_source).event_id, only(other_tenant).event_id}
    assert len(ids) == 4


def test_batch_items_keep_the_id_they_have_alone() -> None:
    batch = load("batch_three_events.json")
    assert [e.event_id for e in qlik_cloud.normalize(batch, CTX)] == [only(item).event_id for item in batch]


# --- split ---------------------------------------------------------------------------------


def test_split_gives_one_job_per_piece() -> None:
    batch = load("batch_three_events.json")
    pieces = qlik_cloud.split(batch)
    assert pieces == batch
    keyed = keyed_documents("qlik_cloud", batch, CTX)
    assert [key for key, _ in keyed] == [
        f"qlik_cloud:{TENANT}:app-b1",
        f"qlik_cloud:{TENANT}:app-b2",
        f"qlik_cloud:{TENANT}:app-b1",
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json") if p.name != "other_event_type.json"))
def test_every_fixture_splits_into_single_job_pieces(name: str) -> None:
    doc = load(name)
    for piece in qlik_cloud.split(doc):
        assert len({e.job_key for e in qlik_cloud.normalize(piece, CTX)}) == 1


# --- fuzz ---------------------------------------------------------------------------------

_FIXTURE_BYTES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
# values planted into real documents: wrong types, huge strings, surrogates, deep nesting
odd_values = (
    json_values
    | st.sampled_from(["x" * 100_000, "\ud800", "1753-01-01T00:00:00", "", " ", "9" * 400])
    | st.integers(min_value=0, max_value=60).map(lambda depth: _deep(depth))
)


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"data": value}
    return value


def _mutate(doc: Any, path: list[str], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    if isinstance(target, list):
        if not target:
            return doc
        target = target[0]
    for key in path[:-1]:
        nested = target.get(key) if isinstance(target, dict) else None
        if not isinstance(nested, dict):
            return doc
        target = nested
    if isinstance(target, dict):
        target[path[-1]] = value
    return doc


def _outcome(doc: Any) -> None:
    """The only allowed outcomes: a list of valid, encodable events, or Rejected."""
    assert_allowed_outcome("qlik_cloud", doc, CTX)


_FIELDS = [
    ["id"], ["source"], ["type"], ["specversion"], ["time"], ["tenantid"], ["data"], ["headers"], ["body"],
    ["data", "id"], ["data", "appId"], ["data", "userId"], ["data", "succeeded"], ["data", "status"],
    ["data", "startTime"], ["data", "creationTime"], ["data", "durationSeconds"], ["data", "errorMessage"],
    ["data", "errorCode"], ["data", "weight"], ["data", "type"], ["data", "partial"], ["data_base64"],
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_values)
def test_fuzz_random_json(doc: Any) -> None:
    _outcome(doc)
    _outcome(json.dumps(doc))


@FUZZ
@given(st.sampled_from(_FIXTURE_BYTES), st.data())
def test_fuzz_truncated_documents(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    _outcome(raw[:cut])


@FUZZ
@given(st.sampled_from(_FIXTURE_BYTES), st.sampled_from(_FIELDS), odd_values)
def test_fuzz_wrong_types_huge_strings_deep_nesting(raw: bytes, path: list[str], value: Any) -> None:
    _outcome(_mutate(orjson.loads(raw), path, value))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_invalid_utf8_bytes(raw: bytes) -> None:
    _outcome(raw)
    _outcome((FIXTURES / "seed_reload_finished.json").read_bytes()[:40] + raw)


def test_deeply_nested_json_text_is_rejected_not_crashing() -> None:
    with pytest.raises(Rejected):
        qlik_cloud.normalize(b"[" * 5000 + b"]" * 5000, CTX)


# --- com.qlik.v1.app.reload.finished (legacy and hybrid envelopes) --------------------------


def test_legacy_app_reload_finished_is_a_run_of_its_app() -> None:
    event = only(load("app_reload_finished_legacy.json"))
    assert (event.source, event.job_key, event.run_key) == ("t1", "qlik_cloud:t1:app-1", "qlik_cloud:t1:r-1")
    assert (event.native_state, event.state, event.error_message) == ("error", State.FAILED, "Field not found")
    assert event.finished_at == datetime(2025, 11, 20, 9, 0, 40, tzinfo=timezone.utc) == event.occurred_at
    assert event.started_at == datetime(2025, 11, 20, 9, 0, 0, tzinfo=timezone.utc)  # eventTime - "40s"
    assert event.attrs["peak_memory_bytes"] == 123 and event.attrs["app_name"] == "Sales"


def test_hybrid_envelope_reads_the_cloudevents_attributes_first() -> None:
    event = only(load("app_reload_finished_hybrid.json"))
    assert (event.job_key, event.run_key, event.state) == ("qlik_cloud:t1:app-1", "qlik_cloud:t1:r-2", State.SUCCEEDED)
    assert event.started_at is None and event.finished_at == datetime(2025, 11, 20, 9, 5, tzinfo=timezone.utc)


def test_the_legacy_and_hybrid_forms_of_one_reload_are_one_event() -> None:
    legacy = load("app_reload_finished_legacy.json")
    hybrid = {**legacy, "id": "ce-1", "time": legacy["eventTime"], "type": legacy["eventType"],
              "specversion": "1.0.2", "tenantid": "t1", "toplevelresourceid": "app-1"}
    assert only(legacy).event_id == only(hybrid).event_id


@pytest.mark.parametrize(("change", "reason"), [
    ({"data": {"status": "ok"}}, "data.reloadId"),
    ({"extensions": {"tenantId": "t1"}}, "topLevelResourceId"),
    ({"extensions": "t1"}, "extensions must be an object"),
    ({"data": {"reloadId": "r", "status": 1}}, "data.status"),
])
def test_legacy_events_missing_what_identifies_the_run_are_rejected(change: dict, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        qlik_cloud.normalize({**load("app_reload_finished_legacy.json"), **change}, CTX)


def _legacy_with(errors: list, status: str = "error") -> dict:
    return {"eventType": "com.qlik.v1.app.reload.finished", "eventTime": "2025-11-20T09:00:40Z",
            "extensions": {"tenantId": "t1", "topLevelResourceId": "app-1"},
            "data": {"status": status, "reloadId": "r-9", "name": "Sales", "duration": "40s", "errors": errors}}


@pytest.mark.parametrize("errors", [
    [{"errorCode": "RELOAD_CANCELED", "message": "Reload canceled"}],
    ["The reload was cancelled by the user"],
    [{"code": "aborted", "message": "stopped"}],
])
def test_a_legacy_cancel_is_canceled_not_failed(errors):
    """issue 33 case 8: the legacy envelope's status is only ok/error; a cancel says so in errors[]."""
    [event] = qlik_cloud.normalize(_legacy_with(errors), Context(received_at=RECEIVED))
    assert event.state is State.CANCELED
    assert event.error_code in ("RELOAD_CANCELED", "ABORTED")
    assert event.attrs["job_name"] == "Sales"  # case 11: the app's name


def test_a_legacy_error_that_is_no_cancel_stays_failed():
    [event] = qlik_cloud.normalize(_legacy_with(["Field not found"]), Context(received_at=RECEIVED))
    assert event.state is State.FAILED and event.error_code is None
