"""Zuora RevPro BI Views v2 (biviews-status) normalizer: shapes, state rules, ids, rejections."""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import vendors
from pipeline.model import JobEvent, State
from pipeline.vendors.zuora import normalize as zuora
from pipeline.vendors._common import Context, Rejected
from tests.support.vendors import assert_allowed_outcome

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "zuora"
SEED = next(pathlib.Path("/work/shared/seeds").glob("002_*.txt"), None)
RECEIVED = datetime(2019, 5, 2, 12, 0, tzinfo=timezone.utc)
CTX = Context(source="acme-prod", received_at=RECEIVED)

# The statuses Zuora documents (docs/design.md, "Vendor facts"); page numbers stand for any n.
DOCUMENTED_IN_PROGRESS = [
    "ADDED-TO-QUEUE",
    "META-DATA-SCANNED",
    "SCANNING-PAGE-1",
    "SCANNING-PAGE-250",
    "COMMITING-PAGE-1",
    "COMMITING-PAGE-37",
    "COMMITTING-PAGE-2",
    "MAX-REQUESTED-PAGE-REACHED",
    "NO-RECORD-FOUND",
    "END-OF-QUERY-DATA",
]
DOCUMENTED_FINAL = {"COMPLETED": State.SUCCEEDED, "CANCELLED": State.CANCELED, "FAILED": State.FAILED}


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def by_run(events: list[JobEvent]) -> dict[str, JobEvent]:
    return {event.run_key.rsplit(":", 1)[1]: event for event in events}


def task(**overrides: object) -> dict:
    base = orjson.loads(load("single_task.json"))
    base.update(overrides)
    return base


# --- the seed -----------------------------------------------------------------------


# SHA-256 of the seed's example line (``grep '^{ "active"' 002_*.txt | sha256sum``), so the
# check also runs where the seeds directory is absent.
SEED_LINE_SHA256 = "2f7b0f8c842d5399880c71e2c0b68175aefc925eea8755cdd724eee86f03ee3b"


def test_malformed_fixture_is_the_seed_text_byte_for_byte():
    raw = load("seed_malformed.txt")
    assert hashlib.sha256(raw).hexdigest() == SEED_LINE_SHA256
    assert raw.startswith(b'{ "active": [ "accumulate": 0,')
    if SEED is not None:
        assert raw.rstrip(b"\n") in SEED.read_bytes()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


def test_seed_malformed_text_gives_the_same_events_as_its_wellformed_twin():
    malformed = zuora.normalize(load("seed_malformed.txt"), CTX)
    wellformed = zuora.normalize(load("seed_wellformed.json"), CTX)
    assert malformed == wellformed
    assert zuora.normalize(load("seed_malformed.txt").decode(), CTX) == wellformed


def test_seed_events_carry_every_seed_field():
    events = by_run(zuora.normalize(load("seed_malformed.txt"), CTX))
    active = events["64ba53fb-99e2-464b-b60f-af0b9ac5aff4"]
    assert active.state is State.RUNNING
    assert active.native_state == "ADDED-TO-QUEUE"
    assert active.job_key == "zuora:acme-prod:RPRO_BI3_RC_SCHD_V"
    assert active.run_key == "zuora:acme-prod:64ba53fb-99e2-464b-b60f-af0b9ac5aff4"
    assert active.occurred_at == datetime(2019, 5, 2, 10, 39, 36, 809429, tzinfo=timezone.utc)
    assert active.started_at == datetime(2019, 5, 2, 10, 39, 36, 560855, tzinfo=timezone.utc)
    assert active.finished_at is None
    assert active.rows == 0 and active.counts == {}
    assert active.received_at == RECEIVED
    assert active.attrs == {
        "queue": "active",
        "job_name": "RPRO_BI3_RC_SCHD_V",  # issue 33 case 11: the BI view
        "filter_params": {"fromDate": "2018-01-26 00:00:00", "toDate": "2020-07-02 00:00:00"},
        "elapsed_seconds": 4.259198,
    }
    done = events["10a54c58-7327-4966-99a7-da9763708e0f"]
    assert done.state is State.SUCCEEDED
    assert done.rows == 353 and done.counts == {"last_page_rows": 3}
    assert done.finished_at == datetime(2019, 5, 2, 10, 39, 11, 152693, tzinfo=timezone.utc)
    assert done.attrs["elapsed_seconds"] == pytest.approx(29.915065)
    assert done.error_code is None and done.error_message is None


