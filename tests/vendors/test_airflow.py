"""The Airflow normalizer (pure): the states tables, identity (DAG run parent, mapped task key,
try_number as the attempt), times, the audit log's zombies and runs marked by hand, and
property tests over generated task-instance and DAG-run documents."""

from __future__ import annotations

import pathlib
from datetime import datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import vendors
from pipeline.lifecycle import apply_job
from pipeline.model import UTC, State
from pipeline.vendors._common import Context, Rejected
from pipeline.vendors.airflow import normalize as airflow

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "airflow"
CTX = Context(source="af-prod", received_at=datetime(2026, 11, 2, 7, 0, tzinfo=UTC))
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)

# Every value of Airflow's TaskState (/api/v1, 2.10) and TaskInstanceState (/api/v2), and
# DagState / DagRunState: the tables must cover each one, no more is needed.
V1_TASK_STATES = {None, "success", "running", "failed", "upstream_failed", "skipped", "up_for_retry",
                  "up_for_reschedule", "queued", "none", "scheduled", "deferred", "removed", "restarting"}
DAG_RUN_STATES = {"queued", "running", "success", "failed"}


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ti(state: str | None, try_number: int = 1, map_index: int = -1, **fields: object) -> dict:
    return {"dag_id": "etl", "dag_run_id": "scheduled__2026-11-02T06:00:00+00:00", "task_id": "load",
            "map_index": map_index, "try_number": try_number, "max_tries": 2, "state": state, **fields}


def dag_run(state: str, **fields: object) -> dict:
    return {"dag_id": "etl", "dag_run_id": "scheduled__2026-11-02T06:00:00+00:00", "run_type": "scheduled",
            "logical_date": iso(0), "data_interval_start": iso(-3600), "data_interval_end": iso(0),
            "state": state, **fields}


def one(doc: object, ctx: Context = CTX):
    events = airflow.normalize(doc, ctx)
    assert len(events) == 1
    return events[0]


def test_every_task_instance_state_of_both_api_versions_is_in_the_table():
    for native in V1_TASK_STATES:
        assert one(ti(native, start_date=iso(1))).native_state == (native or "none")
    assert {f"dag_run:{s}" for s in DAG_RUN_STATES} <= set(airflow.STATES)
    assert {f"task:{s}" for s in V1_TASK_STATES if s} <= set(airflow.STATES)


@pytest.mark.parametrize("native, state", [
    ("none", State.PENDING), ("scheduled", State.PENDING), ("queued", State.PENDING),
    ("running", State.RUNNING), ("deferred", State.RUNNING), ("up_for_reschedule", State.PENDING),
    ("restarting", State.CANCELED), ("up_for_retry", State.FAILED), ("success", State.SUCCEEDED),
    ("failed", State.FAILED), ("upstream_failed", State.SKIPPED), ("skipped", State.SKIPPED),
    ("removed", State.SKIPPED),
])
def test_task_state_mapping(native, state):
    assert one(ti(native, start_date=iso(1), end_date=iso(5))).state is state


def test_dag_run_state_mapping_and_attrs():
    event = one(dag_run("running", start_date=iso(2), queued_at=iso(1), conf={"password": "hunter2"}))
    assert event.state is State.RUNNING
    assert event.job_key == "airflow:af-prod:etl" and event.run_key == "airflow:af-prod:etl:scheduled__2026-11-02T06:00:00+00:00"
    assert event.attrs["job_name"] == "etl" and event.attrs["run_type"] == "scheduled"
    assert event.attrs["data_interval_start"] == iso(-3600) and event.attrs["logical_date"] == iso(0)
    assert "hunter2" not in orjson.dumps(event.attrs).decode(), "conf may hold secrets: never copied"
    assert event.parent_run_key is None and event.started_at == T0 + timedelta(seconds=2)
    assert one(dag_run("success", start_date=iso(2), end_date=iso(9))).finished_at == T0 + timedelta(seconds=9)
    assert one(dag_run("queued", queued_at=iso(1))).state is State.PENDING


