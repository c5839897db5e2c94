"""TrueNAS core.get_jobs normalizer: shapes, state rules, secrets, ids, rejections."""

from __future__ import annotations

import copy
import json
import pathlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import vendors
from pipeline.model import JobEvent, State, encode_event
from pipeline.vendors.truenas import normalize as truenas
from pipeline.vendors._common import Context, Rejected
from tests.support.vendors import assert_allowed_outcome

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "truenas"
RECEIVED = datetime(2024, 5, 2, 9, 30, tzinfo=timezone.utc)
CTX = Context(source="nas01", received_at=RECEIVED)
JOB_FIXTURES = [
    "job_success_all_fields.json",
    "job_failed_callerror.json",
    "job_failed_validation.json",
    "job_aborted.json",
    "job_waiting.json",
    "job_running.json",
]
SECRET = "hunter2-S3CR3T-do-not-leak"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def job(name: str = "job_running.json", **overrides: object) -> dict:
    doc = orjson.loads(load(name))
    doc.update(overrides)
    return doc


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, timezone.utc)


# --- every documented field ---------------------------------------------------------


def test_successful_job_with_every_documented_field():
    [event] = truenas.normalize(load("job_success_all_fields.json"), CTX)
    assert (event.vendor, event.source) == ("truenas", "nas01")
    assert event.job_key == "truenas:nas01:pool.scrub.scrub:tank"  # the pool it scrubs is part of the job
    assert event.run_key == "truenas:nas01:1714640376560:42"  # host, time_started (creation), id
    assert (event.native_state, event.state) == ("SUCCESS", State.SUCCEEDED)
    assert event.started_at == ms(1714640376560)
    assert event.finished_at == ms(1714640976809)
    assert event.received_at == event.occurred_at == RECEIVED
    assert event.progress == 100.0
    assert event.error_code is None and event.error_message is None
    assert event.attrs == {
        "job_name": "pool.scrub.scrub [tank]",
        "task": "tank",
        "description": "Scrub of pool tank",
        "logs_path": "/var/log/jobs/42.log",
        "logs_excerpt": "scrub started\nscrub finished\n",
        "progress_description": "Scrub finished",
        "progress_extra": {"scanned": 1024, "total": 1024},
        "transient": False,
        "abortable": True,
        "message_ids": ["b6d1e0a4-1c1e-4d55-9d5b-0d2f1f6c7a10"],
    }


def test_failed_job_with_call_error_and_errno():
    [event] = truenas.normalize(load("job_failed_callerror.json"), CTX)
    assert (event.native_state, event.state) == ("FAILED", State.FAILED)
    assert event.error_code == "CallError:14"
    assert event.error_message.startswith("[EFAULT] cannot receive incremental stream")
    assert event.attrs["exc_repr"] == "CallError('cannot receive incremental stream', 14)"
    assert "Traceback" in event.attrs["exception"]
    assert event.progress == 37.0
    assert event.finished_at == ms(1714640460123)


def test_failed_job_with_validation_errors():
    [event] = truenas.normalize(load("job_failed_validation.json"), CTX)
    assert event.error_code == "VALIDATION"
    assert event.attrs["exc_extra"] == [["app_create.app_name", "Application with this name already exists", 22]]
    assert "logs_path" not in event.attrs and "description" not in event.attrs


def test_aborted_waiting_and_running_jobs():
    [aborted] = truenas.normalize(load("job_aborted.json"), CTX)
    assert (aborted.state, aborted.progress, aborted.error_code) == (State.CANCELED, 12.5, None)
    [waiting] = truenas.normalize(load("job_waiting.json"), CTX)
    assert waiting.state is State.PENDING
    assert waiting.started_at is None  # time_started is the creation time while WAITING
    assert waiting.attrs["queued_at"] == ms(1714640800000).isoformat()
    assert waiting.occurred_at == RECEIVED
    [running] = truenas.normalize(load("job_running.json"), CTX)
    assert running.state is State.RUNNING and running.started_at == ms(1714640900000)
    assert running.occurred_at == RECEIVED and running.finished_at is None


