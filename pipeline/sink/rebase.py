"""``pipeline rebase-offsets``: make the sink's stored offsets fit the Kafka it reads now.

The sink keeps its offsets in its DuckDB file, with its rows. After Kafka was recreated
(compose without a volume, the embedded broker restarted) or was down longer than the
``jobs.*`` retention, a stored offset lies outside what Kafka holds and the sink refuses to
start ("Kafka no longer has the offsets stored in the database"), rightly: it cannot tell
what was lost. This command is the operator's decision, said per partition:

- ``--to start`` (the default): read from the first record Kafka still holds. Nothing Kafka
  holds is skipped; a record read again is not written twice (the tables dedupe by id).
- ``--to end``: skip everything Kafka holds now; only new records reach the database.

What it cannot give back: records deleted from Kafka (or lost with it) before the sink read
them are in neither. ``plan`` is pure; reading Kafka and writing the file are around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
from pipeline.errors import JobstreamError
from pipeline.kafka import clients
from pipeline.kafka.reading import highwaters, partitions_of
from pipeline.sink.records import TOPIC_TABLES

Target = Literal["start", "end"]


class RebaseError(JobstreamError):
    """The file cannot be opened (the sink runs on it) or Kafka cannot be read."""


@dataclass(frozen=True, slots=True)
class Move:
    """One partition: its stored next offset, what Kafka holds (``start`` to ``end``, end
    exclusive) and the next offset to store."""

    topic: str
    partition: int
    stored: int
    start: int
    end: int
    new: int

    @property
    def changes(self) -> bool:
        return self.new != self.stored

    def line(self) -> str:
        where = f"{self.topic}:{self.partition}"
        if not self.changes:
            return f"{where}: stored {self.stored} is within what Kafka holds ({self.start}..{self.end}): kept"
        if self.stored < self.start:
            lost = f"records {self.stored}..{self.start - 1} were deleted from Kafka before the sink read them: they are in neither"
        else:
            lost = (f"Kafka holds less than the file read ({self.start}..{self.end}, the file was at {self.stored}): "
                    "a recreated Kafka; what the old one held beyond the file is lost")
        return f"{where}: {self.stored} -> {self.new}; {lost}"


def plan(stored: Mapping[tuple[str, int], int], starts: Mapping[tuple[str, int], int],
         ends: Mapping[tuple[str, int], int], to: Target) -> list[Move]:
    """Per stored partition that Kafka has: keep an offset within ``start..end``, else move it
    to the start (``to="start"``) or the end of what Kafka holds."""
    moves = []
    for (topic, partition), offset in sorted(stored.items()):
        if (topic, partition) not in ends:
            continue
        start, end = starts.get((topic, partition), 0), ends[(topic, partition)]
        new = offset if start <= offset <= end else (start if to == "start" else end)
        moves.append(Move(topic, partition, offset, start, end, new))
    return moves


def read_stored(db_path: Path) -> dict[tuple[str, int], int]:
    return dict(((topic, partition), offset) for topic, partition, offset in _query(
        db_path, 'SELECT topic, "partition", next_offset FROM kafka_offsets', read_only=True))


def write(db_path: Path, moves: list[Move]) -> None:
    """Store the moved offsets in one transaction."""
    changed = [move for move in moves if move.changes]
    if not changed:
        return
    con = _connect(db_path, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        for move in changed:
            con.execute('UPDATE kafka_offsets SET next_offset = ?, committed_at = now() WHERE topic = ? AND "partition" = ?',
                        [move.new, move.topic, move.partition])
        con.execute("COMMIT")
    finally:
        con.close()


async def kafka_bounds(bootstrap: str) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Each ``jobs.*`` partition's first offset and end (the fetch high-water mark: Tansu's
    ListOffsets is wrong for the end)."""
    consumer = clients.consumer(bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = await partitions_of(consumer, TOPIC_TABLES)
        firsts = await consumer.beginning_offsets(partitions)
        lasts = await highwaters(consumer, partitions)
    except Exception as exc:  # noqa: BLE001 - aiokafka's connection errors: one line
        raise RebaseError(f"cannot read the jobs.* partitions from {bootstrap}: {exc or type(exc).__name__}") from None
    finally:
        await consumer.stop()
    key = lambda tp: (tp.topic, tp.partition)  # noqa: E731
    return {key(tp): offset for tp, offset in firsts.items()}, {key(tp): offset for tp, offset in lasts.items()}


def _query(db_path: Path, sql: str, *, read_only: bool) -> list[tuple]:
    con = _connect(db_path, read_only=read_only)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _connect(db_path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not Path(db_path).is_file():
        raise RebaseError(f"{db_path}: no such database")
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())
        hint = "; stop the sink first" if "lock" in text.lower() else ""
        raise RebaseError(f"cannot open {db_path}: {text[:200]}{hint}") from None

