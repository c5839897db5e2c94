"""``pipeline replay``: vendor documents through the pipeline.

With a Kafka configured (``--bootstrap`` or ``JOBSTREAM_BOOTSTRAP``) replay is the file
backfill (``pipeline.backfill``, shared with ``pipeline ingest file``). Without one it is
the local run: an embedded broker, the catalog's topics, a worker child, the documents
(the bundled samples by default) sent through the same backfill, and a summary of the
lifecycles that came out. The local run sets every setting of its worker itself (the
operator's ``JOBSTREAM_*`` plumbing is for their Kafka, not for it), ties the worker's
life to its own, and leaves nothing behind but the log the user asked for.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from pipeline.errors import JobstreamError
from pipeline import backfill, catalog, vendors
from pipeline.backfill import vendor_of  # noqa: F401 - part of replay's surface
from pipeline.broker import BrokerError, EmbeddedBroker, die_with_parent
from pipeline.model import UTC
from pipeline.settings import ENV_PREFIX
from pipeline.vendors import registry

LOCAL_APP_ID = "jobstream-local"
# What the local run's worker keeps from the operator's environment: how to read the
# documents (time zones, stale thresholds), never where or how to run.
_KEPT_FROM_ENV = (f"{ENV_PREFIX}TZ_", f"{ENV_PREFIX}STALE_AFTER")


class ReplayError(JobstreamError, RuntimeError):
    """The local run failed; one line for the user."""


def sample_files() -> list[tuple[str, Path]]:
    """The bundled sample documents of every vendor (``Vendor.sample_folder``)."""
    found = []
    for vendor in vendors.VENDOR_NAMES:
        folder = registry.by_name(vendor).sample_folder()
        if folder.is_dir():
            found.extend((vendor, path) for path in sorted(folder.iterdir()) if path.is_file())
    return found


# The bundled samples are replayed as if received from this time on, one document every
# ten seconds: TrueNAS updates of running jobs carry no time of their own.
SAMPLES_RECEIVED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass(slots=True)
class Outcome:
    events: int = 0
    transitions: int = 0
    dead_letters: int = 0
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_key -> last snapshot
    flagged: Counter = field(default_factory=Counter)


async def watch(
    bootstrap: str, *, expected_events: int, timeout: float,
    progress: Callable[[Outcome], None] = lambda outcome: None,
    alive: Callable[[], bool] = lambda: True,
) -> Outcome:
    """Read the output topics until ``expected_events`` events came out and the
    outputs have been quiet for a second, ``timeout`` passes or ``alive()`` says the
    worker is gone."""
    from pipeline.kafka import clients

    consumer = clients.consumer(
        bootstrap, catalog.EVENTS, catalog.TRANSITIONS, catalog.RUNS, catalog.DEADLETTER, auto_offset_reset="earliest",
    )
    await consumer.start()
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline and alive():
            batches = await consumer.getmany(timeout_ms=250)
            for tp, records in batches.items():
                for record in records:
                    _count(outcome, tp.topic, record.value)
            if batches:
                quiet_since = time.monotonic()
                progress(outcome)
            elif outcome.events >= expected_events and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        await consumer.stop()
    return outcome


def _count(outcome: Outcome, topic: str, value: bytes) -> None:
    if topic == catalog.EVENTS:
        outcome.events += 1
    elif topic == catalog.DEADLETTER:
        outcome.dead_letters += 1
    elif topic == catalog.TRANSITIONS:
        transition = msgspec.json.decode(value)
        outcome.transitions += 1
        for flag in ("late", "duplicate", "illegal"):
            if transition.get(flag):
                outcome.flagged[flag] += 1
    elif topic == catalog.RUNS:
        run = msgspec.json.decode(value)
        outcome.runs[run["run_key"]] = run


def start_worker(bootstrap: str, *, app_id: str, datadir: Path, log: Path, tansu: bool) -> subprocess.Popen[bytes]:
    """``pipeline worker`` in a child process (Faust owns its event loop and signals),
    with its settings given explicitly and its life tied to ours: on Linux the kernel
    kills it if we die, even by SIGKILL (its store is memory and its broker dies with
    us, so there is nothing to flush)."""
    # -P: not the current directory first on sys.path, where a source checkout's
    # pipeline/ would shadow the installed package.
    args = [
        sys.executable, "-P", "-m", "pipeline", "worker", "--bootstrap", bootstrap, "--store", "memory://",
        "--app-id", app_id, "--datadir", str(datadir), "--tansu" if tansu else "--no-tansu",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k.startswith(_KEPT_FROM_ENV)}
    with open(log, "ab") as output:
        return subprocess.Popen(
            args, stdout=output, stderr=output, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_us,
        )


def _die_with_us() -> None:
    die_with_parent(signal.SIGKILL)


def run_local(
    files: list[tuple[str, Path]], *, source: str, clock: backfill.EnvelopeClock, timeout: float,
    worker_log: Path | None, out: Console, err: Console,
) -> backfill.Report:
    """The local run, start to summary. Raises ``ReplayError`` with one line."""
    _remove_leftovers()
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-") as scratch:
        log = worker_log or Path(scratch) / "worker.log"
        try:
            embedded = EmbeddedBroker().start()
        except BrokerError as exc:
            raise ReplayError(str(exc)) from None
        worker: subprocess.Popen[bytes] | None = None
        try:
            started = time.monotonic()
            out.print(f"embedded broker at {embedded.bootstrap}; starting the worker"
                      + (f" (log: {worker_log})" if worker_log else ""))
            try:
                asyncio.run(catalog.apply(embedded.bootstrap))
            except Exception as exc:  # noqa: BLE001 - one line, no traceback
                raise ReplayError(f"creating the topics on the embedded broker failed: {exc}") from None
            try:
                worker = start_worker(embedded.bootstrap, app_id=LOCAL_APP_ID, datadir=Path(scratch) / "worker", log=log, tansu=True)
            except OSError as exc:
                raise ReplayError(f"cannot start the worker with its log in {log}: {exc.strerror or exc}") from None
            try:
                report = asyncio.run(backfill.run(
                    embedded.bootstrap, files, source=source, clock=clock, heartbeats=False,
                    on_rejected=lambda rejection: err.print(f"rejected {rejection}", markup=False),
                ))
            except backfill.BackfillError as exc:
                raise ReplayError(f"the embedded broker refused the replay: {exc}") from None
            out.print(f"{len(files)} files -> {report.records} raw messages, {report.expected_events} job events expected")
            if report.expected_events == 0:
                raise ReplayError("nothing to replay: the documents give no job event")
            with out.status("waiting for the worker...") as status:
                def progress(outcome: Outcome) -> None:
                    status.update(
                        f"events {outcome.events}/{report.expected_events}  transitions {outcome.transitions}  "
                        f"runs {len(outcome.runs)}  dead letters {outcome.dead_letters}"
                    )
                outcome = asyncio.run(watch(
                    embedded.bootstrap, expected_events=report.expected_events, timeout=timeout,
                    progress=progress, alive=lambda: worker.poll() is None,
                ))
            if worker.poll() is not None:
                raise ReplayError(f"the worker exited with status {worker.returncode}{_log_hint(log, worker_log)}")
            _print_summary(out, outcome, time.monotonic() - started)
            if outcome.events < report.expected_events:
                raise ReplayError(
                    f"only {outcome.events} of {report.expected_events} events came out within {timeout:g} s"
                    f"{_log_hint(log, worker_log)}"
                )
            return report
        finally:
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            embedded.stop()


_SCRATCH_PREFIX = "jobstream-replay-"


def _remove_leftovers() -> None:
    """Remove the scratch folders of local runs that were killed (SIGKILL leaves no
    chance to clean up): each is named after its process, gone ones are removed."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(_SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_hint(log: Path, kept: Path | None) -> str:
    """Where to look: the log the user asked for, else its last lines (the scratch
    folder that held it is about to go)."""
    if kept is not None:
        return f"; see {kept}"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "; the worker said: " + " | ".join(lines[-3:]) if lines else ""


def _print_summary(out: Console, outcome: Outcome, seconds: float) -> None:
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
        f"{len(outcome.runs)} runs, {outcome.dead_letters} dead letters in {seconds:.1f} s"
    )
