"""One story through the sink's whole stream (events, runs, transitions, re-sends, dead
letters, alerts, a poison record) and how to read its rows back: shared by the file
sink's commit protocol tests (tests/sink/) and the lake's (tests/lake/)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb

from pipeline import catalog
from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.writer import DuckDBWriter
from tests.support.records import Story

JOBS = 12


def stream_of(story: Story) -> list[tuple[str, dict | bytes]]:
    """JOBS runs of five events each, re-sends with the same ids, dead letters, alerts, one poison."""
    records: list[tuple[str, dict | bytes]] = []
    for j in range(JOBS):
        job = f"job{j}"
        states = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED" if j % 3 else "FAILED"]
        for n, state in enumerate(states, 1):
            records.append((catalog.EVENTS, story.event(job, "r", n, state)))
            records.append((catalog.RUNS, story.run(job, "r", n, state)))
            if n in (1, 2, 5):
                records.append((catalog.TRANSITIONS, story.transition(job, "r", n, None if n == 1 else states[n - 2], state)))
    resent = [r for r in records if r[0] != catalog.RUNS][: len(records) // 3]
    records.extend(resent)
    records.extend((catalog.DEADLETTER, story.dead_letter(n)) for n in range(4))
    records.extend((catalog.ALERTS, story.alert(n, status)) for n in range(3) for status in ("fired", "delivered"))
    records.append((catalog.EVENTS, b"\x00 poison, not JSON " + story.source.encode()))
    return records


EXPECTED = {"job_events": JOBS * 5, "job_transitions": JOBS * 3, "job_runs": JOBS, "alerts": 3}

TABLE_ORDER = {
    "job_events": "event_id", "job_transitions": "transition_id", "job_runs": "run_key",
    "alerts": "alert_id",
}


def story_rows(con: duckdb.DuckDBPyConnection, story: Story) -> dict[str, list[tuple]]:
    """Every row of the story in every table (dead letters: its own and its poison)."""
    rows = {
        table: con.execute(f"SELECT * FROM {table} WHERE source = ? ORDER BY {key}", [story.source]).fetchall()
        for table, key in TABLE_ORDER.items() if table != "job_transitions"
    }
    rows["job_transitions"] = con.execute(
        "SELECT * FROM job_transitions WHERE job_key LIKE ? ORDER BY transition_id", [f"%:{story.source}:%"]
    ).fetchall()
    rows["dead_letters"] = con.execute(
        "SELECT * FROM dead_letters WHERE dead_letter_id LIKE ? OR value_preview LIKE ? ORDER BY dead_letter_id",
        [f"%{story.source}%", f"%{story.source}%"],
    ).fetchall()
    return rows


def story_complete(con: duckdb.DuckDBPyConnection, story: Story) -> bool:
    rows = story_rows(con, story)
    return all(len(rows[t]) >= n for t, n in EXPECTED.items()) and len(rows["dead_letters"]) >= 5


async def sink_until_complete(bootstrap: str, db: Path, story: Story, timeout: float = 60.0) -> dict[str, list[tuple]]:
    """Run the sink in this process until the story's rows are all in; return them."""
    writer = DuckDBWriter(db).open()
    stop = asyncio.Event()

    def check(_batch) -> None:
        if story_complete(writer.connection, story):
            stop.set()

    try:
        if not story_complete(writer.connection, story):
            await asyncio.wait_for(consume(Settings(bootstrap=bootstrap, db_path=db), writer, stop=stop, on_commit=check), timeout)
        return story_rows(writer.connection, story)
    finally:
        writer.close()
