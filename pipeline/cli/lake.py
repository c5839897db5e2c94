"""``pipeline lake-compact``: housekeeping of a lake written by ``pipeline sink --lake``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from pipeline.cli.common import app, fail, out


@app.command("lake-compact")
def lake_compact(
    lake: Annotated[str, typer.Option("--lake", envvar="JOBSTREAM_LAKE", help="The lake's PostgreSQL catalog (libpq string or URI).")],
    keep: Annotated[float, typer.Option(min=0, help="Seconds of snapshots (time travel) and replaced files to keep: above the longest query a reader runs.")] = 3600.0,
) -> None:
    """Merge the lake's small Parquet files, expire snapshots older than --keep and delete the files no kept snapshot reads (pipeline/sink/lake_housekeeping.py); sinks may keep writing meanwhile."""
    from pipeline.sink.lake import LakeTarget
    from pipeline.sink.lake_housekeeping import compact
    from pipeline.sink.writer import SinkError

    try:
        done = compact(LakeTarget(lake), timedelta(seconds=keep))
    except SinkError as exc:
        raise fail(str(exc)) from None
    b, a = done.before, done.after
    out.print(f"lake: {b.data_files} data files ({b.bytes / 1e6:.1f} MB), {b.snapshots} snapshots -> "
              f"{a.data_files} data files ({a.bytes / 1e6:.1f} MB), {a.snapshots} snapshots in {done.seconds:.1f} s", markup=False)
