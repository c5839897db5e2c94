"""Issue 35 case 6: errors a restart cannot heal. What can be checked is checked before
anything starts (`pipeline run --check` checks and exits); for the rest, the supervisor says
each exit with the role's own error line, and a role failing the same way 5 times in a row
stops the run with that line (before: "sink exited with status 1; restart 4 in 8 s", forever)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ENV = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}


def _config(tmp_path, roles: str, db: str, extra: str = "") -> str:
    config = tmp_path / "jobstream.toml"
    config.write_text(f'[pipeline]\nbootstrap = "127.0.0.1:9"\nrun_state_file = "{tmp_path / "state.json"}"\ndb_path = "{db}"\n{extra}\n'
                      f'[run]\nroles = {roles}\nlog_dir = "{tmp_path / "logs"}"\nrestart_backoff_max_s = 0.2\n')
    return str(config)


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, "COLUMNS": "300", **(env or {})})


def test_check_finds_a_bad_apprise_url_and_an_unusable_database_before_anything_starts(tmp_path):
    config = _config(tmp_path, '["sink", "alerter"]', "/proc/jobstream.duckdb")
    result = _run("--config", config, "--check", env={"JOBSTREAM_ALERT_URLS": "slack://T000/B000/XXXXSECRET json//typo@host"})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert "error: sink: db_path /proc/jobstream.duckdb: the folder /proc is not writable (DuckDB writes a WAL beside the file)" in lines
    assert any(line.startswith("error: alerter: Apprise URL 2 of 2: Apprise cannot use") for line in lines), lines
    assert "XXXXSECRET" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing started


def test_check_says_ok_and_starts_nothing(tmp_path):
    config = _config(tmp_path, '["sink"]', str(tmp_path / "j.duckdb"))
    result = _run("--config", config, "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: configuration OK for sink (nothing started)"
    assert not (tmp_path / "logs").exists()


def test_a_role_failing_the_same_way_five_times_stops_the_run_with_its_line(tmp_path):
    with socket.socket() as taken:  # the sink's Quack port, held by someone else for the whole run
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, '["sink"]', str(tmp_path / "j.duckdb"), f'quack_host = "127.0.0.1"\nquack_port = {port}\n')
        result = _run("--config", config, env={"JOBSTREAM_QUACK_TOKEN": "a-token-for-the-test"})
    assert result.returncode == 1, result.stdout + result.stderr
    reason = f"error: cannot serve live SQL on quack:127.0.0.1:{port}"
    said = [line.split(" INFO ", 1)[1] for line in result.stdout.splitlines()]  # each line: UTC time, level, text
    assert sum(line.startswith(f"sink exited with status 1: {reason}") for line in said) == 4, said
    assert any(line.startswith("sink exited with status 1 5 times in a row with the same error (a restart does not heal it; "
                               f"stopping the run): {reason}") for line in said), said


def test_a_wrong_pipeline_value_does_not_hide_the_roles_checks(tmp_path):
    """Issue 35 case 13: before, a `[pipeline]` error was the only line; the missing
    webhook secret showed only once it was fixed."""
    config = _config(tmp_path, '["sink", "qlik-cloud"]', str(tmp_path / "j.duckdb"), 'stall_after_s = "soon"\n')
    result = _run("--config", config, "--check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("stall_after_s" in line for line in lines), lines
    assert any(line.startswith("error: qlik-cloud: no webhook secret") for line in lines), lines


def test_apprise_urls_can_come_from_a_file_and_are_checked_there(tmp_path):
    """Compose gives the alerter its URLs as a secret file (JOBSTREAM_ALERT_URLS_FILE)."""
    urls = tmp_path / "alert_urls"
    urls.write_text("slack://T000/B000/XXXXSECRET\njson//typo@host\n")
    config = _config(tmp_path, '["alerter"]', str(tmp_path / "j.duckdb"))
    result = _run("--config", config, "--check", env={"JOBSTREAM_ALERT_URLS_FILE": str(urls)})
    assert result.returncode == 2
    assert [line.split(":")[0:3] for line in result.stderr.strip().splitlines()] == [["error", " alerter", " Apprise URL 2 of 2"]]
    assert "XXXXSECRET" not in result.stderr
    missing = _run("--config", config, "--check", env={"JOBSTREAM_ALERT_URLS_FILE": str(tmp_path / "none")})
    assert missing.returncode == 2 and "JOBSTREAM_ALERT_URLS_FILE=" in missing.stderr and "cannot be read" in missing.stderr
    urls.write_text("json://127.0.0.1:9/hook\n")
    assert _run("--config", config, "--check", env={"JOBSTREAM_ALERT_URLS_FILE": str(urls)}).returncode == 0
