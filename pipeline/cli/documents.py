"""``pipeline normalize``, ``pipeline replay`` and ``pipeline ingest file``: vendor documents without an ingestor."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pipeline import vendors
from pipeline.cli.common import (
    BootstrapOpt, app, err, exit_on_sigterm, fail, ingest_app, load_settings, out, quiet_kafka_logs,
)
from pipeline.errors import EXIT_FAILED, ConfigError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline import backfill


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
        raise ConfigError(f"unknown vendor {vendor!r}; choose one of {', '.join(vendors.VENDOR_NAMES)}")
    if file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
    settings = load_settings()
    if tz:
        settings = settings.with_overrides(vendor_tz={**settings.vendor_tz, vendor: tz})
    zone = settings.tz(vendor)
    rejected = run_normalize(vendor, data, source=source, tz=zone, out=sys.stdout.buffer, err=err)
    raise typer.Exit(EXIT_FAILED if rejected else 0)



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
        report = replay_module.run_local(
            chosen, source=source, clock=clock, timeout=timeout, worker_log=worker_log, out=out, err=err,
        )
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
        raise ConfigError("no files to send")
    clock = backfill.EnvelopeClock(_parse_time(received_at, "--received-at")) if received_at else backfill.EnvelopeClock()
    quiet_kafka_logs()
    report = _backfill(settings, chosen, source=source, clock=clock, rate=_parse_rate(rate), heartbeats=heartbeats)
    if report.rejected:
        raise fail(f"{len(report.rejected)} documents or items were rejected (listed above); the rest was sent")


def _files_of(paths: list[Path], vendor: str | None) -> list[tuple[str, Path]]:
    """``(vendor, file)`` for every file named or under a folder named; usage errors exit 2."""
    from pipeline import backfill

    if vendor is not None and vendor not in vendors.VENDOR_NAMES:
        raise ConfigError(f"unknown vendor {vendor!r}; choose one of {', '.join(vendors.VENDOR_NAMES)}")
    for path in paths:
        if not path.exists():
            raise ConfigError(f"cannot read {path}: no such file or folder")
    chosen = []
    for path in backfill.expand(paths):
        file_vendor = vendor or backfill.vendor_of(path)
        if file_vendor is None:
            raise ConfigError(f"cannot tell the vendor of {path}: pass --vendor or name it <vendor>-*.json")
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
        report = asyncio.run(backfill.run(
            settings.bootstrap, files, source=source, clock=clock, tz=settings.tz, rate=rate, heartbeats=heartbeats,
            on_rejected=lambda rejection: bar.console.print(f"rejected {rejection}", markup=False),
            progress=lambda read, sent: bar.update(task, completed=read, records=sent),
        ))
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
        raise ConfigError(f"--rate {text!r}: give records per second, e.g. 500/s")
    return value


def _parse_time(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an RFC 3339 time such as 2026-11-20T09:00:00Z") from None
    if value.tzinfo is None:
        raise ConfigError(f"{flag} {text!r} needs a time zone (Z or +HH:MM)")
    return value
