"""The Postgres-wire endpoint on a lake (``pipeline sink --lake ... --pg-port``): the same
server as the file sink's (``pgwire.py``), over a read-only attach of the lake of its own,
each client session with the lake as its default catalog. Hardened like the file's, except
that the lake's data directory stays readable (``allowed_directories``): its Parquet files
are what every query reads, and nothing else on the server is."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from pipeline.sink import lake, pgwire
from pipeline.sink.writer import SinkError


@dataclass(frozen=True, slots=True)
class _LakeSessions:
    """What ``PgServer`` asks a cursor of: one per client, already on the lake."""

    connection: duckdb.DuckDBPyConnection

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self.connection.cursor()
        cursor.execute(f"USE {lake.ALIAS}")
        return cursor


@dataclass(slots=True)
class LakeEndpoint:
    server: pgwire.PgServer
    connection: duckdb.DuckDBPyConnection

    @property
    def uri(self) -> str:
        return self.server.uri

    def stop(self) -> None:
        self.server.stop()
        self.connection.close()


def data_path_of(con: duckdb.DuckDBPyConnection) -> str:
    """Where the attached lake keeps its files (as stored in its catalog)."""
    row = con.execute(f"SELECT value FROM __ducklake_metadata_{lake.ALIAS}.ducklake_metadata WHERE key = 'data_path'").fetchone()
    if row is None:
        raise SinkError("the lake's catalog names no data path")
    return row[0]


def serve(target: lake.LakeTarget, config: pgwire.PgConfig) -> LakeEndpoint:
    """Start serving (``SinkError``, one line, when the port is taken or TLS is missing)."""
    con = lake.connect(target, read_only=True)
    try:
        path = target.data_path or data_path_of(con)
        con.execute("SET allowed_directories = [?]", [path])
        pgwire.harden(con)
        server = pgwire.PgServer.start(_LakeSessions(con), config)  # type: ignore[arg-type]
    except pgwire.PgWireError as exc:
        con.close()
        raise SinkError(str(exc)) from None
    except BaseException:
        con.close()
        raise
    return LakeEndpoint(server, con)
