"""Issue 35 case 9: every log line starts with its UTC time in ISO 8601, the level and the
format (text or JSON) are settings, and a pull ingestor started without Kafka keeps running
and says so once (before: a 74-line traceback and exit 1 in 0.7 s, although README says
ingestors keep running without Kafka)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import orjson

from pipeline.broker import free_port

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def _ingestor(tmp_path, **env: str) -> subprocess.Popen[str]:
    config = tmp_path / "ingest.toml"
    config.write_text('[zuora]\nbase_url = "http://127.0.0.1:9"\nuser = "u"\nrole = "r"\nclientname = "c"\nsource = "s"\n')
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", "zuora", "--config", str(config), "--bootstrap", f"127.0.0.1:{free_port()}"],
        env={**base, "JOBSTREAM_ZUORA_PASSWORD": "a-password", **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _first_line(process: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    assert line, f"exited with {process.wait(timeout=10)} before saying anything"
    assert time.monotonic() < deadline
    return line.rstrip("\n")


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    return process.returncode, rest


def test_a_pull_ingestor_without_kafka_keeps_running_and_says_it_in_one_utc_stamped_line(tmp_path):
    process = _ingestor(tmp_path)
    try:
        line = _first_line(process)
        assert STAMP.match(line), line
        assert " WARNING pipeline.ingest: Kafka at 127.0.0.1:" in line and "zuora keeps trying (attempt 1, next in 1 s)" in line
        assert process.poll() is None  # still running
    finally:
        code, rest = _stop(process)
    assert code == 0 and "Traceback" not in rest, rest


def test_json_lines_when_asked(tmp_path):
    process = _ingestor(tmp_path, JOBSTREAM_LOG_FORMAT="json")
    try:
        document = orjson.loads(_first_line(process))
    finally:
        _stop(process)
    assert set(document) == {"time", "level", "logger", "message"}
    assert STAMP.match(document["time"] + " ") and document["level"] == "WARNING" and "keeps trying" in document["message"]


def test_a_wrong_log_setting_is_one_line_and_exit_2(tmp_path):
    process = _ingestor(tmp_path, JOBSTREAM_LOG_LEVEL="loud")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert output.strip() == "error: JOBSTREAM_LOG_LEVEL='LOUD': choose one of DEBUG, INFO, WARNING, ERROR"
