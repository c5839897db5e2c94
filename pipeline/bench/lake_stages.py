"""The lake's stages of ``pipeline bench`` (issue 37): the ``jobs.*`` records stage 6 timed
into a file, now through the sink's group loop into a DuckLake with a PostgreSQL catalog
(a throwaway server, ``pipeline/sink/scratch_postgres.py``): one sink, then two sinks of
one group in this process, each lake new and starting at the same offsets as stage 6.

Each is timed from the start of its loop (the group join included, as a restarted
deployment pays it) to the commit that brought the last partition to the end; beside it,
the commits the lake's counter row made repeat after a conflict (``lake.py``: every commit
of every sink updates that row, so the sinks' commits are serialized by design).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.bench import sink_freshness, sink_stages
from pipeline.bench.stages import BenchError
from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.lake import LakeTarget, LakeWriter, connect as lake_connect
from pipeline.sink.writer import DuckDBWriter
from pipeline.sink.records import Batch
from pipeline.sink.scratch_postgres import PostgresUnavailable, ScratchPostgres

Position = tuple[str, int]


def new_lake(postgres: ScratchPostgres, folder: Path, name: str, start: dict[Position, int]) -> LakeTarget:
    """A lake whose offsets say ``start`` (one committed batch of no rows)."""
    postgres.create_database(name)
    data = folder / name
    data.mkdir()
    target = LakeTarget(postgres.conninfo(name), f"{data}/")
    writer = LakeWriter(target).open()
    try:
        writer.claim(start)
        writer.write(Batch(next_offsets=dict(start)))
    finally:
        writer.close()
    return target


async def sinks_in_a_group(bootstrap: str, target: LakeTarget, sinks: int, end: dict[Position, int],
                           timeout_s: float) -> tuple[int, float, int]:
    """``sinks`` group loops on one lake until every partition committed up to ``end``;
    returns (records committed, seconds, commits repeated after a conflict)."""
    group = f"bench-lake-{uuid.uuid4().hex[:8]}"
    reached: dict[Position, int] = {}
    stop = asyncio.Event()
    counted = {"records": 0, "last": 0.0}

    def committed(batch: Batch) -> None:
        counted["records"] += batch.records
        counted["last"] = time.perf_counter()
        reached.update(batch.next_offsets)
        if all(reached.get(p, 0) >= offset for p, offset in end.items()):
            stop.set()

    writers = [LakeWriter(target).open() for _ in range(sinks)]
    settings = Settings(bootstrap=bootstrap, session_timeout_s=6)
    try:
        began = time.perf_counter()
        loops = [consume(settings, writer, stop=stop, on_commit=committed, group=group) for writer in writers]
        await asyncio.wait_for(asyncio.gather(*loops), timeout_s)
    except asyncio.TimeoutError:
        raise BenchError(f"{sinks} lake sink(s) committed {counted['records']:,} records in {timeout_s:.0f} s "
                         "and had not reached the end") from None
    finally:
        for writer in writers:
            writer.close()
    return counted["records"], counted["last"] - began, sum(writer.conflicts for writer in writers)


def run_stages(bootstrap: str, start: dict[Position, int], end: dict[Position, int], timeout_s: float,
               say: Callable[[str], None] = print, *, rate: int = 2000, seconds: float = 20.0) -> dict[str, Any]:
    """One sink on a lake, then two; then the three sink stages' freshness at ``rate``
    ``jobs.events`` records a second for ``seconds``. ``lake_error`` (``sink_freshness_error``)
    instead when there is no PostgreSQL or a stage failed."""
    folder = Path(tempfile.mkdtemp(prefix="jobstream-bench-lake-"))
    results: dict[str, Any] = {}
    try:
        postgres = ScratchPostgres.start()
    except PostgresUnavailable as exc:
        results["lake_error"] = str(exc)
        postgres = None
    try:
        if postgres is not None:
            for sinks in (1, 2):
                say(f"the sink on a lake (PostgreSQL catalog), {sinks} sink(s) of one group, over the same jobs.* records ...")
                target = new_lake(postgres, folder, f"lake{sinks}", start)
                records, took, conflicts = asyncio.run(sinks_in_a_group(bootstrap, target, sinks, end, timeout_s))
                results[f"lake_{sinks}_sink_rows_per_s"] = records / took
                results[f"lake_{sinks}_sink_conflicts"] = conflicts
    except BenchError as exc:
        results["lake_error"] = str(exc)
    try:
        results.update(freshness_stages(bootstrap, postgres, folder, start, end, rate, seconds, say))
    except BenchError as exc:
        results["sink_freshness_error"] = str(exc)
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return results


def freshness_stages(bootstrap: str, postgres: ScratchPostgres | None, folder: Path, start: dict[Position, int],
                     end: dict[Position, int], rate: int, seconds: float,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Acknowledged -> visible in SQL for one sink on a file, and (with ``postgres``) one
    and two sinks on a lake, each on a new file or lake starting at the current ends."""
    pool = asyncio.run(sink_freshness.templates(bootstrap, start, end, max(1, int(rate * seconds))))
    results: dict[str, Any] = {}
    say(f"sink freshness: {rate:,} jobs.events records/s for {seconds:g} s into one sink on a file ...")
    db = folder / "freshness.duckdb"
    sink_stages.new_file(db, asyncio.run(sink_stages.jobs_ends(bootstrap)))
    writer = DuckDBWriter(db).open()
    try:
        measured = asyncio.run(sink_freshness.measure(bootstrap, [writer], None, writer.connection.cursor, pool, rate, seconds))
    finally:
        writer.close()
    results.update(sink_freshness.as_results("sink", measured, rate))
    if postgres is None:
        return results
    for sinks in (1, 2):
        say(f"sink freshness: the same into {sinks} sink(s) of one group on a lake ...")
        target = new_lake(postgres, folder, f"fresh{sinks}", asyncio.run(sink_stages.jobs_ends(bootstrap)))
        writers = [LakeWriter(target).open() for _ in range(sinks)]
        try:
            measured = asyncio.run(sink_freshness.measure(
                bootstrap, writers, f"bench-fresh-{uuid.uuid4().hex[:8]}",
                lambda: lake_connect(target, read_only=True), pool, rate, seconds))
        finally:
            for writer in writers:
                writer.close()
        results.update(sink_freshness.as_results(f"lake_{sinks}_sink", measured, rate))
        results[f"lake_{sinks}_sink_freshness_conflicts"] = sum(writer.conflicts for writer in writers)
    return results
