"""The sink's second target: one DuckLake (PostgreSQL catalog, Parquet files) written by
several sinks of one consumer group, each owning its ``jobs.*`` partitions.

Everything DuckLake-specific is here; the tables, views, descriptions and checks are the
file sink's own (``schema.MIGRATIONS`` through ``for_lake``, ``describe``, ``check``).
Facts it relies on (measured with duckdb 1.5.5 and the 1.5.5 extension wheels):

- The extensions load by path from the PyPI wheels ``duckdb-extension-ducklake`` and
  ``duckdb-extension-postgres``, never ``INSTALL``. The postgres wheel ships its binary as
  ``postgres.duckdb_extension`` but DuckDB derives the entry point from the file name and
  wants ``postgres_scanner``: it is loaded through a link of that name (``_linked``).
- DuckLake has no PRIMARY KEY/UNIQUE (the migrations drop them: ``for_lake``) and comments
  only a table's columns (views keep their own comment; ``describe.apply_comments``).
- Snapshot isolation with optimistic commits: a transaction that inserts into or deletes
  from a table another transaction deleted from since it began fails at COMMIT with
  "Transaction conflict". Concurrent pure inserts do not conflict.

Commit protocol of ``pipeline sink --lake`` (one pass per batch, per sink):

1. Attach the lake, apply the migrations (two sinks starting together: the second one's
   migration conflicts, it reads the version again and goes on).
2. Join the group. On revocation: let the write in flight finish, drop the batch being
   built. On assignment: read the assigned partitions' ``next_offset`` from
   ``kafka_offsets`` (the claim: what this sink expects to find there at its next
   commit) and seek to them, or to the beginning.
3. Fetch, 4. decode into the batch, as the file sink does (``consumer.py``).
5. In ONE lake transaction: (5a) check that every partition of the batch still has the
   offset this sink claimed or last committed, else the partition was written by another
   sink (this one was fenced: the batch is dropped, its partitions claimed and sought
   again); (5b) count the commit in ``lake_commits``, insert the rows (anti-join on ids, highest
   version wins) and replace the partitions' rows of ``kafka_offsets``; (5c) COMMIT. A commit conflict rolls back and
   repeats 5a-5c on the newer snapshot. The transaction holds the sinks' commit lock
   (``CommitLock``, an advisory lock in the catalog's PostgreSQL): shared on a first attempt,
   exclusive on a repeat, so a repeat commits alone and no sink starves behind another's
   back-to-back commits; a lock not given within COMMIT_LOCK_WAIT (its holder paused or hung)
   is gone without, and the conflicts alone keep the lake right.

Every commit also updates the one row of ``lake_commits`` (a delete and an insert in
DuckLake), so any two overlapping commits conflict and the later one is repeated after the
earlier: the lake's commits are serialized. (Deleting the batch's own ``kafka_offsets``
rows is not enough: a partition's first commit deletes nothing, and two inserts never
conflict; measured, the zombie test failed that way.) That is
why ``job_runs`` keeps the highest version whoever wrote it and the anti-joins see every
row another sink committed, and why two sinks can never both commit the same offsets.

| killed after              | in the lake                                | what happens next                                   | test |
|---------------------------|--------------------------------------------|-----------------------------------------------------|------|
| 1 or 2                    | schema, no rows or offsets of the batch    | the partitions go to the other sink (or the restart), which seeks to the stored offsets | after_assign |
| 3 or 4                    | nothing of the batch (it was in memory)    | the new owner fetches the same records, same rows   | before_write |
| 5b, before COMMIT         | nothing (an uncommitted DuckLake transaction writes no snapshot; its Parquet files are orphans until cleanup) | as above | before_commit |
| 5c, after COMMIT          | the rows and their offsets                 | the new owner seeks past them                        | after_commit |
| a zombie (paused past the session timeout, then commits) | the other sink's rows and offsets | 5a fails (or its COMMIT conflicts and the repeat fails 5a): nothing of the zombie's batch | fenced |
| a rebalance mid-batch     | what was committed before the revocation   | the batch being built is dropped, the new owner reads it again | rebalance |
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipeline.sink import quack, schema
from pipeline.sink.records import Batch
from pipeline.sink.writer import BatchWriter, SinkError, close_quietly, offsets_table, rollback, write_tables

ALIAS = "lake"
"""The name the lake is attached under (and made the default catalog) in the sink."""

COMMIT_ATTEMPTS = 20
"""How often a conflicting commit is repeated before the sink gives up (exit, restart)."""

COMMITS_TABLE = "lake_commits"
COMMITS_COMMENT = ("The lake sinks' commit counter: every batch's transaction updates its one row, so any two "
                   "overlapping commits conflict and the later one is repeated (pipeline/sink/lake.py).")

COMMIT_LOCK_KEY = 0x6A6F6273747265  # "jobstre"
"""The PostgreSQL advisory lock (in the catalog's database) the sinks' commits take (``CommitLock``)."""

COMMIT_LOCK_WAIT = "10s"
"""How long a commit waits for its turn (PostgreSQL ``lock_timeout``) before it goes on
without one, optimistically as the snapshot isolation allows: a sink paused or hung inside
its transaction (a zombie) holds its turn, and must not stop the group for longer."""

class Fenced(SinkError):
    """Another sink wrote a partition this one claimed: its batch was not committed."""


@dataclass(frozen=True, slots=True)
class LakeTarget:
    """Where the lake is: its PostgreSQL catalog (a libpq connection string or URI) and
    the directory (or object store URL) of its Parquet files."""

    catalog: str
    data_path: str | None = None

    def attach_sql(self, alias: str = ALIAS, *, read_only: bool = False) -> str:
        options = []
        if self.data_path:
            options.append(f"DATA_PATH {_literal(self.data_path)}")
        if read_only:
            options.append("READ_ONLY")
        tail = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_literal('ducklake:postgres:' + self.catalog)} AS {alias}{tail}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def for_lake(sql: str) -> str:
    """A migration's text for DuckLake: no PRIMARY KEY (DuckLake has no constraints
    but NOT NULL; the sink's own write rules keep the keys unique)."""
    sql = re.sub(r",\s*PRIMARY KEY\s*\([^)]*\)", "", sql)
    return re.sub(r"\s+PRIMARY KEY\b", "", sql)


def _extension_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jobstream" / "duckdb-extensions" / quack.DUCKDB_VERSION


def _linked(source: Path, name: str) -> Path:
    """``source`` under the file name DuckDB needs to find its entry point."""
    link = _extension_cache() / f"{name}.duckdb_extension"
    if link.is_symlink() and os.readlink(link) == str(source):
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(f".{link.name}.{os.getpid()}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(source)
    os.replace(staged, link)
    return link


def extension_files() -> tuple[Path, Path]:
    """The postgres (as postgres_scanner) and ducklake extension files of the installed wheels."""
    try:
        postgres = quack.extension_path("postgres")
        ducklake = quack.extension_path("ducklake")
    except quack.QuackError as exc:
        raise SinkError(str(exc)) from None
    return _linked(postgres, "postgres_scanner"), ducklake


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    for extension in extension_files():
        con.execute(f"LOAD {_literal(str(extension))}")


def attach(con: duckdb.DuckDBPyConnection, target: LakeTarget, alias: str = ALIAS, *, read_only: bool = False) -> None:
    """Load the extensions and attach the lake as ``alias`` (one line on failure)."""
    load_extensions(con)
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            con.execute(target.attach_sql(alias, read_only=read_only))
            return
        except duckdb.Error as exc:
            if not _initialized_meanwhile(exc) or attempt + 1 == COMMIT_ATTEMPTS:
                raise SinkError(explain(target, exc)) from None


def _initialized_meanwhile(exc: BaseException) -> bool:
    """Two sinks attaching a new lake at once both create its catalog tables; the one that
    loses gets PostgreSQL's duplicate key (its transaction rolled back) and attaches again,
    finding the lake the other created."""
    text = str(exc)
    return "Failed to initialize DuckLake" in text and ("duplicate key" in text or "already exists" in text)


def connect(target: LakeTarget, *, threads: int | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and used as its default catalog."""
    config = {"threads": threads} if threads else {}
    con = duckdb.connect(config=config)
    try:
        attach(con, target, read_only=read_only)
        con.execute(f"USE {ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


def explain(target: LakeTarget, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    lowered = text.lower()
    where = f"the lake catalog ({_redacted(target.catalog)})"
    if "could not connect" in lowered or "connection refused" in lowered or "no such file or directory" in lowered and "socket" in lowered:
        return f"cannot reach {where}: is PostgreSQL running there? ({text})"
    if "does not exist" in lowered and "database" in lowered:
        return f"{where}: the database does not exist: create it first (createdb) ({text})"
    if "password authentication failed" in lowered:
        return f"{where}: PostgreSQL refused the password"
    return f"{where}: {text}"


def _redacted(catalog: str) -> str:
    catalog = re.sub(r"(password\s*=\s*)\S+", r"\1***", catalog)
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", catalog)


def is_conflict(exc: BaseException) -> bool:
    return "conflict" in str(exc).lower()


def is_compacted_away(exc: BaseException) -> bool:
    """A data file the transaction's snapshot listed was deleted under it: housekeeping
    (``lake-compact`` with a ``--keep`` shorter than the transaction) replaced it. The same
    batch on a new snapshot reads the merged file instead."""
    text = str(exc)
    return "No such file or directory" in text and "ducklake-" in text and ".parquet" in text


class CommitLock:
    """Whose turn it is to commit to the lake: a PostgreSQL advisory lock in the catalog's
    database, held by a transaction of a connection of its own for as long as one lake
    transaction lasts (a killed sink's session ends, and its lock with it).

    Optimistic commits alone starved a sink: while another committed small batches back to
    back, every longer transaction of the first overlapped one of those commits and
    conflicted, however long it paused between repeats (the full suite, ``jobs.deadletter``
    thousands deep). So a first attempt takes the lock shared (sinks still commit side by
    side), and a repeat after a conflict takes it exclusive: it waits for the commits in
    flight, the shared requests made after it queue behind it (PostgreSQL grants in
    order), and it commits alone."""

    ALIAS = "lake_turn"

    def __init__(self, target: LakeTarget) -> None:
        self.target = target
        self._con: duckdb.DuckDBPyConnection | None = None
        self.waited_out = 0
        """Turns not given within COMMIT_LOCK_WAIT (the commit went on without one)."""

    def open(self) -> "CommitLock":
        con = duckdb.connect(config={"threads": 1})
        try:
            load_extensions(con)
            con.execute(f"ATTACH {_literal(self.target.catalog)} AS {self.ALIAS} (TYPE postgres)")
        except duckdb.Error as exc:
            con.close()
            raise SinkError(explain(self.target, exc)) from None
        self._con = con
        return self

    @contextmanager
    def turn(self, *, alone: bool) -> Iterator[None]:
        """Hold the lock (exclusive when ``alone``) for the body, or go on without it
        when it is not given within COMMIT_LOCK_WAIT."""
        con = self._con
        if con is None:
            raise SinkError("the lake writer is not open")
        function = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
        timeout = _literal(f"SET LOCAL lock_timeout = {_literal(COMMIT_LOCK_WAIT)}")
        take = _literal(f"SELECT {function}({COMMIT_LOCK_KEY})::text AS taken")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CALL postgres_execute('{self.ALIAS}', {timeout})")
            con.execute(f"FROM postgres_query('{self.ALIAS}', {take})").fetchall()
        except duckdb.Error as exc:
            rollback(con)
            if "lock timeout" not in str(exc).lower():
                raise SinkError(explain(self.target, exc)) from None
            self.waited_out += 1
            yield
            return
        try:
            yield
        finally:
            rollback(con)  # ends the PostgreSQL transaction: the lock is released

    def close(self) -> None:
        close_quietly(self._con)
        self._con = None


class LakeWriter(BatchWriter):
    """One sink's writer into the shared lake (``SinkWriter``), fenced per partition."""

    def __init__(self, target: LakeTarget, threads: int | None = None) -> None:
        super().__init__(threads)
        self.target = target
        self._lock = CommitLock(target)
        self._claimed: dict[tuple[str, int], int | None] = {}
        self.conflicts = 0
        """Commits repeated after a conflict (for the bench and the tests)."""

    def open(self) -> "LakeWriter":
        self._con = connect(self.target, threads=self.threads)
        try:
            self._lock.open()
            self._migrate()
        except BaseException:
            self.close()
            raise
        return self

    def _migrate(self) -> None:
        for _ in range(COMMIT_ATTEMPTS):
            try:
                schema.migrate(self.connection, adapt=for_lake)
                self._create_commit_counter()
                return
            except schema.SchemaError as exc:
                raise SinkError(f"the lake: {exc}") from None
            except duckdb.Error as exc:
                if not (is_conflict(exc) or "already exists" in str(exc)):
                    raise SinkError(explain(self.target, exc)) from None
        raise SinkError("the lake's schema kept changing under this sink's migration: try again")

    def _create_commit_counter(self) -> None:
        con = self.connection
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE TABLE IF NOT EXISTS {COMMITS_TABLE} (commits BIGINT NOT NULL, committed_at TIMESTAMPTZ)")
            con.execute(f"INSERT INTO {COMMITS_TABLE} SELECT 0, now() WHERE NOT EXISTS (FROM {COMMITS_TABLE})")
            con.execute(f"COMMENT ON TABLE {COMMITS_TABLE} IS {_literal(COMMITS_COMMENT)}")
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise

    def claim(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Step 2: the stored offsets of newly assigned partitions, remembered as what
        this sink expects to find at its next commit of each (5a)."""
        stored = self.read_offsets()
        self._claimed = {tp: stored.get(tp) for tp in partitions}
        return {tp: offset for tp, offset in self._claimed.items() if offset is not None}

    def claimed(self) -> dict[tuple[str, int], int]:
        """The offset each owned partition holds in the lake, as this sink last saw or wrote it."""
        return {tp: offset for tp, offset in self._claimed.items() if offset is not None}

    @property
    def turns_waited_out(self) -> int:
        """Commits that went on without their turn (``CommitLock``): a sink held it past COMMIT_LOCK_WAIT."""
        return self._lock.waited_out

    def write(self, batch: Batch) -> None:
        """Step 5, repeated on a commit conflict; ``Fenced`` when a partition moved."""
        con = self.connection
        offsets = offsets_table(batch)
        alone = False
        for attempt in range(COMMIT_ATTEMPTS):
            with self._lock.turn(alone=alone):
                try:
                    con.execute("BEGIN TRANSACTION")
                    con.execute(f"UPDATE {COMMITS_TABLE} SET commits = commits + 1, committed_at = now()")
                    self._fence(con, batch)
                    write_tables(con, batch)
                    con.register("o", offsets)
                    con.execute('DELETE FROM kafka_offsets k USING o WHERE k.topic = o.topic AND k."partition" = o."partition"')
                    con.execute('INSERT INTO kafka_offsets SELECT topic, "partition", next_offset, now() FROM o')
                    con.unregister("o")
                    self._commit(con)
                except Fenced:
                    rollback(con)
                    raise
                except duckdb.Error as exc:
                    rollback(con)
                    if (is_conflict(exc) or is_compacted_away(exc)) and attempt + 1 < COMMIT_ATTEMPTS:
                        self.conflicts += 1
                        alone = True
                        continue
                    raise SinkError(explain(self.target, exc) + "; the batch was not committed") from None
            for tp, offset in batch.next_offsets.items():
                self._claimed[tp] = offset
            return

    def _fence(self, con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        """5a: every partition of the batch still holds what this sink last saw there."""
        stored = dict(((t, p), o) for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall())
        moved = sorted(tp for tp in batch.next_offsets if stored.get(tp) != self._claimed.get(tp, stored.get(tp)))
        if moved:
            where = ", ".join(f"{t}:{p} (expected {self._claimed.get((t, p))}, found {stored.get((t, p))})" for t, p in moved)
            raise Fenced(f"another sink committed {where}: this batch was dropped")

    def close(self) -> None:
        self._lock.close()
        super().close()
