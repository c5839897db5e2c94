import subprocess
import sys
import time

from typer.testing import CliRunner

from pipeline.broker import free_port
from pipeline.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("topics", "normalize", "worker", "broker"):
        assert command in result.output


def test_topics_apply_against_an_unreachable_broker_is_one_line_and_bounded():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "topics", "apply", "--bootstrap", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:")


def test_bad_environment_is_a_usage_error():
    result = runner.invoke(app, ["topics", "apply"], env={"JOBSTREAM_PARTITIONS": "x"})
    assert result.exit_code == 2
    assert "JOBSTREAM_PARTITIONS" in result.output


def test_worker_against_an_unreachable_broker_is_one_line():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker", "--bootstrap", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot reach Kafka at 127.0.0.1:{port} (no broker answered within 5 s)"


def test_a_bad_time_zone_flag_or_setting_is_a_usage_error_not_a_traceback():
    for env, args in (({"JOBSTREAM_BATCH_MAX": "x"}, ["--tz", "UTC"]), ({}, ["--tz", "Etc"])):
        result = runner.invoke(app, ["normalize", "--vendor", "zuora", *args, "/dev/null"], env=env)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
