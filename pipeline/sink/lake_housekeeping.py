"""Housekeeping of a lake: frequent small commits leave many small Parquet files and
snapshots. ``pipeline lake-compact`` (or a schedule running it) merges them and forgets old
snapshots, while the sinks go on writing.

1. ``ducklake_merge_adjacent_files``: each table's small files become few large ones in a
   new snapshot; the old files are scheduled for deletion, not deleted.
2. ``ducklake_expire_snapshots(older_than => now() - keep)``: time travel before ``keep``
   is given up.
3. ``ducklake_cleanup_old_files(older_than => now() - keep)``: only files scheduled
   longer than ``keep`` ago; and ``ducklake_delete_orphaned_files`` (files of
   transactions that never committed, such as a sink killed before its COMMIT), only
   those older than ``ORPHAN_AGE`` at least, whatever ``keep``: a sink's transaction in
   flight has written files the catalog does not list yet, and deleting them made its
   COMMIT list files that no longer exist (found with ``--keep 0`` while a sink wrote).

Not ``ducklake_flush_inlined_data``: it takes PostgreSQL's exclusive lock on the catalog's
inlined-rows tables, so it waits behind any reader whose open transaction read them (a
dead_letters query in an analyst's BEGIN), and every later reader and sink queues behind it
(tests/lake/test_housekeeping.py). The inlined rows are the small tables' (offsets, dead
letters, the schema version); they stay in the catalog.

What a reader sees: a query runs on the snapshot it started with; compaction publishes the
same rows in fewer files as a new snapshot, so answers do not change, and a reader's files
are deleted only once they were replaced more than ``keep`` ago (a transaction longer than
``keep`` can fail with a missing file: keep ``keep`` above the longest one). Each step is
its own transaction; one that conflicts with a sink's commit is repeated (the sink repeats
its own, ``lake.py``), and so is one that met a file gone under it: with ``--keep 0`` beside a
sink committing back to back, a step read a file another round or a sink's abandoned
transaction had just deleted ("Failed to get files scheduled for deletion from DuckLake:
Cannot open file ... No such file or directory", seen once in CI); on a new snapshot the file
is no longer listed. Both are the sink's own repeat conditions (``lake.is_conflict``,
``lake.is_compacted_away``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import duckdb

from pipeline.sink import lake
from pipeline.sink.writer import SinkError

ATTEMPTS = 20
ORPHAN_AGE = timedelta(minutes=10)
"""Files no snapshot lists are deleted only past this age: far above a sink's longest
transaction (the commit turn's wait, ``lake.COMMIT_LOCK_WAIT``, and its repeats)."""


@dataclass(frozen=True, slots=True)
class LakeShape:
    """How many live data files (and their bytes) and snapshots the lake has."""

    data_files: int
    snapshots: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Housekeeping:
    """The lake's shape before and after, and how long the steps took."""

    before: LakeShape
    after: LakeShape
    seconds: float


def shape(con: duckdb.DuckDBPyConnection) -> LakeShape:
    files, size = con.execute(
        "SELECT count(*), coalesce(sum(file_size_bytes), 0) FROM __ducklake_metadata_lake.ducklake_data_file WHERE end_snapshot IS NULL"
    ).fetchone()
    snapshots = con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()[0]
    return LakeShape(int(files), int(snapshots), int(size))


def _repeated(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            con.execute(sql)
            return
        except duckdb.Error as exc:
            if not (lake.is_conflict(exc) or lake.is_compacted_away(exc)) or attempt + 1 == ATTEMPTS:
                raise SinkError(f"housekeeping of the lake failed at {sql.split('(')[0]}: {' '.join(str(exc).split())}") from None
            time.sleep(0.05 * (attempt + 1))


def compact(target: lake.LakeTarget, keep: timedelta) -> Housekeeping:
    """Steps 1-3 on the lake; its shape before and after."""
    con = lake.connect(target)
    try:
        before = shape(con)
        started = time.perf_counter()
        older = f"now() - INTERVAL '{int(keep.total_seconds())} seconds'"
        orphaned = f"now() - INTERVAL '{int(max(keep, ORPHAN_AGE).total_seconds())} seconds'"
        _repeated(con, f"CALL ducklake_merge_adjacent_files('{lake.ALIAS}')")
        _repeated(con, f"CALL ducklake_expire_snapshots('{lake.ALIAS}', older_than => {older})")
        _repeated(con, f"CALL ducklake_cleanup_old_files('{lake.ALIAS}', older_than => {older})")
        _repeated(con, f"CALL ducklake_delete_orphaned_files('{lake.ALIAS}', older_than => {orphaned})")
        seconds = time.perf_counter() - started
        return Housekeeping(before, shape(con), seconds)
    finally:
        con.close()
