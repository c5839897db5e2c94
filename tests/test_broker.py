import os
import socket
import subprocess
import sys

import pytest

from pipeline import broker as broker_module
from pipeline.broker import BrokerError, EmbeddedBroker, free_port
from pipeline.kafka.probes import kafka_api_versions, kafka_cluster_id


def test_embedded_broker_starts_answers_kafka_and_stops():
    with EmbeddedBroker() as embedded:
        assert embedded.running
        assert kafka_api_versions(embedded.host, embedded.port)
    assert not embedded.running
    assert not kafka_api_versions(embedded.host, embedded.port, timeout=0.2)


def test_probe_is_false_for_a_port_with_no_kafka():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        server.close()
    assert not kafka_api_versions("127.0.0.1", port, timeout=0.2)


def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match="no Tansu binary found"):
        EmbeddedBroker().start()


def test_a_binary_that_exits_at_once_is_reported_with_its_last_words(monkeypatch, tmp_path):
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho starting\necho 'error: invalid storage engine' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    with pytest.raises(BrokerError, match="exited with status 3.*Tansu said: starting | error: invalid storage engine"):
        EmbeddedBroker().start()


def test_a_port_answered_by_another_kafka_is_refused_before_starting(broker):
    """Issue 27.1: the other Kafka is the session broker; nothing is created on it."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "broker", "--port", str(broker.port)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""  # no "topics: 9 created", no export hint
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: port {broker.port} on 127.0.0.1 is taken: a Kafka (cluster id {broker.cluster_id}) "
        "already answers there; choose another --port"
    )


def test_a_kafka_that_is_not_our_child_is_never_taken_for_it(broker, monkeypatch):
    """Should the port be taken between the check and Tansu's bind, the answer from the
    other Kafka (another cluster id) is refused instead of reported ready."""
    monkeypatch.setattr(broker_module, "port_is_free", lambda host, port: True)
    embedded = EmbeddedBroker(port=broker.port)
    with pytest.raises(BrokerError, match=rf"(another Kafka \(cluster id {broker.cluster_id}\)|Tansu exited with status)"):
        embedded.start()
    assert not embedded.running
    assert kafka_cluster_id(broker.host, broker.port) == broker.cluster_id


def test_an_unwritable_home_is_one_line_not_a_traceback():
    env = {k: v for k, v in os.environ.items() if k != "CALF_TANSU_BIN"}
    env["HOME"] = "/proc/no-such-home"  # cannot be created, even by root
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "broker"], capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot unpack the Tansu binary into /proc/no-such-home")
    assert len(result.stderr.strip().splitlines()) == 1


def test_stop_is_idempotent_and_free_port_is_bindable():
    embedded = EmbeddedBroker(port=free_port())
    embedded.stop()
    embedded.start().stop()
    embedded.stop()
    assert broker_module.find_tansu()


def test_the_broker_does_not_outlive_pipeline_broker_on_sigterm_or_sigkill():
    import re
    import signal
    import subprocess
    import sys
    import time

    for stop in (signal.SIGTERM, signal.SIGKILL):
        port = free_port()
        command = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "broker", "--port", str(port), "--no-topics"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = command.stdout.readline()
        assert re.search(rf"broker ready at 127.0.0.1:{port}", line), line
        assert kafka_api_versions("127.0.0.1", port)
        command.send_signal(stop)
        command.wait(timeout=30)
        deadline = time.monotonic() + 10
        while kafka_api_versions("127.0.0.1", port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not kafka_api_versions("127.0.0.1", port, timeout=0.2), f"Tansu still answers after {stop.name}"
