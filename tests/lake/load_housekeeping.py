"""Sustained small commits into a lake, then ``compact``: the file count and a reference
query's time before and after (issue 37 case 4's measurement; not a test).

``python -m tests.lake.load_housekeeping SECONDS [RECORDS_PER_S]`` starts a scratch
PostgreSQL, writes one batch of the story (about 230 records: 12 runs, their events,
transitions, re-sends, dead letters, alerts) per commit for SECONDS of wall time, as a sink
committing every 100 ms would at RECORDS_PER_S (default 2,000: one commit per ~115 records
of that load), and prints how many seconds of that load the commits stand for."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from pipeline.sink.lake import LakeTarget, LakeWriter, connect
from pipeline.sink.lake_housekeeping import compact, shape
from pipeline.sink.scratch_postgres import ScratchPostgres
from tests.support.lake import write_story
from tests.support.records import Story

QUERY = ("SELECT r.state, count(*), count(DISTINCT e.event_id) FROM job_runs r "
         "JOIN job_events e USING (run_key) GROUP BY ALL ORDER BY ALL")


def query_ms(target: LakeTarget) -> float:
    """The median of five runs of QUERY on a fresh connection (attach not counted)."""
    con = connect(target, read_only=True)
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            con.execute(QUERY).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        con.close()


def main(seconds: float, records_per_s: float) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        postgres = ScratchPostgres.start()
        try:
            postgres.create_database("load")
            data = Path(scratch) / "data"
            data.mkdir()
            target = LakeTarget(postgres.conninfo("load"), f"{data}/")
            writer = LakeWriter(target).open()
            commits = records = 0
            started = time.perf_counter()
            try:
                while time.perf_counter() - started < seconds:
                    story = Story()
                    write_story(writer, story, first_offset=commits * 1000)
                    commits += 1
                    records += 233
                elapsed = time.perf_counter() - started
                before = shape(writer.connection)
            finally:
                writer.close()
            print(f"load: {commits} commits, ~{records} records in {elapsed:.0f} s ({commits / elapsed:.1f} commits/s); "
                  f"at {records_per_s:g} records/s with a commit every 100 ms that is "
                  f"{commits / 10:.0f} s of load ({commits / 36000:.3f} h)")
            print(f"before: {before.data_files} data files, {before.bytes / 1e6:.1f} MB, {before.snapshots} snapshots; "
                  f"query {query_ms(target):.0f} ms")
            done = compact(target, timedelta(0))
            print(f"compaction: {done.seconds:.1f} s")
            print(f"after: {done.after.data_files} data files, {done.after.bytes / 1e6:.1f} MB, {done.after.snapshots} snapshots; "
                  f"query {query_ms(target):.0f} ms")
        finally:
            postgres.stop()


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2000.0)
