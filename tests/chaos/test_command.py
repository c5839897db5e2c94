"""`pipeline chaos` end to end, the short run CI makes: every role a real process on its
own embedded broker, killed and restarted, 10,000 bad records, then the verdict."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pipeline.chaos.runner import ChaosResult, report

pytestmark = pytest.mark.integration

CLOSING = re.compile(r"^reliability: faults=(\d+) restarts=(\d+) bad_inputs=(\d+) lost=(\d+) duplicated=(\d+)$")


@pytest.mark.timeout(900)
def test_a_short_chaos_run_loses_nothing_and_says_so_last(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "chaos", "--seed", "1", "--run-dir", str(tmp_path / "chaos")],
        capture_output=True, text=True, timeout=840, env=env,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    faults, restarts, bad_inputs, lost, duplicated = map(int, CLOSING.match(lines[-1]).groups())
    assert (lost, duplicated) == (0, 0)
    assert faults >= 12 and restarts >= faults - 1  # the second worker stays dead
    assert bad_inputs >= 10_000
    checks = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines if line.startswith("  ")
              and ":" in line and not line.startswith("   ")}
    assert checks["hostile records dead-lettered"] == "ok"
    assert checks["no secret in logs, tables, dead letters, raw topics"] == "ok"
    assert checks["broker restart"].startswith(("ok (", "NOT OK, tables unchanged"))
    assert "SIGKILL worker-2" in done.stdout and "SIGKILL sink" in done.stdout


@pytest.mark.timeout(900)
def test_a_short_lake_chaos_run_kills_each_of_two_lake_sinks_while_the_other_goes_on_and_loses_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "chaos", "--lake", "--seed", "1", "--bad-inputs", "2000",
         "--run-dir", str(tmp_path / "chaos")],
        capture_output=True, text=True, timeout=840, env=env,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    faults, restarts, bad_inputs, lost, duplicated = map(int, CLOSING.match(lines[-1]).groups())
    assert (lost, duplicated) == (0, 0)
    assert done.stdout.count("SIGKILL sink-1 ") >= 2 and done.stdout.count("SIGKILL sink-2 ") >= 2
    assert "SIGKILL sink " not in done.stdout  # no file sink in a lake run
    assert "the sink holds every expected row" in done.stdout  # counted from the lake while the sinks ran
    assert bad_inputs >= 2000 and restarts >= faults - 1


def test_the_verdict_fails_on_anything_lost_duplicated_or_otherwise_wrong_and_ends_with_the_closing_line():
    assert ChaosResult(faults=3).passed
    assert not ChaosResult(lost=1).passed
    assert not ChaosResult(duplicated=1).passed
    assert not ChaosResult(problems=["worker exited on its own"]).passed
    lines = report(ChaosResult(faults=3, restarts=2, bad_inputs=10_140, problems=["x"]))
    assert lines[-1] == "reliability: faults=3 restarts=2 bad_inputs=10140 lost=0 duplicated=0"
    assert "  FAIL x" in lines
