"""``pipeline explain`` (issue 38 case 3) on a DuckDB file the real pipeline wrote: the
session's worker on the embedded broker, then ``pipeline sink`` into a fresh file. Each
story is told through the real command, raw records fetched from the same broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest

from pipeline.model import UTC
from pipeline.sink import quack
from tests.support.kafka import produce, send_documents
from tests.support.processes import SinkProcess

pytestmark = pytest.mark.integration

POISON = b"\x00\xffnot an envelope"


def explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != quack.TOKEN_ENV} | (env or {})
    return subprocess.run([sys.executable, "-m", "pipeline", "explain", *args], capture_output=True, text=True,
                          timeout=120, env=environment)


def _qrs_docs(host: str, t0: datetime) -> tuple[str, list]:
    iso = lambda n: (t0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    session, task = str(uuid.uuid4()), str(uuid.uuid4())

    def result(number: int, status: int | str, start: int, stop: int | None = None) -> dict:
        return {"id": f"a0000000-0000-4000-8000-00000000000{number}", "taskID": task, "executionID": session,
                "appID": "app-1", "status": status, "startTime": iso(start),
                "stopTime": iso(stop) if stop is not None else "1753-01-01T00:00:00.000Z",
                "modifiedDate": iso(stop if stop is not None else start),
                "details": [{"detailsType": 0, "message": "Script error: Field 'Amount' not found",
                             "detailCreatedDate": iso(stop)}] if status == 8 else []}

    return session, [result(1, 2, 0), result(1, 8, 0, 10), result(2, 2, 20), result(2, "FinishedSuccess", 20, 30)]


def _qrs_silent_docs(t0: datetime) -> tuple[str, list[tuple[datetime, dict]]]:
    """Execution X starts, says nothing for longer than QRS's stale_after (300 s) while a
    later execution of the same task moves event time on, then finishes."""
    iso = lambda n: (t0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    task, silent, later = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())

    def result(execution: str, number: int, status: str, start: int, stop: int | None = None) -> dict:
        return {"id": f"b0000000-0000-4000-8000-00000000000{number}", "taskID": task, "executionID": execution,
                "appID": "app-2", "status": status, "startTime": iso(start),
                "stopTime": iso(stop) if stop is not None else "1753-01-01T00:00:00.000Z",
                "modifiedDate": iso(stop if stop is not None else start), "details": []}

    return silent, [(t0 + timedelta(seconds=n), doc) for n, doc in (
        (-1000, result(silent, 1, "Started", -1000)), (-600, result(later, 2, "Started", -600)),
        (-500, result(silent, 1, "FinishedSuccess", -1000, -500)))]


async def send_backfill(bootstrap: str, vendor: str, timed: list[tuple[datetime, dict]], *, source: str) -> None:
    """Documents as a backfill sends them: each received when it happened (the worker keeps
    a run alive until its last receipt + stale_after, R2/R10)."""
    from aiokafka import AIOKafkaProducer

    from pipeline import catalog, vendors
    from pipeline.model import RawEnvelope, encode_envelope

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for received, doc in timed:
            ctx = vendors.Context(source=source, received_at=received)
            for job_key, piece in vendors.keyed_documents(vendor, doc, ctx):
                value = encode_envelope(RawEnvelope(vendor=vendor, source=source, received_at=received, payload=piece))
                await producer.send_and_wait(catalog.raw_topic(vendor), value, key=job_key.encode())
    finally:
        await producer.stop()


def _qrs_two_names_docs(t0: datetime) -> tuple[str, list]:
    """One execution seen first as a reload task's last result (named by its result id
    only), then as an execution result (named by executionID): one run (R17)."""
    iso = lambda n: (t0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")  # noqa: E731
    task, result_id, execution = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    reload_task = {"id": task, "name": "Reload Sales", "operational": {"id": "op-1", "lastExecutionResult": {
        "id": result_id, "executingNodeName": "qlik-sched-01", "status": 7, "startTime": iso(0), "stopTime": iso(30),
        "duration": 30000, "details": []}}}
    result = {"id": result_id, "taskID": task, "executionID": execution, "appID": "app-3", "status": 7,
              "startTime": iso(0), "stopTime": iso(30), "modifiedDate": iso(30), "details": []}
    return execution, [reload_task, result]


def _zuora_docs(t0: datetime) -> tuple[str, list]:
    token = f"tok-{uuid.uuid4().hex[:8]}"
    t0 = t0.replace(tzinfo=None, microsecond=0)

    def status(queue: str, state: str, last: int, rows: int) -> dict:
        task = {"task_id": token, "status": state, "accumulate": rows, "metric": 10, "message": None,
                "activity_tracker": {"elapsed_time": "0:00:01.000000", "initated_time": str(t0),
                                     "last_activity": str(t0 + timedelta(seconds=last))},
                "query_config": {"filter_params": {"fromDate": "2026-01-01 00:00:00", "toDate": "2026-02-01 00:00:00"},
                                 "object_name": "RPRO_BI3_RC_SCHD_V"}}
        return {"active": [], "completed": [], "draining": [], "stale": [], queue: [task]}

    return token, [status("active", "SCANNING-PAGE-1", 1, 10), status("stale", "SCANNING-PAGE-1", 1, 10),
                   status("active", "COMMITING-PAGE-2", 250, 20), status("completed", "COMPLETED", 260, 25)]


def _truenas_docs(t0: datetime) -> tuple[int, list]:
    job_id = 41
    fields = {"id": job_id, "method": "cloudsync.sync", "arguments": [7], "state": "RUNNING",
              "time_started": {"$date": int(t0.timestamp() * 1000)},
              "progress": {"percent": 30, "description": "copying", "extra": None}}
    return job_id, [
        {"jsonrpc": "2.0", "method": "collection_update",
         "params": {"msg": "added", "collection": "core.get_jobs", "id": job_id, "fields": fields}},
        {"msg": "lost", "collection": "core.get_jobs", "id": job_id, "fields": fields},
    ]


@pytest.fixture(scope="module")
def stories(broker, worker, tmp_path_factory):
    """Three vendors' runs through the real worker and sink, written to one file."""
    import asyncio

    suffix = uuid.uuid4().hex[:8]
    host, tenant, nas, quiet = f"qs-{suffix}", f"tenant-{suffix}", f"nas-{suffix}", f"qs2-{suffix}"
    t0 = datetime.now(UTC)
    session, qrs = _qrs_docs(host, t0)
    token, zuora = _zuora_docs(t0)
    job_id, truenas = _truenas_docs(t0)
    silent, qrs_silent = _qrs_silent_docs(t0)
    execution, qrs_named_twice = _qrs_two_names_docs(t0)
    named = f"qs3-{suffix}"

    async def send() -> None:
        await send_documents(broker.bootstrap, "qlik_qrs", qrs, source=host)
        await send_documents(broker.bootstrap, "zuora", zuora, source=tenant)
        await send_documents(broker.bootstrap, "truenas", truenas, source=nas)
        await send_backfill(broker.bootstrap, "qlik_qrs", qrs_silent, source=quiet)
        await send_documents(broker.bootstrap, "qlik_qrs", qrs_named_twice, source=named)
        await produce(broker.bootstrap, "zuora", [(f"zuora:{tenant}:poison", POISON)], source=tenant)

    asyncio.run(send())
    db = tmp_path_factory.mktemp("explain") / "explain.duckdb"
    sink = SinkProcess(broker.bootstrap, db).start()
    try:
        done = f"SELECT count(*) FROM job_runs WHERE state IN ('SUCCEEDED', 'FAILED') AND source IN ('{host}', '{tenant}', '{nas}', '{quiet}', '{named}')"
        try:
            sink.wait_for(done, 5, timeout=90)
            sink.wait_for(f"SELECT count(*) FROM job_events WHERE source = '{named}'", 2)
            sink.wait_for(f"SELECT count(*) FROM dead_letters WHERE stage = 'decode' AND vendor = 'zuora'", lambda n: n >= 1)
        except TimeoutError as exc:  # a wait that runs out shows what the session worker did
            pytest.fail(f"{exc}\nthe session worker's log:\n{worker.tail(80)}")
        keys = dict(sink.connect().execute(
            f"SELECT vendor, run_key FROM job_runs WHERE source IN ('{host}', '{tenant}', '{nas}')").fetchall())
        live = explain(keys["qlik_qrs"], "--db", str(db), "--format", "json", env={quack.TOKEN_ENV: sink.token})
    finally:
        sink.stop()
    con = duckdb.connect(str(db), read_only=True)
    keys["named"] = con.execute(f"SELECT run_key FROM job_runs WHERE source = '{named}'").fetchone()[0]
    keys["execution"] = execution
    keys["silent"] = con.execute(f"SELECT run_key FROM job_runs WHERE source = '{quiet}' AND run_key LIKE '%{silent}'").fetchone()[0]
    letter = con.execute("SELECT dead_letter_id FROM dead_letters WHERE vendor = 'zuora' AND stage = 'decode' LIMIT 1").fetchone()[0]
    con.close()
    assert keys["qlik_qrs"].endswith(session) and keys["zuora"].endswith(token) and keys["truenas"].endswith(str(job_id))
    return db, keys, letter, (live, sink.uri)


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return orjson.loads(result.stdout)


