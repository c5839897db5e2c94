"""``pipeline replay``: planning (no Kafka) and the local run end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline import backfill, catalog, replay, vendors
from pipeline.model import decode_envelope


def test_every_vendor_has_bundled_samples():
    assert {vendor for vendor, _path in replay.sample_files()} == set(vendors.VENDOR_NAMES)


def test_the_samples_give_keyed_records_and_the_expected_event_count():
    clock = backfill.EnvelopeClock(replay.SAMPLES_RECEIVED_AT, timedelta(seconds=10))
    events = 0
    for vendor, path in replay.sample_files():
        for document in backfill.read_documents(path):
            for record in backfill.records_of(vendor, document, where=str(path), source="t", received_at=clock.next()):
                assert isinstance(record, backfill.RawRecord), record
                envelope = decode_envelope(record.value)
                assert record.topic == catalog.raw_topic(envelope.vendor)
                assert record.key.decode().startswith(f"{envelope.vendor}:")
                events += record.events
    assert events == 34 + 61  # the first five vendors' samples, then Airflow's (its package's samples/)


@pytest.mark.parametrize(
    "path, vendor",
    [("zuora/x.json", "zuora"), ("qlik_qrs-results.jsonl", "qlik_qrs"), ("x/informatica.json", "informatica"), ("misc.json", None)],
)
def test_vendor_of_a_file(path, vendor):
    assert replay.vendor_of(Path(path)) == vendor


@pytest.mark.integration
def test_the_local_run_replays_the_samples_and_prints_the_lifecycles(tmp_path):
    """README's main-job command, minus the install. The operator's JOBSTREAM_PARTITIONS
    (for their Kafka) killed the embedded worker with exit 70 (issue 27.4); every run
    left /tmp/jobstream-* folders behind (27.5)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "COLUMNS": "120", "JOBSTREAM_PARTITIONS": "2", "TMPDIR": str(scratch)}
    env.pop("JOBSTREAM_BOOTSTRAP", None)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--timeout", "120"],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(scratch.iterdir()) == []
    summary = re.search(r"(\d+) events, (\d+) transitions .*?, (\d+) runs, (\d+) dead letters", result.stdout)
    assert summary, result.stdout
    # The first five vendors' samples give 34 events, 32 transitions (a Zuora token that Zuora itself
    # reports stale is one episode, not a timeout one too: issue 26) and 14 runs; Airflow's 61, 60 and 19.
    assert summary.groups() == ("95", "92", "33", "0")
    # The Zuora token that went stale and came back: one stale episode, one reactivation.
    assert re.search(r"zuora\s+│ 7d3c1a20-5b6e │ SUCCEEDED │ 1\s+│ 1\s+│ 1\s+│", result.stdout), result.stdout


def test_replay_usage_errors_exit_2(tmp_path):
    unknown = tmp_path / "notes.json"
    unknown.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "pipeline", "replay", str(unknown)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot tell the vendor" in result.stderr


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: their command lines, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_killed_local_run_leaves_no_worker_or_broker_behind(tmp_path):
    """Issue 27.5: a SIGKILLed replay left its worker retrying a dead broker forever."""
    import signal
    import time

    # its scratch folder cannot be removed by a SIGKILLed process: keep it in tmp_path
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}, "TMPDIR": str(tmp_path)}
    command = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "replay", "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        assert command.stdout.readline().startswith("embedded broker at"), "no broker line"
        deadline = time.monotonic() + 60
        children: dict[int, str] = {}
        while time.monotonic() < deadline and not any(" worker " in c for c in children.values()):
            children = _children(command.pid)
            time.sleep(0.05)
        assert any(" worker " in c for c in children.values()), children
        assert any("tansu" in c for c in children.values()), children
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [children[pid] for pid in children if _alive(pid)]
    # the next local run removes the killed one's scratch folder
    assert [p.name.split("-")[2] for p in tmp_path.glob("jobstream-replay-*")] == [str(command.pid)]
    bad = tmp_path / "truenas-bad.jsonl"
    bad.write_text('{"jsonrpc": "2.0", "error": {"code": 1}}\n')
    subprocess.run([sys.executable, "-m", "pipeline", "replay", str(bad)], capture_output=True, timeout=120, env=env)
    assert list(tmp_path.glob("jobstream-replay-*")) == []


@pytest.mark.integration
def test_a_local_run_with_no_event_to_expect_is_not_a_success(tmp_path):
    """Issue 27.3: 0 raw messages, exit 0."""
    bad = tmp_path / "truenas-bad.jsonl"
    bad.write_text('{"jsonrpc": "2.0", "error": {"code": 1}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", str(bad)], capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith(f"rejected {bad} line 1: ")
    assert result.stderr.splitlines()[-1] == "error: nothing to replay: the documents give no job event"
