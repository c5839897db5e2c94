"""``pipeline explain`` (one run's story, or one dead letter's) and ``pipeline report`` (the HTML report)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import BootstrapOpt, DbOpt, app, fail, load_settings, out, quiet_kafka_logs
from pipeline.errors import ConfigError


def _database(db: Path | None, **overrides: object) -> tuple[object, Path, str, Path]:
    """Settings, the file, the live address (the sink's Quack when it serves) and the token file."""
    from pipeline.sink import quack, sql as sql_module

    settings = load_settings(db_path=db, **overrides)
    address = sql_module.live_address(settings.db_path, None, quack.uri(settings.quack_host, settings.quack_port))
    token_file = settings.quack_token_file or quack.token_file_for(settings.db_path)
    return settings, settings.db_path, address, token_file


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
    settings, db_path, address, token_file = _database(db, **overrides)
    quiet_kafka_logs()
    try:
        if dead_letter is not None:
            letter = explain_dead_letter(db_path, address, token_file, dead_letter, bootstrap=settings.bootstrap if bootstrap else None)
            sys.stdout.write(render.dead_letter_json(letter) if output == "json" else render.dead_letter_text(letter))
            return
        story = explain_run(
            db_path, address, token_file, run_key, bootstrap=settings.bootstrap if bootstrap else None,
            stale_after_for=settings.stale_after, max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
        )
    except ExplainError as exc:
        raise fail(str(exc)) from None
    sys.stdout.write(render.run_json(story) if output == "json" else render.run_text(story))
    if not story.refold.agrees:
        raise typer.Exit(1)
