"""``pipeline sql``: one read-only query against the analytics database.

Live over Quack when the sink serves it, else the file itself opened read-only (DuckDB
lets one process hold a file, so while the sink runs only Quack can read it). Writes
are refused here, before anything is sent, by the same rule the Quack server applies.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pipeline.errors import JobstreamError
from pipeline.sink import endpoint, quack


class SqlError(JobstreamError, RuntimeError):
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
    return "the database is read-only here: only SELECT queries (and DESCRIBE / SHOW / SUMMARIZE / EXPLAIN) are allowed"


def _server_error(exc: duckdb.Error) -> str:
    """The server's own message, without the local ``quack_query(...)`` call it came through."""
    text = str(exc).split("\n\nLINE 1: FROM quack_query")[0]
    return " ".join(text.split())


def query_live(address: str, token: str, sql: str) -> Result | None:
    """Run ``sql`` whole on the sink (``quack_query``): joins, subqueries and UNION read
    several stored tables, which an attached catalog cannot stream ("Multiple streaming
    scans"). None when nothing answers at ``address``."""
    con = duckdb.connect()
    try:
        quack.load_extensions(con)
        cursor = con.execute("FROM quack_query(?, ?, token => ?)", [address, sql.strip().rstrip(";"), token])
        columns = [d[0] for d in cursor.description or []]
        return Result(columns, cursor.fetchall(), address)
    except duckdb.IOException as exc:
        if "could not connect" in str(exc).lower():
            return None
        raise SqlError(_server_error(exc)) from None
    except duckdb.Error as exc:
        if _server_error(exc).endswith("Authentication failed"):
            raise SqlError(f"{address} refused the token") from None
        raise SqlError(_server_error(exc)) from None
    except quack.QuackError as exc:
        raise SqlError(str(exc)) from None
    finally:
        con.close()


def query_file(db_path: Path, address: str, sql: str, token_known: bool, token_file: Path) -> Result:
    """Run ``sql`` on the file opened read-only, for when no sink serves it."""
    if not db_path.is_file():
        raise SqlError(f"no database at {db_path} and no live sink at {address}: start `pipeline sink` or pass --db")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())
        if "lock" in text.lower():
            raise SqlError(
                f"{db_path} is held by a running sink, but its live SQL at {address} did not answer"
                + ("" if token_known else f" (no token: set JOBSTREAM_QUACK_TOKEN or check {token_file})")
            ) from None
        raise SqlError(f"cannot open {db_path}: {text}") from None
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return Result(columns, cursor.fetchall(), str(db_path))
    except duckdb.Error as exc:
        raise SqlError(" ".join(str(exc).split())) from None
    finally:
        con.close()


def run_query(db_path: Path, address: str, token_file: Path, sql: str) -> Result:
    reason = refusal(sql)
    if reason is not None:
        raise SqlError(reason)
    token = quack.read_token(token_file)
    if token is not None:
        result = query_live(address, token, sql)
        if result is not None:
            return result
    return query_file(db_path, address, sql, token is not None, token_file)


def live_address(db_path: Path, given: str | None, default: str) -> str:
    """Where to ask: ``--quack`` when given, else the endpoint the running sink recorded
    beside ``db_path``, else the settings' default."""
    if given:
        return given
    found = endpoint.discover(db_path)
    return found.quack if found is not None and found.quack else default


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


def attach_init_file(address: str, token_file: Path, home: Path | None = None) -> Path:
    """Write the SQL that attaches ``address`` to a file only this user can read
    (``~/.cache/jobstream/attach-<port>.sql``, mode 0600), for ``duckdb -init FILE``: the
    token stays in files, never in the ``duckdb`` command line that ``ps`` shows."""
    token = quack.read_token(token_file)
    if token is None:
        raise SqlError(f"no token: set JOBSTREAM_QUACK_TOKEN or check {token_file}")
    cache = (home or Path.home()) / ".cache" / "jobstream"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = cache / f"attach-{address.rsplit(':', 1)[-1]}.sql"
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(quack.attach_script(address, token))
    return path


def attach_command(address: str, token_file: Path, token_from_env: bool = False) -> str:
    """The exact ``duckdb`` command an analyst pastes: ``-init`` a private file that
    attaches the live database, so the token is in no process's argv."""
    return f"duckdb -init {attach_init_file(address, token_file)}"
