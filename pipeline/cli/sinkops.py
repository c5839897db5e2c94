"""``pipeline rebase-offsets``: the operator's command for a sink whose stored offsets no
longer fit its Kafka (``pipeline/sink/rebase.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import BootstrapOpt, DbOpt, app, load_settings, out, quiet_kafka_logs


@app.command("rebase-offsets")
def rebase_offsets(
    db: DbOpt = None,
    bootstrap: BootstrapOpt = None,
    to: Annotated[str, typer.Option("--to", help="start: read from the first record Kafka still holds (nothing Kafka holds is skipped; rows read again are not written twice). end: skip what Kafka holds now.")] = "start",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would change; write nothing.")] = False,
) -> None:
    """Re-base the sink's stored offsets after Kafka was recreated or lost records to retention.

    The sink refuses to start when an offset stored in its database lies outside what Kafka
    holds ("Kafka no longer has the offsets stored in the database"). Stop the sink, then run
    this: each jobs.* partition whose stored offset Kafka no longer holds is moved to the start
    (default) or the end of what Kafka holds, one line each; the others are kept.

    Completeness: records that Kafka deleted (retention) or lost (a Kafka recreated without
    its volume) before the sink read them are in neither Kafka nor the database, and no
    command brings them back; each line names that range. With --to start, every record the
    current Kafka holds reaches the database once. With --to end, those are skipped too.
    """
    from pipeline.errors import ConfigError
    from pipeline.sink import rebase

    if to not in ("start", "end"):
        raise ConfigError(f"--to {to!r}: choose start or end")
    settings = load_settings(bootstrap=bootstrap, db_path=db)
    db_path = Path(settings.db_path)
    stored = rebase.read_stored(db_path)
    quiet_kafka_logs()
    starts, ends = asyncio.run(rebase.kafka_bounds(settings.bootstrap))
    moves = rebase.plan(stored, starts, ends, to)  # type: ignore[arg-type]
    for move in moves:
        out.print(move.line(), markup=False)
    changed = sum(move.changes for move in moves)
    if not dry_run:
        rebase.write(db_path, moves)
    verb = "would move" if dry_run else "moved"
    out.print(f"{db_path}: {verb} {changed} of {len(moves)} stored offsets to the {to} of what {settings.bootstrap} holds"
              if changed else f"{db_path}: every stored offset is within what {settings.bootstrap} holds; nothing to re-base",
              markup=False)
