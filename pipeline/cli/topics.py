"""``pipeline topics list|apply`` and ``pipeline broker``: the catalog and the embedded broker."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Optional

import typer

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.cli.common import (
    BootstrapOpt, app, err, exit_on_sigterm, fail, load_settings, out, quiet_kafka_logs, topics_app,
)


@topics_app.command("list")
def topics_list() -> None:
    """Show the catalog: every topic with its partitions, cleanup policy and key."""
    from rich.table import Table

    table = Table("topic", "partitions", "cleanup", "key")
    for spec in catalog.load().values():
        table.add_row(spec.name, str(spec.partitions), spec.cleanup_policy, spec.key)
    out.print(table)


@topics_app.command("apply")
def topics_apply(
    bootstrap: BootstrapOpt = None,
    partitions: Annotated[Optional[int], typer.Option(min=1, help="Override every topic's partition count.")] = None,
    timeout: Annotated[float, typer.Option(min=0.5, help="Seconds to wait for the broker before giving up.")] = 10.0,
) -> None:
    """Create the catalog's missing topics on a broker; report every mismatch.

    A topic already there is compared with the catalog: its partition count and each
    setting its file states (cleanup policy, retention); nothing is changed.

    Idempotent: a second run creates nothing. Exit 0 when the broker matches the
    catalog, 1 on a mismatch or an unreachable broker.
    """
    settings = load_settings(bootstrap=bootstrap, partitions=partitions)
    quiet_kafka_logs()
    try:
        report = asyncio.run(asyncio.wait_for(
            catalog.apply(settings, timeout=timeout, partitions=settings.partitions,
                          replication_factor=settings.replication_factor, min_insync_replicas=settings.min_insync_replicas),
            timeout + 5,
        ))
    except catalog.CatalogError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        raise fail(clients.unreachable(settings, exc, within_s=timeout)) from None
    for name in report.created:
        out.print(f"created  {name}")
    for name in report.present:
        out.print(f"present  {name}")
    for line in report.mismatched:
        err.print(f"[yellow]mismatch[/] {line}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def broker(
    port: Annotated[Optional[int], typer.Option(help="Port to listen on (default: a free one).")] = None,
    apply_topics: Annotated[bool, typer.Option("--topics/--no-topics", help="Create the catalog's topics.")] = True,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) until Ctrl-C."""
    from pipeline.broker import EmbeddedBroker

    exit_on_sigterm()
    embedded = EmbeddedBroker(port=port).start()
    try:
        if apply_topics:
            try:
                report = asyncio.run(catalog.apply(embedded.bootstrap))
            except Exception as exc:  # noqa: BLE001 - one line, no traceback
                raise fail(f"creating the topics failed: {exc}") from None
            out.print(f"topics: {len(report.created)} created")
        out.print(f"broker ready at [bold]{embedded.bootstrap}[/] (memory only; Ctrl-C stops it)")
        out.print(f"  export JOBSTREAM_BOOTSTRAP={embedded.bootstrap} JOBSTREAM_TANSU=1")
        while embedded.running:
            time.sleep(0.5)
        raise fail("the broker exited")
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()
