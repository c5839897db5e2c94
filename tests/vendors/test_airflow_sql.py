"""Airflow in the analysts' views: the simulator's whole history, snapshot by snapshot as the
poller sends it, through the worker's own code (``StreamCore``, pure) into a real DuckDB file
by the sink's writer; then the views and the README's Airflow query answer with DAG and task
names, retries, parent links, the zombie and the run marked failed by hand."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline import catalog, vendors
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.settings import Settings
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.sink.writer import DuckDBWriter
from pipeline.stream.core import StreamCore
from pipeline.stream.records import Message
from pipeline.vendors._common import Context
from pipeline.vendors._simulator import SimClock
from pipeline.vendors.airflow.normalize import relevant_log
from pipeline.vendors.airflow.simulator import scenario

SOURCE = "af-prod"
README = Path(__file__).parents[2] / "README.md"


def history(now: datetime) -> list[tuple[datetime, object]]:
    """Every snapshot of every object of the scenario, in vendor time, received a second later;
    vendor time ends an hour before ``now`` (this week)."""
    objects = scenario(1)
    span = max(at for obj in objects for at, _ in obj.steps)
    clock = SimClock(epoch=now - timedelta(hours=1, seconds=span))
    snapshots = []
    for obj in objects:
        for at_s, _ in obj.steps:
            view = obj.view(clock, at_s, "v2")
            if obj.kind != "event_log" or relevant_log(view):
                snapshots.append((clock.at(at_s + 1), view))
    snapshots.sort(key=lambda pair: pair[0])
    return snapshots


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    now = datetime.now(UTC).replace(microsecond=0)
    topic = catalog.raw_topic("airflow")
    messages = []
    for offset, (received_at, view) in enumerate(history(now)):
        [(key, piece)] = vendors.keyed_documents("airflow", view, Context(source=SOURCE, received_at=received_at))
        value = encode_envelope(RawEnvelope(vendor="airflow", source=SOURCE, received_at=received_at, payload=piece))
        messages.append(Message(topic, 0, offset, key.encode(), value))
    store: dict[bytes, bytes] = {}
    core = StreamCore(Settings(), store.get, lambda: list(store.items()))
    batch = core.process(messages)
    writer = DuckDBWriter(tmp_path_factory.mktemp("airflow") / "views.duckdb").open()
    writer.write(decode_batch([
        KafkaRecord(output.topic, 0, offset, 0, output.key, output.value)
        for offset, output in enumerate(batch.outputs) if output.value is not None
    ]))
    yield writer.connection
    writer.close()


def readme_airflow_query() -> str:
    queries = re.findall(r"```sql\n(.*?)\n```", README.read_text(), re.S)
    [query] = [q for q in queries if "vendor = 'airflow'" in q and "parent_run_key" in q]
    return query


def test_the_readme_query_names_the_dag_whose_tasks_retried_most_this_week(db):
    rows = db.execute(readme_airflow_query()).fetchall()
    assert rows[0][:2] == ("etl_orders", 2)  # transform's second try and load_partition[1]'s
    assert dict((dag, retries) for dag, retries, *_ in rows) == {
        "etl_orders": 2, "flaky_worker": 1, "billing_sync": 1, "sensor_pipeline": 0, "nightly_report": 0,
        "manual_fix": 0,
    }


def test_jobs_carry_dag_and_task_names_and_every_task_run_has_its_dag_run_as_parent(db):
    names = dict(db.execute("SELECT job_key, job_name FROM jobs WHERE vendor = 'airflow'").fetchall())
    assert names[f"airflow:{SOURCE}:etl_orders"] == "etl_orders"
    assert names[f"airflow:{SOURCE}:etl_orders.transform"] == "etl_orders.transform"
    orphans = db.execute("""
        SELECT t.run_key FROM job_runs t LEFT JOIN job_runs d ON d.run_key = t.parent_run_key
        WHERE t.vendor = 'airflow' AND t.parent_run_key IS NOT NULL AND d.run_key IS NULL""").fetchall()
    assert orphans == []
    children = db.execute("""
        SELECT count(*) FROM job_runs WHERE vendor = 'airflow' AND parent_run_key IS NOT NULL""").fetchone()[0]
    assert children == 13  # every task instance, the three mapped indexes each its own run


def test_retries_attempts_and_outcomes_per_task(db):
    rows = db.execute("""
        SELECT job_key, run_key, parent_run_key, state, attempt, retries FROM job_runs WHERE vendor = 'airflow'""").fetchall()
    prefix = f"airflow:{SOURCE}:"
    by_task = {job[len(prefix):] + (run[run.rindex("["):] if run.endswith("]") else ""): (state, attempt, retries)
               for job, run, parent, state, attempt, retries in rows if parent is not None}
    dag_runs = {job[len(prefix):]: state for job, _run, parent, state, _a, _r in rows if parent is None}
    assert by_task["etl_orders.transform"] == ("SUCCEEDED", 2, 1)
    assert by_task["etl_orders.load_partition[1]"] == ("SUCCEEDED", 2, 1)
    assert by_task["etl_orders.load_partition[0]"] == ("SUCCEEDED", 1, 0)
    assert by_task["nightly_report.publish"][0] == "SKIPPED"
    assert by_task["sensor_pipeline.wait_for_file"] == ("SUCCEEDED", 1, 0)  # three pokes, one try
    assert by_task["sensor_pipeline.wait_for_partner"] == ("SUCCEEDED", 1, 0)  # deferred and resumed
    assert by_task["billing_sync.sync"] == ("SUCCEEDED", 2, 1)  # cleared by hand: a second try
    assert dag_runs == {"etl_orders": "SUCCEEDED", "sensor_pipeline": "SUCCEEDED", "nightly_report": "FAILED",
                        "flaky_worker": "SUCCEEDED", "manual_fix": "FAILED", "billing_sync": "SUCCEEDED"}


def test_the_zombie_and_the_run_marked_failed_by_hand_come_out_as_what_they_are(db):
    zombie = db.execute("""
        SELECT outcome, attempt FROM job_attempts
        WHERE job_key = ? AND attempt = 1""", [f"airflow:{SOURCE}:flaky_worker.crunch"]).fetchall()
    assert zombie and zombie[0][0] in ("FAILED", "RETRIED")
    codes = db.execute("""
        SELECT error_code, attrs->>'marked_by' FROM job_events
        WHERE vendor = 'airflow' AND error_code IN ('ZOMBIE', 'MARKED_FAILED') ORDER BY error_code""").fetchall()
    assert codes == [("MARKED_FAILED", "admin"), ("ZOMBIE", None)]
    [(last_error,)] = db.execute("""
        SELECT last_error_code FROM job_runs WHERE job_key = ? AND parent_run_key IS NULL""",
                                 [f"airflow:{SOURCE}:manual_fix"]).fetchall()
    assert last_error == "MARKED_FAILED"


def test_airflow_runs_are_in_every_view(db):
    for view in ("jobs", "job_attempts", "run_durations", "job_retries", "failure_rates"):
        assert db.execute(f"SELECT count(*) FROM {view} WHERE vendor = 'airflow'").fetchone()[0] > 0, view
    durations = dict(db.execute("""
        SELECT job_key, p50_s FROM run_durations WHERE vendor = 'airflow' AND outcome = 'SUCCEEDED'""").fetchall())
    assert durations[f"airflow:{SOURCE}:etl_orders.extract"] == 15.0
