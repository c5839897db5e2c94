"""``pipeline ingest <vendor>``, ``pipeline simulate <vendor>`` and ``pipeline zuora cancel``,
one command per vendor in the registry: a vendor that names its own command function
(``Vendor.ingest_command`` / ``simulate_command``) gets it, a pull vendor that names none
gets the generic one built here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import (
    PLAIN, BootstrapOpt, Commands, ConfigOpt, MetricsPortOpt, app, ingest_app, load_settings, out, simulate_app,
)
from pipeline.vendors import registry
from pipeline.vendors.registry import Vendor

PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")]
HostOpt = Annotated[str, typer.Option(help="Address to listen on (default 127.0.0.1; 0.0.0.0 in a container).")]
ClockFactorOpt = Annotated[float, typer.Option(min=0.001, help="Vendor seconds per real second.")]
FaultsOpt = Annotated[str, typer.Option(help="Faults, e.g. 'error=0.1,storm=0.05,retry_after_s=2,malformed=0.05,duplicate=0.2,reorder=0.5,latency_s=0.1,timeout=0.02'.")]
GroupsOpt = Annotated[int, typer.Option(min=1, help="Rounds of the scenario's jobs.")]


def run_pull(command: str, config: Optional[Path], bootstrap: Optional[str], metrics_port: Optional[int] = None,
             **options: object) -> None:
    """Run the pull ingestor ``command`` with the pipeline's settings (its errors: one line)."""
    from pipeline.ingest_cli import run_ingest

    run_ingest(command, config, load_settings(bootstrap=bootstrap, metrics_port=metrics_port), **options)


def pull_ingest(vendor: Vendor) -> Callable[..., None]:
    def ingest(config: ConfigOpt = None, bootstrap: BootstrapOpt = None, metrics_port: MetricsPortOpt = None) -> None:
        run_pull(vendor.command, config, bootstrap, metrics_port)

    ingest.__doc__ = vendor.ingest_help
    return ingest


def pull_simulate(vendor: Vendor) -> Callable[..., None]:
    def simulate(port: PortOpt = 0, clock_factor: ClockFactorOpt = 1.0, faults: FaultsOpt = "", groups: GroupsOpt = 3,
                 host: HostOpt = "127.0.0.1") -> None:
        from pipeline.ingest_cli import simulate as run_simulator

        run_simulator(vendor.command, port, clock_factor, faults, groups,
                      lambda url: out.print(f"{vendor.command} simulator at {url}"), host)

    simulate.__doc__ = vendor.simulate_help
    return simulate


for _vendor in registry.vendors():
    ingest_app.command(_vendor.command)(
        registry.load(_vendor.ingest_command) if _vendor.ingest_command else pull_ingest(_vendor))
    if _vendor.simulate_command:
        simulate_app.command(_vendor.command)(registry.load(_vendor.simulate_command))
    elif _vendor.kind == "pull" and _vendor.simulator:
        simulate_app.command(_vendor.command)(pull_simulate(_vendor))


zuora_app = Commands(help="Zuora RevPro BI Views operations.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(zuora_app, name="zuora")


@zuora_app.command("cancel")
def zuora_cancel(
    task_id: Annotated[str, typer.Argument(help="The continuation token (task_id) to cancel.")],
    config: ConfigOpt = None,
) -> None:
    """Cancel a BI Views task: DELETE /api/integrations/v2/biviews-status/TASK_ID."""
    from pipeline.ingest_cli import zuora_cancel as cancel

    out.print(cancel(config, task_id))
