"""A sink's commit time on a lake with and without readers polling it (issue 37's
baseline: a SQLite catalog stalled a polling reader's commits to about 1 s); not a test.

``python -m tests.lake.load_readers COMMITS READERS`` starts a scratch PostgreSQL, times
COMMITS commits of one story (about 230 records) alone, then again while READERS
connections each run a count over every table as fast as they can."""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.sink.lake import LakeTarget, LakeWriter
from pipeline.sink.scratch_postgres import ScratchPostgres
from tests.support.lake import analyst, write_story
from tests.support.records import Story


def commit_ms(writer: LakeWriter, commits: int, first: int) -> list[float]:
    times = []
    for n in range(commits):
        started = time.perf_counter()
        write_story(writer, Story(), first_offset=(first + n) * 1000)
        times.append((time.perf_counter() - started) * 1000)
    return times


def describe(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    return (f"{name}: median {statistics.median(ordered):.0f} ms, p99 {ordered[int(len(ordered) * 0.99) - 1]:.0f} ms, "
            f"max {ordered[-1]:.0f} ms over {len(ordered)} commits")


def main(commits: int, readers: int) -> None:
    postgres = ScratchPostgres.start()
    try:
        postgres.create_database("readers")
        data = Path(tempfile.mkdtemp()) / "data"
        data.mkdir()
        target = LakeTarget(postgres.conninfo("readers"), f"{data}/")
        writer = LakeWriter(target).open()
        try:
            print(describe("alone", commit_ms(writer, commits, 0)))
            stop = threading.Event()
            queries = [0] * readers

            def poll(n: int) -> None:
                con = analyst(target)
                try:
                    con.execute("USE analytics")
                    while not stop.is_set():
                        con.execute("SELECT (SELECT count(*) FROM job_events) + (SELECT count(*) FROM job_runs)").fetchone()
                        queries[n] += 1
                finally:
                    con.close()

            threads = [threading.Thread(target=poll, args=(n,)) for n in range(readers)]
            for thread in threads:
                thread.start()
            try:
                started = time.perf_counter()
                times = commit_ms(writer, commits, commits)
                elapsed = time.perf_counter() - started
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            print(describe(f"with {readers} readers polling", times) + f"; they ran {sum(queries) / elapsed:.0f} queries/s")
        finally:
            writer.close()
    finally:
        postgres.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
