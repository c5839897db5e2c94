"""What every command module of ``pipeline`` shares: the app and its sub-apps, the
consoles, common options, settings loading, and the one place a ``JobstreamError``
becomes its one-line message and exit code.

Every command reads ``Settings`` from ``JOBSTREAM_*`` environment variables and lets its
flags override them. Errors that a user can fix are one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from pipeline import vendors
from pipeline.errors import EXIT_FAILED, EXIT_SIGTERM, ConfigError, JobstreamError
from pipeline.settings import Settings


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from pipeline import compiled

        print(f"pipeline (jobstream) {version('jobstream')}")
        print(compiled.summary())  # the worker's CPU per record depends on it (docs/design.md, "Compiled hot modules")
        raise typer.Exit()


def guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with every ``JobstreamError`` it raises turned into its one-line
    message (a line per problem) and its exit code: the one mapping for every command."""

    @functools.wraps(function)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except JobstreamError as exc:
            raise fail(escape(str(exc)), exc.exit_code) from None

    return command


class Commands(typer.Typer):
    """A Typer whose commands map ``JobstreamError`` to a line and an exit code."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda function: register(guarded(function))


# Help text is plain: paragraphs are rewrapped to the terminal ("rich" mode kept the
# docstrings' own line breaks, which broke sentences mid-line), brackets print as written.
PLAIN = None

app = Commands(
    help="Jobstream: the vendors' job events -> Kafka -> one lifecycle history in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=PLAIN,
)
topics_app = Commands(help="The topic catalog (topics/*.toml) and brokers.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(topics_app, name="topics")
ingest_app = Commands(help="Ingestors: vendor APIs and documents into raw.<vendor> topics.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(ingest_app, name="ingest")
simulate_app = Commands(help="Vendor simulators that speak the real protocols, for demos and tests.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(simulate_app, name="simulate")


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Jobstream: the vendors' job events -> Kafka -> one lifecycle history in DuckDB."""

# emoji=False: rich would print "a:b:c" paths and URLs with ":smile:"-like parts as emoji.
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)

BootstrapOpt = Annotated[
    Optional[str],
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (env JOBSTREAM_BOOTSTRAP; default localhost:9092)."),
]


MetricsPortOpt = Annotated[
    Optional[int],
    typer.Option("--metrics-port", min=0, max=65535,
                 help="Serve /metrics and /healthz on this port (env JOBSTREAM_METRICS_PORT; default 0: off; host JOBSTREAM_METRICS_HOST, default 127.0.0.1)."),
]


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Each line of ``message`` as its own ``error:`` line (settings report every problem);
    for an outcome that is no exception (rejected documents, a mismatch), else raise a
    ``JobstreamError`` and let the guard print it."""
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {line}")
    return typer.Exit(code)


def quiet_kafka_logs() -> None:
    """aiokafka logs every failed connection attempt; the command says it once itself."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def exit_on_sigterm() -> None:
    """SIGTERM exits through SystemExit, so ``finally`` blocks stop the embedded broker
    and the worker child (Python's default would end the process on the spot)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(EXIT_SIGTERM))


def load_settings(**overrides: object) -> Settings:
    """The settings every command reads (environment, then its flags); a ``SettingsError``
    (every problem at once) reaches the guard."""
    from pipeline.kafka import clients

    settings = Settings.from_env().with_overrides(stale_after_defaults=vendors.stale_after_defaults(), **overrides)
    clients.configure(settings)  # Kafka security for every client of this process, checked now
    return settings



ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML file with the ingestor's [section]; secrets only from JOBSTREAM_<SECTION>_<NAME> or <name>_file."),
]
ListenOpt = Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (':PORT' = all interfaces).")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="The analytics DuckDB file (env JOBSTREAM_DB_PATH; default data/jobstream.duckdb).")]


def parse_listen(value: str) -> tuple[str, int]:
    from pipeline.push import parse_listen as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
