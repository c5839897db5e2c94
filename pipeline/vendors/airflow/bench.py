"""Airflow's share of the benchmark workload: one DAG run's documents as the poller sends them
(the DAG run queued, running, ended; each task instance scheduled, queued, running, and
retried now and then), in the shapes of the /api/v2 list answers."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from pipeline.bench.workload import Document

INSTANCE = "airflow-prod"
TASKS = ("extract", "transform", "load")


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def airflow_run(rng: random.Random, job: int, run: int, start: datetime) -> list[Document]:
    """One DAG run of DAG ``dag_<job>`` with three tasks in sequence; a task fails a try
    (``up_for_retry``) one time in ten and a run fails when its last try does."""
    dag_id = f"dag_{job}"
    run_id = f"scheduled__{_iso(start)}"
    base_run: dict[str, Any] = {"dag_id": dag_id, "dag_run_id": run_id, "run_type": "scheduled",
                                "logical_date": _iso(start), "queued_at": _iso(start)}
    docs = [Document("airflow", INSTANCE, start + timedelta(seconds=1), base_run | {"state": "queued"})]
    at = start + timedelta(seconds=rng.uniform(1, 5))
    docs.append(Document("airflow", INSTANCE, at + timedelta(seconds=1),
                         base_run | {"state": "running", "start_date": _iso(at)}))
    failed = False
    for task_id in TASKS:
        ti = {"dag_id": dag_id, "dag_run_id": run_id, "task_id": task_id, "map_index": -1, "max_tries": 2}
        for try_number in (1, 2, 3):
            queued = at + timedelta(seconds=rng.uniform(1, 10))
            started = queued + timedelta(seconds=rng.uniform(1, 20))
            ended = started + timedelta(seconds=rng.uniform(5, 300))
            fails = rng.random() < 0.1
            last = try_number == 3
            outcome = "success" if not fails else "failed" if last else "up_for_retry"
            times = {"try_number": try_number, "queued_when": _iso(queued)}
            docs.append(Document("airflow", INSTANCE, queued + timedelta(seconds=1), ti | times | {"state": "queued"}))
            docs.append(Document("airflow", INSTANCE, started + timedelta(seconds=1),
                                 ti | times | {"state": "running", "start_date": _iso(started)}))
            docs.append(Document("airflow", INSTANCE, ended + timedelta(seconds=1), ti | times | {
                "state": outcome, "start_date": _iso(started), "end_date": _iso(ended)}))
            at = ended
            if not fails:
                break
            failed = last
        if failed:
            break
    docs.append(Document("airflow", INSTANCE, at + timedelta(seconds=2), base_run | {
        "state": "failed" if failed else "success", "start_date": docs[1].payload["start_date"],
        "end_date": _iso(at + timedelta(seconds=1))}))
    return docs
