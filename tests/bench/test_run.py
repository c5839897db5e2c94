"""A small `pipeline bench` run through the command: checks the shape of what it reports,
not its speed."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from pipeline.bench.workload import VENDORS

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_small_run_reports_every_measured_stage(tmp_path):
    out = tmp_path / "bench.json"
    try:  # 2-3 minutes here (lake stages, sink freshness, two workers); the bound sits below the test's
        # 600 s so a stuck stage shows in its progress lines
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "bench", "--events", "3000", "--repeats", "1", "--freshness-seconds", "2",
             "--state-runs", "2000", "--out", str(out)],
            capture_output=True, text=True, timeout=540, env=os.environ | {"JOBSTREAM_BATCH_MAX": "1000"},
        )  # 3,000 documents in batches of 1,000: several batches, as the loops are timed after their first
    except subprocess.TimeoutExpired as stuck:
        progress = stuck.stderr.decode(errors="replace") if isinstance(stuck.stderr, bytes) else stuck.stderr
        pytest.fail(f"pipeline bench did not finish in 540 s; its progress:\n{progress}")
    assert result.returncode == 0, result.stdout + result.stderr
    results = orjson.loads(out.read_bytes())
    for name in ("bare_aiokafka_eps", "bare_faust_eps", "lifecycle_eps", "core_eps", "normalize_eps", "worker_eps", "two_workers_eps",
                 "sink_rows_per_s", "bare_aiokafka_jobs_eps", "end_to_end_eps", "worker_peak_rss_mb", "restart_to_ready_s"):
        assert results[name] > 0, name
    assert 0 < results["freshness_p50_s"] <= results["freshness_p99_s"] <= results["freshness_max_s"]
    assert results["freshness_events"] > 0 and results["freshness_raw_records"] == 4000
    assert 0 < results["site_freshness_p50_s"] <= results["site_freshness_p99_s"], results.get("site_freshness_error")
    assert results["site_freshness_rate"] == 200 and results["site_freshness_raw_records"] == 400
    assert "freshness at 200 raw records/s (a large site's rate)" in result.stdout
    assert results["sink_records"] >= results["sink_stored_rows"] > 0
    assert results["state_runs"] == 2000
    assert set(results["normalize_eps_by_vendor"]) == set(VENDORS)  # every vendor that declares a bench
    assert results["events"] == 3000 and results["raw_records"] >= 3000
    first, second = result.stdout.splitlines()[:2]
    assert first == results["hot_modules"] and first.startswith("hot modules pure Python")  # an editable install
    assert second.startswith("stage") and "of bare aiokafka" in result.stdout
    assert "end to end (raw -> visible)" in result.stdout and "freshness at 2,000 raw records/s" in result.stdout
    assert "of bare faust (target 0.75x)" in result.stdout and "worker with 2,000 runs (RocksDB): peak RSS" in result.stdout
    assert "loading 3,000 documents" in result.stderr
    assert results["lake_1_sink_rows_per_s"] > 0 and results["lake_2_sink_rows_per_s"] > 0, results.get("lake_error")
    assert "sink on a lake, 2 sinks (group)" in result.stdout
    assert results["sink_freshness_rate"] == 2000, results.get("sink_freshness_error")
    for stage in ("sink", "lake_1_sink", "lake_2_sink"):  # the three sink stages' freshness, same run
        assert 0 < results[f"{stage}_freshness_p50_s"] <= results[f"{stage}_freshness_p99_s"], stage
        assert results[f"{stage}_freshness_events"] == 4000, stage
    table = result.stdout[result.stdout.index("sink stages, freshness at 2,000 jobs.events records/s"):]
    assert all(name in table for name in ("one sink on a file", "one sink on a lake", "two sinks on a lake (group)"))
    assert "2 workers, one group" in result.stdout and "of one worker" in result.stdout
