"""What analysts run on the lake: ``pipeline sql --lake``, ``pipeline check --lake``, the
catalog's descriptions and the ``duckdb`` command line that attaches it. The same read rule,
views, descriptions and checks as the file (``sql``, ``describe``, ``check``); the lake is
attached READ_ONLY, so a reader can never write, whatever it sends."""

from __future__ import annotations

import shlex
import duckdb

from pipeline.sink import check, describe, lake, sql
from pipeline.sink.writer import SinkError

ANALYST_ALIAS = "jobs"


def _open(target: lake.LakeTarget) -> duckdb.DuckDBPyConnection:
    try:
        return lake.connect(target, read_only=True)
    except SinkError as exc:
        raise sql.SqlError(str(exc)) from None


def source_of(target: lake.LakeTarget) -> str:
    return f"the lake ({lake._redacted(target.catalog)})"


def query(target: lake.LakeTarget, text: str) -> sql.Result:
    """One read-only query on the lake's latest snapshot."""
    reason = sql.refusal(text)
    if reason is not None:
        raise sql.SqlError(reason)
    con = _open(target)
    try:
        cursor = con.execute(text)
        return sql.Result([d[0] for d in cursor.description or []], cursor.fetchall(), source_of(target))
    except duckdb.Error as exc:
        raise sql.SqlError(" ".join(str(exc).split())) from None
    finally:
        con.close()


def run_checks(target: lake.LakeTarget) -> list[check.Outcome]:
    """``pipeline check`` on one snapshot of the lake (every check reads the same one)."""
    con = _open(target)
    try:
        con.execute("BEGIN TRANSACTION")
        return check.run_checks(con)
    except duckdb.Error as exc:
        raise check.CheckError(f"{source_of(target)}: {' '.join(str(exc).split())}") from None
    finally:
        con.close()


def describe_lake(target: lake.LakeTarget, name: str | None) -> str:
    """The catalog as ``pipeline sql --describe`` shows it; a view's columns, which
    DuckLake 1.5.5 cannot comment, take their text from ``describe.CATALOG``."""
    con = _open(target)
    try:
        def read(text: str) -> list[tuple]:
            rows = con.execute(text).fetchall()
            if rows and name in describe.CATALOG and text.lstrip().startswith("SELECT column_name"):
                known = describe.CATALOG[name].columns
                rows = [(c, t, comment or known.get(c) or describe.COMMON_COLUMNS.get(c)) for c, t, comment in rows]
            return rows

        return describe._describe(read, source_of(target), name, read(describe._RELATIONS))  # noqa: SLF001 - one describe for both targets
    finally:
        con.close()


def attach_command(target: lake.LakeTarget) -> str:
    """The ``duckdb`` command line that attaches the lake read-only, with its views."""
    postgres, ducklake = lake.extension_files()
    script = (f"LOAD '{postgres}'; LOAD '{ducklake}'; "
              f"{target.attach_sql(ANALYST_ALIAS, read_only=True)}; USE {ANALYST_ALIAS};")
    return f"duckdb -cmd {shlex.quote(script)}"
