"""``pipeline run``: one checked configuration (file < env < flags, secrets refused in the
file), then the roles as child processes on a broker: rows reach DuckDB, a role killed
with SIGKILL is restarted, SIGTERM stops everything and leaves nothing running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.ops import ports
from pipeline.run import production
from pipeline.vendors import registry

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "JOBSTREAM_ALERT_URLS": "json://127.0.0.1:9/hook", "JOBSTREAM_TRUENAS_API_KEY": "1-test-key",
    # every pull vendor's secrets, as its settings name them (JOBSTREAM_ZUORA_PASSWORD ...)
    **{f"JOBSTREAM_{vendor.name.upper()}_{secret.upper()}": f"{vendor.name}-test-secret"
       for vendor in registry.of_kind("pull") if vendor.settings for secret in registry.load(vendor.settings).SECRETS},
}


def test_the_example_file_loads_and_validates(tmp_path):
    """Its files (/etc/jobstream/...) are checked before anything starts: here they come
    from the environment, which wins over the file."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("jobstream-client")
    ca.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client_key.pem"))
    files = {"JOBSTREAM_QLIK_QRS_CERT_FILE": str(tmp_path / "client.pem"), "JOBSTREAM_QLIK_QRS_KEY_FILE": str(tmp_path / "client_key.pem"),
             "JOBSTREAM_QLIK_QRS_CA_FILE": str(tmp_path / "root.pem"), "JOBSTREAM_QLIK_WEBHOOK_SECRET": "webhook-secret-16-chars+",
             "JOBSTREAM_DB_PATH": str(tmp_path / "jobstream.duckdb")}  # its folder is checked too
    plan = production.load_plan(ROOT / "jobstream.example.toml", [], {}, env={**SECRETS, **files})
    assert [r.name for r in plan.roles] == list(production.ROLE_NAMES)
    assert plan.settings.bootstrap == "kafka-1.example.com:9092,kafka-2.example.com:9092"
    assert [r.env["JOBSTREAM_METRICS_PORT"] for r in plan.roles] == [str(9100 + i) for i in range(len(plan.roles))]
    assert plan.env["JOBSTREAM_STALE_AFTER_ZUORA"] == "300" and plan.env["JOBSTREAM_STORE"] == "rocksdb://"


def test_flags_win_over_env_which_wins_over_the_file(tmp_path):
    config = tmp_path / "j.toml"
    config.write_text('[pipeline]\nbootstrap = "file:1"\napp_id = "from-file"\nstore = "memory://"\n[run]\nroles = ["worker"]\n')
    plan = production.load_plan(config, [], {"bootstrap": "flag:3"}, env={"JOBSTREAM_BOOTSTRAP": "env:2", "JOBSTREAM_APP_ID": "from-env"})
    assert plan.settings.bootstrap == "flag:3" and plan.settings.app_id == "from-env" and plan.settings.store == "memory://"
    assert plan.env["JOBSTREAM_BOOTSTRAP"] == "flag:3" and plan.env["JOBSTREAM_APP_ID"] == "from-env"
    assert plan.env["JOBSTREAM_STORE"] == "memory://"


def test_every_problem_is_one_line_and_secrets_in_the_file_are_refused(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[pipeline]\nstore = "s3://"\ntruenas_api_key = "sekrit-key"\npartitions = "many"\ncolour = "blue"\n'
        '[run]\nroles = ["worker", "zuora", "mailman"]\n'
        '[zuora]\nbase_url = "https://z.example.com"\nuser = "u"\nrole = "r"\nclientname = "c"\nsource = "s"\npassword = "sekrit-pw"\n'
    )
    result = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr
    text = result.stderr
    assert "truenas_api_key: secrets are not read from the config file" in text
    assert "[zuora] password: secrets are not read from the config file" in text
    assert f"[pipeline] partitions = 'many' in {config}: not a valid int" in text and "colour: unknown setting" in text
    assert f"[pipeline] store = 's3://' in {config}: unknown table store" in text, "every problem, not the first ones"
    assert "unknown role 'mailman'" in text
    assert "sekrit" not in result.stdout + result.stderr
    assert len(lines) == 6, text


def test_every_selected_roles_own_files_are_checked_before_anything_starts(tmp_path):
    config = tmp_path / "roles.toml"
    config.write_text(
        '[run]\nroles = ["qlik-cloud", "truenas", "qlik-qrs"]\n[qlik_cloud]\n[truenas]\nurl = "wss://nas/api/current"\n'
        f'[qlik_qrs]\nbase_url = "https://qrs:4242"\nsource = "qrs"\ncert_file = "{tmp_path / "no.pem"}"\nkey_file = "{tmp_path / "no.key"}"\n'
    )
    env = {"JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE": str(tmp_path / "no-secret"),
           "JOBSTREAM_TRUENAS_API_KEY_FILE": str(tmp_path / "no-key")}
    with pytest.raises(production.RunConfigError) as caught:
        production.load_plan(config, [], {}, env=env)
    lines = caught.value.lines
    assert any(line.startswith("qlik-cloud: JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE=") and "cannot be read" in line for line in lines), lines
    assert any(line.startswith("truenas: JOBSTREAM_TRUENAS_API_KEY_FILE=") for line in lines), lines
    assert any(line.startswith("[qlik_qrs] cannot load the client certificate") for line in lines), lines
    assert len(lines) == 3, lines


