"""What ``pipeline sql --lake`` and ``pipeline check --lake`` do (the CLI only parses)."""

from __future__ import annotations

import sys

from pipeline.errors import ConfigError
from pipeline.sink import check, lake_sql, sql
from pipeline.sink.lake import LakeTarget
from pipeline.sink.writer import SinkError


def run_sql(catalog: str, query: str | None, *, output: str, attach: bool, describe: bool) -> None:
    from pipeline.cli.common import fail, out

    target = LakeTarget(catalog)
    try:
        if attach:
            out.print(lake_sql.attach_command(target), markup=False, highlight=False, soft_wrap=True)
            return
        if describe:
            sys.stdout.write(lake_sql.describe_lake(target, query))
            return
        if not query:
            raise ConfigError('give a query, e.g. pipeline sql --lake "dbname=lake" "FROM active_runs", or --attach')
        if output not in ("table", "csv", "json"):
            raise ConfigError(f"--format must be table, csv or json, not {output!r}")
        result = lake_sql.query(target, query)
    except (sql.SqlError, SinkError) as exc:
        raise fail(str(exc)) from None
    render = {"csv": sql.render_csv, "json": sql.render_json}.get(output)
    if render is not None:
        sys.stdout.write(render(result))
    elif sql.table_width(result) > out.width:
        sys.stdout.write(sql.render_vertical(result))
    else:
        from rich.table import Table

        table = Table(*result.columns, caption=f"{len(result.rows)} rows from {result.source}")
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


def run_checks(catalog: str) -> tuple[list[check.Outcome], str]:
    target = LakeTarget(catalog)
    try:
        return lake_sql.run_checks(target), lake_sql.source_of(target)
    except (sql.SqlError, SinkError) as exc:
        raise check.CheckError(str(exc)) from None
