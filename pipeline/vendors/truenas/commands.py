"""TrueNAS's CLI commands (``pipeline ingest|simulate truenas``), its pre-start checks and its
``pipeline run`` role."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pipeline.cli.common import BootstrapOpt, ListenOpt, MetricsPortOpt, fail, load_settings, out, parse_listen
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.vendors.registry import DemoContext, DemoProcess


def ingest(
    url: Annotated[str, typer.Option(help="ws(s)://HOST/api/current, or ws(s)://HOST/websocket for the legacy API.")],
    bootstrap: BootstrapOpt = None,
    username: Annotated[Optional[str], typer.Option(help="User owning the API key (current API; default root; env JOBSTREAM_TRUENAS_USERNAME).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key (else env JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Host name in the records' source (default: the URL's host).")] = None,
    ca_file: Annotated[Optional[Path], typer.Option(help="CA certificate (PEM) that signed the NAS's certificate (env JOBSTREAM_TRUENAS_CA_FILE).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the TLS certificate (self-signed NAS; warned: prefer --ca-file).")] = False,
    allow_plain_ws: Annotated[bool, typer.Option("--allow-plain-ws", help="Accept a ws:// URL to another host (a TLS tunnel carries it). Without it, ws:// is refused except to this machine: TrueNAS revokes an API key used over an unencrypted connection.")] = False,
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
    from pipeline.vendors.truenas import ingest

    try:
        ingest.check_url(url, allow_plain=allow_plain_ws)
        if host is not None:
            ingest.check_host(host)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = load_settings(bootstrap=bootstrap, truenas_username=username, truenas_api_key_file=api_key_file,
                             truenas_ca_file=ca_file, metrics_port=metrics_port)
    key = credentials(settings)
    config = ingest.TruenasConfig(url=url, api_key=key, username=settings.truenas_username, host=host,
                                  heartbeat_every_s=settings.heartbeat_every_s, verify_tls=not insecure,
                                  ca_file=str(settings.truenas_ca_file) if settings.truenas_ca_file else None)
    asyncio.run(run_with_operations("truenas-ingestor", settings, lambda: ingest.run(settings, config)))


def simulate(
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

    host, port = parse_listen(listen)
    settings = load_settings(truenas_username=username, truenas_api_key_file=api_key_file)
    key = settings.truenas_key()
    if key is None:
        raise ConfigError("no API key to accept: set JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE, or pass --api-key-file")

    def ready(sim: "simulator.MiddlewareSimulator") -> None:
        out.print(f"TrueNAS simulator: {sim.url} (legacy: {sim.legacy_url}); Ctrl-C stops it")

    try:
        asyncio.run(simulator.run(host=host, port=port, api_key=key, username=settings.truenas_username,
                                  clock=clock, every_s=every, drop_every_s=drop_every,
                                  restart_every_s=restart_every, on_ready=ready))
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def credentials(settings: "Settings", *, flags: bool = True) -> str:
    """The API key, after the checks ``ingest truenas`` and ``pipeline run`` both make (the CA
    file exists, the key is readable and given); ``flags``: name the flags in the message."""
    ca_file = settings.truenas_ca_file
    if ca_file is not None and not Path(ca_file).is_file():
        where = f"--ca-file {ca_file}" if flags else f"JOBSTREAM_TRUENAS_CA_FILE={str(ca_file)!r}"
        raise ConfigError(f"{where}: no such file")
    key = settings.truenas_key()
    if key is None:
        raise ConfigError("no API key: set JOBSTREAM_TRUENAS_API_KEY or JOBSTREAM_TRUENAS_API_KEY_FILE"
                          + (", or pass --api-key-file" if flags else ""))
    return key


def run_arguments(table: dict[str, Any], settings: "Settings | None", problems: list[str]) -> list[str]:
    """``pipeline run``: its ``[truenas]`` table checked as ``ingest truenas`` will (URL, host,
    API key, CA file), and that command's arguments."""
    from pipeline.vendors.truenas.ingest import check_host, check_url

    allowed = {"url", "host", "insecure", "allow_plain_ws"}
    problems += [f"[truenas] {k}: unknown setting (known: {', '.join(sorted(allowed))})" for k in table if k not in allowed]
    if "url" not in table:
        problems.append("[truenas] url is required (wss://NAS/api/current)")
    allow_plain = table.get("allow_plain_ws") is True
    for check, key in ((lambda url: check_url(url, allow_plain=allow_plain), "url"), (check_host, "host")):
        if key in table:
            try:
                check(str(table[key]))
            except ValueError as exc:
                problems.append(f"[truenas] {exc}")
    if settings is not None:
        try:
            credentials(settings, flags=False)
        except ConfigError as exc:
            problems.append(f"truenas: {exc}")
    arguments = ["--url", str(table.get("url", ""))]
    if "host" in table:
        arguments += ["--host", str(table["host"])]
    return arguments + (["--insecure"] if table.get("insecure") is True else []) + (["--allow-plain-ws"] if allow_plain else [])


def demo_processes(demo: "DemoContext") -> list["DemoProcess"]:
    """``pipeline demo``: a middleware that drops connections and restarts, and the ingestor."""
    from pipeline.vendors.registry import DemoProcess
    from pipeline.vendors.truenas import VENDOR

    port = demo.port("truenas")
    return [
        DemoProcess("truenas-simulator", ("simulate", "truenas", "--listen", "127.0.0.1:{listen:truenas}",
                                          "--clock", str(demo.clock_factor), "--every", "40", "--drop-every", "900",
                                          "--restart-every", "1500"), env=VENDOR.demo_secrets, listens_as="truenas"),
        DemoProcess("truenas-ingestor", ("ingest", "truenas", "--bootstrap", demo.bootstrap,
                                         "--url", f"ws://127.0.0.1:{port}/api/current"), env=VENDOR.demo_secrets),
    ]
