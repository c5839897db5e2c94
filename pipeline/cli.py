"""``pipeline``: the one command-line entry point.

Every command reads ``Settings`` from ``JOBSTREAM_*`` environment variables and lets its
flags override them. Errors that a user can fix are one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from pipeline import catalog, vendors
from pipeline.settings import Settings, SettingsError, host_port

if TYPE_CHECKING:
    from pipeline import backfill

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"pipeline (jobstream) {version('jobstream')}")
        raise typer.Exit()


# Help text is plain: paragraphs are rewrapped to the terminal ("rich" mode kept the
# docstrings' own line breaks, which broke sentences mid-line), brackets print as written.
PLAIN = None

app = typer.Typer(
    help="Jobstream: five vendors' job events -> Kafka -> one lifecycle history in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=PLAIN,
)
topics_app = typer.Typer(help="The topic catalog (topics/*.toml) and brokers.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(topics_app, name="topics")
ingest_app = typer.Typer(help="Ingestors: vendor APIs and documents into raw.<vendor> topics.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(ingest_app, name="ingest")
simulate_app = typer.Typer(help="Vendor simulators that speak the real protocols, for demos and tests.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(simulate_app, name="simulate")


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Jobstream: five vendors' job events -> Kafka -> one lifecycle history in DuckDB."""

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

BootstrapOpt = Annotated[
    Optional[str],
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (env JOBSTREAM_BOOTSTRAP; default localhost:9092)."),
]


