"""The long-running roles: ``pipeline worker``, ``alert`` and ``sink``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import (
    BootstrapOpt, DbOpt, MetricsPortOpt, app, exit_on_sigterm, fail, load_settings, out, quiet_kafka_logs,
)
from pipeline.config.roles import for_role
from pipeline.errors import ConfigError, JobstreamError
from pipeline.kafka import clients


@app.command()
def worker(
    bootstrap: BootstrapOpt = None,
    store: Annotated[Optional[str], typer.Option(help="Table store: rocksdb:// (default) or memory://.")] = None,
    datadir: Annotated[Optional[Path], typer.Option(help="Where RocksDB keeps its files (default data/worker).")] = None,
    partitions: Annotated[Optional[int], typer.Option(min=1, help="Partitions of the table and its topics.")] = None,
    stale_after: Annotated[Optional[float], typer.Option(help="Seconds of event time without activity before a run is STALE (default 240); per vendor: JOBSTREAM_STALE_AFTER_<VENDOR>.")] = None,
    app_id: Annotated[Optional[str], typer.Option(help="Consumer group / Faust app id (default jobstream).")] = None,
    tansu: Annotated[Optional[bool], typer.Option("--tansu/--no-tansu", help="Work around the embedded broker's ListOffsets bug.")] = None,
    send_timeout: Annotated[Optional[float], typer.Option(help="Seconds Kafka has to acknowledge a batch's records before the worker exits 70 (default 30).")] = None,
    loglevel: Annotated[Optional[str], typer.Option(help="Faust log level (default: JOBSTREAM_LOG_LEVEL, else warning).")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the stream worker: raw.<vendor> -> normalize + lifecycle -> jobs.* topics."""
    from pipeline.stream.app import run_worker
    from pipeline.stream.prestart import check_worker

    settings = load_settings(
        bootstrap=bootstrap, store=store, datadir=datadir, partitions=partitions,
        stale_after_s=stale_after, app_id=app_id, tansu=tansu, send_timeout_s=send_timeout,
        metrics_port=metrics_port,
    )
    settings = for_role(settings, "worker")  # the worker reads its own fields only
    check_worker(settings)
    from pipeline.ops.logs import LEVEL_ENV

    run_worker(settings, loglevel=loglevel or os.environ.get(LEVEL_ENV, "").strip().lower() or "warning")



@app.command()
def alert(
    rules: Annotated[Optional[Path], typer.Option("--rules", "-r", help="Rules file (TOML). Default: the rules shipped with the package (see --show-rules).")] = None,
    bootstrap: BootstrapOpt = None,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="Apprise URL without credentials for rules that name none (repeatable), e.g. json://host:8080/hook; a URL with a token or password is refused here (ps shows command lines): put it in env JOBSTREAM_ALERT_URLS.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Consumer group (default jobstream-alerts).")] = None,
    show_rules: Annotated[bool, typer.Option("--show-rules", help="Print the rules (URLs shown by scheme only) and exit.")] = False,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the alerter: jobs.transitions -> rules -> Slack / Teams / email / webhooks
    (Apprise URLs), with every alert recorded on jobs.alerts.

    Rules fire on a failed run, a stale run, a run reactivated after a long stale spell,
    retry storms, runs slower than their usual duration, and dead letters per minute.
    Rate limits per rule and job: 300 s for chat and webhooks, 600 s for email.
    """
    from pipeline.alerts import rules as rules_module
    from pipeline.alerts import service

    from pipeline.alerts.delivery import carries_secrets, scheme_of

    for given in url or ():  # a command line is visible to every user of the machine (ps, /proc)
        if carries_secrets(given):
            raise ConfigError(f"--url: the {scheme_of(given)}:// URL carries a token or password, which a command line "
                              "shows to every user (ps); give it in JOBSTREAM_ALERT_URLS or a rules file instead")
    settings = load_settings(bootstrap=bootstrap, alert_group=group, metrics_port=metrics_port)
    extra = tuple(url or ()) or rules_module.split_urls(settings.alert_url_text())
    rule_set = rules_module.load(rules, extra_urls=extra)
    if show_rules:
        for line in rules_module.describe(rule_set):
            out.print(line, markup=False)
        return
    if settings.alert_delivery_attempts < 1:
        raise ConfigError("JOBSTREAM_ALERT_DELIVERY_ATTEMPTS must be at least 1")
    from pipeline.ops.logs import setup_logging

    setup_logging(level=logging.INFO)
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    quiet_kafka_logs()
    exit_on_sigterm()
    try:
        service.run(for_role(settings, "alerter"), rule_set)
    except KeyboardInterrupt:
        pass
    except JobstreamError:  # the guard prints it (AlerterError included)
        raise
    except Exception as exc:  # noqa: BLE001 - one line and a non-zero exit; the supervisor restarts it
        raise fail(f"the alerter stopped: {type(exc).__name__}: {exc}") from None




@app.command()
def sink(
    bootstrap: BootstrapOpt = None,
    db: DbOpt = None,
    quack_host: Annotated[Optional[str], typer.Option(help="Address live SQL listens on (default localhost; anything else is reachable from other hosts).")] = None,
    quack_port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port of live SQL over Quack (default 9494; 0 turns it off).")] = None,
    pg_host: Annotated[Optional[str], typer.Option(help="Address the Postgres endpoint listens on (default localhost).")] = None,
    pg_port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port of live SQL over the PostgreSQL wire (default 0: off).")] = None,
    metrics_port: MetricsPortOpt = None,
    lake: Annotated[Optional[str], typer.Option(envvar="JOBSTREAM_LAKE", help="Write a DuckLake instead of --db: its PostgreSQL catalog as a libpq string or URI ('dbname=lake host=/run/postgresql'). Several sinks of one --group share it (pipeline/sink/lake.py).")] = None,
    data_path: Annotated[Optional[str], typer.Option(envvar="JOBSTREAM_LAKE_DATA_PATH", help="With --lake: where its Parquet files go (needed the first time; later the lake remembers it).")] = None,
    group: Annotated[Optional[str], typer.Option(help="With --lake: the sinks' consumer group (default jobstream-lake-sink).")] = None,
) -> None:
    """Write the jobs.* topics into DuckDB, exactly once, and serve it for live SQL.

    The single writer of the file: each batch and its Kafka offsets go in one transaction
    (the commit protocol: pipeline/sink/consumer.py). The Quack token comes from
    JOBSTREAM_QUACK_TOKEN or is generated into <db>.quack-token (mode 0640, kept until rotated).
    """
    from pipeline.sink.consumer import run_sink

    settings = for_role(load_settings(bootstrap=bootstrap, db_path=db, quack_host=quack_host, quack_port=quack_port,
                                      pg_host=pg_host, pg_port=pg_port, metrics_port=metrics_port), "sink")
    quiet_kafka_logs()
    try:
        from pipeline.ops.logs import stamp

        if lake:
            from pipeline.sink.lake_role import lake_sink_from_cli
            lake_sink_from_cli(settings, lake, data_path, group, echo=lambda line: out.print(stamp(line), markup=False))
        else:
            run_sink(settings, echo=lambda line: out.print(stamp(line), markup=False))
    except JobstreamError:  # the guard prints it (SinkError included)
        raise
    except (OSError, ConnectionError) as exc:
        raise fail(clients.unreachable(settings, exc)) from None
    except Exception as exc:  # noqa: BLE001 - aiokafka's connection errors; one line, no traceback
        if type(exc).__module__.startswith("aiokafka"):
            raise fail(clients.unreachable(settings, exc)) from None
        raise
