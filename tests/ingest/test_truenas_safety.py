"""Issue 35 case 10: TrueNAS revokes an API key used over an unencrypted connection, so
`pipeline ingest truenas` refuses ws:// to another host (before: accepted for any host), and
warns about a key of root's and a certificate it does not verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pipeline.broker import free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {
    "JOBSTREAM_TRUENAS_API_KEY": "1-a-test-api-key", "COLUMNS": "300"}


def test_plain_ws_to_another_host_is_refused_before_the_key_is_sent():
    result = subprocess.run([sys.executable, "-m", "pipeline", "ingest", "truenas", "--url", "ws://nas.example.com/api/current",
                             "--bootstrap", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --url 'ws://nas.example.com/api/current': TrueNAS revokes an API key sent over an unencrypted connection; "
        "use wss://, or pass --allow-plain-ws (allow_plain_ws = true) when a TLS tunnel carries it")


def test_root_and_an_unverified_certificate_are_warned_about():
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "ingest", "truenas", "--url", "wss://127.0.0.1:9/api/current",
                                "--insecure", "--bootstrap", f"127.0.0.1:{free_port()}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    said: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while sum("WARNING" in line for line in said) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"exited with {process.poll()}: {said}"
            said.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    text = "".join(said)
    assert "WARNING the API key belongs to root: give the ingestor a read-only admin user of its own" in text
    assert "WARNING the NAS's TLS certificate is not verified (--insecure, insecure = true)" in text
