"""A small `pipeline bench` run: checks the shape of what it reports, not its speed."""

from __future__ import annotations

import pytest

from pipeline.bench import run

pytestmark = pytest.mark.integration


def test_a_small_run_reports_every_measured_stage(tmp_path):
    said: list[str] = []
    results = run.run(3000, repeats=1, say=said.append)  # several batches: the loops are timed after the first
    for name in ("bare_aiokafka_eps", "bare_faust_eps", "lifecycle_eps", "normalize_eps"):
        assert results[name] > 0, name
    assert set(results["normalize_eps_by_vendor"]) == {"qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica"}
    assert results["events"] == 3000 and results["raw_records"] >= 3000
    lines = run.table(results)
    assert lines[0].startswith("stage") and any("of bare aiokafka" in line for line in lines)
    out = tmp_path / "bench.json"
    run.write(results, out)
    assert out.read_bytes().startswith(b"{")
    assert any("loading" in line for line in said)
