"""``pipeline demo --lake``: the demo with two sinks of one consumer group writing a
DuckLake instead of one sink writing the file (issue 37). Its catalog is a throwaway
PostgreSQL started the way the tests start theirs (``pipeline/sink/scratch_postgres.py``:
Debian's server binaries, a unix socket in a temporary folder, gone when the demo ends);
the Parquet files stay under the run folder."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipeline.run.supervisor import Role
from pipeline.sink import lake
from pipeline.sink.scratch_postgres import ScratchPostgres

SINKS = ("sink-1", "sink-2")
GROUP = "jobstream-demo-lake"


@dataclass(frozen=True, slots=True)
class DemoLake:
    """The running catalog server and where the lake's files go."""

    postgres: ScratchPostgres
    data_path: Path

    @property
    def target(self) -> lake.LakeTarget:
        return lake.LakeTarget(self.postgres.catalog, f"{self.data_path}/")

    @classmethod
    def start(cls, run_dir: Path) -> "DemoLake":
        """A new catalog (``PostgresUnavailable``, one line naming the Debian package, when
        there is no server here) and the data folder."""
        postgres = ScratchPostgres.start()
        data = run_dir / "lake-data"
        data.mkdir(parents=True, exist_ok=True)
        return cls(postgres, data.resolve())

    def stop(self) -> None:
        self.postgres.stop()

    def sinks(self, pipeline: tuple[str, ...], bootstrap: str) -> list[Role]:
        """The two sinks of one group, each owning some of the ``jobs.*`` partitions."""
        target = self.target
        return [Role(name, [*pipeline, "sink", "--bootstrap", bootstrap, "--lake", target.catalog,
                            "--data-path", target.data_path, "--group", GROUP]) for name in SINKS]


class LakeProgress:
    """The demo's live rows per vendor read from the lake (one connection kept open; each
    query sees the latest snapshot); lag is not read from the sinks' /metrics here."""

    def __init__(self, target: lake.LakeTarget) -> None:
        self.target = target
        self._con: duckdb.DuckDBPyConnection | None = None

    def in_duckdb(self) -> Counter[str]:
        try:
            if self._con is None:
                self._con = lake.connect(self.target, read_only=True)
            return Counter(dict(self._con.execute("SELECT vendor, count(*) FROM job_events GROUP BY ALL").fetchall()))
        except (duckdb.Error, lake.SinkError):
            self.close()
            return Counter()

    def lag(self) -> dict[str, int | None]:
        return {}

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def summary(target: lake.LakeTarget, queries: dict[str, str]) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The demo's closing numbers, each query on the lake's latest snapshot."""
    con = lake.connect(target, read_only=True)
    try:
        found = {}
        for name, query in queries.items():
            cursor = con.execute(query)
            found[name] = ([d[0] for d in cursor.description or []], cursor.fetchall())
        return found
    finally:
        con.close()
