"""Issue 35 case 3: ``pipeline ingest qlik-cloud`` fails closed. The real command, probed as
the review's slowloris.py and webhook_probe.py did: no start without a secret, slow clients
cut off (headers and body), connections and each client's rate bounded, an event dated years
ago refused, refusals counted by reason in /metrics and logged at a bounded rate."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.model import UTC
from pipeline.ops import ports
from pipeline.vendors.qlik_cloud.ingest import signature

pytestmark = pytest.mark.integration
SECRET = "a-webhook-secret-for-the-test"


class Receiver:
    """``pipeline ingest qlik-cloud`` as a child, its listen and metrics ports as it reports them."""

    def __init__(self, tmp_path: Path, bootstrap: str, *flags: str) -> None:
        report = tmp_path / "receiver.ports"
        self.log = tmp_path / "receiver.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {
            "JOBSTREAM_QLIK_WEBHOOK_SECRET": SECRET, ports.ANY_ENV: "metrics", ports.REPORT_ENV: str(report)}
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "ingest", "qlik-cloud", "--listen", "127.0.0.1:0", "--bootstrap", bootstrap,
                 *flags], stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while not {"listen", "metrics"} <= set(found := ports.reported(report)):
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.port, self.metrics_port = found["listen"], found["metrics"]

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            return connection.getresponse().status
        finally:
            connection.close()

    def refusals(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return {sample.labels["reason"]: sample.value for family in text_string_to_metric_families(text)
                if family.name == "jobstream_webhook_refusals" for sample in family.samples if sample.name.endswith("_total")}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _event(at: datetime) -> bytes:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps({"specversion": "1.0", "id": f"ce-{stamp}", "source": "com.qlik/engine", "type": "com.qlik.v1.reload.finished",
                         "time": stamp, "tenantid": "probe-tenant",
                         "data": {"id": f"r-{stamp}", "appId": "app-probe", "status": "FAILED", "startTime": stamp, "endTime": stamp}})


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_without_a_secret_the_receiver_does_not_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "pipeline", "ingest", "qlik-cloud", "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: no webhook secret: set JOBSTREAM_QLIK_WEBHOOK_SECRET or JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE (the secret of "
        "the webhook in Qlik Cloud), or pass --no-signature for a local test"]


def test_slow_clients_are_cut_off_and_connections_are_bounded(tmp_path, broker):
    receiver = Receiver(tmp_path, broker.bootstrap, "--header-timeout", "1", "--body-timeout", "1", "--max-connections", "20")
    held: list[socket.socket] = []
    try:
        for _ in range(30):  # slowloris.py: a request line and some headers, never their end
            sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            held.append(sock)
        deadline = time.monotonic() + 10  # before: still open after 60 s
        assert all(_closed_by_server(sock, deadline) for sock in held)
        stalled = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
        held.append(stalled)
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        stalled.settimeout(10)
        assert stalled.recv(200).startswith(b"HTTP/1.1 408")  # a body that never arrives
        refusals = receiver.refusals()
        assert refusals["too_many_connections"] >= 10 and refusals["slow_body"] == 1
        assert receiver.post(_event(datetime.now(UTC)), {"Content-Type": "application/json",
                                                         "Qlik-Signature": signature(SECRET, _event(datetime.now(UTC)))}) == 200
    finally:
        for sock in held:
            sock.close()
        receiver.stop()


def test_old_events_floods_and_refusals_are_refused_counted_and_said_at_a_bounded_rate(tmp_path, broker):
    receiver = Receiver(tmp_path, broker.bootstrap, "--rate-per-client", "5")
    try:
        old = _event(datetime(2019, 1, 1, tzinfo=UTC))
        assert receiver.post(old, {"Content-Type": "application/json", "Qlik-Signature": signature(SECRET, old)}) == 422
        fresh = _event(datetime.now(UTC) - timedelta(minutes=5))
        statuses = [receiver.post(fresh, {"Content-Type": "application/json"}) for _ in range(300)]  # unsigned
        assert set(statuses) == {401, 429} and statuses[:9] == [401] * 9  # a burst of 10, one taken by the old event
        refusals = receiver.refusals()
        assert refusals["too_old"] == 1 and refusals["unsigned"] + refusals["rate_limited"] == 300
        assert refusals["rate_limited"] > 0
    finally:
        receiver.stop()
    said = [line for line in receiver.log.read_text().splitlines() if "refused a delivery" in line]
    assert 3 <= len(said) <= 6, said  # one line per reason every 10 s, not one per request (before: 300)


def test_behind_a_proxy_on_this_machine_each_forwarded_client_has_its_own_rate():
    from pipeline.vendors.qlik_cloud.guard import client_of

    assert client_of("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert client_of("127.0.0.1", "198.51.100.1, 203.0.113.7") == "203.0.113.7"  # the entry the proxy added
    assert client_of("203.0.113.9", "127.0.0.1") == "203.0.113.9"  # not from a local proxy: not trusted
    assert client_of("127.0.0.1", None) == "127.0.0.1"
