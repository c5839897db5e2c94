"""``pipeline replay``: planning (no Kafka) and the local run end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline import backfill, catalog, replay
from pipeline.model import decode_envelope


def test_every_vendor_has_bundled_samples():
    assert {vendor for vendor, _path in replay.sample_files()} == {
        "qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica"
    }


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
    assert events == 34


@pytest.mark.parametrize(
    "path, vendor",
    [("zuora/x.json", "zuora"), ("qlik_qrs-results.jsonl", "qlik_qrs"), ("x/informatica.json", "informatica"), ("misc.json", None)],
)
def test_vendor_of_a_file(path, vendor):
    assert replay.vendor_of(Path(path)) == vendor


@pytest.mark.integration
def test_the_local_run_replays_the_samples_and_prints_the_lifecycles():
    """README's main-job command, minus the install."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", "--timeout", "120"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"(\d+) events, (\d+) transitions .*?, (\d+) runs, (\d+) dead letters", result.stdout)
    assert summary, result.stdout
    assert summary.groups() == ("34", "33", "14", "0")
    assert "SUCCEEDED" in result.stdout and "STALE" in result.stdout


def test_replay_usage_errors_exit_2(tmp_path):
    unknown = tmp_path / "notes.json"
    unknown.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "pipeline", "replay", str(unknown)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot tell the vendor" in result.stderr
