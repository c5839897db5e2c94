"""What ``pipeline ingest <vendor>``, ``pipeline zuora cancel`` and ``pipeline simulate``
do, so cli.py only parses flags: settings, logging with secrets redacted, signals,
and one line (no traceback) for every error a user can fix."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_CONFIG, EXIT_FAILED, JobstreamError
from pipeline.ops.logs import setup_logging as _setup_logging
from pipeline.ops.stopping import stop_on_signals
from pipeline.sources import ConfigError, Redactor, SourceError, load_config
from pipeline.vendors import registry
from pipeline.vendors.registry import Vendor

if TYPE_CHECKING:
    from pipeline.settings import Settings

class CommandError(JobstreamError):
    """One line for the user; the command exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = self.exit_code = code


def pull_vendor(command: str) -> Vendor:
    """The pull vendor whose CLI command is ``command`` (e.g. ``qlik-qrs``)."""
    return {vendor.command: vendor for vendor in registry.of_kind("pull")}[command]


def ingest_module(command: str) -> Any:
    return importlib.import_module(f"pipeline.vendors.{pull_vendor(command).name}.ingest")


def settings_class(command: str) -> Any:
    vendor = pull_vendor(command)
    assert vendor.settings is not None, f"pull vendor {vendor.name} declares no settings"
    return registry.load(vendor.settings)


def settings_for(command: str, config: Path | None) -> Any:
    try:
        return load_config(settings_class(command), config, pull_vendor(command).name)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None


def setup_logging(redact: Redactor, level: int = logging.INFO) -> None:
    _setup_logging(level=level, redact=redact, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_ingest(command: str, config: Path | None, operations: "Settings", **options: Any) -> None:
    """Run one pull ingestor until SIGINT/SIGTERM (or until a one-shot job ends), with its
    metrics served as ``operations`` (the pipeline's settings) say."""
    from pipeline.ops.runtime import run_with_operations

    settings = settings_for(command, config)
    redact = settings.redactor()
    setup_logging(redact)
    module = ingest_module(command)
    run_async(lambda stop: run_with_operations(
        f"{command}-ingestor", operations, lambda: module.run(settings, operations.bootstrap, stop=stop, **options),
    ), redact)


def run_async(main: Callable[[asyncio.Event], Awaitable[Any]], redact: Redactor) -> Any:
    async def runner() -> Any:
        return await main(stop_on_signals(asyncio.Event()))

    try:
        return asyncio.run(runner())
    except ConfigError as exc:  # found only once running (a file that vanished since the start)
        raise CommandError(redact(str(exc)), EXIT_CONFIG) from None
    except SourceError as exc:
        raise CommandError(redact(str(exc))) from None


def zuora_cancel(config: Path | None, task_id: str) -> str:
    settings = settings_for("zuora", config)
    module = ingest_module("zuora")
    return run_async(lambda stop: module.cancel(settings, task_id), settings.redactor())


def simulate(vendor: str, port: int, clock_factor: float, faults_text: str, groups: int, announce: Callable[[str], None],
             host: str = "127.0.0.1") -> None:
    from pipeline.vendors._simulator import FaultSpecError, Faults, SimClock, serve_forever

    simulated = {v.command: v for v in registry.of_kind("pull") if v.simulator}
    if vendor not in simulated:
        raise CommandError(f"no simulator for {vendor!r}; choose one of {', '.join(simulated)}", EXIT_CONFIG)
    try:
        faults = Faults.parse(faults_text)
    except FaultSpecError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None
    build = registry.load(simulated[vendor].simulator)
    simulator = build(clock=SimClock(factor=clock_factor), faults=faults, groups=groups)
    try:
        asyncio.run(serve_forever(simulator, port, announce, host))
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass
