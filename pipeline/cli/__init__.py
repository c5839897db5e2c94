"""``pipeline``: the one command-line entry point.

One module per command group, each thin (parse, call, print): ``topics`` (topics, broker),
``documents`` (normalize, replay, ingest file), ``insight`` (report, explain), ``vendors`` (ingest/simulate per vendor from
the registry, zuora cancel), ``roles`` (worker, alert, sink), ``sinkops`` (rebase-offsets), ``sql``, ``lake`` (lake-compact), ``operations`` (demo,
run, status, chaos, bench). ``common`` holds the app, the options, and the one mapping of a
``JobstreamError`` to its one-line message and exit code (``pipeline.errors``).

The command modules are imported when ``app`` is first asked for, not when this package is:
a vendor's ``commands`` module imports ``pipeline.cli.common`` for the shared options, and
``pipeline run`` loads that module before any command exists (importing every command module
here made that a circular import).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["app", "load_settings", "main"]

_COMMAND_MODULES = ("documents", "insight", "lake", "operations", "roles", "sinkops", "sql", "topics", "vendors")


def __getattr__(name: str) -> Any:
    if name not in ("app", "load_settings"):
        raise AttributeError(f"module 'pipeline.cli' has no attribute {name!r}")
    for module in _COMMAND_MODULES:
        importlib.import_module(f"pipeline.cli.{module}")  # each registers its commands on the app
    return getattr(importlib.import_module("pipeline.cli.common"), name)


def main() -> None:
    __getattr__("app")()
