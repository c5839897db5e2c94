"""Issue 35 case 11: a requested stop. ``pipeline run`` exits 0 on SIGTERM (systemd marked
every stop failed on 143), every role is stopped at once within one deadline (one at a time,
eight roles with 20 s grace each took up to 160 s, beyond systemd's 90 s), and the service
examples give the roles more time than their own grace."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.run import production
from pipeline.run.supervisor import Role, Supervisor

ROOT = Path(__file__).resolve().parents[2]
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring SIGTERM', flush=True); "
            "time.sleep(600)")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_roles_are_stopped_at_once_within_one_deadline(tmp_path):
    logs = tmp_path / "logs"
    supervisor = Supervisor(logs, env=dict(os.environ))
    names = [f"stubborn-{n}" for n in range(3)]
    for name in names:
        supervisor.start(Role(name, [sys.executable, "-c", STUBBORN]))
    for name in names:
        _wait(lambda: "ignoring" in (logs / f"{name}.log").read_text(), 30, f"{name} did not start")
    began = time.monotonic()
    statuses = supervisor.stop(grace_s=2)
    took = time.monotonic() - began
    assert statuses == {name: -signal.SIGKILL for name in reversed(names)}
    assert took < 4, f"stopping took {took:.1f} s: one grace period for all, not one each (6 s)"


def test_sigterm_stops_pipeline_run_with_exit_0(tmp_path):
    state_file = tmp_path / "state.json"
    config = tmp_path / "jobstream.toml"
    config.write_text(f'[pipeline]\nbootstrap = "127.0.0.1:9"\nrun_state_file = "{state_file}"\n\n'
                      f'[run]\nroles = ["qlik-cloud"]\nlog_dir = "{tmp_path / "logs"}"\n\n[qlik_cloud]\nlisten = "127.0.0.1:0"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {
        "JOBSTREAM_QLIK_WEBHOOK_SECRET": "a-webhook-secret-for-the-test"}
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(config)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: state_file.exists() and json.loads(state_file.read_text())["roles"]["qlik-cloud"]["state"] == "running",
              60, "the run did not start its role")
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output
    assert "stopping (SIGTERM) ..." in output and "Traceback" not in output


def test_the_service_examples_give_the_roles_more_than_their_own_grace():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker_grace_s = 15  # pipeline/stream/app.py SHUTDOWN_GRACE_S
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("jobstream") and service.get("restart") != "no":  # not the one-shots
            grace = service.get("stop_grace_period", "10s")
            seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
            assert seconds > worker_grace_s, f"{name}: stop_grace_period {grace} (compose's default 10 s cuts the worker's 15 s)"
    unit = (ROOT / "deploy" / "systemd" / "jobstream.service").read_text()
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    assert production.STOP_GRACE_S < timeout <= 90
    assert re.search(r"^ExecStart=.*pipeline run --config \S+$", unit, re.M)
    assert re.search(r"^RestartPreventExitStatus=2$", unit, re.M)


def test_a_second_run_on_the_same_configuration_is_refused_with_one_line(tmp_path):
    """Issue 35 case 7 (second_run.sh): before, the second supervisor started, shared the
    state file (deleted by the first to stop) and its sink crash-looped."""
    state_file = tmp_path / "state.json"
    config = tmp_path / "jobstream.toml"
    config.write_text(f'[pipeline]\nbootstrap = "127.0.0.1:9"\nrun_state_file = "{state_file}"\n\n'
                      f'[run]\nroles = ["qlik-cloud"]\nlog_dir = "{tmp_path / "logs"}"\n\n[qlik_cloud]\nlisten = "127.0.0.1:0"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {
        "JOBSTREAM_QLIK_WEBHOOK_SECRET": "a-webhook-secret-for-the-test"}
    first = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: state_file.exists(), 60, "the first run wrote no state file")
        second = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(config)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and second.stdout == ""
        assert second.stderr.strip().splitlines() == [
            f"error: another `pipeline run` (pid {first.pid}) is running with the state file {state_file}: "
            "stop it first, or give this run its own run_state_file"]
        assert json.loads(state_file.read_text())["supervisor_pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