def test_unfinished_job_without_received_at_uses_time_started():
    [event] = truenas.normalize(load("job_running.json"), Context(source="nas01"))
    assert event.occurred_at == ms(1714640900000)
    with pytest.raises(Rejected, match="no time"):
        truenas.normalize(job(time_started=None))


def test_iso_times_are_accepted_too():
    [event] = truenas.normalize(job(time_started="2024-05-02T09:00:00Z"), CTX)
    assert event.started_at == datetime(2024, 5, 2, 9, 0, tzinfo=timezone.utc)


def test_source_defaults_when_the_context_names_no_host():
    [event] = truenas.normalize(load("job_success_all_fields.json"))
    assert event.job_key == "truenas:default:pool.scrub.scrub:tank"


def test_small_results_are_kept_and_large_ones_omitted():
    [small] = truenas.normalize(load("update_changed_jsonrpc.json"), CTX)
    assert small.attrs["result"] == {"name": "tank/home@manual-1"}
    [large] = truenas.normalize(job("job_success_all_fields.json", result={"rows": ["x" * 100] * 50}), CTX)
    assert "result" not in large.attrs and large.attrs["result_omitted"] is True


def test_long_texts_are_capped():
    [event] = truenas.normalize(job("job_failed_callerror.json", error="e" * 50_000, logs_excerpt="l" * 50_000 + "END"), CTX)
    assert len(event.error_message) <= 2001
    assert len(event.attrs["logs_excerpt"]) <= 2001 and event.attrs["logs_excerpt"].endswith("END")


# --- every shape --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["get_jobs_list.json", "get_jobs_jsonrpc.json"])
def test_core_get_jobs_answers_give_the_same_events_as_the_jobs_alone(name):
    singles = [truenas.normalize(load(n), CTX)[0] for n in JOB_FIXTURES]
    assert truenas.normalize(load(name), CTX) == singles


def test_legacy_websocket_result_answer():
    events = truenas.normalize(load("get_jobs_legacy_result.json"), CTX)
    assert [e.run_key.rsplit(":", 1)[1] for e in events] == ["42", "43"]
    [one] = truenas.normalize({"jsonrpc": "2.0", "id": 3, "result": job()}, CTX)
    assert one.run_key == "truenas:nas01:1714640900000:47"


def test_added_and_changed_notifications_in_json_rpc_form():
    [added] = truenas.normalize(load("update_added_jsonrpc.json"), CTX)
    [changed] = truenas.normalize(load("update_changed_jsonrpc.json"), CTX)
    assert added.run_key == changed.run_key and added.run_key.endswith(":48")
    assert added.job_key == changed.job_key == "truenas:nas01:zfs.snapshot.create"
    assert (added.state, changed.state) == (State.PENDING, State.SUCCEEDED)
    assert (added.attrs["update"], changed.attrs["update"]) == ("added", "changed")
    assert changed.finished_at == ms(1714641001500)


def test_changed_notification_in_legacy_form():
    [event] = truenas.normalize(load("update_changed_legacy.json"), CTX)
    assert (event.state, event.progress, event.run_key.rsplit(":", 1)[1]) == (State.RUNNING, 71.0, "47")


def test_partial_changed_without_state_is_a_running_progress_event():
    [event] = truenas.normalize(load("update_changed_partial_legacy.json"), CTX)
    assert (event.state, event.native_state) == (State.RUNNING, "")
    assert event.progress == 80.0
    assert event.run_key == "truenas:nas01:47"  # id taken from the message; no time_started to key by
    assert event.attrs["run_key_basis"] == "job_id"
    assert event.occurred_at == RECEIVED and event.started_at is None