MetricsPortOpt = Annotated[
    Optional[int],
    typer.Option("--metrics-port", min=0, max=65535,
                 help="Serve /metrics and /healthz on this port (env JOBSTREAM_METRICS_PORT; default 0: off; host JOBSTREAM_METRICS_HOST, default 127.0.0.1)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Each line of ``message`` as its own ``error:`` line (settings report every problem)."""
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {line}")
    return typer.Exit(code)


def quiet_kafka_logs() -> None:
    """aiokafka logs every failed connection attempt; the command says it once itself."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def exit_on_sigterm() -> None:
    """SIGTERM exits through SystemExit, so ``finally`` blocks stop the embedded broker
    and the worker child (Python's default would end the process on the spot)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env().with_overrides(stale_after_defaults=vendors.stale_after_defaults(), **overrides)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


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
            catalog.apply(settings.bootstrap, timeout=timeout, partitions=settings.partitions),
            timeout + 5,
        ))
    except catalog.CatalogError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        reason = str(exc) or type(exc).__name__
        raise fail(f"cannot reach Kafka at {settings.bootstrap} within {timeout:g} s ({reason})") from None
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
    from pipeline.broker import BrokerError, EmbeddedBroker

    exit_on_sigterm()
    try:
        embedded = EmbeddedBroker(port=port).start()
    except BrokerError as exc:
        raise fail(str(exc)) from None
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


@app.command()
def normalize(
    vendor: Annotated[str, typer.Option("--vendor", "-v", help=f"One of: {', '.join(vendors.VENDOR_NAMES)}.")],
    file: Annotated[str, typer.Argument(help="A file of JSON documents or JSON lines; '-' reads stdin.")] = "-",
    source: Annotated[Optional[str], typer.Option(help="Tenant / host / instance when the documents do not name it.")] = None,
    tz: Annotated[Optional[str], typer.Option(help="Time zone of the vendor's naive timestamps (default UTC).")] = None,
) -> None:
    """Print canonical job events (JSON lines) for a vendor's documents. No Kafka needed.

    Each rejected document is reported on stderr with its position and a reason.
    Exit 0 if every document was accepted, 1 if some were rejected, 2 on usage errors.
    """
    from pipeline.normalize_cli import run_normalize

    if vendor not in vendors.VENDOR_NAMES:
        raise fail(f"unknown vendor {vendor!r}; choose one of {', '.join(vendors.VENDOR_NAMES)}", 2)
    if file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    settings = load_settings()
    if tz:
        settings = settings.with_overrides(vendor_tz={**settings.vendor_tz, vendor: tz})
    try:
        zone = settings.tz(vendor)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    rejected = run_normalize(vendor, data, source=source, tz=zone, out=sys.stdout.buffer, err=err)
    raise typer.Exit(1 if rejected else 0)


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
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "warning",
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the stream worker: raw.<vendor> -> normalize + lifecycle -> jobs.* topics."""
    from pipeline.broker import kafka_api_versions
    from pipeline.stream.app import run_worker

    settings = load_settings(
        bootstrap=bootstrap, store=store, datadir=datadir, partitions=partitions,
        stale_after_s=stale_after, app_id=app_id, tansu=tansu, send_timeout_s=send_timeout,
        metrics_port=metrics_port,
    )
    if not any(kafka_api_versions(*host_port(address), timeout=5) for address in settings.bootstrap.split(",")):
        raise fail(f"cannot reach Kafka at {settings.bootstrap} (no broker answered within 5 s)")
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    quiet_kafka_logs()  # for the check only: the worker itself logs what its clients say
    try:
        problems = asyncio.run(catalog.raw_partition_problems(settings.bootstrap, settings.partitions))
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        raise fail(f"cannot read the raw topics from {settings.bootstrap}: {exc or type(exc).__name__}") from None
    finally:
        kafka_log.setLevel(level)
    if problems:
        more = f"; {len(problems) - 1} more raw topics alike" if len(problems) > 1 else ""
        raise fail(f"{problems[0]} (the worker's table needs that count on every raw topic: "
                   f"set --partitions / JOBSTREAM_PARTITIONS to match, or fix the topic){more}")
    try:
        Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot use --datadir {settings.datadir}: {exc.strerror or exc}", 2) from None
    run_worker(settings, loglevel=loglevel)


@app.command()
def replay(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Vendor documents (JSON, JSON lines, or folders of them). Default: the bundled samples.")] = None,
    vendor: Annotated[Optional[str], typer.Option("--vendor", "-v", help="Vendor of FILES (default: from the folder or the name prefix, e.g. zuora/x.json).")] = None,
    bootstrap: Annotated[Optional[str], typer.Option("--bootstrap", "-b", help="Send to this Kafka and stop (a backfill; env JOBSTREAM_BOOTSTRAP too). Without either, everything runs embedded.")] = None,
    source: Annotated[str, typer.Option(help="Tenant / host for documents that do not name one.")] = "local",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the worker's output.")] = 180.0,
    worker_log: Annotated[Optional[Path], typer.Option(help="Keep the embedded worker's log in this file (default: not kept).")] = None,
) -> None:
    """Replay vendor documents through the pipeline.

    With a Kafka (--bootstrap or JOBSTREAM_BOOTSTRAP): the file backfill, as `pipeline
    ingest file`. Without one (the local run): starts the embedded broker, creates the
    topics, starts a worker, sends the documents keyed by job, waits for every event to
    come out and prints the lifecycles (runs, attempts, stale episodes, dead letters).
    Exit 0 when every document was used, 1 when some were rejected or the run failed.
    """
    from pipeline import backfill, replay as replay_module
    from pipeline.settings import given

    chosen = _files_of(files or [], vendor)
    clock = backfill.EnvelopeClock()
    if not chosen:
        chosen = replay_module.sample_files()
        clock = backfill.EnvelopeClock(replay_module.SAMPLES_RECEIVED_AT, timedelta(seconds=10))
    settings = load_settings(bootstrap=bootstrap)
    quiet_kafka_logs()
    if bootstrap or given("bootstrap"):
        report = _backfill(settings, chosen, source=source, clock=clock, rate=None)
    else:
        exit_on_sigterm()
        try:
            report = replay_module.run_local(
                chosen, source=source, clock=clock, timeout=timeout, worker_log=worker_log, out=out, err=err,
            )
        except replay_module.ReplayError as exc:
            raise fail(str(exc)) from None
    if report.rejected:
        raise fail(f"{len(report.rejected)} documents or items were rejected (listed above); the rest was sent")


@ingest_app.command("file")
def ingest_file(
    paths: Annotated[list[Path], typer.Argument(help="Files (JSON, JSON lines, the Zuora status text) or folders of them.")],
    vendor: Annotated[Optional[str], typer.Option("--vendor", "-v", help="Vendor of the documents (default: from the folder or the name prefix, e.g. zuora/x.json).")] = None,
    bootstrap: BootstrapOpt = None,
    source: Annotated[str, typer.Option(help="Tenant / host for documents that do not name one (also the heartbeats' source).")] = "local",
    rate: Annotated[Optional[str], typer.Option(help="At most N records per second, e.g. 500/s (default: full speed).")] = None,
    received_at: Annotated[Optional[str], typer.Option(help="Envelope time of every document, RFC 3339 (default: when it is sent).")] = None,
    heartbeats: Annotated[bool, typer.Option("--heartbeats/--no-heartbeats", help="Write heartbeats to every partition of the raw topic.")] = True,
) -> None:
    """Backfill saved vendor documents into raw.<vendor>, keyed by job.

    Streams with a bounded number of records in flight (flat memory whatever the input
    size) and shows a progress bar. A bad line or item is reported with its file, line
    and item number, and the rest goes on. Exit 0 when everything was sent, 1 when
    something was rejected or Kafka failed, 2 on usage errors.
    """
    from pipeline import backfill

    settings = load_settings(bootstrap=bootstrap)
    chosen = _files_of(paths, vendor)
    if not chosen:
        raise fail("no files to send", 2)
    clock = backfill.EnvelopeClock(_parse_time(received_at, "--received-at")) if received_at else backfill.EnvelopeClock()
    quiet_kafka_logs()
    report = _backfill(settings, chosen, source=source, clock=clock, rate=_parse_rate(rate), heartbeats=heartbeats)
    if report.rejected:
        raise fail(f"{len(report.rejected)} documents or items were rejected (listed above); the rest was sent")


def _files_of(paths: list[Path], vendor: str | None) -> list[tuple[str, Path]]:
    """``(vendor, file)`` for every file named or under a folder named; usage errors exit 2."""
    from pipeline import backfill

    if vendor is not None and vendor not in vendors.VENDOR_NAMES:
        raise fail(f"unknown vendor {vendor!r}; choose one of {', '.join(vendors.VENDOR_NAMES)}", 2)
    for path in paths:
        if not path.exists():
            raise fail(f"cannot read {path}: no such file or folder", 2)
    chosen = []
    for path in backfill.expand(paths):
        file_vendor = vendor or backfill.vendor_of(path)
        if file_vendor is None:
            raise fail(f"cannot tell the vendor of {path}: pass --vendor or name it <vendor>-*.json", 2)
        chosen.append((file_vendor, path))
    return chosen


def _backfill(
    settings: Settings, files: list[tuple[str, Path]], *, source: str, clock: "backfill.EnvelopeClock",
    rate: float | None, heartbeats: bool = True,
) -> "backfill.Report":
    """Run the backfill with a progress bar on stderr and a summary line on stdout."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline import backfill

    total = sum(path.stat().st_size for _vendor, path in files)
    columns = (BarColumn(), DownloadColumn(), TextColumn("{task.fields[records]} records"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("backfill", total=total, records=0)
        try:
            report = asyncio.run(backfill.run(
                settings.bootstrap, files, source=source, clock=clock, tz=settings.tz, rate=rate, heartbeats=heartbeats,
                on_rejected=lambda rejection: bar.console.print(f"rejected {rejection}", markup=False),
                progress=lambda read, sent: bar.update(task, completed=read, records=sent),
            ))
        except backfill.BackfillError as exc:
            raise fail(str(exc)) from None
    speed = report.records / report.seconds if report.seconds else 0.0
    out.print(
        f"sent {report.records} records ({report.expected_events} job events) from {report.documents} documents "
        f"in {report.files} files to {settings.bootstrap}, {report.heartbeats} heartbeats, "
        f"{len(report.rejected)} rejected, in {report.seconds:.1f} s ({speed:.0f} records/s)"
    )
    return report


def _parse_rate(text: str | None) -> float | None:
    if text is None:
        return None
    number = text.strip().removesuffix("/s")
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise fail(f"--rate {text!r}: give records per second, e.g. 500/s", 2)
    return value


def _parse_time(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{flag} {text!r} is not an RFC 3339 time such as 2026-11-20T09:00:00Z", 2) from None
    if value.tzinfo is None:
        raise fail(f"{flag} {text!r} needs a time zone (Z or +HH:MM)", 2)
    return value


@app.command()
def alert(
    rules: Annotated[Optional[Path], typer.Option("--rules", "-r", help="Rules file (TOML). Default: the rules shipped with the package (see --show-rules).")] = None,
    bootstrap: BootstrapOpt = None,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="Apprise URL for rules that name none (repeatable; env JOBSTREAM_ALERT_URLS). Example: json://host:8080/hook, mailto://user:pass@smtp.example.com?to=ops@example.com.")] = None,
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

    settings = load_settings(bootstrap=bootstrap, alert_group=group, metrics_port=metrics_port)
    extra = tuple(url or ()) or rules_module.split_urls(settings.alert_urls)
    try:
        rule_set = rules_module.load(rules, extra_urls=extra)
    except rules_module.RulesError as exc:
        raise fail(str(exc), 2) from None
    if show_rules:
        for line in rules_module.describe(rule_set):
            out.print(line, markup=False)
        return
    if settings.alert_delivery_attempts < 1:
        raise fail("JOBSTREAM_ALERT_DELIVERY_ATTEMPTS must be at least 1", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    quiet_kafka_logs()
    exit_on_sigterm()
    try:
        service.run(settings, rule_set)
    except service.AlerterError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - one line and a non-zero exit; the supervisor restarts it
        raise fail(f"the alerter stopped: {type(exc).__name__}: {exc}") from None


# --- DuckDB sink and SQL (pipeline/sink/) -------------------------------------------

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="The analytics DuckDB file (env JOBSTREAM_DB_PATH; default data/jobstream.duckdb).")]


@app.command()
def sink(
    bootstrap: BootstrapOpt = None,
    db: DbOpt = None,
    quack_host: Annotated[Optional[str], typer.Option(help="Address live SQL listens on (default localhost; anything else is reachable from other hosts).")] = None,
    quack_port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port of live SQL over Quack (default 9494; 0 turns it off).")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Write the jobs.* topics into DuckDB, exactly once, and serve it for live SQL.

    The single writer of the file: each batch and its Kafka offsets go in one transaction
    (the commit protocol: pipeline/sink/consumer.py). The Quack token comes from
    JOBSTREAM_QUACK_TOKEN or is generated into <db>.quack-token (mode 0600).
    """
    from pipeline.sink.consumer import run_sink
    from pipeline.sink.writer import SinkError

    settings = load_settings(bootstrap=bootstrap, db_path=db, quack_host=quack_host, quack_port=quack_port,
                             metrics_port=metrics_port)
    quiet_kafka_logs()
    try:
        run_sink(settings, echo=lambda line: out.print(line, markup=False))
    except SinkError as exc:
        raise fail(str(exc)) from None
    except (OSError, ConnectionError) as exc:
        raise fail(f"cannot reach Kafka at {settings.bootstrap} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - aiokafka's connection errors; one line, no traceback
        if type(exc).__module__.startswith("aiokafka"):
            raise fail(f"cannot reach Kafka at {settings.bootstrap} ({exc or type(exc).__name__})") from None
        raise


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help='A SELECT query, e.g. "FROM active_runs".')] = None,
    db: DbOpt = None,
    quack_uri: Annotated[Optional[str], typer.Option("--quack", help="Live sink to ask (default quack:localhost:9494, from the settings).")] = None,
    output: Annotated[str, typer.Option("--format", "-f", help="table (one block per row when too wide for the terminal), csv or json (JSON lines).")] = "table",
    attach: Annotated[bool, typer.Option("--attach", help="Print the duckdb command line that attaches the live database (or opens the file read-only when no sink answers), and exit.")] = False,
) -> None:
    """Run one read-only query: over Quack when the sink runs, else on the file (read-only).

    Views: jobs, run_durations, job_retries, stale_episodes, failure_rates, active_runs,
    dead_letter_reasons (README "Analysts' views"). Writes are refused.
    """
    import os
    import shutil

    from pipeline.sink import quack, sql as sql_module

    settings = load_settings(db_path=db)
    address = quack_uri or quack.uri(settings.quack_host, settings.quack_port)
    token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
    if attach:
        binary = shutil.which("duckdb", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if not sql_module.live_sink_answers(address, token_file):
            if not Path(settings.db_path).is_file():
                raise fail(f"no live sink answers at {address} and there is no database at {settings.db_path}")
            err.print(f"no live sink answers at {address}; open the file read-only instead:", markup=False, highlight=False)
            out.print(f"{binary or 'duckdb'} -readonly {settings.db_path}", markup=False)
            return
        try:
            line = sql_module.attach_command(address, token_file, bool(os.environ.get(quack.TOKEN_ENV)))
        except quack.QuackError as exc:
            raise fail(str(exc)) from None
        out.print(line.replace("duckdb ", f"{binary} ", 1) if binary else line, markup=False)
        return
    if not query:
        raise fail('give a query, e.g. pipeline sql "FROM active_runs", or --attach', 2)
    if output not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json, not {output!r}", 2)
    try:
        result = sql_module.run_query(settings.db_path, address, token_file, query)
    except sql_module.SqlError as exc:
        raise fail(str(exc)) from None
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

# --- push ingestors and their simulators (Qlik Cloud webhooks, TrueNAS websocket) ---------

ListenOpt = Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (':PORT' = all interfaces).")]


def _listen(value: str) -> tuple[str, int]:
    from pipeline.push import parse_listen

    try:
        return parse_listen(value)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


@ingest_app.command("qlik-cloud")
def ingest_qlik_cloud(
    listen: ListenOpt = "127.0.0.1:8780",
    bootstrap: BootstrapOpt = None,
    source: Annotated[str, typer.Option(help="Names this receiver in the records and heartbeats.")] = "qlik-cloud-webhook",
    secret_file: Annotated[Optional[Path], typer.Option(help="File holding the webhook secret (else env JOBSTREAM_QLIK_WEBHOOK_SECRET or JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE).")] = None,
    max_body: Annotated[Optional[int], typer.Option(min=1024, help="Largest body accepted, in bytes (default 262144; larger: 413).")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="Serve https with this certificate chain (PEM; env JOBSTREAM_WEBHOOK_TLS_CERT). Qlik Cloud delivers only to https URLs: this, or a TLS proxy in front.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="The certificate's private key (PEM; env JOBSTREAM_WEBHOOK_TLS_KEY).")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Receive Qlik Cloud webhooks (reload finished) into raw.qlik_cloud.

    Verifies Qlik-Signature (HMAC-SHA256 of the body with the webhook secret) when a
    secret is configured; answers 200 only after Kafka acknowledged the event, 503 when
    it did not (Qlik delivers again), 401/413/415/400 with a reason for bad requests.
    GET /healthz answers 200 while Kafka is reachable.
    """
    from pipeline.ops.runtime import run_with_operations
    from pipeline.vendors.qlik_cloud import ingest

    host, port = _listen(listen)
    settings = load_settings(bootstrap=bootstrap, qlik_webhook_secret_file=secret_file, webhook_max_body_bytes=max_body,
                             webhook_tls_cert=tls_cert, webhook_tls_key=tls_key, metrics_port=metrics_port)
    try:
        settings.qlik_secret()
        asyncio.run(run_with_operations("qlik-cloud-ingestor", settings,
                                        lambda: ingest.run(settings, host=host, port=port, source=source)))
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None


@ingest_app.command("truenas")
def ingest_truenas(
    url: Annotated[str, typer.Option(help="ws(s)://HOST/api/current, or ws(s)://HOST/websocket for the legacy API.")],
    bootstrap: BootstrapOpt = None,
    username: Annotated[Optional[str], typer.Option(help="User owning the API key (current API; default root; env JOBSTREAM_TRUENAS_USERNAME).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key (else env JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Host name in the records' source (default: the URL's host).")] = None,
    ca_file: Annotated[Optional[Path], typer.Option(help="CA certificate (PEM) that signed the NAS's certificate (env JOBSTREAM_TRUENAS_CA_FILE).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the TLS certificate (self-signed NAS).")] = False,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Follow TrueNAS middleware jobs (core.get_jobs) into raw.truenas.

    Resyncs with core.get_jobs after every (re)connect, so nothing changed while
    disconnected is lost; records carry <host>@<boot marker> as their source, so job
    ids that restart at 1 after a middleware restart never merge with earlier runs.
    The API key's user must see every job (full or read-only admin): middlewared shows
    other users only their own.
    """
    from pipeline.ops.runtime import run_with_operations
    from pipeline.sources import TerminalError
    from pipeline.vendors.truenas import ingest

    try:
        ingest.check_url(url)
        if host is not None:
            ingest.check_host(host)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    settings = load_settings(bootstrap=bootstrap, truenas_username=username, truenas_api_key_file=api_key_file,
                             truenas_ca_file=ca_file, metrics_port=metrics_port)
    if settings.truenas_ca_file is not None and not Path(settings.truenas_ca_file).is_file():
        raise fail(f"--ca-file {settings.truenas_ca_file}: no such file", 2)
    try:
        key = settings.truenas_key()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    if key is None:
        raise fail("no API key: set JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE, or pass --api-key-file", 2)
    config = ingest.TruenasConfig(url=url, api_key=key, username=settings.truenas_username, host=host,
                                  heartbeat_every_s=settings.heartbeat_every_s, verify_tls=not insecure,
                                  ca_file=str(settings.truenas_ca_file) if settings.truenas_ca_file else None)
    try:
        asyncio.run(run_with_operations("truenas-ingestor", settings, lambda: ingest.run(settings, config)))
    except TerminalError as exc:
        raise fail(str(exc)) from None


@simulate_app.command("qlik-cloud")
def simulate_qlik_cloud(
    url: Annotated[str, typer.Option(help="Webhook URL to deliver to, e.g. http://127.0.0.1:8780/.")],
    events: Annotated[int, typer.Option(min=1, help="Reload-finished events to send.")] = 20,
    tenant: Annotated[str, typer.Option(help="Tenant id in the events.")] = "sim-tenant",
    clock: Annotated[float, typer.Option(min=0.001, help="Speed-up: 60 sends a simulated minute per second.")] = 60.0,
    duplicates: Annotated[int, typer.Option(min=0, help="Send every N-th event twice (0: never).")] = 5,
    reorder: Annotated[int, typer.Option(min=0, help="Swap every N-th event with the next (0: never).")] = 7,
    binary: Annotated[int, typer.Option(min=0, help="Send every N-th event in CloudEvents binary mode (0: never).")] = 4,
    legacy: Annotated[int, typer.Option(min=0, help="Send every N-th event as com.qlik.v1.app.reload.finished: legacy, hybrid and CloudEvents 1.0.2 envelopes in turn (0: never).")] = 6,
    secret_file: Annotated[Optional[Path], typer.Option(help="File holding the webhook secret (else env JOBSTREAM_QLIK_WEBHOOK_SECRET[_FILE]); none: unsigned.")] = None,
) -> None:
    """Send signed Qlik Cloud reload-finished webhooks to a receiver.

    Some are sent twice, some out of order, some in CloudEvents binary mode; a 5xx or no
    answer is retried with backoff. Prints what was delivered.
    """
    from pipeline.vendors.qlik_cloud import simulator

    settings = load_settings(qlik_webhook_secret_file=secret_file)
    try:
        secret = settings.qlik_secret()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    faults = simulator.Faults(duplicate_every=duplicates, reorder_every=reorder, binary_every=binary, legacy_every=legacy)
    report = asyncio.run(simulator.run(url, secret=secret, events=events, tenant=tenant, clock=clock, faults=faults))
    statuses = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(report.statuses.items()))
    out.print(
        f"{report.delivered} deliveries acknowledged ({report.duplicates} duplicates, {report.reordered} out of order, "
        f"{report.binary} binary, {report.legacy} app.reload.finished), {report.retries} retries, {report.failed} given up; answers: {statuses}"
    )
    if report.failed:
        raise typer.Exit(1)


@simulate_app.command("truenas")
def simulate_truenas(
    listen: ListenOpt = "127.0.0.1:8781",
    clock: Annotated[float, typer.Option(min=0.001, help="Speed-up: 60 runs a simulated minute per second.")] = 10.0,
    every: Annotated[float, typer.Option(min=0.1, help="Simulated seconds between new jobs (on average).")] = 20.0,
    drop_every: Annotated[float, typer.Option(min=0, help="Drop every connection every N simulated seconds (0: never).")] = 0.0,
    restart_every: Annotated[float, typer.Option(min=0, help="Restart the middleware (job ids back to 1) every N simulated seconds (0: never).")] = 0.0,
    username: Annotated[Optional[str], typer.Option(help="User the API key belongs to (default root).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key to accept (else env JOBSTREAM_TRUENAS_API_KEY[_FILE]).")] = None,
) -> None:
    """Serve a TrueNAS middleware that keeps running jobs, until Ctrl-C.

    Both API flavours (ws /api/current and the legacy /websocket); jobs go WAITING ->
    RUNNING with progress -> SUCCESS / FAILED / ABORTED; it can drop every connection
    and restart (job ids back to 1) on a schedule.
    """
    from pipeline.vendors.truenas import simulator

    host, port = _listen(listen)
    settings = load_settings(truenas_username=username, truenas_api_key_file=api_key_file)
    try:
        key = settings.truenas_key()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    if key is None:
        raise fail("no API key to accept: set JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE, or pass --api-key-file", 2)

    def ready(sim: "simulator.MiddlewareSimulator") -> None:
        out.print(f"TrueNAS simulator: {sim.url} (legacy: {sim.legacy_url}); Ctrl-C stops it")

    try:
        asyncio.run(simulator.run(host=host, port=port, api_key=key, username=settings.truenas_username,
                                  clock=clock, every_s=every, drop_every_s=drop_every,
                                  restart_every_s=restart_every, on_ready=ready))
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None

# --- the main job and operations (pipeline/run/) ---------------------------------------


@app.command()
def demo(
    duration: Annotated[float, typer.Option(min=10, help="Seconds to run before the summary.")] = 60.0,
    db: Annotated[Optional[Path], typer.Option("--db", help="The DuckDB file to write (default: jobstream.duckdb in the run folder).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for the database and every role's log (default: a new folder under ~/.local/share/jobstream).")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Keep everything up for live queries until Ctrl-C.")] = False,
) -> None:
    """Run the whole pipeline on this machine: broker, simulators, ingestors, worker, sink, alerter.

    Everything is embedded (no Kafka or Docker needed). Progress shows while it runs; at the
    end, a summary computed by SQL on the DuckDB file, and the commands to query it.
    Ctrl-C stops everything cleanly and still prints the summary.
    """
    from pipeline.run import demo as demo_module

    folder = run_dir or demo_module.default_run_dir()
    options = demo_module.DemoOptions(duration_s=duration, run_dir=folder, db=db, keep_running=keep_running)
    # Ctrl-C must stop it even when started in the background from a script (`&`), where
    # the shell makes SIGINT ignored and Python keeps that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exit_on_sigterm()
    result = demo_module.run(options, say=lambda line: out.print(line, markup=False))
    for line in demo_module.report(options, result):
        out.print(line, markup=False)
    if result.problems:
        for problem in result.problems:
            err.print(problem, markup=False)
        raise fail("a role stopped during the demo (its log is above)")


@app.command("run")
def run_pipeline(
    roles: Annotated[Optional[list[str]], typer.Argument(help="Roles to run: worker, sink, alerter, qlik-cloud, truenas, qlik-qrs, zuora, informatica (default: [run] roles in the file, else worker, sink, alerter and every ingestor with a table in the file).")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML file: [pipeline] settings, [run], one table per role (see jobstream.example.toml).")] = Path("jobstream.toml"),
    bootstrap: BootstrapOpt = None,
    state_file: Annotated[Optional[Path], typer.Option(help="Where the roles' pids, metrics ports and restarts are kept for `pipeline status` (env JOBSTREAM_RUN_STATE_FILE; default data/run/state.json).")] = None,
) -> None:
    """Run the production roles against a Kafka, each as its own process, until Ctrl-C / SIGTERM.

    Settings: flags win over JOBSTREAM_* variables, which win over the file; all of it is
    checked before anything starts (one line per problem); secrets only from the
    environment or files. A role that exits non-zero is restarted with a backoff (status 2,
    a configuration error, stops the run instead); each
    role serves /metrics and /healthz on its own port, printed at start.
    """
    from pipeline.run import production

    try:
        plan = production.load_plan(config, roles or [], {"bootstrap": bootstrap, "run_state_file": state_file})
    except production.RunConfigError as exc:
        for line in exc.lines:
            err.print(f"[bold red]error:[/] {escape(line)}")
        raise typer.Exit(2) from None
    exit_on_sigterm()
    code = production.run(plan, say=lambda line: out.print(line, markup=False))
    if code:
        raise typer.Exit(code)


@app.command()
def chaos(
    soak: Annotated[Optional[float], typer.Option(min=1, help="Minutes of faults (default: a short run of 75 s, as in CI).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the fault plan and the hostile inputs: the same seed, the same kills and inputs.")] = 1,
    bad_inputs: Annotated[int, typer.Option(min=1, help="Hostile records produced into the raw topics.")] = 10_000,
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for the database and every role's log (default: a new folder under ~/.local/share/jobstream).")] = None,
) -> None:
    """Run the pipeline under crashes, vendor faults and hostile input, then check nothing was lost.

    Starts what `pipeline demo` starts plus a second worker, SIGKILLs workers, the sink, each
    ingestor and the alerter at seeded random points, sends 10,000 bad records and bad
    webhooks, then replays the raw topics through the worker's own code and compares the
    DuckDB tables with that replay, id by id. Also checks every bad record became a dead
    letter, no secret shows in a log, table or topic, and a broker restart stops the
    pipeline with a clear line. The last line is
    `reliability: faults=N restarts=N bad_inputs=N lost=N duplicated=N`; the exit status is
    non-zero unless lost and duplicated are 0 and no other check failed.
    """
    from pipeline.chaos import runner
    from pipeline.chaos.scenario import ChaosOptions

    options = ChaosOptions(seed=seed, bad_inputs=bad_inputs, run_dir=run_dir or runner.default_run_dir())
    if soak is not None:
        options = dataclasses.replace(options, duration_s=soak * 60, catch_up_s=max(options.catch_up_s, soak * 30))
    exit_on_sigterm()
    result = runner.run(options, say=lambda line: out.print(line, markup=False))
    for line in runner.report(result):
        out.print(line, markup=False)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def status(
    bootstrap: BootstrapOpt = None,
    state_file: Annotated[Optional[Path], typer.Option(help="State file of a running `pipeline run` (env JOBSTREAM_RUN_STATE_FILE; default data/run/state.json).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="The TOML file a `pipeline run` was started with: its [pipeline] settings (Kafka, state file, the sink's database and Quack port).")] = None,
) -> None:
    """Per role and partition: whether it runs, its lag, and when it last moved (from Kafka).

    When a `pipeline run` is running, first its roles: pid, restarts, last exit status and
    each role's own /healthz (problems, and per partition its lag and when it last moved).
    The sink's database and Quack port come from that run's state file, else from --config,
    else from the environment.
    """
    from pipeline.run import status as status_module

    overrides = {"bootstrap": bootstrap, "run_state_file": state_file}
    if config is None:
        settings = load_settings(**overrides)
    else:
        from pipeline.run import production

        try:
            settings = production.load_settings(config, overrides)
        except production.RunConfigError as exc:
            for line in exc.lines:
                err.print(f"[bold red]error:[/] {escape(line)}")
            raise typer.Exit(2) from None
    settings = settings.with_overrides(**status_module.run_sink_overrides(
        status_module.live_run_state(Path(settings.run_state_file))))
    quiet_kafka_logs()
    for line in asyncio.run(status_module.run_state_lines(Path(settings.run_state_file))):
        out.print(line, markup=False)
    roles = status_module.default_roles(settings)
    offsets, where = _sink_offsets(settings)
    try:
        rows = asyncio.run(status_module.gather(settings.bootstrap, roles))
        rows += asyncio.run(status_module.sink_statuses(settings.bootstrap, offsets))
    except Exception as exc:  # noqa: BLE001 - aiokafka's connection errors: one line
        raise fail(f"cannot read the consumer groups from {settings.bootstrap}: {exc or type(exc).__name__}") from None
    if where:
        out.print(where, markup=False)
    for line in status_module.render(rows):
        out.print(line, markup=False)


def _sink_offsets(settings: Settings) -> tuple[dict, str]:
    """The sink's committed offsets from its own table (live over Quack, else the file)."""
    from pipeline.sink import quack, sql as sql_module

    address = quack.uri(settings.quack_host, settings.quack_port)
    token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
    try:
        result = sql_module.run_query(
            settings.db_path, address, token_file, 'SELECT topic, "partition", next_offset, committed_at FROM kafka_offsets'
        )
    except sql_module.SqlError as exc:
        return {}, f"sink: no offsets ({exc})"
    return {(t, p): (o, at) for t, p, o, at in result.rows}, f"sink offsets from {result.source}"


# --- pull ingestors, Zuora cancel, simulators (issue 17) ----------------------------

from rich.markup import escape  # noqa: E402 - messages name [sections]

zuora_app = typer.Typer(help="Zuora RevPro BI Views operations.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(zuora_app, name="zuora")

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML file with the ingestor's [section]; secrets only from JOBSTREAM_<SECTION>_<NAME> or <name>_file."),
]


def _pull(command: str, config: Optional[Path], bootstrap: Optional[str], metrics_port: Optional[int] = None,
          **options: object) -> None:
    from pipeline.ingest_cli import CommandError, run_ingest

    settings = load_settings(bootstrap=bootstrap, metrics_port=metrics_port)
    try:
        run_ingest(command, config, settings, **options)
    except CommandError as exc:
        raise fail(escape(str(exc)), exc.code) from None


@ingest_app.command("qlik-qrs")
def ingest_qlik_qrs(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    start_task: Annotated[Optional[str], typer.Option("--start-task", help="Start this task (POST /qrs/task/ID/start/synchronous), follow its session to the end, then exit.")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Poll Qlik Sense QRS execution results and sessions (modifiedDate watermark) into raw.qlik_qrs."""
    _pull("qlik-qrs", config, bootstrap, metrics_port, start_task=start_task)


@ingest_app.command("zuora")
def ingest_zuora(config: ConfigOpt = None, bootstrap: BootstrapOpt = None, metrics_port: MetricsPortOpt = None) -> None:
    """Poll Zuora RevPro BI Views biviews-status; send each token whose queue, status or counters changed."""
    _pull("zuora", config, bootstrap, metrics_port)


@ingest_app.command("informatica")
def ingest_informatica(config: ConfigOpt = None, bootstrap: BootstrapOpt = None, metrics_port: MetricsPortOpt = None) -> None:
    """Poll Informatica CIH events by CUSTOM time window (5 calls a minute) into raw.informatica."""
    _pull("informatica", config, bootstrap, metrics_port)


@zuora_app.command("cancel")
def zuora_cancel(
    task_id: Annotated[str, typer.Argument(help="The continuation token (task_id) to cancel.")],
    config: ConfigOpt = None,
) -> None:
    """Cancel a BI Views task: DELETE /api/integrations/v2/biviews-status/TASK_ID."""
    from pipeline.ingest_cli import CommandError, zuora_cancel as cancel

    try:
        out.print(cancel(config, task_id))
    except CommandError as exc:
        raise fail(escape(str(exc)), exc.code) from None


PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")]
HostOpt = Annotated[str, typer.Option(help="Address to listen on (default 127.0.0.1; 0.0.0.0 in a container).")]
ClockFactorOpt = Annotated[float, typer.Option(min=0.001, help="Vendor seconds per real second.")]
FaultsOpt = Annotated[str, typer.Option(help="Faults, e.g. 'error=0.1,storm=0.05,retry_after_s=2,malformed=0.05,duplicate=0.2,reorder=0.5,latency_s=0.1,timeout=0.02'.")]
GroupsOpt = Annotated[int, typer.Option(min=1, help="Rounds of the scenario's jobs.")]


def _simulate_pull(vendor: str, port: int, clock_factor: float, faults: str, groups: int, host: str) -> None:
    from pipeline.ingest_cli import CommandError, simulate as run_simulator

    try:
        run_simulator(vendor, port, clock_factor, faults, groups, lambda url: out.print(f"{vendor} simulator at {url}"), host)
    except CommandError as exc:
        raise fail(escape(str(exc)), exc.code) from None


@simulate_app.command("qlik-qrs")
def simulate_qlik_qrs(port: PortOpt = 0, clock_factor: ClockFactorOpt = 1.0, faults: FaultsOpt = "", groups: GroupsOpt = 3,
                      host: HostOpt = "127.0.0.1") -> None:
    """Serve Qlik Sense QRS (/qrs/..., Xrfkey, X-Qlik-User) with tasks that run, fail and retry, until Ctrl-C."""
    _simulate_pull("qlik-qrs", port, clock_factor, faults, groups, host)


@simulate_app.command("zuora")
def simulate_zuora(port: PortOpt = 0, clock_factor: ClockFactorOpt = 1.0, faults: FaultsOpt = "", groups: GroupsOpt = 3,
                   host: HostOpt = "127.0.0.1") -> None:
    """Serve Zuora RevPro BI Views (authenticate, biviews-status) with tokens that go stale, come back or drain, until Ctrl-C."""
    _simulate_pull("zuora", port, clock_factor, faults, groups, host)


@simulate_app.command("informatica")
def simulate_informatica(port: PortOpt = 0, clock_factor: ClockFactorOpt = 1.0, faults: FaultsOpt = "", groups: GroupsOpt = 3,
                         host: HostOpt = "127.0.0.1") -> None:
    """Serve Informatica CIH (POST /dih-console/api/v1/events, 5 calls a minute) with publications and subscriptions, until Ctrl-C."""
    _simulate_pull("informatica", port, clock_factor, faults, groups, host)

@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1000, help="Documents in the seeded five-vendor workload.")] = 20_000,
    repeats: Annotated[int, typer.Option(min=1, help="Each stage is the median of this many runs.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the workload (the same seed, the same input).")] = 1,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the numbers as JSON here.")] = None,
    freshness_rate: Annotated[int, typer.Option(min=1, help="Raw records per second sent while freshness is measured.")] = 2000,
    freshness_seconds: Annotated[float, typer.Option(min=1, help="How long freshness is measured.")] = 20.0,
    state_runs: Annotated[int, typer.Option(min=0, help="Runs in the worker's table for its peak RSS and restart-to-ready (RocksDB, a broker of its own; minutes at 1,000,000); 0 skips it.")] = 1_000_000,
) -> None:
    """Measure each stage against its bare baseline, in one run on the embedded broker.

    Today: bare aiokafka + orjson, the bare Faust agent loop, the lifecycle alone,
    normalize alone per vendor, the worker (raw -> jobs.*), the sink alone (against a bare
    loop over the same jobs.* records), end to end (a worker and a sink, rows counted over
    Quack), freshness at a steady --freshness-rate (raw acknowledged -> visible over Quack),
    and the worker's peak RSS and restart-to-ready with --state-runs runs in its table.
    Ratios, not absolute numbers, are what compares across days on a shared machine.
    """
    from pipeline.bench import run as bench_run
    from pipeline.bench.stages import BenchError

    quiet_kafka_logs()
    try:
        results = bench_run.run(events, repeats=repeats, seed=seed, state_runs=state_runs, freshness_rate=freshness_rate,
                                freshness_seconds=freshness_seconds, say=lambda line: err.print(line, markup=False))
    except BenchError as exc:
        raise fail(str(exc)) from None
    for line in bench_run.table(results):
        out.print(line, markup=False)
    if out_file is not None:
        bench_run.write(results, out_file)
        out.print(f"numbers in {out_file}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