def test_a_qrs_run_with_a_retry_tells_each_raw_record_its_rule_and_agrees_with_its_row(stories, broker):
    db, keys, _, _ = stories
    story = _json(explain(keys["qlik_qrs"], "--db", str(db), "--bootstrap", broker.bootstrap, "--format", "json"))
    assert [(s["rule"], s["state_after"]["state"], s["state_after"]["attempt"]) for s in story["steps"]] == [
        ("R1", "RUNNING", 1), ("R6", "FAILED", 1), ("R7", "RUNNING", 2), ("R6", "SUCCEEDED", 2)]
    assert story["agrees"] is True and story["differences"] == [] and story["missing_transitions"] == []
    assert story["stored_run"]["retries"] == 1 and story["stored_run"]["state"] == "SUCCEEDED"
    raw = story["raw_records"]
    assert len(raw) == 4 and all(r["topic"] == "raw.qlik_qrs" and "missing" not in r for r in raw)
    assert [r["envelope"]["payload"]["status"] for r in raw] == [2, 8, 2, "FinishedSuccess"]
    assert all(r["normalizer_today"] == [s["event"]["event_id"]] for r, s in zip(raw, story["steps"]))
    assert story["steps"][1]["event"]["error_message"].startswith("Script error")
    assert story["steps"][0]["event"]["raw_ref"] == {k: raw[0][k] for k in ("topic", "partition", "offset")}


