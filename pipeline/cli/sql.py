"""``pipeline sql``: one read-only query over Quack or the file; the sink's offsets for ``status``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import DbOpt, app, err, load_settings, out
from pipeline.errors import EXIT_FAILED, ConfigError
from pipeline.settings import Settings

LakeOpt = Annotated[Optional[str], typer.Option("--lake", envvar="JOBSTREAM_LAKE", help="Read the DuckLake with this PostgreSQL catalog (libpq string or URI) instead of the file.")]


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help='A SELECT query, e.g. "FROM active_runs".')] = None,
    db: DbOpt = None,
    quack_uri: Annotated[Optional[str], typer.Option("--quack", help="Live sink to ask (default quack:localhost:9494, from the settings).")] = None,
    output: Annotated[str, typer.Option("--format", "-f", help="table (one block per row when too wide for the terminal), csv or json (JSON lines).")] = "table",
    attach: Annotated[bool, typer.Option("--attach", help="Print the duckdb command line that attaches the live database (or opens the file read-only when no sink answers), and exit.")] = False,
    rotate_token: Annotated[bool, typer.Option("--rotate-token", help="Write a new live SQL token to the token file (the sink serves it from its next start), and exit.")] = False,
    describe: Annotated[bool, typer.Option("--describe", help="Describe the catalog: every table and view, or the columns of the one named instead of a query (pipeline sql --describe jobs).")] = False,
    lake: LakeOpt = None,
) -> None:
    """Run one read-only query: over Quack when the sink runs, else on the file (read-only).

    Views: jobs, job_attempts, run_durations, job_retries, stale_episodes, failure_rates, active_runs,
    dead_letter_reasons (README "Analysts' views"). Writes are refused.
    """
    import os
    import shutil

    from pipeline.sink import quack, sql as sql_module

    if lake:
        from pipeline.sink.lake_cli import run_sql

        return run_sql(lake, query, output=output, attach=attach, describe=describe)
    settings = load_settings(db_path=db)
    address = sql_module.live_address(settings.db_path, quack_uri, quack.uri(settings.quack_host, settings.quack_port))
    token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
    if rotate_token:
        quack.rotate_token(token_file)
        out.print(f"new token in {token_file}; restart the sink to serve it", markup=False)
        return
    if describe:
        from pipeline.sink.describe import describe as describe_catalog

        sys.stdout.write(describe_catalog(settings.db_path, address, token_file, query))
        return
    if attach:
        binary = shutil.which("duckdb", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if not sql_module.live_sink_answers(address, token_file):
            if not Path(settings.db_path).is_file():
                raise sql_module.SqlError(f"no live sink answers at {address} and there is no database at {settings.db_path}")
            err.print(f"no live sink answers at {address}; open the file read-only instead:", markup=False, highlight=False)
            out.print(f"{binary or 'duckdb'} -readonly {settings.db_path}", markup=False)
            return
        line = sql_module.attach_command(address, token_file)
        out.print(line.replace("duckdb ", f"{binary} ", 1) if binary else line, markup=False)
        return
    if not query:
        raise ConfigError('give a query, e.g. pipeline sql "FROM active_runs", or --attach')
    if output not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, not {output!r}")
    result = sql_module.run_query(settings.db_path, address, token_file, query)
    if output == "csv":
        sys.stdout.write(sql_module.render_csv(result))
    elif output == "json":
        sys.stdout.write(sql_module.render_json(result))
    elif sql_module.table_width(result) > out.width:
        sys.stdout.write(sql_module.render_vertical(result))
    else:
        from rich.table import Table

        table = Table(*result.columns, caption=f"{len(result.rows)} rows from {result.source}")
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@app.command()
def check(db: DbOpt = None, lake: LakeOpt = None) -> None:
    """Data tests on the analytics file: uniqueness, not-null, relationships, accepted values and the views reconciled (one line per check; exit 1 when one fails)."""
    from pipeline.sink import check as check_module

    settings = load_settings(db_path=db)
    if lake:
        from pipeline.sink.lake_cli import run_checks

        outcomes, source = run_checks(lake)
    else:
        outcomes, source = check_module.check_file(settings.db_path), str(settings.db_path)
    sys.stdout.write(check_module.report(outcomes, source))
    if not all(o.passed for o in outcomes):
        raise typer.Exit(EXIT_FAILED)


def _sink_offsets(settings: Settings) -> tuple[dict, str]:
    """The sink's committed offsets from its own table (live over Quack, else the file)."""
    from pipeline.sink import quack, sql as sql_module

    address = sql_module.live_address(settings.db_path, None, quack.uri(settings.quack_host, settings.quack_port))
    token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
    try:
        result = sql_module.run_query(
            settings.db_path, address, token_file, 'SELECT topic, "partition", next_offset, committed_at FROM kafka_offsets'
        )
    except sql_module.SqlError as exc:
        return {}, f"sink: no offsets ({exc})"
    return {(t, p): (o, at) for t, p, o, at in result.rows}, f"sink offsets from {result.source}"
