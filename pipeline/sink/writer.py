"""The sink's one writer: a batch of rows and its offsets in one DuckDB transaction.

``SinkWriter`` is the small interface the consumer loop needs (open, read offsets, write a
batch with its offsets, close), so a DuckLake writer (several sinks, one catalog) can
replace ``DuckDBWriter`` without touching the loop.

No per-row upsert: each table gets one set statement per batch over an Arrow table.
Append tables (events, transitions, dead letters) insert the rows whose id is not in the
table yet (an anti-join, ``NOT EXISTS``); current-state tables (runs, alerts) delete the
rows the batch beats and insert the batch rows not present. scripts/bench_sink.py measured
these against a PRIMARY KEY with ``INSERT OR IGNORE`` (README "Sink numbers").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

from pipeline.errors import JobstreamError
from pipeline.sink import schema
from pipeline.sink.records import SELECT_ROWS, Batch


class SinkError(JobstreamError, RuntimeError):
    """The database cannot be opened or written; the message is one line for the user."""


class SinkWriter(Protocol):
    def open(self) -> "SinkWriter": ...

    def read_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition), as last committed."""
        ...

    def write(self, batch: Batch) -> None:
        """Write the batch's rows and its next offsets in one transaction, or nothing."""
        ...

    def stale_runs(self) -> int:
        """Runs whose current state is STALE (the ``jobstream_stale_runs`` gauge)."""
        ...

    def close(self) -> None: ...


_APPEND_IDS = {
    "job_events": ("job_events", "event_id"),
    "job_transitions": ("job_transitions", "transition_id"),
    "dead_letters": ("dead_letters", "dead_letter_id"),
    "sink_dead_letters": ("dead_letters", "dead_letter_id"),
}

_NEWER = {
    "job_runs": ("run_key", "b.version > t.version"),
    "alerts": (
        "alert_id",
        "b.status_rank > t.status_rank OR (b.status_rank = t.status_rank AND b.kafka_offset > t.kafka_offset)",
    ),
}

CHECKPOINT_THRESHOLD = "64MB"
"""WAL size that triggers a checkpoint (DuckDB's default is 16 MB). Each checkpoint
rewrites the table's last, partly filled row group; at 16 MB that happened every ~25,000
rows and cost 20-30% of the write time over 800,000 rows. The price: a restart after a
crash replays up to 64 MB of WAL."""

_OFFSETS_SCHEMA = pa.schema([("topic", pa.string()), ("partition", pa.int32()), ("next_offset", pa.int64())])


def offsets_table(batch: Batch) -> pa.Table:
    """The batch's next offset per (topic, partition), as an Arrow table to register."""
    return pa.Table.from_pylist(
        [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in batch.next_offsets.items()],
        schema=_OFFSETS_SCHEMA,
    )


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """End a failed transaction; one that is already gone is no error."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def close_quietly(con: duckdb.DuckDBPyConnection | None) -> None:
    if con is not None:
        try:
            con.close()
        except duckdb.Error:
            pass


class BatchWriter:
    """What both targets' writers share (this file's and the lake's, ``lake.py``): one
    DuckDB connection, the stored offsets and the stale-run count read from it, and the
    one instant a batch becomes durable."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads else max(1, (os.cpu_count() or 2) - 1)
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise SinkError("the writer is not open")
        return self._con

    def read_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.connection.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def stale_runs(self) -> int:
        return self.connection.execute("SELECT count(*) FROM job_runs WHERE state = 'STALE'").fetchone()[0]

    def _commit(self, con: duckdb.DuckDBPyConnection) -> None:
        """The one instant the batch becomes durable (the commit protocol's step 5)."""
        con.execute("COMMIT")

    def close(self) -> None:
        close_quietly(self._con)
        self._con = None


class DuckDBWriter(BatchWriter):
    """Single writer of one DuckDB file (DuckDB allows one process per file).

    DuckDB gets one core less than the machine has: the consumer loop's Python thread
    needs the other, and on the 2-core machine here one DuckDB thread wrote 1.4-2x more
    rows/s than two (scripts/bench_sink.py).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(threads)
        self.path = Path(path)

    def open(self) -> "DuckDBWriter":
        if self.path.exists() and self.path.is_dir():
            raise SinkError(f"{self.path} is a directory, not a database file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path), config={"threads": self.threads, "checkpoint_threshold": CHECKPOINT_THRESHOLD})
            schema.migrate(self._con)
        except schema.SchemaError as exc:
            self.close()
            raise SinkError(f"{self.path}: {exc}") from None
        except (duckdb.Error, OSError) as exc:
            self.close()
            raise SinkError(explain(self.path, exc)) from None
        return self

    def write(self, batch: Batch) -> None:
        con = self.connection
        try:
            con.execute("BEGIN TRANSACTION")
            write_tables(con, batch)
            con.register("o", offsets_table(batch))
            con.execute('INSERT OR REPLACE INTO kafka_offsets SELECT topic, "partition", next_offset, now() FROM o')
            con.unregister("o")
            self._commit(con)
        except duckdb.Error as exc:
            rollback(con)
            raise SinkError(explain(self.path, exc) + "; the batch was not committed") from None


def write_tables(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """The batch's rows into their tables, inside the caller's transaction (both targets:
    this file and the lake, ``lake.py``)."""
    for table, rows in batch.tables.items():
        con.register("b", rows)
        try:
            _write_table(con, table)
        finally:
            con.unregister("b")


def _write_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    rows = SELECT_ROWS[table]
    if table in _APPEND_IDS:
        target, key = _APPEND_IDS[table]
        con.execute(
            f"INSERT INTO {target} BY NAME SELECT * FROM ({rows}) AS b "
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE t.{key} = b.{key})"
        )
        return
    key, newer = _NEWER[table]
    con.execute(f"CREATE OR REPLACE TEMP TABLE batch_rows AS {rows}")
    con.execute(f"DELETE FROM {table} t USING batch_rows b WHERE t.{key} = b.{key} AND ({newer})")
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT * FROM batch_rows b "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = b.{key})"
    )
    con.execute("DROP TABLE batch_rows")


def explain(path: Path, exc: BaseException) -> str:
    """One line a user can act on, for the ways opening or writing a DuckDB file fails."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "could not set lock" in lowered or "conflicting lock" in lowered:
        return f"{path} is in use by another process (DuckDB allows one writer per file): stop it or choose another --db"
    if "not a valid duckdb database" in lowered or "invalid magic" in lowered or "not a duckdb" in lowered:
        return f"{path} is not a DuckDB database file: choose another --db"
    if "no space left" in lowered or "disk full" in lowered or "enospc" in lowered:
        return f"no space left on the device holding {path}"
    if "permission denied" in lowered:
        return f"no permission to open {path}"
    if "version number" in lowered or "storage version" in lowered:
        return f"{path} was written by a different DuckDB version ({text})"
    return f"{path}: {text}"