def test_naive_times_are_read_in_the_configured_vendor_zone():
    pacific = Context(source="acme-prod", tz=timezone(timedelta(hours=-7)))
    event = by_run(zuora.normalize(load("seed_wellformed.json"), pacific))["64ba53fb-99e2-464b-b60f-af0b9ac5aff4"]
    assert event.occurred_at == datetime(2019, 5, 2, 17, 39, 36, 809429, tzinfo=timezone.utc)
    assert event.started_at == datetime(2019, 5, 2, 17, 39, 36, 560855, tzinfo=timezone.utc)


def test_source_defaults_when_the_context_names_no_tenant():
    events = zuora.normalize(load("seed_wellformed.json"))
    assert {event.source for event in events} == {"default"}
    assert all(event.job_key.startswith("zuora:default:") for event in events)


# --- every shape --------------------------------------------------------------------


def test_all_four_queues_with_every_kind_of_status():
    events = by_run(zuora.normalize(load("all_queues.json"), CTX))
    expected = {
        "a1000000-0000-4000-8000-000000000001": (State.RUNNING, "SCANNING-PAGE-3", None),
        "a1000000-0000-4000-8000-000000000002": (State.RUNNING, "COMMITING-PAGE-2", None),
        "a1000000-0000-4000-8000-000000000003": (State.RUNNING, "META-DATA-SCANNED", None),
        "a1000000-0000-4000-8000-000000000004": (State.STALE, "MAX-REQUESTED-PAGE-REACHED", None),
        "a1000000-0000-4000-8000-000000000005": (State.FAILED, "SCANNING-PAGE-4", "DRAINED_STALE"),
        "a1000000-0000-4000-8000-000000000006": (State.SUCCEEDED, "COMPLETED", None),
        "a1000000-0000-4000-8000-000000000007": (State.SUCCEEDED, "NO-RECORD-FOUND", None),
        "a1000000-0000-4000-8000-000000000008": (State.SUCCEEDED, "END-OF-QUERY-DATA", None),
        "a1000000-0000-4000-8000-000000000009": (State.FAILED, "FAILED", None),
        "a1000000-0000-4000-8000-000000000010": (State.CANCELED, "CANCELLED", None),
    }
    assert {k: (e.state, e.native_state, e.error_code) for k, e in events.items()} == expected
    assert events["a1000000-0000-4000-8000-000000000001"].attrs["page"] == 3
    assert events["a1000000-0000-4000-8000-000000000002"].attrs["page"] == 2
    failed = events["a1000000-0000-4000-8000-000000000009"]
    assert failed.error_message == "ORA-01555: snapshot too old"
    assert failed.finished_at == datetime(2019, 5, 2, 10, 40, 15, tzinfo=timezone.utc)
    drained = events["a1000000-0000-4000-8000-000000000005"]
    assert drained.error_message and "stale" in drained.error_message
    assert drained.attrs["queue"] == "draining"
    assert events["a1000000-0000-4000-8000-000000000010"].attrs["message"] == "Task cancelled by user"
    assert events["a1000000-0000-4000-8000-000000000004"].finished_at is None


def test_api_reference_shape_wrapped_in_result_with_iso_times_and_filter_param():
    [event] = zuora.normalize(load("api_reference_wrapped.json"), CTX)
    assert event.state is State.RUNNING
    assert event.occurred_at == datetime(2019, 8, 24, 14, 15, 22, tzinfo=timezone.utc)
    assert event.attrs["filter_params"] == {"fromDate": "2019-08-24T14:15:22Z", "toDate": "2019-08-24T14:15:22Z"}
    assert event.attrs["message"] == "string"
    assert event.counts == {"last_page_rows": 0}


def test_single_task_object_bare_and_wrapped():
    [running] = zuora.normalize(load("single_task.json"), CTX)
    [done] = zuora.normalize(load("single_task_wrapped.json"), CTX)
    assert running.run_key == done.run_key == "zuora:acme-prod:3f6c2d0a-8b1e-4f7a-9d2c-55e1a7b0c9f4"
    assert running.job_key == done.job_key == "zuora:acme-prod:RPRO_BI3_RC_LN_V"
    assert (running.state, running.attrs["page"], running.attrs["queue"]) == (State.RUNNING, 3, None)
    assert running.started_at == datetime(2026, 9, 2, 8, 0, tzinfo=timezone.utc)  # initiated_time spelling
    assert running.rows == 3000 and running.counts == {"last_page_rows": 1000}
    assert done.state is State.SUCCEEDED and done.rows == 30007
    assert running.event_id != done.event_id