@pytest.mark.parametrize("name", ["update_removed_jsonrpc.json", "update_removed_legacy.json"])
def test_removed_gives_no_event_and_no_piece(name):
    assert truenas.normalize(load(name), CTX) == []
    assert truenas.split(load(name)) == []
    assert vendors.keyed_documents("truenas", load(name), CTX) == []


def test_removed_with_fields_still_claims_nothing():
    removed = {"msg": "removed", "collection": "core.get_jobs", "id": 42, "fields": job("job_success_all_fields.json")}
    assert truenas.normalize(removed, CTX) == []


# --- state table --------------------------------------------------------------------


def test_states_table_is_exactly_the_documented_enum():
    assert truenas.STATES == {
        "WAITING": State.PENDING,
        "RUNNING": State.RUNNING,
        "SUCCESS": State.SUCCEEDED,
        "FAILED": State.FAILED,
        "ABORTED": State.CANCELED,
    }
    assert set(truenas.NUMERIC_STATES.values()) == set(truenas.STATES)


@pytest.mark.parametrize("native", list(truenas.STATES))
@pytest.mark.parametrize("written_as", ["name", "number"])
def test_every_documented_state_by_name_and_number(native, written_as):
    number = {name: n for n, name in truenas.NUMERIC_STATES.items()}[native]
    [event] = truenas.normalize(job(state=native if written_as == "name" else number), CTX)
    assert (event.native_state, event.state) == (native, truenas.STATES[native])


@pytest.mark.parametrize(
    ("state", "time_finished", "expected"),
    [
        ("PAUSED", None, State.RUNNING),
        ("PAUSED", {"$date": 1714641000000}, State.FAILED),
        (None, None, State.RUNNING),
        (None, {"$date": 1714641000000}, State.FAILED),
    ],
)
def test_unknown_or_missing_states_follow_the_finish_time(state, time_finished, expected):
    doc = job(time_finished=time_finished)
    if state is None:
        del doc["state"]
    else:
        doc["state"] = state
    [event] = truenas.normalize(doc, CTX)
    assert event.state is expected
    assert event.native_state == (state or "")


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(0, 0.0), (55.5, 55.5), (100, 100.0), (-3, 0.0), (250, 100.0), (None, None), ("50", None), (True, None)],
)
def test_progress_percent_is_clamped_or_dropped(percent, expected):
    [event] = truenas.normalize(job(progress={"percent": percent, "description": None, "extra": None}), CTX)
    assert event.progress == expected


def test_non_finite_percent_from_a_python_caller_is_dropped():
    [event] = truenas.normalize(job(progress={"percent": float("nan")}), CTX)
    assert event.progress is None


def test_error_code_from_errno_alone():
    [event] = truenas.normalize(job(state="FAILED", exc_info={"type": None, "errno": 5}), CTX)
    assert event.error_code == "errno:5"


# --- secrets ------------------------------------------------------------------------


def secret_job() -> dict:
    return job(
        "job_success_all_fields.json",
        arguments=[{"username": "admin", "password": SECRET}, SECRET],
        credentials={"type": "API_KEY", "data": {"api_key": SECRET, "username": SECRET}},
    )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda j: j,
        lambda j: [j],
        lambda j: {"jsonrpc": "2.0", "id": 1, "result": [j]},
        lambda j: {"jsonrpc": "2.0", "method": "collection_update", "params": {"msg": "changed", "collection": "core.get_jobs", "id": 42, "fields": j}},
        lambda j: {"msg": "added", "collection": "core.get_jobs", "id": 42, "fields": j},
    ],
    ids=["job", "list", "jsonrpc-answer", "jsonrpc-update", "legacy-update"],
)
def test_credentials_and_arguments_never_reach_an_event(wrap):
    doc = wrap(secret_job())
    for value in (doc, orjson.dumps(doc)):
        [event] = truenas.normalize(value, CTX)
        encoded = encode_event(event)
        assert SECRET.encode() not in encoded
        assert b"credentials" not in encoded and b"arguments" not in encoded
        assert b"hunter2" not in encoded


