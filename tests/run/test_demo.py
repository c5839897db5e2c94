"""`pipeline demo` end to end, as a newcomer runs it: every role as a real process on its
own embedded broker; the summary it prints is SQL on the file it leaves, every scenario
shows in the analysts' views, and nothing is left running afterwards."""

from __future__ import annotations

import duckdb
import pytest

from pipeline.run import demo
from pipeline.vendors import registry
from tests.support.demo import left_behind, run_demo

pytestmark = pytest.mark.integration

VENDORS = set(registry.names())  # every declared vendor is in the demo


def test_the_demo_shows_every_scenario_and_its_summary_is_sql_on_the_file(demo_run):
    run_dir, db, result = demo_run.run_dir, demo_run.db, demo_run.result
    # The summary printed is the SQL on the file, block by block.
    for line in demo.report(demo.DemoOptions(run_dir=run_dir), demo.DemoResult(demo.summary(db), {}, 0.0))[2:]:
        if line.startswith("    ") or line.endswith(":"):
            assert line in result.stdout, line
    con = duckdb.connect(str(db), read_only=True)
    try:
        vendors = {v for (v,) in con.execute("SELECT DISTINCT vendor FROM job_runs").fetchall()}
        assert vendors == VENDORS
        assert con.execute("SELECT sum(retries) FROM job_runs").fetchone()[0] >= 1
        ended = dict(con.execute("SELECT ended_by, count(*) FROM stale_episodes GROUP BY ALL").fetchall())
        assert ended.get("reactivated", 0) >= 1 and ended.get("drained", 0) >= 1, ended
        dead = {v for (v,) in con.execute("SELECT DISTINCT vendor FROM dead_letters WHERE stage = 'normalize'").fetchall()}
        assert dead == VENDORS
        assert con.execute("SELECT count(*) FROM alerts WHERE status = 'delivered'").fetchone()[0] >= 1
    finally:
        con.close()
    assert left_behind(run_dir.name) == []


def test_ctrl_c_stops_everything_and_still_prints_the_summary(tmp_path):
    """Even when SIGINT was ignored by whoever started it (a script's `pipeline demo &`)."""
    run_dir = tmp_path / "interrupted"
    result = run_demo(run_dir, duration=600, interrupt_after=25)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopping (Ctrl-C)" in result.stdout
    assert f"summary from {run_dir / 'jobstream.duckdb'}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert left_behind(run_dir.name) == []
