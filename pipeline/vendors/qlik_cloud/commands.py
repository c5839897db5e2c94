"""Qlik Cloud's CLI commands (``pipeline ingest|simulate qlik-cloud``) and its ``pipeline run`` role."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pipeline.cli.common import BootstrapOpt, ListenOpt, MetricsPortOpt, fail, load_settings, out, parse_listen
from pipeline.settings import SettingsError

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.vendors.registry import DemoContext, DemoProcess


def ingest(
    listen: ListenOpt = "127.0.0.1:8780",
    bootstrap: BootstrapOpt = None,
    source: Annotated[str, typer.Option(help="Names this receiver in the records and heartbeats.")] = "qlik-cloud-webhook",
    secret_file: Annotated[Optional[Path], typer.Option(help="File holding the webhook secret (else env JOBSTREAM_QLIK_WEBHOOK_SECRET or JOBSTREAM_QLIK_WEBHOOK_SECRET_FILE).")] = None,
    max_body: Annotated[Optional[int], typer.Option(min=1024, help="Largest body accepted, in bytes (default 262144; larger: 413).")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(help="Serve https with this certificate chain (PEM; env JOBSTREAM_WEBHOOK_TLS_CERT). Qlik Cloud delivers only to https URLs: this, or a TLS proxy in front.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="The certificate's private key (PEM; env JOBSTREAM_WEBHOOK_TLS_KEY).")] = None,
    metrics_port: MetricsPortOpt = None,
    no_signature: Annotated[bool, typer.Option("--no-signature", help="Accept unsigned deliveries: local tests only (loopback --listen); without it, no secret means no start.")] = False,
    header_timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds a client has to send a request's headers (default 10).")] = None,
    body_timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Seconds a client has to send the body (default 10; then 408).")] = None,
    max_connections: Annotated[Optional[int], typer.Option(min=1, help="Open connections at most; more are closed at once (default 256).")] = None,
    rate_per_client: Annotated[Optional[float], typer.Option(min=0, help="Requests a second per client address, bursts of twice that (default 20; then 429; 0: no limit).")] = None,
    max_event_age: Annotated[Optional[float], typer.Option(min=0, help="Refuse an event whose own time is older than this many seconds (default 604800, 7 days; 0: no limit).")] = None,
) -> None:
    """Receive Qlik Cloud webhooks (reload finished) into raw.qlik_cloud.

    Refuses to start without the webhook secret (JOBSTREAM_QLIK_WEBHOOK_SECRET[_FILE] or
    --secret-file; --no-signature for local tests only). Verifies Qlik-Signature (HMAC-SHA256
    of the body with the secret); answers 200 only after Kafka acknowledged the event, 503
    when it did not (Qlik delivers again), 401/408/413/415/400/422/429 with a reason for bad
    requests. A slow client is cut off, connections and each client's rate are bounded, an
    event older than --max-event-age is refused and the same bytes delivered again are
    acknowledged without a second record. Refusals are counted by reason in /metrics
    (jobstream_webhook_refusals_total) and logged at most once per reason every 10 s.
    GET /healthz answers 200 while Kafka is reachable.
    """
    from pipeline.ops.runtime import run_with_operations
    from pipeline.vendors.qlik_cloud import ingest

    host, port = parse_listen(listen)
    settings = load_settings(bootstrap=bootstrap, qlik_webhook_secret_file=secret_file, webhook_max_body_bytes=max_body,
                             webhook_tls_cert=tls_cert, webhook_tls_key=tls_key, metrics_port=metrics_port)
    guard_config = {"header_timeout_s": header_timeout, "body_timeout_s": body_timeout, "max_connections": max_connections,
                    "requests_per_s_per_client": rate_per_client, "max_event_age_s": max_event_age}
    try:
        ingest.required_secret(settings, host, no_signature)
        asyncio.run(run_with_operations("qlik-cloud-ingestor", settings, lambda: ingest.run(
            settings, host=host, port=port, source=source, no_signature=no_signature, guard_config=guard_config)))
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def simulate(
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
    secret = settings.qlik_secret()
    faults = simulator.Faults(duplicate_every=duplicates, reorder_every=reorder, binary_every=binary, legacy_every=legacy)
    report = asyncio.run(simulator.run(url, secret=secret, events=events, tenant=tenant, clock=clock, faults=faults))
    statuses = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(report.statuses.items()))
    out.print(
        f"{report.delivered} deliveries acknowledged ({report.duplicates} duplicates, {report.reordered} out of order, "
        f"{report.binary} binary, {report.legacy} app.reload.finished), {report.retries} retries, {report.failed} given up; answers: {statuses}"
    )
    if report.failed:
        raise typer.Exit(1)


def run_arguments(table: dict[str, Any], settings: "Settings | None", problems: list[str]) -> list[str]:
    """``pipeline run``: its ``[qlik_cloud]`` table checked as ``ingest qlik-cloud`` will, and
    that command's arguments."""
    limits = {"header_timeout_s": "--header-timeout", "body_timeout_s": "--body-timeout", "max_connections": "--max-connections",
              "requests_per_s_per_client": "--rate-per-client", "max_event_age_s": "--max-event-age"}
    allowed = {"listen", "source", *limits}
    problems += [f"[qlik_cloud] {k}: unknown setting (known: {', '.join(sorted(allowed))})" for k in table if k not in allowed]
    listen = str(table.get("listen", "127.0.0.1:8780"))
    if settings is not None:
        from pipeline.vendors.qlik_cloud.ingest import required_secret, server_tls

        host = listen.rpartition(":")[0].strip("[]") or "0.0.0.0"
        for check in (lambda: required_secret(settings, host, False), lambda: server_tls(settings)):
            try:
                check()
            except SettingsError as exc:
                problems.append(f"qlik-cloud: {exc}")
    arguments = ["--listen", listen]
    for key, flag in limits.items():
        if key in table:
            if isinstance(table[key], bool) or not isinstance(table[key], (int, float)) or table[key] < 0:
                problems.append(f"[qlik_cloud] {key} = {table[key]!r}: must be a number >= 0")
            else:
                arguments += [flag, str(table[key])]
    return arguments + (["--source", str(table["source"])] if "source" in table else [])


def demo_processes(demo: "DemoContext") -> list["DemoProcess"]:
    """``pipeline demo``: the webhook receiver, then a sender of signed reloads for the demo's length."""
    from pipeline.vendors.qlik_cloud import VENDOR
    from pipeline.vendors.registry import DemoProcess

    port = demo.port("webhook")
    return [
        DemoProcess("qlik-cloud-receiver", ("ingest", "qlik-cloud", "--bootstrap", demo.bootstrap,
                                            "--listen", "127.0.0.1:{listen:webhook}",
                                            "--rate-per-client", "0"),  # its own sender (and chaos's hostile one) on loopback
                    env=VENDOR.demo_secrets,
                    listens_as="webhook"),
        DemoProcess("qlik-cloud-simulator", ("simulate", "qlik-cloud", "--url", f"http://127.0.0.1:{port}/",
                                             "--events", str(max(int(demo.duration_s), 20)), "--clock", "60"),
                    env=VENDOR.demo_secrets, one_shot=True),
    ]