def test_changing_only_the_secrets_does_not_change_the_event():
    [a] = truenas.normalize(secret_job(), CTX)
    other = secret_job()
    other["credentials"] = None
    other["arguments"] = []
    [b] = truenas.normalize(other, CTX)
    assert a == b


# --- event ids ----------------------------------------------------------------------


def test_the_same_snapshot_gives_the_same_id_in_every_wrapper():
    fields = orjson.loads(load("update_changed_jsonrpc.json"))["params"]["fields"]
    ids = {
        truenas.normalize(doc, CTX)[0].event_id
        for doc in (
            load("update_changed_jsonrpc.json"),
            fields,
            [fields],
            {"msg": "changed", "collection": "core.get_jobs", "id": 48, "fields": fields},
            {"jsonrpc": "2.0", "id": 9, "result": [fields]},
        )
    }
    assert len(ids) == 1
    [later] = truenas.normalize(load("update_changed_jsonrpc.json"), Context(source="nas01", received_at=datetime(2030, 1, 1, tzinfo=timezone.utc)))
    assert later.event_id in ids


@pytest.mark.parametrize(
    "change",
    [
        lambda j: j.update(state="SUCCESS"),
        lambda j: j["progress"].update(percent=65),
        lambda j: j["progress"].update(description="Almost"),
        lambda j: j.update(time_finished={"$date": 1714641000000}),
        lambda j: j.update(logs_excerpt="new line"),
        lambda j: j.update(id=48),
    ],
    ids=["state", "percent", "progress-description", "time_finished", "logs_excerpt", "job-id"],
)
def test_any_change_of_the_job_gives_a_new_id(change):
    base = job()
    changed = copy.deepcopy(base)
    change(changed)
    assert truenas.normalize(base, CTX)[0].event_id != truenas.normalize(changed, CTX)[0].event_id


def test_ids_depend_on_the_host():
    assert truenas.normalize(job(), Context(source="a"))[0].event_id != truenas.normalize(job(), Context(source="b"))[0].event_id


# --- rejections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
        ("17", "must be a JSON object or list"),
        ([1, 2], "job 0 of the list must be an object"),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}, "JSON-RPC error answer: Method not found"),
        ({"jsonrpc": "2.0", "id": 1, "result": None}, "has no job list"),
        ({"jsonrpc": "2.0", "method": "notify_unsubscribed", "params": {}}, "is not a collection_update"),
        ({"jsonrpc": "2.0", "method": "collection_update", "params": "x"}, "no params object"),
        ({"jsonrpc": "2.0", "method": "collection_update", "params": {"msg": "changed", "collection": "pool.query", "id": 1, "fields": {}}}, "collection 'pool.query'"),
        ({"msg": "changed", "collection": "core.get_jobs", "id": 1}, "has no fields object"),
        ({"msg": "removed", "collection": "core.get_jobs"}, "removed message has no job id"),
        ({"msg": "pong", "id": "x"}, "'pong' is not a job update"),
        ({"msg": "result", "id": "x", "error": {"error": 13, "reason": "Not authenticated"}}, "websocket error answer: Not authenticated"),
        ({"collection": "core.get_jobs", "id": 1}, "without 'msg'"),
        ({"msg": "changed", "collection": "core.get_jobs", "id": 47, "fields": {"progress": {"percent": 5}}}, "job 47 has no method"),
        ({"msg": "changed", "collection": "core.get_jobs", "id": 47, "fields": {"id": 46, "method": "x"}}, "differs from message id"),
        ({"method": "pool.scrub.scrub", "state": "RUNNING"}, "job has no id"),
        (job(id="forty"), "id must be an integer"),
        (job(id=-1), "id must not be negative"),
        (job(method=7), "has no method"),
        (job(state=["RUNNING"]), "state must be a string"),
        (job(state=9), "unknown numeric state 9"),
        (job(progress=50), "progress must be an object"),
        (job(exc_info="boom"), "exc_info must be an object"),
        (job(exc_info={"type": "CallError", "errno": "EIO"}), "exc_info.errno must be an integer"),
        (job(error=["x"]), "error must be a string"),
        (job(time_started={"date": 1}), "time_started is not a time"),
        (job(time_finished={"$date": 10**20}), "out of range"),
        (job(time_started="soon"), "time_started is not a time"),
    ],
)
def test_rejections_say_why(doc, reason):
    with pytest.raises(Rejected) as caught:
        truenas.normalize(doc, CTX)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


