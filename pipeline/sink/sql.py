"""``pipeline sql``: one read-only query against the analytics database.

Live over Quack when the sink serves it, else the file itself opened read-only (DuckDB
lets one process hold a file, so while the sink runs only Quack can read it). Writes
are refused here, before anything is sent, by the same rule the Quack server applies.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pipeline.sink import quack


class SqlError(RuntimeError):
    """The query cannot run; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    source: str
    """``quack:HOST:PORT`` or the file's path: where the answer came from."""


def refusal(sql: str) -> str | None:
    """Why ``sql`` is not a read (the Quack server's own rule), or None for a read. Text
    that does not parse is a syntax error (DuckDB's own message), not a write."""
    con = duckdb.connect()
    try:
        try:
            con.extract_statements(sql)
        except duckdb.ParserException as exc:
            return " ".join(str(exc).split())
        con.execute(quack.READ_ONLY)
        allowed = con.execute(f"SELECT {quack.AUTHORIZATION_MACRO}('local', ?)", [sql]).fetchone()[0]
    finally:
        con.close()
    if allowed == sql and not sql.strip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "ABORT")):
        return None
    return "the database is read-only here: only SELECT queries (and DESCRIBE / SHOW / SUMMARIZE) are allowed"


def open_database(db_path: Path, address: str, token_file: Path) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A connection to the live sink over Quack, or to the file read-only when no sink answers."""
    token = quack.read_token(token_file)
    if token is not None:
        con = duckdb.connect()
        try:
            quack.attach(con, address, token)
            return con, address
        except duckdb.Error as exc:
            con.close()
            if "authentication failed" in str(exc).lower():
                raise SqlError(f"{address} refused the token (from JOBSTREAM_QUACK_TOKEN or {token_file})") from None
        except quack.QuackError as exc:
            raise SqlError(str(exc)) from None
    if not db_path.is_file():
        raise SqlError(f"no database at {db_path} and no live sink at {address}: start `pipeline sink` or pass --db")
    try:
        return duckdb.connect(str(db_path), read_only=True), str(db_path)
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())
        if "lock" in text.lower():
            raise SqlError(
                f"{db_path} is held by a running sink, but its live SQL at {address} did not answer"
                + ("" if token else f" (no token: set JOBSTREAM_QUACK_TOKEN or check {token_file})")
            ) from None
        raise SqlError(f"cannot open {db_path}: {text}") from None


def run_query(db_path: Path, address: str, token_file: Path, sql: str) -> Result:
    reason = refusal(sql)
    if reason is not None:
        raise SqlError(reason)
    con, source = open_database(db_path, address, token_file)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return Result(columns, cursor.fetchall(), source)
    except duckdb.Error as exc:
        raise SqlError(" ".join(str(exc).split())) from None
    finally:
        con.close()


def table_width(result: Result) -> int:
    """How wide a boxed table of ``result`` would be, each column as wide as its widest cell."""
    cells = [result.columns, *([("" if v is None else str(v)) for v in row] for row in result.rows)]
    return 1 + sum(max(len(str(row[i])) for row in cells) + 3 for i in range(len(result.columns)))


def render_vertical(result: Result) -> str:
    """One block per row, one ``column  value`` line per column (DuckDB's ``.mode line``):
    for results too wide for the terminal, where a table would squeeze every column."""
    width = max((len(c) for c in result.columns), default=0)
    blocks = []
    for n, row in enumerate(result.rows, 1):
        lines = [f"-- row {n} --"]
        lines += [f"{column.rjust(width)}  {'' if value is None else value}" for column, value in zip(result.columns, row)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + f"\n({len(result.rows)} rows from {result.source}; shown one per block: too wide for the terminal)\n"


def render_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(result.rows)
    return buffer.getvalue()


def render_json(result: Result) -> str:
    """JSON lines, one object per row (times as RFC 3339, decimals as numbers)."""
    return "".join(
        orjson.dumps(dict(zip(result.columns, row)), default=str).decode() + "\n" for row in result.rows
    )


def live_sink_answers(address: str, token_file: Path) -> bool:
    """Whether a sink serves live SQL at ``address`` with the token we have."""
    token = quack.read_token(token_file)
    if token is None:
        return False
    con = duckdb.connect()
    try:
        quack.attach(con, address, token)
        return True
    except (duckdb.Error, quack.QuackError):
        return False
    finally:
        con.close()


def attach_command(address: str, token_file: Path, token_from_env: bool) -> str:
    """The exact ``duckdb`` command an analyst pastes; the token stays in the file or the
    environment (the shell reads it), so it never lands on screen or in shell history."""
    hint = "$JOBSTREAM_QUACK_TOKEN" if token_from_env else f"$(cat {token_file})"
    return quack.analyst_command(address, hint)