def test_per_token_answer_in_queue_shape_and_a_list_of_tasks():
    [stale] = zuora.normalize(load("task_details_queues.json"), CTX)
    assert stale.state is State.STALE and stale.attrs["queue"] == "stale"
    events = zuora.normalize([task(), task(task_id="other-token", status="FAILED")], CTX)
    assert [e.state for e in events] == [State.RUNNING, State.FAILED]


def test_a_queue_holding_one_task_object_instead_of_a_list():
    [event] = zuora.normalize({"stale": task()}, CTX)
    assert event.state is State.STALE


def test_empty_queues_give_no_events():
    assert zuora.normalize(load("empty_queues.json"), CTX) == []
    assert zuora.normalize({"result": {"active": None, "stale": []}}, CTX) == []


def test_malformed_array_with_two_tasks_splits_on_the_repeated_key():
    events = by_run(zuora.normalize(load("malformed_two_tasks.txt"), CTX))
    assert set(events) == {"c3000000-0000-4000-8000-000000000001", "c3000000-0000-4000-8000-000000000002"}
    assert events["c3000000-0000-4000-8000-000000000001"].job_key.endswith(":RPRO_BI3_RC_SCHD_V")
    assert events["c3000000-0000-4000-8000-000000000002"].job_key.endswith(":RPRO_BI3_JE_HEAD_V")
    assert events["c3000000-0000-4000-8000-000000000002"].native_state == "ADDED-TO-QUEUE"


def test_occurred_at_falls_back_to_initiated_then_received_at():
    only_initiated = task(activity_tracker={"initated_time": "2019-05-02 10:00:00"})
    [event] = zuora.normalize(only_initiated, CTX)
    assert event.occurred_at == datetime(2019, 5, 2, 10, 0, tzinfo=timezone.utc)
    [event] = zuora.normalize(task(activity_tracker=None), CTX)
    assert event.occurred_at == RECEIVED and event.started_at is None
    with pytest.raises(Rejected, match="no activity time"):
        zuora.normalize(task(activity_tracker={}))


def test_numeric_strings_and_seconds_are_accepted_for_counts_and_elapsed():
    [event] = zuora.normalize(
        task(metric="500", accumulate="1500", activity_tracker={"last_activity": "2019-05-02 10:00:00", "elapsed_time": 12.5}),
        CTX,
    )
    assert event.rows == 1500 and event.counts == {"last_page_rows": 500}
    assert event.attrs["elapsed_seconds"] == 12.5


# --- state table --------------------------------------------------------------------


def expected_state(queue: str | None, status: str) -> tuple[State, str | None]:
    """The module docstring's rules, written out independently."""
    if status in DOCUMENTED_FINAL:
        return DOCUMENTED_FINAL[status], None
    return {
        None: (State.RUNNING, None),
        "active": (State.RUNNING, None),
        "stale": (State.STALE, None),
        "completed": (State.SUCCEEDED, None),
        "draining": (State.FAILED, "DRAINED_STALE"),
    }[queue]


def test_states_table_covers_every_documented_status():
    for status in DOCUMENTED_IN_PROGRESS:
        key, _ = zuora.status_key(status)
        assert zuora.STATES[key] is State.RUNNING, status
    for status, state in DOCUMENTED_FINAL.items():
        assert zuora.STATES[status] is state
    assert zuora.STATES["CANCELED"] is State.CANCELED
    assert set(zuora.QUEUE_STATES) == {"active", "stale", "draining", "completed"}
    assert all(isinstance(state, State) for state in zuora.STATES.values())


@pytest.mark.parametrize("queue", [None, "active", "stale", "draining", "completed"])
@pytest.mark.parametrize("status", [*DOCUMENTED_IN_PROGRESS, *DOCUMENTED_FINAL, "SOMETHING-NEW", ""])
def test_every_queue_and_status_pair(queue, status):
    doc = task(status=status) if queue is None else {queue: [task(status=status)]}
    [event] = zuora.normalize(doc, CTX)
    assert (event.state, event.error_code) == expected_state(queue, status)
    assert event.native_state == status
    assert (event.finished_at is not None) == event.state.terminal


def test_status_spellings_are_matched_case_insensitively_and_kept_as_written():
    [event] = zuora.normalize({"completed": [task(status="cancelled")]}, CTX)
    assert event.state is State.CANCELED and event.native_state == "cancelled"
    assert zuora.status_key(" scanning-page-12 ") == ("SCANNING-PAGE-n", 12)
    assert zuora.status_key("COMMITTING-PAGE-4") == ("COMMITTING-PAGE-n", 4)