# --- split --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pieces"),
    [
        ("get_jobs_list.json", 6),
        ("get_jobs_jsonrpc.json", 6),
        ("get_jobs_legacy_result.json", 2),
        ("job_failed_callerror.json", 1),
        ("update_added_jsonrpc.json", 1),
        ("update_changed_legacy.json", 1),
        ("update_changed_partial_legacy.json", 1),
    ],
)
def test_split_yields_one_job_per_piece_and_loses_nothing(name, pieces):
    raw = load(name)
    split = truenas.split(raw)
    assert len(split) == pieces
    whole = truenas.normalize(raw, CTX)
    from_pieces = []
    for piece in split:
        events = truenas.normalize(piece, CTX)
        assert len({e.job_key for e in events}) == 1
        from_pieces.extend(events)
    assert from_pieces == whole
    assert [key for key, _ in vendors.keyed_documents("truenas", raw, CTX)] == [e.job_key for e in whole]


# --- fuzz ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
job_fields = st.sampled_from(
    ["id", "method", "state", "progress", "exc_info", "error", "exception", "result", "time_started",
     "time_finished", "logs_excerpt", "message_ids", "description", "transient", "credentials", "arguments"]
)
wrappers = st.sampled_from(["job", "list", "jsonrpc", "legacy", "answer"])


def wrapped(kind: str, fields: dict) -> object:
    return {
        "job": fields,
        "list": [fields],
        "jsonrpc": {"jsonrpc": "2.0", "method": "collection_update", "params": {"msg": "changed", "collection": "core.get_jobs", "id": 47, "fields": fields}},
        "legacy": {"msg": "added", "collection": "core.get_jobs", "id": 47, "fields": fields},
        "answer": {"jsonrpc": "2.0", "id": 1, "result": [fields]},
    }[kind]


def outcome(doc: object) -> list[JobEvent] | Rejected:
    """The only two allowed outcomes; anything else fails the test."""
    return assert_allowed_outcome("truenas", doc, CTX)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_random_json_values(doc):
    outcome(doc)
    outcome(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(wrappers, job_fields, json_values)
def test_fuzz_a_real_job_with_one_field_replaced(kind, field, value):
    fields = job("job_failed_callerror.json")
    fields[field] = value
    outcome(wrapped(kind, fields))
    fields = job("job_failed_callerror.json")
    fields["progress"] = {"percent": value, "description": value, "extra": value}
    fields["exc_info"] = {"type": value, "errno": None, "repr": value, "extra": value}
    outcome(wrapped(kind, fields))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["get_jobs_jsonrpc.json", "update_changed_jsonrpc.json", "job_failed_validation.json"]), st.data())
def test_fuzz_truncated_and_corrupted_documents(name, data):
    raw = load(name)
    outcome(raw[: data.draw(st.integers(0, len(raw)))])
    position = data.draw(st.integers(0, len(raw) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    outcome(raw[:position] + junk + raw[position + 1 :])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000))
def test_fuzz_deep_nesting_and_huge_strings(depth):
    outcome(b"[" * depth)
    nested: object = "leaf"
    for _ in range(depth):
        nested = {"extra": nested}
    outcome(job(progress={"percent": 1, "extra": nested}))
    outcome(job(result=nested, error="x" * 1_000_000, method="m" * 100_000))
    outcome(b'{"id": 1, "method": "\xc3\x28", "state": "RUNNING"}')