def test_task_instance_identity_parent_attempt_and_queue_time():
    event = one(ti("queued", try_number=2, queued_when=iso(30)))
    assert event.job_key == "airflow:af-prod:etl.load"
    assert event.run_key == "airflow:af-prod:etl:scheduled__2026-11-02T06:00:00+00:00:load"
    assert event.parent_run_key == "airflow:af-prod:etl:scheduled__2026-11-02T06:00:00+00:00"
    assert event.attempt == 2 and event.attrs["job_name"] == "etl.load"
    assert event.occurred_at == T0 + timedelta(seconds=30) and event.attrs["queued_when"] == iso(30)
    assert event.started_at is None and event.finished_at is None


def test_mapped_tasks_have_their_map_index_in_the_run_key():
    keys = {one(ti("running", map_index=index, start_date=iso(1))).run_key for index in (-1, 0, 1, 2)}
    assert len(keys) == 4
    assert one(ti("running", map_index=7, start_date=iso(1))).run_key.endswith(":load[7]")
    assert one(ti("running", map_index=7, start_date=iso(1))).job_key == "airflow:af-prod:etl.load"


def test_try_number_zero_leaves_the_attempt_to_the_lifecycle():
    assert one(ti(None, try_number=0)).attempt is None


def test_times_are_the_latest_the_snapshot_carries_else_the_receive_time():
    event = one(ti("success", start_date=iso(10), end_date=iso(70), queued_when=iso(5)))
    assert event.occurred_at == T0 + timedelta(seconds=70)
    assert event.started_at == T0 + timedelta(seconds=10) and event.finished_at == T0 + timedelta(seconds=70)
    assert one(ti("scheduled", try_number=1)).occurred_at == CTX.received_at
    with pytest.raises(Rejected, match="no time"):
        airflow.normalize(ti("scheduled"), Context(source="x"))


def test_upstream_failed_is_skipped_with_its_reason_not_a_failure_of_its_own():
    event = one(ti("upstream_failed", try_number=0, end_date=iso(3)))
    assert event.state is State.SKIPPED and event.error_code == "UPSTREAM_FAILED"


def test_collections_of_both_versions_and_their_split():
    doc = {"task_instances": [ti("running", start_date=iso(1)), ti("queued", map_index=0, queued_when=iso(1))],
           "total_entries": 2}
    assert len(airflow.normalize(orjson.dumps(doc), CTX)) == 2
    assert len(airflow.split(doc)) == 2
    keyed = vendors.keyed_documents("airflow", {"dag_runs": [dag_run("running", start_date=iso(1))]}, CTX)
    assert [key for key, _ in keyed] == ["airflow:af-prod:etl"]


def test_zombie_in_the_audit_log_fails_that_try_as_a_zombie():
    entry = {"event_log_id": 41, "when": iso(320), "event": "heartbeat timeout", "dag_id": "etl",
             "run_id": "scheduled__2026-11-02T06:00:00+00:00", "task_id": "load", "map_index": -1, "try_number": 1,
             "owner": None, "extra": "Task did not emit heartbeat within time limit (300 seconds)"}
    event = one(entry)
    assert event.state is State.FAILED and event.error_code == "ZOMBIE" and event.native_state == "zombie"
    assert event.attempt == 1 and event.run_key == one(ti("running", start_date=iso(1))).run_key
    assert event.parent_run_key == "airflow:af-prod:etl:scheduled__2026-11-02T06:00:00+00:00"
    assert one({**entry, "event": "Detected zombie job"}).error_code == "ZOMBIE"  # Airflow 2 wording
    assert airflow.relevant_log(entry)


