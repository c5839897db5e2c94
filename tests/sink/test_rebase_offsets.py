"""Issue 35 case 8 (sink_after_kafka_reset.sh): a sink whose file holds offsets the Kafka it
reads no longer has (Kafka recreated without a volume) refused to start, forever, and no
command re-based them. `pipeline rebase-offsets` does, saying per partition what was lost;
the sink then starts and reads what the new Kafka holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import duckdb
import orjson
import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients
from pipeline.sink.writer import DuckDBWriter
from tests.support.processes import SinkProcess
from tests.support.records import Story

pytestmark = pytest.mark.integration
ENV = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {"COLUMNS": "300"}


async def _send_event(bootstrap: str, story: Story) -> None:
    producer = clients.producer(bootstrap)
    await producer.start()
    try:
        event = story.event("job", "run-1", 1, "RUNNING")
        await producer.send_and_wait(catalog.EVENTS, orjson.dumps(event), key=event["job_key"].encode(), partition=0)
    finally:
        await producer.stop()


def test_offsets_a_recreated_kafka_does_not_hold_are_rebased_and_the_sink_starts(tmp_path):
    db = tmp_path / "jobstream.duckdb"
    writer = DuckDBWriter(db).open()
    writer.connection.execute(
        "INSERT INTO kafka_offsets VALUES (?, 0, 500, now()), (?, 0, 120, now())", [catalog.EVENTS, catalog.RUNS])
    writer.close()
    with EmbeddedBroker(log=tmp_path / "broker.log") as fresh:  # the recreated, empty Kafka
        asyncio.run(catalog.apply(fresh.bootstrap))
        story = Story()
        asyncio.run(_send_event(fresh.bootstrap, story))
        refused = subprocess.run([sys.executable, "-m", "pipeline", "sink", "--db", str(db), "-b", fresh.bootstrap,
                                  "--quack-port", "0"], capture_output=True, text=True, timeout=120, env=ENV)
        assert refused.returncode != 0 and "Kafka no longer has the offsets stored in the database" in refused.stderr

        rebased = subprocess.run([sys.executable, "-m", "pipeline", "rebase-offsets", "--db", str(db), "-b", fresh.bootstrap],
                                 capture_output=True, text=True, timeout=120, env=ENV)
        assert rebased.returncode == 0, rebased.stderr
        lines = rebased.stdout.strip().splitlines()
        assert (f"{catalog.EVENTS}:0: 500 -> 0; Kafka holds less than the file read (0..1, the file was at 500): "
                "a recreated Kafka; what the old one held beyond the file is lost") in lines
        assert lines[-1] == f"{db}: moved 2 of 2 stored offsets to the start of what {fresh.bootstrap} holds"
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute('SELECT topic, next_offset FROM kafka_offsets ORDER BY topic').fetchall() == [
            (catalog.EVENTS, 0), (catalog.RUNS, 0)]
        con.close()

        sink = SinkProcess(fresh.bootstrap, db).start()
        try:  # it starts, and the record the new Kafka holds reaches the file
            sink.wait_for(f"SELECT count(*) FROM job_events WHERE source = '{story.source}'", 1)
        finally:
            assert sink.stop() == 0


def test_a_running_sink_keeps_its_file_and_the_command_says_so(tmp_path, broker):
    db = tmp_path / "held.duckdb"
    DuckDBWriter(db).open().close()
    script = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holding = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holding.stdout.readline().strip() == "held"
        result = subprocess.run([sys.executable, "-m", "pipeline", "rebase-offsets", "--db", str(db), "-b", broker.bootstrap],
                                capture_output=True, text=True, timeout=60, env=ENV)
    finally:
        holding.kill()
        holding.wait()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: cannot open {db}: ") and result.stderr.strip().endswith("stop the sink first")
