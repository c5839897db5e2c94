"""Two `pipeline sink --lake` processes in one consumer group, through the real command,
the embedded broker and a real PostgreSQL catalog: a SIGKILL of one while the other goes
on, and partitions moving between them mid-stream, each ending with exactly the rows of a
file sink that was never killed (pipeline/sink/lake.py)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.sink import lake as lake_module
from pipeline.sink.lake import LakeTarget
from tests.support.lake import SESSION_TIMEOUT_S
from tests.support.records import Story, produce
from tests.support.sink_story import EXPECTED, sink_until_complete, story_complete, story_rows, stream_of

pytestmark = pytest.mark.integration

ALL_PARTITIONS = 17  # jobs.events, .transitions, .runs, .alerts: 4 each; jobs.deadletter: 1

BACKLOG = 5000
"""Dead letters of other stories ahead of the test's own in ``jobs.deadletter``, with events
and runs on the other topics, as the session broker holds after the rest of the suite has
run: both sinks then commit rows all the time, in full batches."""


CATCH_UP_S = 300.0
"""How long the sinks may take to reach a test's own records behind that backlog (batches
of 20 on a loaded 2-core machine: a sink alone read 8,880 records in 90 s)."""


def produce_backlog(bootstrap: str) -> None:
    others = [Story() for _ in range(BACKLOG // 50)]
    records = [(catalog.DEADLETTER, Story().dead_letter(n)) for n in range(BACKLOG)]
    records += [record for story in others for record in stream_of(story)[:40]]
    asyncio.run(produce(bootstrap, records))


class LakeSinkProcess:
    """``pipeline sink --lake`` in a subprocess, its output in a log file."""

    def __init__(self, bootstrap: str, target: LakeTarget, group: str, log: Path) -> None:
        self.log = log
        self.args = [sys.executable, "-m", "pipeline", "sink", "--bootstrap", bootstrap, "--lake", target.catalog,
                     "--data-path", target.data_path, "--group", group]
        self.env = os.environ | {"JOBSTREAM_SINK_BATCH_MAX": "20", "JOBSTREAM_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "LakeSinkProcess":
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(self.args, stdout=output, stderr=output, stdin=subprocess.DEVNULL, env=self.env)
        return self

    def owned(self) -> int | None:
        """How many partitions it owned at its latest assignment (None before the first)."""
        found = re.findall(r"sink: owns (\d+) partitions", self.log.read_text(errors="replace")) if self.log.exists() else []
        return int(found[-1]) if found else None

    def wait_until(self, what: str, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                raise RuntimeError(f"the sink exited with {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not happen within {timeout:.0f} s: {self.tail()}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


def wait_for_lake(target: LakeTarget, done, sinks: list[LakeSinkProcess], timeout: float = 90.0) -> None:
    """Poll the lake from a reader of its own until ``done(connection)``."""
    con = lake_module.connect(target, read_only=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if done(con):
                return
            for sink in sinks:
                if sink.process.poll() is not None:
                    raise RuntimeError(f"a sink exited with {sink.process.returncode}: {sink.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError("the lake did not get the rows: " + " | ".join(s.tail() for s in sinks))
            time.sleep(0.2)
    finally:
        con.close()


def lake_story(target: LakeTarget, story: Story) -> dict:
    con = lake_module.connect(target, read_only=True)
    try:
        return story_rows(con, story)
    finally:
        con.close()


def test_sigkill_of_one_lake_sink_of_two_while_the_other_goes_on(broker, lake, tmp_path):
    produce_backlog(broker.bootstrap)
    story = Story()
    records = stream_of(story)
    half = len(records) // 2
    group = f"lake-kill-{uuid.uuid4().hex[:8]}"
    first = LakeSinkProcess(broker.bootstrap, lake, group, tmp_path / "first.log").start()
    second = LakeSinkProcess(broker.bootstrap, lake, group, tmp_path / "second.log")
    try:
        first.wait_until("the first sink owning every partition", lambda: first.owned() == ALL_PARTITIONS)
        second.start()
        second.wait_until("the group split between the two", lambda: (second.owned() or 0) > 0 and first.owned() < ALL_PARTITIONS)
        asyncio.run(produce(broker.bootstrap, records[:half]))
        events = f"SELECT count(*) FROM job_events WHERE source = '{story.source}'"
        wait_for_lake(lake, lambda con: con.execute(events).fetchone()[0] > 0, [first, second], timeout=CATCH_UP_S)
        first.kill()  # SIGKILL, its partitions mid-stream
        assert first.process.returncode == -9
        asyncio.run(produce(broker.bootstrap, records[half:]))  # the group goes on without it
        second.wait_until("the survivor taking every partition", lambda: second.owned() == ALL_PARTITIONS)
        wait_for_lake(lake, lambda con: story_complete(con, story), [second], timeout=CATCH_UP_S)
    finally:
        if first.process is not None:
            first.stop()
        if second.process is not None:
            assert second.stop() == 0, second.tail()
    killed = lake_story(lake, story)
    clean = asyncio.run(sink_until_complete(broker.bootstrap, tmp_path / "clean.duckdb", story))
    assert killed == clean
    assert {t: len(killed[t]) for t in EXPECTED} == EXPECTED
    assert "stopped after" in second.tail()


def test_partitions_moving_between_sinks_mid_stream_leave_no_row_twice_and_the_highest_run_versions(broker, lake, tmp_path):
    """A second sink joins while the first is writing (its partitions are revoked with a
    batch in flight and one being built), then the first leaves (SIGTERM: they move back)."""
    stories = [Story() for _ in range(6)]
    group = f"lake-move-{uuid.uuid4().hex[:8]}"
    first = LakeSinkProcess(broker.bootstrap, lake, group, tmp_path / "first.log").start()
    second = LakeSinkProcess(broker.bootstrap, lake, group, tmp_path / "second.log")
    try:
        first.wait_until("the first sink owning every partition", lambda: first.owned() == ALL_PARTITIONS)
        asyncio.run(produce(broker.bootstrap, stream_of(stories[0]) + stream_of(stories[1])))
        second.start()  # joins while the first writes stories 0-1 in batches of 20
        asyncio.run(produce(broker.bootstrap, stream_of(stories[2]) + stream_of(stories[3])))
        second.wait_until("the group split between the two", lambda: (second.owned() or 0) > 0 and first.owned() < ALL_PARTITIONS)
        asyncio.run(produce(broker.bootstrap, stream_of(stories[4])))
        assert first.stop() == 0, first.tail()  # leaves the group: its partitions move to the second
        asyncio.run(produce(broker.bootstrap, stream_of(stories[5])))
        second.wait_until("the second sink taking every partition", lambda: second.owned() == ALL_PARTITIONS)
        wait_for_lake(lake, lambda con: all(story_complete(con, s) for s in stories), [second], timeout=CATCH_UP_S)
    finally:
        first.stop()
        if second.process is not None:
            assert second.stop() == 0, second.tail()
    con = lake_module.connect(lake, read_only=True)
    try:
        for table, key in (("job_events", "event_id"), ("job_transitions", "transition_id"), ("job_runs", "run_key"),
                           ("dead_letters", "dead_letter_id"), ("alerts", "alert_id")):
            assert con.execute(f"SELECT count(*) - count(DISTINCT {key}) FROM {table}").fetchone()[0] == 0, table
        sources = [s.source for s in stories]
        assert con.execute("SELECT count(*) FROM job_runs WHERE source IN (SELECT unnest(?)) AND version <> 5", [sources]).fetchone()[0] == 0
    finally:
        con.close()
    for story in stories:
        clean = asyncio.run(sink_until_complete(broker.bootstrap, tmp_path / f"clean-{story.source}.duckdb", story))
        assert lake_story(lake, story) == clean
    assert "stopped after" in first.tail() and "stopped after" in second.tail()
