"""Read-only queries on the analytics database for ``explain`` and ``report``.

The sink that serves *this* file (found by its ``<db>.endpoint.json``, trusted while its
pid runs) answers over Quack; otherwise the file itself is opened read-only. Unlike
``pipeline sql``, a sink of another file listening on the default port is never asked:
on a shared machine it would answer for the wrong database (or refuse this file's token).
An explicit ``--quack`` address is still honoured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.sink import endpoint, quack, sql as sql_module


class AnalyticsError(RuntimeError):
    """The query cannot run; one line for the user."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where the answers come from: a live address (or None) and the file."""

    db_path: Path
    live: str | None
    token_file: Path

    @classmethod
    def of(cls, db_path: Path, token_file: Path | None = None, quack_address: str | None = None) -> "Database":
        db_path = Path(db_path)
        found = endpoint.discover(db_path)
        live = quack_address or (found.quack if found is not None and found.quack else None)
        return cls(db_path, live, token_file or quack.token_file_for(db_path))

    def query(self, sql: str) -> sql_module.Result:
        reason = sql_module.refusal(sql)
        if reason is not None:
            raise AnalyticsError(reason)
        try:
            if self.live is not None:
                token = quack.read_token(self.token_file)
                if token is None:
                    raise AnalyticsError(f"the sink at {self.live} needs its token: set JOBSTREAM_QUACK_TOKEN or check {self.token_file}")
                result = sql_module.query_live(self.live, token, sql)
                if result is not None:
                    return result
            if self.live is None and not self.db_path.is_file():
                raise AnalyticsError(f"no database at {self.db_path} (and no sink serves it): pass --db")
            return sql_module.query_file(self.db_path, self.live or "(none)", sql, True, self.token_file)
        except sql_module.SqlError as exc:
            raise AnalyticsError(str(exc)) from None

    def rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]], str]:
        result = self.query(sql)
        return result.columns, result.rows, result.source
