"""`pipeline demo` end to end, as a newcomer runs it: every role as a real process on its
own embedded broker; the summary it prints is SQL on the file it leaves, every scenario
shows in the analysts' views, and nothing is left running afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipeline.run import demo
from pipeline.vendors import registry

pytestmark = pytest.mark.integration

VENDORS = set(registry.names())  # every declared vendor is in the demo


MARKER = "DEMO_TEST_RUN"  # not a JOBSTREAM_ variable: the demo passes those on selectively, this to every child


def _left_behind(marker: str) -> list[str]:
    """Live processes started by this demo run (their environment carries ``marker``): on
    a shared machine, other people's brokers and roles come and go meanwhile."""
    time.sleep(1)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0") and state != "Z":
            found.append(cmdline)
    return found


def _run_demo(run_dir: Path, duration: int, interrupt_after: float | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {MARKER: run_dir.name}
    command = [sys.executable, "-m", "pipeline", "demo", "--duration", str(duration), "--run-dir", str(run_dir)]
    if interrupt_after is None:
        return subprocess.run(command, capture_output=True, text=True, timeout=duration + 240, env=env)
    # Started as a script's `cmd &` starts it: SIGINT ignored, which the demo must undo.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(interrupt_after)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_the_demo_shows_every_scenario_and_its_summary_is_sql_on_the_file(tmp_path):
    run_dir = tmp_path / "demo"
    result = _run_demo(run_dir, duration=70)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    db = run_dir / "jobstream.duckdb"
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
    assert _left_behind(run_dir.name) == []


def test_ctrl_c_stops_everything_and_still_prints_the_summary(tmp_path):
    """Even when SIGINT was ignored by whoever started it (a script's `pipeline demo &`)."""
    run_dir = tmp_path / "interrupted"
    result = _run_demo(run_dir, duration=600, interrupt_after=25)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopping (Ctrl-C)" in result.stdout
    assert f"summary from {run_dir / 'jobstream.duckdb'}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert _left_behind(run_dir.name) == []
