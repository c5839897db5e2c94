"""The sink's loop does not hold rows back for a batch to fill: a record that reaches an
idle sink is committed without more records coming after it."""

from __future__ import annotations

import asyncio

import pytest

from pipeline import catalog
from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration


async def commits_until(bootstrap: str, writer: DuckDBWriter, settings: Settings, wanted: set[str], then=None) -> list[int]:
    """Run the loop until the rows of ``wanted`` event ids are committed; returns each
    commit's record count from the first commit that held one of them."""
    stop = asyncio.Event()
    sizes: list[int] = []
    seen: set[str] = set()

    def committed(batch) -> None:
        events = batch.tables.get("job_events")
        ids = set(events.column("value").to_pylist()) if events is not None else set()
        hits = {i for i in wanted if any(i in value for value in ids)}
        if hits or sizes:
            sizes.append(batch.records)
        seen.update(hits)
        if seen == wanted:
            stop.set()

    running = asyncio.ensure_future(consume(settings, writer, stop=stop, on_commit=committed))
    if then is not None:
        await then()
    await asyncio.wait_for(running, 60)
    return sizes


def test_a_record_reaching_an_idle_sink_is_committed_without_waiting_for_a_full_batch(broker, tmp_path):
    story = Story()
    db = tmp_path / "idle.duckdb"
    settings = Settings(bootstrap=broker.bootstrap, db_path=db, sink_batch_max=50_000, sink_commit_interval_ms=200)
    writer = DuckDBWriter(db).open()
    try:
        catch_up = story.event("j", "r", 0, "PENDING")
        lone = story.event("j", "r", 1, "RUNNING")
        asyncio.run(produce(broker.bootstrap, [(catalog.EVENTS, catch_up)]))
        # First read everything the session's topics hold, up to catch_up; then one record.
        asyncio.run(commits_until(broker.bootstrap, writer, settings, {catch_up["event_id"]}))

        async def send_lone() -> None:
            await produce(broker.bootstrap, [(catalog.EVENTS, lone)])

        sizes = asyncio.run(commits_until(broker.bootstrap, writer, settings, {lone["event_id"]}, then=send_lone))
        # One record, or a few if the session's worker sent some at the same time: never a full batch.
        assert len(sizes) == 1 and sizes[0] < settings.sink_batch_max
        rows = writer.connection.execute("SELECT event_id FROM job_events WHERE source = ?", [story.source]).fetchall()
        assert sorted(rows) == [(catch_up["event_id"],), (lone["event_id"],)]
    finally:
        writer.close()
