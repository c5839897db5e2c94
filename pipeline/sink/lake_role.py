"""``pipeline sink --lake``: one of several sinks of a consumer group writing one lake
(the protocol is in ``lake.py``; the loop is the file sink's ``consumer.consume``)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from collections.abc import Callable

from pipeline.ops.health import RoleMetrics
from pipeline.ops.runtime import bind, operate
from pipeline.settings import Settings
from pipeline.sink.consumer import SinkStats, consume
from pipeline.sink.lake import LakeTarget, LakeWriter

DEFAULT_GROUP = "jobstream-lake-sink"


def run_lake_sink(
    settings: Settings, target: LakeTarget, *, group: str = DEFAULT_GROUP, echo: Callable[[str], None] = print,
) -> SinkStats:
    """Step 1, then the group loop until SIGINT/SIGTERM; errors surface as ``SinkError``."""
    writer = LakeWriter(target, settings.sink_threads).open()
    try:
        echo(f"sink: writing the lake {target.catalog} ({target.data_path or 'its stored data path'}) "
             f"from {settings.bootstrap} in group {group}")

        async def main() -> SinkStats:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            metrics = RoleMetrics("sink", stall_after_s=settings.stall_after_s)
            operations = asyncio.ensure_future(operate(metrics, settings, listening=bind(metrics, settings)))
            try:
                return await consume(settings, writer, stop=stop, metrics=metrics, group=group)
            finally:
                operations.cancel()
                await asyncio.gather(operations, return_exceptions=True)

        stats = asyncio.run(main())
        echo(f"sink: stopped after {stats.records} records, {stats.rows} rows, {stats.dead_letters} dead letters"
             f" ({writer.conflicts} commits repeated after a conflict)")
        return stats
    finally:
        writer.close()


def lake_sink_from_cli(settings: Settings, catalog: str, data_path: str | None, group: str | None,
                       *, echo: Callable[[str], None] = print) -> SinkStats:
    """What ``pipeline sink --lake`` runs (the CLI only parses)."""
    if data_path is not None and "://" not in data_path:
        data_path = str(Path(data_path).expanduser().resolve()) + "/"
    return run_lake_sink(settings, LakeTarget(catalog, data_path), group=group or DEFAULT_GROUP, echo=echo)