def test_missing_status_is_treated_as_in_progress():
    [event] = zuora.normalize({"stale": [task(status=None)]}, CTX)
    assert (event.state, event.native_state) == (State.STALE, "")


# --- event ids ----------------------------------------------------------------------


def test_same_snapshot_read_twice_gives_the_same_ids():
    first = [e.event_id for e in zuora.normalize(load("all_queues.json"), CTX)]
    second = [e.event_id for e in zuora.normalize(orjson.loads(load("all_queues.json")), Context(source="acme-prod"))]
    assert first == second
    assert len(set(first)) == len(first)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: {"stale": [t]},
        lambda t: {"active": [{**t, "status": "SCANNING-PAGE-4"}]},
        lambda t: {"active": [{**t, "accumulate": 3001}]},
        lambda t: {"active": [{**t, "activity_tracker": {**t["activity_tracker"], "last_activity": "2026-09-02 08:00:12"}}]},
        lambda t: {"active": [{**t, "metric": 999}]},
        lambda t: {"active": [{**t, "message": "slow page"}]},
    ],
    ids=["queue", "status", "accumulate", "last_activity", "metric", "message"],
)
def test_event_id_changes_with_what_the_vendor_changed(change):
    base = task()
    [before] = zuora.normalize({"active": [base]}, CTX)
    [after] = zuora.normalize(change(copy.deepcopy(base)), CTX)
    assert before.event_id != after.event_id


def test_event_id_ignores_elapsed_time_which_grows_on_every_poll():
    base = task()
    later = copy.deepcopy(base)
    later["activity_tracker"]["elapsed_time"] = "0:03:59.000000"
    [a] = zuora.normalize({"active": [base]}, CTX)
    [b] = zuora.normalize({"active": [later]}, CTX)
    assert a.event_id == b.event_id


def test_event_id_depends_on_the_tenant():
    [a] = zuora.normalize(task(), Context(source="tenant-a"))
    [b] = zuora.normalize(task(), Context(source="tenant-b"))
    assert a.event_id != b.event_id


# --- rejections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"", "empty document"),
        ("   ", "empty document"),
        (b"<html>502 Bad Gateway</html>", "expected a value at offset 0"),
        (load("seed_malformed.txt")[:300], "offset"),
        (b'{"active": [ "accumulate": 0, {"x": 1} ]}', "expected a quoted key"),
        (b'{"active": []} trailing', "unexpected text after the document"),
        (b'{"active": [ "a" "b" ]}', "expected ','"),
        (b'{"active": [ "task_id": "\\q" ]}', "invalid string escape"),
        (b"\xff\xfe{\"active\": []}", "not UTF-8"),
        (b"[" * 100 + b'"x": 1' + b"]" * 100, "nested too deeply"),
        (42, "must be a JSON object or list"),
        ("null", "must be a JSON object or list"),
        ({"jobs": []}, "neither a biviews-status queue document"),
        ({"active": "busy"}, "queue 'active' must be a list"),
        ({"active": [1]}, "active[0] must be a task object"),
        ([task(), "x"], "item 1 must be a task object"),
        ({"active": [{"status": "ADDED-TO-QUEUE"}]}, "no task_id"),
        ({"active": [task(task_id=7)]}, "no task_id"),
        ({"active": [task(query_config={"filter_params": {}})]}, "no query_config.object_name"),
        ({"active": [task(query_config="RPRO")]}, "query_config must be an object"),
        ({"active": [task(activity_tracker=["x"])]}, "activity_tracker must be an object"),
        ({"active": [task(status=5)]}, "status must be a string"),
        ({"active": [task(accumulate=-1)]}, "accumulate must not be negative"),
        ({"active": [task(metric="many")]}, "metric must be an integer"),
        ({"active": [task(accumulate=2**70)]}, "implausibly large"),
        ({"active": [task(message={"a": 1})]}, "message must be a string"),
        ({"active": [task(activity_tracker={"last_activity": "yesterday"})]}, "last_activity is not a time"),
        ({"active": [task(activity_tracker={"last_activity": "2019-05-02 10:00:00", "elapsed_time": "4 s"})]}, "elapsed_time is not a duration"),
    ],
)
def test_rejections_say_why(doc, reason):
    with pytest.raises(Rejected) as caught:
        zuora.normalize(doc, CTX)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