def test_a_role_that_exits_with_a_configuration_error_stops_the_run(tmp_path):
    failing = production.Role("zuora", [sys.executable, "-c", "import sys; print('error: [zuora] user is required'); sys.exit(2)"],
                              env={"JOBSTREAM_METRICS_PORT": "0"})
    sleeper = production.Role("worker", [sys.executable, "-c", "import time; time.sleep(60)"], env={"JOBSTREAM_METRICS_PORT": "0"})
    settings = production.Settings(run_state_file=tmp_path / "state.json")
    plan = production.RunPlan(settings=settings, options=production.RunOptions(log_dir=tmp_path / "logs"),
                              roles=(sleeper, failing), env=dict(os.environ))
    said: list[str] = []
    assert production.run(plan, say=said.append, tick_s=0.1) == 2
    assert "zuora exited with status 2 (a configuration error; not restarted): error: [zuora] user is required" in said
    assert not any("restart" in line and "not restarted" not in line for line in said), said
    assert said[-1].startswith("stopped: ")


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _wait(predicate, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"pipeline run exited with {process.returncode}: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s; {log.read_text()[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.integration
def test_run_worker_sink_and_an_ingestor_restarts_a_killed_role_and_stops_clean(tmp_path):
    """On a broker of its own (a second worker group on the session broker would re-emit
    every other test's raw records onto the shared jobs.* topics)."""
    broker = EmbeddedBroker(log=tmp_path / "broker.log").start()
    simulator = run = None
    try:
        asyncio.run(catalog.apply(broker.bootstrap))
        reported = tmp_path / "simulator.ports"
        simulator = subprocess.Popen([sys.executable, "-m", "pipeline", "simulate", "qlik-qrs", "--port", "0",
                                      "--clock-factor", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, ports.REPORT_ENV: str(reported)})
        sim_port = _wait(lambda: ports.reported(reported).get("listen"), 30, "the simulator reported no port", simulator, reported)
        db, state_file, log = tmp_path / "run.duckdb", tmp_path / "state.json", tmp_path / "run.log"
        config = tmp_path / "jobstream.toml"
        config.write_text(
            f'[pipeline]\nstore = "memory://"\ntansu = true\napp_id = "run-test"\ndatadir = "{tmp_path / "worker"}"\n'
            f'db_path = "{db}"\nquack_port = 0\n\n[run]\nroles = ["worker", "sink", "qlik-qrs"]\nlog_dir = "{tmp_path / "logs"}"\n\n'
            f'[qlik_qrs]\nbase_url = "http://127.0.0.1:{sim_port}"\nsource = "run-test"\npoll_interval_s = 0.5\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
        with open(log, "wb") as output:
            run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--bootstrap", broker.bootstrap, "--config",
                                    str(config), "--state-file", str(state_file)], stdout=output, stderr=subprocess.STDOUT, env=env)
        # each role binds its metrics port itself and reports it: the state file shows it then
        state = _wait(lambda: (roles := _state(state_file).get("roles")) and all(r["metrics_port"] for r in roles.values())
                      and roles, 60, "no state file with every role's metrics port", run, log)
        assert set(state) == {"worker", "sink", "qlik-qrs"}
        sink_port = state["sink"]["metrics_port"]

        def sink_rows() -> float:
            import urllib.request

            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/metrics", timeout=2).read().decode()
            except OSError:
                return 0
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith('jobstream_rows_written_total{role="sink",table="job_events"}'))

        _wait(lambda: sink_rows() > 0, 120, "no event reached the sink", run, log)
        status = subprocess.run([sys.executable, "-m", "pipeline", "status", "--bootstrap", broker.bootstrap,
                                 "--state-file", str(state_file)], capture_output=True, text=True, timeout=60, env=env)
        assert "pipeline run (pid" in status.stdout and "raw.qlik_qrs:" in status.stdout, status.stdout + status.stderr
        assert str(db) in status.stdout, "status looks for the sink the run's own file configured: " + status.stdout

        old_pid = state["worker"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        restarted = _wait(lambda: (r := _state(state_file).get("roles", {}).get("worker")) and r["restarts"] == 1
                          and r["state"] == "running" and r, 60, "the worker was not restarted", run, log)
        assert restarted["pid"] != old_pid and restarted["last_exit"] == -9 and _alive(restarted["pid"])
        pids = [r["pid"] for r in _state(state_file)["roles"].values()]

        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, log.read_text()[-3000:]  # a requested stop
        assert not any(_alive(pid) for pid in pids)
        assert not state_file.exists()
        con = duckdb.connect(str(db), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM job_events WHERE vendor = 'qlik_qrs'").fetchone()[0] > 0
        finally:
            con.close()
    finally:
        for process in (run, simulator):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        broker.stop()