def test_a_job_id_reused_after_a_middleware_restart_is_another_run():
    """Job ids restart at 1 with middlewared; time_started (set at creation) tells them apart."""
    before = job(id=1, time_started={"$date": 1763629200000})
    after = job(id=1, time_started={"$date": 1763715600000})
    [first], [second] = truenas.normalize(before, CTX), truenas.normalize(after, CTX)
    assert first.run_key != second.run_key and first.job_key == second.job_key
    waiting = job("job_waiting.json", id=1, time_started={"$date": 1763629200000})
    [queued] = truenas.normalize(waiting, CTX)
    assert queued.run_key == first.run_key  # WAITING keeps time_started as its queue time, same run


def test_a_job_keeps_its_key_across_middleware_restarts():
    """issue 33 case 1: the boot marker in the ingestor's source is part of the run key,
    not of the job key; the task a job runs (its first argument) is."""
    def job(job_id: int, started: int, task: int) -> dict:
        return {"id": job_id, "method": "replication.run", "arguments": [task, True], "state": "SUCCESS",
                "time_started": {"$date": started}, "time_finished": {"$date": started + 1000}}

    def one(doc: dict, source: str):
        [event] = truenas.normalize(doc, Context(source=source, received_at=RECEIVED))
        return event

    before = one(job(7, 1714640000000, 3), "nas01@aaaaaaaa")
    after = one(job(7, 1714640900000, 3), "nas01@aaaaaaaa.1")
    other_task = one(job(8, 1714640900000, 4), "nas01@bbbbbbbb")
    assert before.job_key == after.job_key == "truenas:nas01:replication.run:3"
    assert other_task.job_key == "truenas:nas01:replication.run:4"
    assert before.run_key == "truenas:nas01@aaaaaaaa:1714640000000:7"
    assert after.run_key == "truenas:nas01@aaaaaaaa.1:1714640900000:7"
    assert before.attrs["job_name"] == "replication.run [3]"
    kept = {**job(9, 1714640000000, 0), "task": 5}
    del kept["arguments"]
    assert one(kept, "nas01@cccccccc").job_key == "truenas:nas01:replication.run:5"  # as the ingestor keeps it
    secret = {**job(10, 1714640000000, 0), "method": "user.update", "arguments": [1, {"password": "x"}]}
    assert one(secret, "nas01").job_key == "truenas:nas01:user.update"  # other methods' arguments are never read


def test_a_job_lost_in_a_middleware_restart_ends_failed_with_its_cause():
    """issue 33 case 2: the ingestor's ``lost`` message closes the run it names."""
    snapshot = {"id": 4, "method": "update.download", "state": "RUNNING", "time_started": {"$date": 1714640000000},
                "progress": {"percent": 40, "description": "downloading"}}
    [running] = truenas.normalize({"msg": "changed", "collection": "core.get_jobs", "id": 4, "fields": snapshot},
                                  Context(source="nas01@aaaaaaaa", received_at=RECEIVED))
    seen = RECEIVED + timedelta(minutes=3)
    [lost] = truenas.normalize({"msg": "lost", "collection": "core.get_jobs", "id": 4, "fields": snapshot},
                               Context(source="nas01@aaaaaaaa", received_at=seen))
    assert lost.run_key == running.run_key and lost.job_key == running.job_key
    assert lost.event_id != running.event_id
    assert (lost.state, lost.native_state, lost.error_code) == (State.FAILED, "LOST_IN_RESTART", "LOST_IN_RESTART")
    assert lost.error_message == "lost in a middleware restart (last seen RUNNING)"
    assert lost.finished_at == lost.occurred_at == seen
    assert lost.started_at == ms(1714640000000)
    assert lost.attrs["cause"] == "lost_in_restart"
    with pytest.raises(Rejected, match="received_at"):
        truenas.normalize({"msg": "lost", "collection": "core.get_jobs", "id": 4, "fields": snapshot})
