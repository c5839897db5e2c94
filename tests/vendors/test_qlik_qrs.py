"""Qlik Sense QRS: execution results, sessions, reload tasks, start responses, 404 records."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import JobEvent, State, encode_event
from pipeline.vendors import keyed_documents
from pipeline.vendors.qlik_qrs import normalize as qlik_qrs
from pipeline.vendors._common import Context, Rejected
from tests.support.vendors import assert_allowed_outcome

FIXTURES = Path(__file__).parent / "fixtures" / "qlik_qrs"
RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
CTX = Context(source="qs-central", received_at=RECEIVED)
TASK = "6c7b2a1e-3d4f-4a5b-8c9d-0e1f2a3b4c5d"
TASK2 = "9a8b7c6d-5e4f-4321-8fed-cba987654321"
SESSION = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"
SESSION2 = "0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d"
NODATE = "1753-01-01T00:00:00.000Z"

EXPECTED = {
    0: ("NeverStarted", State.PENDING),
    1: ("Triggered", State.PENDING),
    2: ("Started", State.RUNNING),
    3: ("Queued", State.PENDING),
    4: ("AbortInitiated", State.RUNNING),
    5: ("Aborting", State.RUNNING),
    6: ("Aborted", State.CANCELED),
    7: ("FinishedSuccess", State.SUCCEEDED),
    8: ("FinishedFail", State.FAILED),
    9: ("Skipped", State.SKIPPED),
    10: ("Retry", State.FAILED),
    11: ("Error", State.FAILED),
    12: ("Reset", State.FAILED),
    13: ("DistributionQueue", State.RUNNING),
    14: ("DistributionRunning", State.RUNNING),
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def only(doc: Any, ctx: Context = CTX) -> JobEvent:
    events = qlik_qrs.normalize(doc, ctx)
    assert len(events) == 1
    return events[0]


def result(**overrides: Any) -> dict[str, Any]:
    doc = {
        "id": "r-1",
        "taskID": "t-1",
        "executionID": "s-1",
        "status": 7,
        "startTime": "2024-01-01T00:00:00.000Z",
        "stopTime": "2024-01-01T00:01:00.000Z",
    }
    doc.update(overrides)
    return doc


# --- fixtures ------------------------------------------------------------------------------


def test_execution_result_list_leaves_the_retries_of_one_session_to_the_lifecycle() -> None:
    events = qlik_qrs.normalize(load("executionresult_full_list.json"), CTX)
    by_result = {e.attrs["execution_result_id"]: e for e in events}
    retry = by_result["a0000000-0000-4000-8000-000000000001"]
    success = by_result["a0000000-0000-4000-8000-000000000002"]
    running = by_result["a0000000-0000-4000-8000-000000000003"]
    assert retry.run_key == success.run_key == f"qlik_qrs:qs-central:{SESSION}"
    assert retry.job_key == success.job_key == f"qlik_qrs:qs-central:{TASK}"
    assert (retry.attempt, retry.native_state, retry.state) == (None, "Retry", State.FAILED)
    assert (success.attempt, success.native_state, success.state) == (None, "FinishedSuccess", State.SUCCEEDED)
    assert events.index(retry) < events.index(success)  # time order: the lifecycle numbers them
    assert retry.error_message.startswith("The reload failed: Connector reply error")
    assert success.error_message is None
    assert (running.attempt, running.state, running.finished_at) == (None, State.RUNNING, None)
    assert running.run_key == f"qlik_qrs:qs-central:{SESSION2}"


def test_a_result_listed_twice_is_one_attempt_not_two() -> None:
    first, again = qlik_qrs.normalize([result(), result()], CTX)
    assert first.attempt is again.attempt is None
    assert first.event_id == again.event_id


def test_a_documents_results_come_out_in_time_order_whatever_the_list_order() -> None:
    queued = result(id="r-2", status=3, startTime=NODATE, stopTime=NODATE, modifiedDate="2024-05-01T22:05:00Z")
    retry = result(status=10, modifiedDate="2024-05-01T22:01:00Z")
    events = qlik_qrs.normalize([queued, retry], CTX)
    assert [(e.native_state, e.attempt) for e in events] == [("Retry", None), ("Queued", None)]


def test_execution_result_fields_go_where_they_belong() -> None:
    event = only(load("executionresult_failed.json"))
    assert event.source == "qs-central"
    assert event.job_key == f"qlik_qrs:qs-central:{TASK2}"
    assert event.run_key == "qlik_qrs:qs-central:f0e1d2c3-b4a5-4968-8776-655443322110"
    assert event.started_at == datetime(2024, 5, 1, 22, 0, 0, 500000, tzinfo=timezone.utc)
    assert event.finished_at == datetime(2024, 5, 1, 22, 0, 41, tzinfo=timezone.utc)
    assert event.occurred_at == event.finished_at  # modifiedDate
    assert event.error_message == "Script error: Field 'Amount' not found"
    attrs = event.attrs
    assert attrs["duration_ms"] == 40500
    assert attrs["executing_node_name"] == "qlik-sched-01.corp.example.com"
    assert attrs["script_log_available"] is True
    assert attrs["script_log_size"] == 18432
    assert attrs["script_log_location"] == "a0000000-0000-4000-8000-000000000004.log"
    assert "file_reference_id" not in attrs  # the empty GUID is no reference
    assert [d["type"] for d in attrs["details"]] == ["Warning", "Error", "Information"]
    assert attrs["details"][0]["at"] == "2024-05-01T22:00:30+00:00"


def test_named_status_gives_the_same_state_as_the_number() -> None:
    named = only(load("executionresult_named_status.json"))
    numeric = only(load("executionresult_failed.json"))
    assert (named.native_state, named.state) == (numeric.native_state, numeric.state)


def test_database_row_in_pascal_case_reads_naive_times_in_ctx_tz() -> None:
    event = only(load("executionresult_db_row.json"))
    assert (event.native_state, event.state) == ("Aborted", State.CANCELED)
    assert event.job_key == f"qlik_qrs:qs-central:{TASK}"
    assert event.started_at == datetime(2024, 4, 30, 12, tzinfo=timezone.utc)
    assert event.attrs["duration_ms"] == 600000


def test_reference_example_with_status_object_is_read_as_missing_status() -> None:
    event = only(load("executionresult_docs_example.json"))
    assert event.native_state == ""
    assert event.state is State.FAILED  # unknown rule: it has a stopTime


def test_execution_sessions_are_running_with_vendor_attempts() -> None:
    first, second, aborting = qlik_qrs.normalize(load("executionsession_full_list.json"), CTX)
    assert first.run_key == second.run_key == f"qlik_qrs:qs-central:{SESSION}"
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.state is second.state is State.RUNNING
    assert first.started_at == datetime(2024, 5, 2, 6, 0, 1, 120000, tzinfo=timezone.utc)
    assert first.finished_at is None
    assert first.attrs["task_name"] == "Reload Sales Dashboard"
    assert first.attrs["app_name"] == "Sales Dashboard"
    assert first.attrs["executing_node_host"] == "qlik-sched-01.corp.example.com"
    assert first.attrs["abort_reason"] == "Undefined"
    assert "abort_at" not in first.attrs  # 1753 is QRS's "no date"
    assert (aborting.native_state, aborting.state) == ("AbortInitiated", State.RUNNING)
    assert aborting.attrs["abort_reason"] == "Manual"
    assert aborting.attrs["abort_at"] == "2024-05-02T06:20:00+00:00"
    for event in (first, second, aborting):
        assert "CORP\\" not in encode_event(event).decode()  # the session's user is never copied


def test_session_without_result_of_an_external_program_task() -> None:
    event = only(load("executionsession_queued_no_result.json"))
    assert event.job_key == "qlik_qrs:qs-central:12121212-3434-4565-8787-909090909090"
    assert (event.native_state, event.state, event.attempt) == ("", State.RUNNING, 1)
    assert event.attrs["task_type"] == "ExternalProgram"


def test_reload_tasks_give_their_last_result_and_never_run_tasks_nothing() -> None:
    events = qlik_qrs.normalize(load("reloadtask_full_list.json"), CTX)
    assert [e.job_key.rsplit(":", 1)[1] for e in events] == [TASK, TASK2]
    sales, finance = events
    assert (sales.native_state, sales.state) == ("FinishedSuccess", State.SUCCEEDED)
    assert sales.run_key == "qlik_qrs:qs-central:result:a0000000-0000-4000-8000-000000000002"
    assert sales.attrs["run_key_basis"] == "execution_result_id"
    assert sales.attrs["task_name"] == "Reload Sales Dashboard"
    assert sales.attrs["next_execution"] == "2024-05-03T06:00:00+00:00"
    assert sales.attrs["task_type"] == "Reload"
    assert sales.attrs["max_retries"] == 2
    assert sales.occurred_at == sales.finished_at  # condensed results have no modifiedDate
    assert (finance.state, finance.error_message) == (State.FAILED, "Script error: Field 'Amount' not found")
    assert "next_execution" not in finance.attrs


def test_reload_task_with_execution_id_uses_the_session_run() -> None:
    task = load("reloadtask_full_list.json")[0]
    task["operational"]["lastExecutionResult"]["executionID"] = SESSION
    assert only(task).run_key == f"qlik_qrs:qs-central:{SESSION}"


def test_start_response_wrapped_opens_the_session_run() -> None:
    event = only(load("start_response_wrapped.json"))
    assert event.source == "qlik-central.corp.example.com"
    assert event.job_key == f"qlik_qrs:qlik-central.corp.example.com:{TASK}"
    assert event.run_key == f"qlik_qrs:qlik-central.corp.example.com:{SESSION}"
    assert (event.native_state, event.state) == ("StartAccepted", State.PENDING)
    assert event.occurred_at == datetime(2024, 5, 2, 6, 0, 0, 800000, tzinfo=timezone.utc)
    nested = only(load("start_response_nested.json"))
    assert nested.run_key == f"qlik_qrs:qs-central:{SESSION}"
    assert nested.occurred_at == RECEIVED


def test_empty_guid_start_response_is_a_failed_run_of_its_own() -> None:
    event = only(load("start_response_empty_guid.json"))
    assert (event.native_state, event.state) == ("StartRefused", State.FAILED)
    assert event.error_code == "TASK_NOT_STARTED"
    assert "did not start" in event.error_message
    assert event.job_key == f"qlik_qrs:qs-central:{TASK2}"
    assert event.run_key == f"qlik_qrs:qs-central:not-started:{TASK2}:2024-05-02T06:30:00+00:00"
    assert event.finished_at == event.occurred_at


def test_vanished_session_is_accepted_and_gives_no_event_the_results_decide() -> None:
    assert qlik_qrs.normalize(load("session_vanished_404.json"), CTX) == []
    assert qlik_qrs.split(load("session_vanished_404.json")) == []
    for key in ("id", "sessionId", "executionId"):
        assert qlik_qrs.normalize({key: SESSION, "taskId": TASK, "httpStatus": "404"}, CTX) == []


def test_the_same_session_as_result_session_and_404_shares_one_run_key() -> None:
    keys = {
        only(load("start_response_nested.json")).run_key,
        qlik_qrs.normalize(load("executionsession_full_list.json"), CTX)[0].run_key,
        qlik_qrs.normalize(load("executionresult_full_list.json"), CTX)[0].run_key,
    }
    assert keys == {f"qlik_qrs:qs-central:{SESSION}"}


def test_source_defaults_when_the_context_names_none() -> None:
    assert only(result(), Context(received_at=RECEIVED)).job_key == "qlik_qrs:default:t-1"


# --- state table ----------------------------------------------------------------------------


def test_state_table_covers_the_whole_enum_exactly_once() -> None:
    assert qlik_qrs.STATUS_NAMES == {number: name for number, (name, _) in EXPECTED.items()}
    assert qlik_qrs.STATES == {name: state for name, state in EXPECTED.values()}


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_every_numeric_status_decodes_to_its_name_and_state(number: int) -> None:
    name, state = EXPECTED[number]
    for written in (number, str(number), float(number)):
        event = only(result(status=written))
        assert (event.native_state, event.state) == (name, state)


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_every_named_status_in_any_case_maps_to_its_state(number: int) -> None:
    name, state = EXPECTED[number]
    spaced = "".join(" " + c if c.isupper() else c for c in name).strip()
    for written in (name, name.lower(), name.upper(), spaced, spaced.replace(" ", "_")):
        event = only(result(status=written))
        assert (event.native_state, event.state) == (name, state)


@pytest.mark.parametrize(
    ("status", "stop", "state"),
    [
        (15, NODATE, State.RUNNING),
        (15, "2024-01-01T00:01:00Z", State.FAILED),
        ("Paused", NODATE, State.RUNNING),
        ("Paused", "2024-01-01T00:01:00Z", State.FAILED),
        (None, NODATE, State.RUNNING),
        (None, "2024-01-01T00:01:00Z", State.FAILED),
    ],
)
def test_unknown_or_missing_status_maps_by_stop_time(status: Any, stop: str, state: State) -> None:
    event = only(result(status=status, stopTime=stop))
    assert event.state is state
    assert event.native_state == ("" if status is None else str(status))


@pytest.mark.parametrize(("native", "state"), sorted(qlik_qrs.RECORD_STATES.items()))
def test_record_states_are_non_success(native: str, state: State) -> None:
    assert state is not State.SUCCEEDED
    assert qlik_qrs.canonical_state(native, stopped=True) is state


@pytest.mark.parametrize("no_date", ["1753-01-01T00:00:00", "1753-01-01T00:00:00.000Z", "1753-01-01T00:00:00Z", "1753-01-01T00:00:00.000+00:00"])
def test_no_date_is_none(no_date: str) -> None:
    event = only(result(status=2, stopTime=no_date))
    assert event.finished_at is None
    assert event.state is State.RUNNING


# --- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (load("start_response_bare.json"), "names no task"),
        (json.dumps(SESSION), "names no task"),
        (SESSION, "names no task"),
        (SESSION.encode(), "names no task"),
        ({"value": SESSION}, "names no task"),
        ({"taskId": TASK, "value": "not-a-guid"}, "is not a session GUID"),
        ({"taskId": TASK, "response": {"value": 7}}, "is not a session GUID"),
        ({"executionSessionId": SESSION, "taskId": TASK, "httpStatus": 500}, "is not the 404"),
        ({"executionSessionId": SESSION, "httpStatus": 404}, "missing required field 'taskId'"),
        ({"taskId": TASK, "httpStatus": 404}, "has no executionSessionId"),
        (result(taskID=None), "missing required field 'taskID'"),
        (result(executionID=None), "missing required field 'executionID'"),
        (result(executionID=qlik_qrs.EMPTY_GUID), "executionID is the empty GUID"),
        (result(status=True), "status must be a number or a name"),
        (result(status=[7]), "status must be a number or a name"),
        (result(startTime="soon"), "startTime is not a time"),
        (result(taskID={"id": "x"}), "taskID must be a string"),
        (result(taskID="t" * 300), "taskID is 300 characters long"),
        ({"id": SESSION, "retries": 0}, "names no task"),
        ({"id": SESSION, "reloadTask": "t"}, "reloadTask must be an object"),
        ({"id": "t", "operational": []}, "operational must be an object"),
        ({"hello": "world"}, "not a QRS execution result"),
        ([result(), 3], "item 1 of the list must be a JSON object"),
        ([result(), result(taskID=None)], "item 1: missing required field 'taskID'"),
        ("{", "not valid JSON"),
        (b"\xc3\x28", "not valid JSON"),
        (True, "must be a JSON object or list"),
    ],
)
def test_rejections_name_the_reason(doc: Any, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        qlik_qrs.normalize(doc, CTX)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_record_without_any_time_needs_received_at() -> None:
    with pytest.raises(Rejected, match="no time"):
        qlik_qrs.normalize(load("start_response_nested.json"), Context())
    with pytest.raises(Rejected, match="no time"):
        qlik_qrs.normalize({"id": "r", "taskID": "t", "executionID": "s", "status": 1}, Context())


# --- identity ---------------------------------------------------------------------------------


def test_polling_the_same_snapshot_twice_gives_the_same_event_id() -> None:
    later = Context(source="qs-central", received_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    for name in sorted(p.name for p in FIXTURES.glob("*.json") if p.name != "start_response_bare.json"):
        doc = load(name)
        first = [e.event_id for e in qlik_qrs.normalize(doc, CTX)]
        again = [e.event_id for e in qlik_qrs.normalize(copy.deepcopy(doc), later)]
        if name == "start_response_nested.json":
            continue  # no time of its own: its refusal twin is keyed by received_at
        assert first == again, name


def test_a_status_change_gives_a_new_event_id_and_other_sources_other_ids() -> None:
    started = only(result(status=2, stopTime=NODATE))
    finished = only(result(status=7))
    elsewhere = only(result(status=7), Context(source="qs-other", received_at=RECEIVED))
    assert len({started.event_id, finished.event_id, elsewhere.event_id}) == 3


def test_all_event_ids_in_the_fixtures_are_distinct() -> None:
    ids = [
        e.event_id
        for p in sorted(FIXTURES.glob("*.json"))
        if p.name != "start_response_bare.json"
        for e in qlik_qrs.normalize(json.loads(p.read_text()), CTX)
    ]
    assert len(ids) == len(set(ids))


# --- split ------------------------------------------------------------------------------------


def test_split_groups_a_list_by_task_and_keeps_sessions_together() -> None:
    doc = load("executionresult_full_list.json")
    pieces = qlik_qrs.split(doc)
    assert len(pieces) == 2
    together = next(piece for piece in pieces if isinstance(piece, list))
    assert {item["executionID"] for item in together} == {SESSION}
    assert [e.native_state for e in qlik_qrs.normalize(together, CTX)] == ["Retry", "FinishedSuccess"]
    keys = [key for key, _ in keyed_documents("qlik_qrs", doc, CTX)]
    assert keys == [f"qlik_qrs:qs-central:{TASK}", f"qlik_qrs:qs-central:{TASK2}"]


def test_split_drops_tasks_that_never_ran() -> None:
    tasks = load("reloadtask_full_list.json")
    assert len(qlik_qrs.split(tasks)) == 2
    assert qlik_qrs.split(tasks[1]) == []
    assert qlik_qrs.normalize(tasks[1], CTX) == []


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIXTURES.glob("*.json") if p.name not in ("start_response_bare.json", "session_vanished_404.json")),
)
def test_every_fixture_splits_into_single_job_pieces(name: str) -> None:
    doc = load(name)
    pieces = qlik_qrs.split(doc)
    assert pieces
    for piece in pieces:
        assert len({e.job_key for e in qlik_qrs.normalize(piece, CTX)}) == 1
    assert sum(len(qlik_qrs.normalize(p, CTX)) for p in pieces) == len(qlik_qrs.normalize(doc, CTX))


# --- fuzz -------------------------------------------------------------------------------------

_FIXTURE_BYTES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
odd_values = (
    json_values
    | st.sampled_from(["x" * 100_000, "\ud800", NODATE, "", " ", "9" * 400, qlik_qrs.EMPTY_GUID, "FinishedSuccess", "{}"])
    | st.integers(min_value=-5, max_value=20)
    | st.integers(min_value=0, max_value=60).map(lambda depth: _deep(depth))
)
_FIELDS = [
    ["id"], ["taskID"], ["executionID"], ["status"], ["startTime"], ["stopTime"], ["modifiedDate"], ["duration"],
    ["details"], ["executionResult"], ["retries"], ["abortReason"], ["abortAt"], ["reloadTask"], ["operational"],
    ["executionResult", "status"], ["reloadTask", "id"], ["operational", "lastExecutionResult"], ["taskId"],
    ["value"], ["response"], ["httpStatus"], ["executionSessionId"], ["time"], ["host"], ["scriptLogSize"],
]


def _deep(depth: int) -> Any:
    """A chain, never a shared branch: {"a": v, "b": [v]} doubles in size per level when
    printed or copied, which at depth 60 ran a test out of memory."""
    value: Any = "leaf"
    for level in range(depth):
        value = {"executionResult": value} if level % 2 else {"details": [value]}
    return value


def _mutate(doc: Any, path: list[str], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc[0] if isinstance(doc, list) and doc else doc
    for key in path[:-1]:
        nested = target.get(key) if isinstance(target, dict) else None
        if not isinstance(nested, dict):
            return doc
        target = nested
    if isinstance(target, dict):
        target[path[-1]] = value
    return doc


def _outcome(doc: Any) -> None:
    """The only allowed outcomes: valid, encodable events, or Rejected; split agrees."""
    if isinstance(assert_allowed_outcome("qlik_qrs", doc, CTX), Rejected):
        return
    for piece in qlik_qrs.split(doc):
        assert len({e.job_key for e in qlik_qrs.normalize(piece, CTX)}) == 1


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_values)
def test_fuzz_random_json(doc: Any) -> None:
    _outcome(doc)
    _outcome(json.dumps(doc))


@FUZZ
@given(st.sampled_from(_FIXTURE_BYTES), st.data())
def test_fuzz_truncated_documents(raw: bytes, data: st.DataObject) -> None:
    _outcome(raw[: data.draw(st.integers(min_value=0, max_value=len(raw)))])


@FUZZ
@given(st.sampled_from(_FIXTURE_BYTES), st.sampled_from(_FIELDS), odd_values)
def test_fuzz_wrong_types_huge_strings_deep_nesting(raw: bytes, path: list[str], value: Any) -> None:
    _outcome(_mutate(json.loads(raw), path, value))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_invalid_utf8_bytes(raw: bytes) -> None:
    _outcome(raw)
    _outcome(b'{"taskId": "t", "value": "' + raw + b'"}')


def test_deeply_nested_json_text_is_rejected_not_crashing() -> None:
    with pytest.raises(Rejected):
        qlik_qrs.normalize(b'{"a":' * 3000 + b"1" + b"}" * 3000, CTX)


def test_qlik_cli_output_statuses_by_name_and_slashed_dates() -> None:
    """Qlik-Cli prints ``Status: FinishedSuccess`` (or with a space) and ``2020/03/03 19:45``."""
    cli = {"id": "a1", "taskID": "t1", "executionID": "e1", "status": "FinishedSuccess",
           "startTime": "2020/03/03 19:40", "stopTime": "2020/03/03 19:45", "modifiedDate": "2020/03/03 19:45"}
    event = only(cli)
    assert (event.native_state, event.state) == ("FinishedSuccess", State.SUCCEEDED)
    assert (event.started_at, event.finished_at) == (
        datetime(2020, 3, 3, 19, 40, tzinfo=timezone.utc), datetime(2020, 3, 3, 19, 45, tzinfo=timezone.utc))
    spaced = only({**cli, "status": "Finished Success", "startTime": "2020-03-03T19:40:00.000Z"})
    assert (spaced.native_state, spaced.started_at) == ("FinishedSuccess", event.started_at)
    with pytest.raises(Rejected, match="startTime is not a time"):
        qlik_qrs.normalize({**cli, "startTime": "2020/13/03 19:40"}, CTX)


def test_every_endpoint_names_the_run_by_the_result_id_too() -> None:
    """ExecutionResult, ExecutionSession and a reload task's lastExecutionResult share one
    name, ``<source>:result:<result id>`` (the lifecycle's R17 joins them on it)."""
    name = ["qlik_qrs:qs-central:result:r-1"]
    by_result = only(result())
    by_session = only({"id": "s-1", "reloadTask": {"id": "t-1"}, "retries": 0,
                       "executionResult": {"id": "r-1", "status": 2, "startTime": "2024-01-01T00:00:00.000Z"}})
    by_task = only({"id": "t-1", "operational": {"lastExecutionResult": {
        "id": "r-1", "status": 7, "startTime": "2024-01-01T00:00:00.000Z", "stopTime": "2024-01-01T00:01:00.000Z"}}})
    assert by_result.run_key == by_session.run_key == "qlik_qrs:qs-central:s-1"
    assert by_task.run_key == name[0]
    assert by_result.attrs["same_run_as"] == by_session.attrs["same_run_as"] == by_task.attrs["same_run_as"] == name