# --- split --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["seed_malformed.txt", "all_queues.json", "api_reference_wrapped.json", "single_task.json", "malformed_two_tasks.txt"]
)
def test_split_yields_one_job_per_piece_and_loses_nothing(name):
    raw = load(name)
    pieces = zuora.split(raw)
    whole = zuora.normalize(raw, CTX)
    assert len(pieces) == len(whole)
    from_pieces = []
    for piece in pieces:
        orjson.dumps(piece)  # pieces are well-formed JSON values, ready for a RawEnvelope
        events = zuora.normalize(piece, CTX)
        assert len({e.job_key for e in events}) == 1
        from_pieces.extend(events)
    assert sorted(e.event_id for e in from_pieces) == sorted(e.event_id for e in whole)
    keyed = vendors.keyed_documents("zuora", raw, CTX)
    assert [key for key, _ in keyed] == [e.job_key for e in whole]


def test_split_of_an_empty_snapshot_is_empty():
    assert zuora.split(load("empty_queues.json")) == []


# --- fuzz ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
task_fields = st.sampled_from(
    ["task_id", "status", "accumulate", "metric", "message", "query_config", "activity_tracker"]
)
queues = st.sampled_from(["active", "stale", "draining", "completed", "result"])


def outcome(doc: object) -> list[JobEvent] | Rejected:
    """The only two allowed outcomes; anything else fails the test."""
    return assert_allowed_outcome("zuora", doc, CTX)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_random_json_values(doc):
    outcome(doc)
    outcome(json.dumps(doc).encode())


tracker_fields = st.sampled_from(["initated_time", "initiated_time", "last_activity", "elapsed_time"])


@settings(max_examples=300, deadline=None)
@given(queues, task_fields, tracker_fields, json_values)
def test_fuzz_a_real_task_with_one_field_replaced(queue, field, tracker_field, value):
    broken = task()
    broken[field] = value
    outcome({queue: [broken]})
    tracker = dict(task()["activity_tracker"])
    tracker[tracker_field] = value
    outcome({queue: [task(activity_tracker=tracker)]})


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["seed_malformed.txt", "malformed_two_tasks.txt", "all_queues.json"]), st.data())
def test_fuzz_truncated_and_corrupted_documents(name, data):
    raw = load(name)
    cut = data.draw(st.integers(0, len(raw)))
    outcome(raw[:cut])
    position = data.draw(st.integers(0, len(raw) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    outcome(raw[:position] + junk + raw[position + 1 :])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[\"k\": "]))
def test_fuzz_deep_nesting_and_huge_strings(depth, opener):
    outcome((opener * depth).encode())
    outcome(task(message="x" * 1_000_000, task_id="t" * 100_000))
    outcome(b'{"active": [ "task_id": "' + b"\xc3\x28" * 1000 + b'" ]}')


def _idle_task(**extra) -> dict:
    return {"task_id": "tok-1", "status": "SCANNING-PAGE-1", "query_config": {"object_name": "RPRO_BI3_RI_V"},
            "activity_tracker": {"initated_time": "2026-01-01 10:00:00", "last_activity": "2026-01-01 10:00:05"},
            **extra}


def test_a_queue_change_is_dated_by_zuoras_rule_or_when_it_was_observed():
    """issue 33 case 3: a token goes stale 240 s after its last activity (Zuora's rule,
    on Zuora's clock); the drain has no vendor time: it is dated by the ingestor's
    observed_at, else the envelope's received_at."""
    seen = datetime(2026, 1, 1, 10, 9, 9, tzinfo=timezone.utc)
    received = datetime(2026, 1, 1, 10, 9, 10, tzinfo=timezone.utc)
    ctx = Context(source="t", received_at=received)
    [stale] = zuora.normalize({"stale": [_idle_task(observed_at=seen.isoformat())]}, ctx)
    assert stale.occurred_at == datetime(2026, 1, 1, 10, 4, 5, tzinfo=timezone.utc) and stale.finished_at is None
    [drained] = zuora.normalize({"draining": [_idle_task()]}, ctx)
    assert drained.occurred_at == drained.finished_at == received
    [drained] = zuora.normalize({"draining": [_idle_task(observed_at=seen.isoformat())]}, ctx)
    assert drained.occurred_at == drained.finished_at == seen
    [active] = zuora.normalize({"active": [_idle_task(observed_at=seen.isoformat())]}, ctx)
    assert active.occurred_at == datetime(2026, 1, 1, 10, 0, 5, tzinfo=timezone.utc)  # activity has its own time
