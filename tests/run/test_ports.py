"""Issue 35 case 14: no port is picked by binding and closing it. Roles bind a port of their
own choosing and report it (``pipeline/ops/ports.py``); the supervisor fills a role's
``{port:<alias>}`` from another role's report; Tansu, which cannot bind port 0, moves to
another port when the one chosen for it was taken meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker
from pipeline.ops import ports
from pipeline.run.supervisor import Role, Supervisor

PIPELINE = (sys.executable, "-m", "pipeline")


def _wait_for_ports(path: Path, names: set[str], process: subprocess.Popen, timeout: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while not names <= set(found := ports.reported(path)):
        assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() < deadline, f"reported only {found}"
        time.sleep(0.05)
    return found


def test_the_webhook_receiver_binds_its_own_ports_and_reports_them(tmp_path):
    report = tmp_path / "receiver.ports"
    env = {"JOBSTREAM_QLIK_WEBHOOK_SECRET": "a-long-enough-secret", ports.ANY_ENV: "metrics",
           ports.REPORT_ENV: str(report), "JOBSTREAM_BOOTSTRAP": "127.0.0.1:9"}
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    process = subprocess.Popen([*PIPELINE, "ingest", "qlik-cloud", "--listen", "127.0.0.1:0"], env={**base, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found = _wait_for_ports(report, {"listen", "metrics"}, process)
        assert found["listen"] != found["metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{found['metrics']}/metrics", timeout=5) as answer:
            assert answer.status == 200
        with socket.create_connection(("127.0.0.1", found["listen"]), timeout=5):
            pass
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_role_gets_the_port_another_reported_and_a_restart_keeps_it(tmp_path):
    listener = Role("zuora-simulator", [*PIPELINE, "simulate", "zuora", "--port", "{listen:zuora}"],
                    ready_port="listen", listens_as="zuora")
    caller = Role("caller", [sys.executable, "-c",
                             "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('connected', sys.argv[1])",
                             "{port:zuora}"], one_shot=True)
    with Supervisor(tmp_path / "logs", env={}) as supervisor:
        supervisor.start(listener)
        port = supervisor.listen_port("zuora")
        assert port and port == supervisor.ports("zuora-simulator")["listen"]
        supervisor.start(caller)
        deadline = time.monotonic() + 30
        while "connected" not in (tmp_path / "logs" / "caller.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"connected {port}" in (tmp_path / "logs" / "caller.log").read_text()
        supervisor.kill("zuora-simulator")
        supervisor.start(listener)
        assert supervisor.listen_port("zuora") == port


def test_the_embedded_broker_moves_on_when_its_chosen_port_was_taken(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = ports.candidate
    offered = iter([taken.getsockname()[1]])
    choose = lambda host="127.0.0.1": next(offered, None) or real(host)  # noqa: E731 - the taken port first
    monkeypatch.setattr(ports, "candidate", choose)
    monkeypatch.setattr("pipeline.broker.free_port", choose)  # how the broker chose before
    try:
        with EmbeddedBroker() as broker:
            assert broker.port != taken.getsockname()[1]
            assert broker.running
    finally:
        taken.close()


def test_a_port_given_to_the_embedded_broker_is_not_replaced():
    from pipeline.broker import BrokerError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(BrokerError, match="is taken"):
            EmbeddedBroker(port=taken.getsockname()[1]).start()
    finally:
        taken.close()
