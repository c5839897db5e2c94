"""A lake sink that stops on its own with one clear line (the known case: a commit that
kept conflicting while the other sink committed) is started again by the chaos run and
counted in its report, not failed: nothing of its batch can be lost, its offsets being
in the same lake transaction as its rows. A real process under the real supervisor,
standing in for the sink: it prints the sink's give-up line once, then runs on."""

from __future__ import annotations

import sys
import time

from pipeline.chaos import runner
from pipeline.chaos.scenario import ChaosOptions
from pipeline.run.demo_lake import SINKS as LAKE_SINKS
from pipeline.run.supervisor import Role

GIVES_UP_ONCE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("gave up once")
    print("error: the lake catalog (dbname=lake): TransactionContext Error: Failed to commit: Transaction conflict: "
          "another transaction has deleted inlined data from it; the batch was not committed", flush=True)
    sys.exit(1)
while True:
    time.sleep(1)
"""


def test_a_lake_sink_stopping_on_a_commit_conflict_is_restarted_and_named_not_failed(tmp_path):
    said: list[str] = []
    chaos = runner._Run(ChaosOptions(run_dir=tmp_path, lake=True), said.append)
    sink = Role(LAKE_SINKS[0], [sys.executable, "-c", GIVES_UP_ONCE, str(tmp_path / "gave-up")])
    chaos.roles[sink.name] = sink
    try:
        chaos.supervisor.start(sink)
        deadline = time.monotonic() + 30
        while not chaos.supervisor.exited() and time.monotonic() < deadline:
            time.sleep(0.1)
        chaos._restart_crashed()
        assert chaos.result.restarts == 1 and chaos.result.problems == []
        assert chaos.result.checks["lake sinks stopped on a commit conflict, restarted"] == "1"
        assert "Transaction conflict" in chaos.result.checks["stopped on their own, restarted"]
        [(role, process, _restarts)] = chaos.supervisor.children()
        assert role.name == sink.name and process.poll() is None  # the new instance runs on
    finally:
        chaos.supervisor.stop(grace_s=5)
