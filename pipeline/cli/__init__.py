"""``pipeline``: the one command-line entry point.

One module per command group, each thin (parse, call, print): ``topics`` (topics, broker),
``documents`` (normalize, replay, ingest file), ``vendors`` (ingest/simulate per vendor from
the registry, zuora cancel), ``roles`` (worker, alert, sink), ``sql``, ``operations`` (demo,
run, status, chaos, bench). ``common`` holds the app, the options, and the one mapping of a
``JobstreamError`` to its one-line message and exit code (``pipeline.errors``).
"""

from __future__ import annotations

from pipeline.cli import documents, operations, roles, sinkops, sql, topics, vendors  # noqa: F401 - registers the commands
from pipeline.cli.common import app, load_settings

__all__ = ["app", "load_settings", "main"]


def main() -> None:
    app()