def test_a_zuora_token_that_went_stale_and_came_back_is_a_reactivation(stories, broker):
    db, keys, _, _ = stories
    result = explain(keys["zuora"], "--db", str(db), "--bootstrap", broker.bootstrap)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    R")]
    assert rules == ["R1", "R6", "R11", "R6"]
    assert "R6 vendor transition to STALE" in result.stdout and "R11 reactivation: back from STALE" in result.stdout
    assert "STALE -> RUNNING (reactivation)" in result.stdout
    assert "stale episodes 1, reactivations 1" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("agrees: the refold reproduces the stored row")


def test_a_truenas_run_closed_by_a_middleware_restart_ends_failed_lost_in_restart(stories, broker):
    db, keys, _, _ = stories
    story = _json(explain(keys["truenas"], "--db", str(db), "--bootstrap", broker.bootstrap, "--format", "json"))
    assert [(s["rule"], s["state_after"]["state"]) for s in story["steps"]] == [("R1", "RUNNING"), ("R6", "FAILED")]
    last = story["steps"][-1]["event"]
    assert last["error_code"] == "LOST_IN_RESTART" and last["attrs"]["cause"] == "lost_in_restart"
    assert story["raw_records"][-1]["envelope"]["payload"]["msg"] == "lost"
    assert story["agrees"] is True


