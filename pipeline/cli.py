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
ingest_app = typer.Typer(help="Ingestors: vendor APIs -> raw.<vendor> topics.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
simulate_app = typer.Typer(help="Vendor simulators that speak the real protocols, for demos and tests.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

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
) -> None:
    """Receive Qlik Cloud webhooks (reload finished) into raw.qlik_cloud.

    Verifies Qlik-Signature (HMAC-SHA256 of the body with the webhook secret) when a
    secret is configured; answers 200 only after Kafka acknowledged the event, 503 when
    it did not (Qlik delivers again), 401/413/415/400 with a reason for bad requests.
    GET /healthz answers 200 while Kafka is reachable.
    """
    from pipeline.vendors.qlik_cloud import ingest

    host, port = _listen(listen)
    settings = load_settings(bootstrap=bootstrap, qlik_webhook_secret_file=secret_file, webhook_max_body_bytes=max_body,
                             webhook_tls_cert=tls_cert, webhook_tls_key=tls_key)
    try:
        settings.qlik_secret()
        asyncio.run(ingest.run(settings, host=host, port=port, source=source))
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
) -> None:
    """Follow TrueNAS middleware jobs (core.get_jobs) into raw.truenas.

    Resyncs with core.get_jobs after every (re)connect, so nothing changed while
    disconnected is lost; records carry <host>@<boot marker> as their source, so job
    ids that restart at 1 after a middleware restart never merge with earlier runs.
    The API key's user must see every job (full or read-only admin): middlewared shows
    other users only their own.
    """
    from pipeline.sources import TerminalError
    from pipeline.vendors.truenas import ingest

    try:
        ingest.check_url(url)
        if host is not None:
            ingest.check_host(host)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    settings = load_settings(bootstrap=bootstrap, truenas_username=username, truenas_api_key_file=api_key_file,
                             truenas_ca_file=ca_file)
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
        asyncio.run(ingest.run(settings, config))
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
    secret_file: Annotated[Optional[Path], typer.Option(help="File holding the webhook secret (else env JOBSTREAM_QLIK_WEBHOOK_SECRET[_FILE]); none: unsigned.")] = None,
) -> None:
    """Send Qlik Cloud reload-finished webhooks, signed, some twice, some out of order,
    retrying 5xx; prints what was delivered."""
    from pipeline.vendors.qlik_cloud import simulator

    settings = load_settings(qlik_webhook_secret_file=secret_file)
    try:
        secret = settings.qlik_secret()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    faults = simulator.Faults(duplicate_every=duplicates, reorder_every=reorder, binary_every=binary)
    report = asyncio.run(simulator.run(url, secret=secret, events=events, tenant=tenant, clock=clock, faults=faults))
    statuses = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(report.statuses.items()))
    out.print(
        f"{report.delivered} deliveries acknowledged ({report.duplicates} duplicates, {report.reordered} out of order, "
        f"{report.binary} binary), {report.retries} retries, {report.failed} given up; answers: {statuses}"
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
    """Serve a TrueNAS middleware (ws /api/current and legacy /websocket) that keeps
    running jobs WAITING -> RUNNING -> SUCCESS/FAILED/ABORTED, until Ctrl-C."""
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
