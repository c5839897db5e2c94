"""``pipeline``: the one command-line entry point.

Every command reads ``Settings`` from ``JOBSTREAM_*`` environment variables and lets its
flags override them. Errors that a user can fix are one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from pipeline import catalog, vendors
from pipeline.settings import Settings, SettingsError

if TYPE_CHECKING:
    from pipeline.replay import ReplayPlan

app = typer.Typer(
    help="Jobstream: five vendors' job events -> Kafka -> one lifecycle history in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="The topic catalog (topics/*.toml) and brokers.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

BootstrapOpt = Annotated[
    Optional[str],
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (env JOBSTREAM_BOOTSTRAP; default localhost:9092)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
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
        return Settings.from_env().with_overrides(**overrides)
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
    """Create the catalog's missing topics on a broker; report partition mismatches.

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
    stale_after: Annotated[Optional[float], typer.Option(min=0.001, help="Seconds of event time without activity before a run is STALE (default 240); per vendor: JOBSTREAM_STALE_AFTER_<VENDOR>.")] = None,
    app_id: Annotated[Optional[str], typer.Option(help="Consumer group / Faust app id (default jobstream).")] = None,
    tansu: Annotated[Optional[bool], typer.Option("--tansu/--no-tansu", help="Work around the embedded broker's ListOffsets bug.")] = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "warning",
) -> None:
    """Run the stream worker: raw.<vendor> -> normalize + lifecycle -> jobs.* topics."""
    from pipeline.broker import kafka_api_versions
    from pipeline.stream.app import run_worker

    settings = load_settings(
        bootstrap=bootstrap, store=store, datadir=datadir, partitions=partitions,
        stale_after_s=stale_after, app_id=app_id, tansu=tansu,
    )
    if not any(kafka_api_versions(*_host_port(address), timeout=5) for address in settings.bootstrap.split(",")):
        raise fail(f"cannot reach Kafka at {settings.bootstrap} (no broker answered within 5 s)")
    try:
        Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot use --datadir {settings.datadir}: {exc.strerror or exc}", 2) from None
    run_worker(settings, loglevel=loglevel)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().removeprefix("kafka://").rpartition(":")
    try:
        return host or "localhost", int(port)
    except ValueError:
        raise fail(f"bootstrap address {address!r} is not HOST:PORT", 2) from None


@app.command()
def replay(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Vendor documents (JSON or JSON lines). Default: the bundled samples.")] = None,
    vendor: Annotated[Optional[str], typer.Option("--vendor", "-v", help="Vendor of FILES (default: from the folder or the name prefix, e.g. zuora/x.json).")] = None,
    bootstrap: Annotated[Optional[str], typer.Option("--bootstrap", "-b", help="Send to this Kafka and stop (a backfill). Without it, everything runs embedded.")] = None,
    source: Annotated[str, typer.Option(help="Tenant / host for documents that do not name one.")] = "local",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the worker's output.")] = 180.0,
) -> None:
    """Replay vendor documents through the pipeline.

    Without --bootstrap (the local run): starts the embedded broker, creates the topics,
    starts a worker, sends the documents keyed by job, waits for every event to come out
    and prints the lifecycles (runs, attempts, stale episodes, dead letters).
    """
    from pipeline import replay as replay_module

    if vendor is not None and vendor not in vendors.VENDOR_NAMES:
        raise fail(f"unknown vendor {vendor!r}; choose one of {', '.join(vendors.VENDOR_NAMES)}", 2)
    chosen: list[tuple[str, Path]] = []
    for path in files or []:
        if not path.is_file():
            raise fail(f"cannot read {path}: no such file", 2)
        file_vendor = vendor or replay_module.vendor_of(path)
        if file_vendor is None:
            raise fail(f"cannot tell the vendor of {path}: pass --vendor or name it <vendor>-*.json", 2)
        chosen.append((file_vendor, path))
    try:
        if chosen:
            plan = replay_module.plan(chosen, source=source)
        else:
            chosen = replay_module.sample_files()
            plan = replay_module.plan(
                chosen, source=source, received_at=replay_module.SAMPLES_RECEIVED_AT, step=timedelta(seconds=10),
            )
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror or exc}", 2) from None
    for line in plan.rejected:
        err.print(f"rejected {line}", markup=False)
    out.print(f"{len(chosen)} files -> {len(plan.messages)} raw messages, {plan.expected_events} job events expected")
    quiet_kafka_logs()
    if bootstrap:
        try:
            asyncio.run(replay_module.send(bootstrap, plan.messages))
        except Exception as exc:  # noqa: BLE001 - one line, no traceback
            raise fail(f"sending to {bootstrap} failed: {exc}") from None
        out.print(f"sent {len(plan.messages)} messages to {bootstrap}")
        return
    _replay_embedded(plan, timeout)


