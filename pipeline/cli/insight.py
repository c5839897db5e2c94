"""``pipeline explain`` (one run's story, or one dead letter's) and ``pipeline report`` (the HTML report)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pipeline.cli.common import BootstrapOpt, DbOpt, app, fail, load_settings, out, quiet_kafka_logs
from pipeline.errors import ConfigError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.analytics import Database


def _database(db: Path | None, **overrides: object) -> tuple[Settings, Database]:
    """Settings and the database: the sink serving this file, else the file read-only."""
    from pipeline.analytics import Database

    settings = load_settings(db_path=db, **overrides)
    return settings, Database.of(settings.db_path, settings.quack_token_file)


@app.command()
def explain(
    run_key: Annotated[Optional[str], typer.Argument(help="The run's key (job_runs.run_key).")] = None,
    db: DbOpt = None,
    bootstrap: BootstrapOpt = None,
    dead_letter: Annotated[Optional[str], typer.Option("--dead-letter", help="Explain this dead letter (dead_letters.dead_letter_id) instead of a run.")] = None,
    output: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """The story of one run, oldest first: its raw records (from Kafka with --bootstrap, or that
    retention removed them), the canonical events, the lifecycle rule (R-number) applied to each
    and the state after it, the transitions, the alerts and the stored row; the refold must agree
    with the stored row and says so when it does not (exit 1). --dead-letter ID: the refused record and why."""
    from pipeline.explain import ExplainError, explain_dead_letter, explain_run, render

    if output not in ("text", "json"):
        raise ConfigError(f"--format must be text or json, not {output!r}")
    if (run_key is None) == (dead_letter is None):
        raise ConfigError("give a RUN_KEY or --dead-letter ID (one of them)")
    overrides = {"bootstrap": bootstrap} if bootstrap else {}
    settings, database = _database(db, **overrides)
    quiet_kafka_logs()
    try:
        if dead_letter is not None:
            letter = explain_dead_letter(database, dead_letter, bootstrap=settings.bootstrap if bootstrap else None)
            sys.stdout.write(render.dead_letter_json(letter) if output == "json" else render.dead_letter_text(letter))
            return
        story = explain_run(
            database, run_key, bootstrap=settings.bootstrap if bootstrap else None,
            stale_after_for=settings.stale_after, max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
        )
    except ExplainError as exc:
        raise fail(str(exc)) from None
    sys.stdout.write(render.run_json(story) if output == "json" else render.run_text(story))
    if not story.refold.agrees:
        raise typer.Exit(1)


@app.command()
def report(
    db: DbOpt = None,
    since: Annotated[str, typer.Option("--since", help="How far back: 7d, 12h, 30m, 90s, or all.")] = "7d",
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    serve: Annotated[bool, typer.Option("--serve", help="Serve the page on --listen instead, made again from the live database on every request.")] = False,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT for --serve (port 0: any free one, printed).")] = "127.0.0.1:8765",
    refresh: Annotated[int, typer.Option("--refresh", min=0, help="With --serve: the page reloads itself every N seconds (0: never).")] = 30,
) -> None:
    """One self-contained HTML report (opens offline, can be mailed): timelines of runs and
    attempts, durations p50/p95, failure rates per vendor, top failing jobs, dead letters by
    reason, alerts. Live from the sink when it runs, else from the file."""
    from pipeline.report import ReportError, build, render
    from pipeline.report.data import parse_since

    try:
        window = parse_since(since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _settings, database = _database(db)
    if serve:
        from pipeline.cli.common import parse_listen
        from pipeline.report.serve import serve_forever

        host, port = parse_listen(listen)
        try:
            serve_forever(host, port, lambda: render(build(database, since=window), refresh_s=refresh or None),
                          lambda url: out.print(f"serving the report on {url} (Ctrl-C stops)", markup=False))
        except OSError as exc:
            raise fail(f"cannot serve on {listen}: {exc.strerror or exc}") from None
        return
    try:
        made = build(database, since=window)
    except ReportError as exc:
        raise fail(str(exc)) from None
    page = render(made)
    try:
        out_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out_file}: {exc.strerror or exc}") from None
    out.print(f"wrote {out_file} ({len(page.encode()) / 1e6:.1f} MB, {len(made.timeline.rows)} attempts drawn, from {made.source})", markup=False)
