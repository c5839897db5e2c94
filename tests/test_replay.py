"""``pipeline replay``: planning (no Kafka) and the local run end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline import catalog, replay
from pipeline.model import decode_envelope


def test_every_vendor_has_bundled_samples():
    assert {vendor for vendor, _path in replay.sample_files()} == {
        "qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica"
    }


def test_plan_keys_each_piece_by_its_job_and_counts_the_events():
    files = replay.sample_files()
    plan = replay.plan(files, source="t", received_at=replay.SAMPLES_RECEIVED_AT, step=timedelta(seconds=10))
    assert plan.rejected == []
    assert plan.expected_events == 34
    for topic, key, value in plan.messages:
        envelope = decode_envelope(value)
        assert topic == catalog.raw_topic(envelope.vendor)
        assert key.decode().startswith(f"{envelope.vendor}:")


def test_plan_reports_rejected_documents_with_their_position(tmp_path):
    bad = tmp_path / "truenas-bad.jsonl"
    bad.write_text('{"id": 1, "method": "a.b", "state": "RUNNING"}\n{"jsonrpc": "2.0", "error": {"code": 1}}\n')
    plan = replay.plan([("truenas", bad)], source="t")
    assert len(plan.messages) == 1
    assert len(plan.rejected) == 1 and plan.rejected[0].startswith(f"{bad} line 2: ")


@pytest.mark.parametrize(
    "path, vendor",
    [("zuora/x.json", "zuora"), ("qlik_qrs-results.jsonl", "qlik_qrs"), ("x/informatica.json", "informatica"), ("misc.json", None)],
)
def test_vendor_of_a_file(path, vendor):
    assert replay.vendor_of(Path(path)) == vendor


@pytest.mark.integration
def test_the_local_run_replays_the_samples_and_prints_the_lifecycles():
    """README's main-job command, minus the install."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--timeout", "120"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"(\d+) events, (\d+) transitions .*?, (\d+) runs, (\d+) dead letters", result.stdout)
    assert summary, result.stdout
    assert summary.groups() == ("34", "33", "14", "0")
    assert "SUCCEEDED" in result.stdout and "STALE" in result.stdout


def test_replay_usage_errors_exit_2(tmp_path):
    unknown = tmp_path / "notes.json"
    unknown.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "pipeline", "replay", str(unknown)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot tell the vendor" in result.stderr


def test_plan_reports_oversized_documents_with_their_line_and_goes_on(tmp_path):
    """Issue 23.3: a 300,000-character method (a giant key) and a 1.2 MB document (too
    big for one Kafka record) are reported with their lines; the others are sent."""
    def update(job_id: int, method: str, **extra: object) -> str:
        fields = {"id": job_id, "method": method, "state": "RUNNING", "time_started": {"$date": 1767225600000}, **extra}
        return json.dumps({"msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields})

    path = tmp_path / "truenas-hostile.jsonl"
    path.write_text("\n".join([
        update(1, "pool.scrub"),
        update(2, "m" * 300_000),
        update(3, "pool.scrub", arguments=["x" * 1_200_000]),
        update(4, "pool.scrub"),
    ]) + "\n")
    plan = replay.plan([("truenas", path)], source="t")
    assert len(plan.messages) == 2 and plan.expected_events == 2
    assert [line.split(": ", 1)[0] for line in plan.rejected] == [f"{path} line 2", f"{path} line 3"]
    assert "job_key is" in plan.rejected[0] and "1024" in plan.rejected[0]
    assert "more than one Kafka record may" in plan.rejected[1]


def test_a_backfill_counts_each_piece_as_received_at_its_own_vendor_time(tmp_path):
    """Issue 25.3: a file replayed without a receive time follows the vendor's times
    (TrueNAS updates take their occurred_at from received_at)."""
    from datetime import datetime, timezone

    def update(job_id: int, state: str, started_ms: int, finished_ms: int | None = None) -> str:
        fields = {"id": job_id, "method": "pool.scrub", "state": state, "time_started": {"$date": started_ms}}
        if finished_ms is not None:
            fields["time_finished"] = {"$date": finished_ms}
        return json.dumps({"msg": "changed", "collection": "core.get_jobs", "id": job_id, "fields": fields})

    t0 = 1_767_225_600_000  # 2026-01-01
    path = tmp_path / "truenas-history.jsonl"
    path.write_text("\n".join([update(1, "RUNNING", t0), update(1, "SUCCESS", t0, t0 + 60_000),
                               update(2, "RUNNING", 4_102_444_800_000)]) + "\n")  # 2100: capped at now
    before = datetime.now(timezone.utc)
    received = [decode_envelope(value).received_at for _t, _k, value in replay.plan([("truenas", path)], source="t").messages]
    assert received[:2] == [datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)]
    assert before <= received[2] <= datetime.now(timezone.utc)