def _replay_embedded(plan: "ReplayPlan", timeout: float) -> None:
    import tempfile

    from rich.table import Table

    from pipeline import replay as replay_module
    from pipeline.broker import BrokerError, EmbeddedBroker

    log = Path(tempfile.mkdtemp(prefix="jobstream-")) / "worker.log"
    exit_on_sigterm()
    try:
        embedded = EmbeddedBroker().start()
    except BrokerError as exc:
        raise fail(str(exc)) from None
    worker_process = None
    try:
        started = time.monotonic()
        out.print(f"embedded broker at {embedded.bootstrap}; starting the worker (log: {log})")
        try:
            asyncio.run(catalog.apply(embedded.bootstrap))
            worker_process = replay_module.start_worker(embedded.bootstrap, app_id="jobstream-local", log=log, tansu=True)
            asyncio.run(replay_module.send(embedded.bootstrap, plan.messages))
        except Exception as exc:  # noqa: BLE001 - one line, no traceback
            raise fail(f"the embedded broker refused the replay: {exc}") from None
        with out.status("waiting for the worker...") as status:
            def progress(outcome: replay_module.Outcome) -> None:
                status.update(
                    f"events {outcome.events}/{plan.expected_events}  transitions {outcome.transitions}  "
                    f"runs {len(outcome.runs)}  dead letters {outcome.dead_letters}"
                )
            outcome = asyncio.run(replay_module.watch(
                embedded.bootstrap, expected_events=plan.expected_events, timeout=timeout, progress=progress,
                alive=lambda: worker_process.poll() is None,
            ))
        if worker_process.poll() is not None:
            raise fail(f"the worker exited with status {worker_process.returncode}; see {log}")
        table = Table("vendor", "run", "state", "attempt", "stale", "back", "secs", title="runs")
        for run in sorted(outcome.runs.values(), key=lambda r: (r["vendor"], r["run_key"])):
            duration = run.get("duration_s")
            table.add_row(
                run["vendor"], run["run_key"].split(":", 2)[-1][:13], run["state"], str(run["attempt"]),
                str(run["stale_episodes"]), str(run["reactivations"]),
                "" if duration is None else f"{duration:.0f}",
            )
        out.print(table)
        out.print("stale: stale episodes; back: reactivations (stale -> running); secs: duration")
        flagged = ", ".join(f"{n} {flag}" for flag, n in sorted(outcome.flagged.items())) or "none"
        out.print(
            f"{outcome.events} events, {outcome.transitions} transitions (flagged: {flagged}), "
            f"{len(outcome.runs)} runs, {outcome.dead_letters} dead letters "
            f"in {time.monotonic() - started:.1f} s"
        )
        if outcome.events < plan.expected_events:
            raise fail(f"only {outcome.events} of {plan.expected_events} events came out within {timeout:g} s; see {log}")
    finally:
        if worker_process is not None and worker_process.poll() is None:
            worker_process.terminate()
            try:
                worker_process.wait(timeout=15)
            except Exception:  # noqa: BLE001
                worker_process.kill()
        embedded.stop()


# --- pull ingestors, Zuora cancel, simulators (issue 17) ----------------------------

from rich.markup import escape  # noqa: E402 - messages name [sections]

ingest_app = typer.Typer(help="Ingestors: vendor APIs -> raw.<vendor> in Kafka.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
zuora_app = typer.Typer(help="Zuora RevPro BI Views operations.", no_args_is_help=True)
app.add_typer(zuora_app, name="zuora")

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML file with the ingestor's [section]; secrets only from JOBSTREAM_<SECTION>_<NAME> or <name>_file."),
]


def _pull(command: str, config: Optional[Path], bootstrap: Optional[str], **options: object) -> None:
    from pipeline.ingest_cli import CommandError, run_ingest

    settings = load_settings(bootstrap=bootstrap)
    try:
        run_ingest(command, config, settings.bootstrap, **options)
    except CommandError as exc:
        raise fail(escape(str(exc)), exc.code) from None


@ingest_app.command("qlik-qrs")
def ingest_qlik_qrs(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    start_task: Annotated[Optional[str], typer.Option("--start-task", help="Start this task (POST /qrs/task/ID/start/synchronous), follow its session to the end, then exit.")] = None,
) -> None:
    """Poll Qlik Sense QRS execution results and sessions (modifiedDate watermark) into raw.qlik_qrs."""
    _pull("qlik-qrs", config, bootstrap, start_task=start_task)


@ingest_app.command("zuora")
def ingest_zuora(config: ConfigOpt = None, bootstrap: BootstrapOpt = None) -> None:
    """Poll Zuora RevPro BI Views biviews-status; send each token whose queue, status or counters changed."""
    _pull("zuora", config, bootstrap)


@ingest_app.command("informatica")
def ingest_informatica(config: ConfigOpt = None, bootstrap: BootstrapOpt = None) -> None:
    """Poll Informatica CIH events by CUSTOM time window (5 calls a minute) into raw.informatica."""
    _pull("informatica", config, bootstrap)


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


@app.command()
def simulate(
    vendor: Annotated[str, typer.Argument(help="qlik-qrs, zuora or informatica.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 0,
    clock_factor: Annotated[float, typer.Option(min=0.001, help="Vendor seconds per real second.")] = 1.0,
    faults: Annotated[str, typer.Option(help="Faults, e.g. 'error=0.1,storm=0.05,retry_after_s=2,malformed=0.05,duplicate=0.2,reorder=0.5,latency_s=0.1,timeout=0.02'.")] = "",
    groups: Annotated[int, typer.Option(min=1, help="Rounds of the scenario's jobs.")] = 3,
) -> None:
    """Run a vendor simulator alone (its real endpoints, headers and auth) until Ctrl-C."""
    from pipeline.ingest_cli import CommandError, simulate as run_simulator

    try:
        run_simulator(vendor, port, clock_factor, faults, groups, lambda url: out.print(f"{vendor} simulator at {url}"))
    except CommandError as exc:
        raise fail(escape(str(exc)), exc.code) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