def test_a_run_marked_failed_by_hand_says_who():
    entry = {"event_log_id": 42, "when": iso(120), "event": "patch_dag_run", "dag_id": "etl",
             "run_id": "manual__1", "task_id": None, "owner": "admin", "extra": '{"state": "failed"}'}
    event = one(entry)
    assert event.state is State.FAILED and event.error_code == "MARKED_FAILED"
    assert event.attrs["marked_by"] == "admin" and event.run_key == "airflow:af-prod:etl:manual__1"
    assert event.job_key == "airflow:af-prod:etl" and "admin" in event.error_message
    success = one({**entry, "event_log_id": 43, "extra": {"new_state": "success"}, "task_id": "load", "try_number": 1})
    assert success.state is State.SUCCEEDED and success.error_code is None and success.attrs["marked_by"] == "admin"


def test_other_audit_entries_are_not_sent_and_rejected_if_they_are():
    entry = {"event_log_id": 7, "when": iso(1), "event": "cli_task_run", "dag_id": "etl", "run_id": "r",
             "task_id": "load", "owner": "airflow", "extra": None}
    assert not airflow.relevant_log(entry)
    with pytest.raises(Rejected, match="says nothing about a run's state"):
        airflow.normalize(entry, CTX)


@pytest.mark.parametrize("doc, reason", [
    (ti("exploded"), "unknown task instance state"),
    (dag_run("up_for_retry"), "unknown DAG run state"),
    ({"title": "Unauthorized", "status": 401, "detail": "bad"}, "API error"),
    ({"task_instances": {"x": 1}}, "must be a list"),
    ({"hello": 1}, "neither a task instance"),
    ([1], "item 0 must be an object"),
    (ti("running", map_index="2"), "map_index must be an integer"),
    (ti("running", try_number=-1), "must not be negative"),
    (b"{", "not valid JSON"),
])
def test_bad_documents_are_rejected_with_a_reason(doc, reason):
    with pytest.raises(Rejected, match=reason):
        airflow.normalize(doc, CTX)


def test_the_fixtures_normalize():
    for path in sorted(FIXTURES.glob("*.json")):
        assert airflow.normalize(path.read_bytes(), CTX), path.name


# --- properties -----------------------------------------------------------------------

task_states = st.sampled_from(sorted(airflow.TASK_STATES) + [None])
seconds = st.integers(min_value=0, max_value=10**6)


@st.composite
def task_documents(draw):
    fields = {name: iso(draw(seconds)) for name in ("queued_when", "start_date", "end_date", "scheduled_when")
              if draw(st.booleans())}
    return ti(draw(task_states), try_number=draw(st.integers(0, 50)), map_index=draw(st.integers(-1, 500)), **fields)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(doc=task_documents())
def test_property_one_event_per_task_instance_in_the_table_child_of_its_dag_run(doc):
    event = one(doc)
    native = doc["state"] or "none"
    assert event.state is airflow.TASK_STATES[native]
    assert event.parent_run_key == one(dag_run("running")).run_key
    assert event.run_key.startswith(event.parent_run_key + ":load")
    assert event.attempt == (doc["try_number"] or None)
    assert (doc["map_index"] >= 0) == event.run_key.endswith(f"[{doc['map_index']}]")
    times = [datetime.fromisoformat(doc[f].replace("Z", "+00:00")) for f in airflow.TASK_TIMES if f in doc]
    assert event.occurred_at == (max(times) if times else CTX.received_at)
    assert (event.finished_at is not None) <= event.state.terminal


@PROPERTY
@given(doc=task_documents(), other=task_documents())
def test_property_event_ids_are_deterministic_and_tell_snapshots_apart(doc, other):
    assert one(doc).event_id == one(orjson.dumps(doc)).event_id
    first, second = one(doc), one(other)
    if (first.run_key, first.attempt, first.native_state, first.occurred_at) != (
            second.run_key, second.attempt, second.native_state, second.occurred_at):
        assert first.event_id != second.event_id


