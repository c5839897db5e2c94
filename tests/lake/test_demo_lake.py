"""`pipeline demo --lake`: two sinks of one group write a lake whose catalog the demo
starts itself (a throwaway PostgreSQL), each owning some partitions and writing rows,
and the summary is SQL on that lake (pipeline/run/demo_lake.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_lake_runs_two_sinks_into_one_lake_and_summarizes_it(tmp_path):
    run_dir = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--lake", "--duration", "10", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "summary from the lake written by two sinks" in done.stdout
    assert re.search(r"runs:\n\s+vendor\s+state\s+runs\n\s+\w+", done.stdout)
    written = {}
    for sink in ("sink-1", "sink-2"):
        log = (run_dir / "logs" / f"{sink}.log").read_text()
        assert "sink: owns " in log
        written[sink] = int(re.search(r"sink: stopped after (\d+) records", log).group(1))
    assert all(records > 0 for records in written.values()), written
    assert list((run_dir / "lake-data").rglob("*.parquet"))
