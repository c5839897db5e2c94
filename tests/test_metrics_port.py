"""Issue 35 case 4: a role whose metrics port is taken says so in one line and exits 2 at
its start. Before, the bind error died inside a task nobody awaited: the sink, the alerter
and the ingestors ran on without metrics and without the broker watch (so never exited 69
when Kafka was lost), and the worker crashed with a traceback."""

from __future__ import annotations

import socket

import pytest

from tests.support.processes import pipeline as run_pipeline

ZUORA = '[zuora]\nbase_url = "http://127.0.0.1:9"\nuser = "u"\nrole = "r"\nclientname = "c"\nsource = "s"\n'


@pytest.fixture
def taken_port():
    """A port another program listens on, for as long as the test runs."""
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        yield squatter.getsockname()[1]


@pytest.mark.parametrize("role", ["worker", "sink", "alert", "ingest zuora"])
def test_a_taken_metrics_port_is_one_line_and_exit_2_at_start(role, broker, taken_port, tmp_path):
    config = tmp_path / "zuora.toml"
    config.write_text(ZUORA)
    extra = {
        "worker": ["--store", "memory://", "--datadir", str(tmp_path / "w"), "--tansu"],
        "sink": ["--db", str(tmp_path / "j.duckdb"), "--quack-port", "0"],
        "alert": [],
        "ingest zuora": ["--config", str(config)],
    }[role]
    result = run_pipeline(*role.split(), "--bootstrap", broker.bootstrap, "--metrics-port", str(taken_port), *extra,
                          env={"JOBSTREAM_ZUORA_PASSWORD": "zuora-password", "JOBSTREAM_ALERT_URLS": "json://127.0.0.1:9/hook"},
                          timeout=60)
    lines = [line for line in result.stderr.splitlines() if "metrics" in line]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and f"cannot serve metrics on 127.0.0.1:{taken_port}" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