@PROPERTY
@given(failures=st.integers(0, 4), order=st.randoms(use_true_random=False))
def test_property_retries_fold_to_one_run_whose_attempt_is_the_last_try_in_any_order(failures, order):
    """Each try's snapshots (queued, running, outcome) in any arrival order: one run, one
    attempt per try_number, retries = failed tries, the last try's outcome."""
    docs = []
    at = 0
    for try_number in range(1, failures + 2):
        outcome = "up_for_retry" if try_number <= failures else "success"
        docs += [ti("queued", try_number, queued_when=iso(at + 1)),
                 ti("running", try_number, queued_when=iso(at + 1), start_date=iso(at + 2)),
                 ti(outcome, try_number, queued_when=iso(at + 1), start_date=iso(at + 2), end_date=iso(at + 9))]
        at += 20
    order.shuffle(docs)
    job = None
    for doc in docs:
        job, _ = apply_job(job, one(doc))
    (run,) = job.runs.values()
    assert run.state is State.SUCCEEDED and run.attempt == failures + 1 and run.retries == failures


# --- the poller's pure parts: settings and the (id, content) memory ---------------------


def test_settings_name_every_problem_in_one_line_each(tmp_path):
    from pipeline.sources import ConfigError, load_config
    from pipeline.vendors.airflow.ingest import AirflowSettings

    config = tmp_path / "ingest.toml"
    config.write_text('[airflow]\nbase_url = "airflow.local"\napi_version = "v3"\npage_size = 0\n')
    with pytest.raises(ConfigError) as problems:
        load_config(AirflowSettings, config, "airflow", env={})
    lines = str(problems.value).splitlines()
    assert any("base_url" in line for line in lines) and any("api_version must be v1" in line for line in lines)
    assert any("JOBSTREAM_AIRFLOW_PASSWORD" in line for line in lines) and any("page_size" in line for line in lines)
    config.write_text('[airflow]\npassword = "secret-in-file"\n')
    with pytest.raises(ConfigError, match="secrets are not read from the config file"):
        load_config(AirflowSettings, config, "airflow", env={})


def test_the_memory_sends_a_change_once_and_an_unchanged_object_never_again():
    from pipeline.vendors.airflow.ingest import AirflowSettings, AirflowSource

    source = AirflowSource(AirflowSettings(base_url="http://x", user="u", password="pass", source="af-prod"), None)
    mark = T0
    running = ti("running", start_date=iso(1))
    noise = {"event_log_id": 1, "when": iso(1), "event": "cli_task_run", "dag_id": "etl", "run_id": "r"}
    first = source._plan([("task_instances", running), ("task_instances", running), ("event_logs", noise)],
                         {"mark": mark.isoformat(), "seen": {}}, mark)
    assert len(first.records) == 1, "one object repeated in one answer is sent once; unrelated audit entries never"
    assert len(first.cursor["seen"]) == 1
    again = source._plan([("task_instances", running)], first.cursor, mark)
    assert again.records == [] and again.cursor["seen"] == first.cursor["seen"]
    done = ti("success", start_date=iso(1), end_date=iso(9))
    changed = source._plan([("task_instances", done)], again.cursor, mark)
    assert [r.payload["state"] for r in changed.records] == ["success"]
    assert changed.records[0].key == "airflow:af-prod:etl.load"


@st.composite
def dag_run_documents(draw):
    fields = {name: iso(draw(seconds)) for name in airflow.DAG_RUN_TIMES if draw(st.booleans())}
    return dag_run(draw(st.sampled_from(sorted(airflow.DAG_RUN_STATES))), dag_run_id=draw(st.text(
        st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
        min_size=1, max_size=60)),
        **fields)


@PROPERTY
@given(doc=dag_run_documents())
def test_property_a_dag_run_is_a_run_of_its_dag_in_the_table(doc):
    event = one(doc)
    assert event.state is airflow.DAG_RUN_STATES[doc["state"]]
    assert event.job_key == "airflow:af-prod:etl" and event.parent_run_key is None
    assert event.run_key == f"airflow:af-prod:etl:{doc['dag_run_id'].strip()}" and event.attempt is None
    assert vendors.keyed_documents("airflow", doc, CTX) == [("airflow:af-prod:etl", doc)]
