"""Qlik Sense QRS's ``pipeline ingest qlik-qrs``: the generic pull command plus ``--start-task``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.cli.common import BootstrapOpt, ConfigOpt, MetricsPortOpt


def ingest(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    start_task: Annotated[Optional[str], typer.Option("--start-task", help="Start this task (POST /qrs/task/ID/start/synchronous), follow its session to the end, then exit.")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Poll Qlik Sense QRS execution results and sessions (modifiedDate watermark) into raw.qlik_qrs."""
    from pipeline.cli.vendors import run_pull

    run_pull("qlik-qrs", config, bootstrap, metrics_port, start_task=start_task)
