import socket

import pytest

from pipeline import broker as broker_module
from pipeline.broker import BrokerError, EmbeddedBroker, free_port, kafka_api_versions


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


def test_a_binary_that_exits_at_once_is_reported(monkeypatch, tmp_path):
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    with pytest.raises(BrokerError, match="exited with status 3"):
        EmbeddedBroker().start()


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