def test_a_stored_row_that_the_events_do_not_give_is_reported_with_exit_1(stories, tmp_path):
    db, keys, _, _ = stories
    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(Path(db).read_bytes())
    con = duckdb.connect(str(damaged))
    con.execute("UPDATE job_runs SET retries = 5 WHERE run_key = ?", [keys["qlik_qrs"]])
    con.close()
    result = explain(keys["qlik_qrs"], "--db", str(damaged))
    assert result.returncode == 1
    assert "DISAGREES with the stored data:" in result.stdout and "  retries: stored 5, refolded 1" in result.stdout
    assert "no --bootstrap given: raw records not fetched" in result.stdout


def test_a_dead_letter_shows_the_refused_bytes_and_why_and_that_kafka_still_holds_them(stories, broker):
    db, _, letter, _ = stories
    result = explain("--dead-letter", letter, "--db", str(db), "--bootstrap", broker.bootstrap)
    assert result.returncode == 0, result.stderr
    assert "refused at stage decode" in result.stdout and "not an envelope" in result.stdout
    assert "in Kafka: still held, the same bytes" in result.stdout


def test_an_unknown_run_is_one_clear_line(stories):
    db, _, _, _ = stories
    result = explain("nope:nope:nope", "--db", str(db))
    assert result.returncode == 1 and result.stderr.startswith("error: no run 'nope:nope:nope'") and "Traceback" not in result.stderr


def test_a_run_that_went_silent_is_made_stale_by_the_stored_watermark_instant_then_finishes(stories, broker):
    db, keys, _, _ = stories
    story = _json(explain(keys["silent"], "--db", str(db), "--format", "json"))
    assert [(s["rule"], s["state_after"]["state"]) for s in story["steps"]] == [
        ("R1", "RUNNING"), ("R10", "STALE"), ("R6", "SUCCEEDED")]
    timeout = story["steps"][1]
    assert timeout["event"] is None and timeout["transitions"][0]["cause"] == "stale_timeout"
    assert story["stale_after_s"] == 300 and story["agrees"] is True


def test_explain_asks_the_sink_that_serves_the_file_while_it_runs(stories):
    _, _, _, (live, uri) = stories
    story = _json(live)
    assert story["database"] == uri and story["agrees"] is True


def test_raw_records_a_broker_does_not_hold_are_said_missing_and_a_dead_broker_is_one_note(stories):
    """Another broker (same topics, empty logs) does not hold the records; a port where no
    broker listens gives one note, and the story is still told from the database."""
    import asyncio

    from pipeline import catalog
    from pipeline.broker import EmbeddedBroker

    db, keys, _, _ = stories
    other = EmbeddedBroker().start()
    try:
        asyncio.run(catalog.apply(other.bootstrap))
        story = _json(explain(keys["zuora"], "--db", str(db), "--bootstrap", other.bootstrap, "--format", "json"))
    finally:
        other.stop()
    assert [r["missing"] for r in story["raw_records"]] == ["not in the log (past its end: another broker, or its log was reset)"] * 4
    dead = _json(explain(keys["zuora"], "--db", str(db), "--bootstrap", "127.0.0.1:1", "--format", "json"))
    assert dead["raw_note"].startswith("Kafka at 127.0.0.1:1 did not answer") and dead["agrees"] is True


def test_a_run_known_by_two_names_gathers_both_and_agrees_with_the_snapshot_the_worker_sent(stories):
    """R17: the reload task named the run first (by result id); the execution result,
    under its executionID, was applied to that run. Both are in its story, and the
    worker sent the run's snapshot after the second one (``StreamCore._apply`` finds
    the run the lifecycle filed it under), so the stored row agrees with the refold."""
    db, keys, _, _ = stories
    result = explain(keys["named"], "--db", str(db), "--format", "json")
    story = orjson.loads(result.stdout)
    assert ":result:" in keys["named"]
    assert [(s["rule"], s["state_after"]["state"]) for s in story["steps"]] == [("R1", "SUCCEEDED"), ("R5", "SUCCEEDED")]
    assert story["steps"][1]["event"]["run_key"] == keys["named"] and story["steps"][1]["event"]["attrs"]["app_id"] == "app-3"
    assert result.returncode == 0 and story["agrees"] is True, story["differences"]
    assert story["differences"] == []
