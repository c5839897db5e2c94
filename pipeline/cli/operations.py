"""The main job and operations: ``pipeline demo``, ``run``, ``status``, ``chaos`` and ``bench``."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import (
    BootstrapOpt, app, err, exit_on_sigterm, fail, load_settings, out, quiet_kafka_logs,
)
from pipeline.errors import EXIT_FAILED
from pipeline.vendors import registry




ROLES = ", ".join(["worker", "sink", "alerter", *(v.command for kind in ("push", "pull") for v in registry.of_kind(kind))])
"""``pipeline run``'s roles, as its help names them (the vendors' from the registry)."""


@app.command()
def demo(
    duration: Annotated[float, typer.Option(min=10, help="Seconds to run before the summary.")] = 60.0,
    db: Annotated[Optional[Path], typer.Option("--db", help="The DuckDB file to write (default: jobstream.duckdb in the run folder).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for the database and every role's log (default: a new folder under ~/.local/share/jobstream).")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Keep everything up for live queries until Ctrl-C.")] = False,
    lake: Annotated[bool, typer.Option("--lake", help="Two sinks of one consumer group write a DuckLake (a throwaway PostgreSQL catalog, Debian's postgresql package) instead of one sink the file.")] = False,
) -> None:
    """Run the whole pipeline on this machine: broker, simulators, ingestors, worker, sink, alerter.

    Everything is embedded (no Kafka or Docker needed). Progress shows while it runs; at the
    end, a summary computed by SQL on the DuckDB file, and the commands to query it.
    Ctrl-C stops everything cleanly and still prints the summary.
    """
    from pipeline.run import demo as demo_module

    folder = run_dir or demo_module.default_run_dir()
    options = demo_module.DemoOptions(duration_s=duration, run_dir=folder, db=db, keep_running=keep_running, lake=lake)
    # Ctrl-C must stop it even when started in the background from a script (`&`), where
    # the shell makes SIGINT ignored and Python keeps that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exit_on_sigterm()
    from pipeline.sink.scratch_postgres import PostgresUnavailable

    try:
        result = demo_module.run(options, say=lambda line: out.print(line, markup=False))
    except PostgresUnavailable as exc:
        raise fail(f"pipeline demo --lake: {exc}") from None
    for line in demo_module.report(options, result):
        out.print(line, markup=False)
    if result.problems:
        for problem in result.problems:
            err.print(problem, markup=False)
        raise fail("a role stopped during the demo (its log is above)")


@app.command("run")
def run_pipeline(
    roles: Annotated[Optional[list[str]], typer.Argument(help=f"Roles to run: {ROLES} (default: [run] roles in the file, else worker, sink, alerter and every ingestor with a table in the file).")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML file: [pipeline] settings, [run], one table per role (see jobstream.example.toml).")] = Path("jobstream.toml"),
    bootstrap: BootstrapOpt = None,
    state_file: Annotated[Optional[Path], typer.Option(help="Where the roles' pids, metrics ports and restarts are kept for `pipeline status` (env JOBSTREAM_RUN_STATE_FILE; default data/run/state.json).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Check the whole configuration (every role's, Apprise URLs, the sink's database) and exit: 0 and one line when it would start, 2 and a line per problem when not.")] = False,
) -> None:
    """Run the production roles against a Kafka, each as its own process, until Ctrl-C / SIGTERM.

    Settings: flags win over JOBSTREAM_* variables, which win over the file; all of it is
    checked before anything starts (one line per problem); secrets only from the
    environment or files. A role that exits non-zero is restarted with a backoff (status 2,
    a configuration error, stops the run instead); each
    role serves /metrics and /healthz on its own port, printed at start. A role's exit is
    said with its last error line; one that fails the same way 5 times in a row stops the
    run with that line. SIGTERM or Ctrl-C stops every role within 30 s and exits 0; a second
    run on the same configuration (state file) is refused.
    """
    from pipeline.run import production

    from pipeline.ops.stopping import raise_on_stop_signals

    plan = production.load_plan(config, roles or [], {"bootstrap": bootstrap, "run_state_file": state_file})
    if check:
        out.print(f"{config}: configuration OK for {', '.join(role.name for role in plan.roles)} (nothing started)", markup=False)
        return
    from pipeline.ops.logs import stamp
    from pipeline.run.lock import run_lock

    with run_lock(Path(plan.settings.run_state_file)):  # a second run on this configuration: one line
        raise_on_stop_signals()  # a requested stop (systemctl stop, docker stop, Ctrl-C) exits 0
        code = production.run(plan, say=lambda line: out.print(stamp(line), markup=False))
    if code:
        raise typer.Exit(code)


@app.command()
def chaos(
    soak: Annotated[Optional[float], typer.Option(min=1, help="Minutes of faults (default: a short run of 75 s, as in CI).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the fault plan and the hostile inputs: the same seed, the same kills and inputs.")] = 1,
    bad_inputs: Annotated[int, typer.Option(min=1, help="Hostile records produced into the raw topics.")] = 10_000,
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for the database and every role's log (default: a new folder under ~/.local/share/jobstream).")] = None,
    lake: Annotated[bool, typer.Option("--lake", help="Two sinks of one consumer group write a DuckLake (a throwaway PostgreSQL catalog, as `pipeline demo --lake`), killed in turn; the verdict is read from the lake.")] = False,
) -> None:
    """Run the pipeline under crashes, vendor faults and hostile input, then check nothing was lost.

    Starts what `pipeline demo` starts plus a second worker, SIGKILLs workers, the sink, each
    ingestor and the alerter at seeded random points, sends 10,000 bad records and bad
    webhooks, then replays the raw topics through the worker's own code and compares the
    DuckDB tables with that replay, id by id. Also checks every bad record became a dead
    letter, no secret shows in a log, table or topic, and a broker restart stops the
    pipeline with a clear line. The last line is
    `reliability: faults=N restarts=N bad_inputs=N lost=N duplicated=N`; the exit status is
    non-zero unless lost and duplicated are 0 and no other check failed.
    """
    from pipeline.chaos import runner
    from pipeline.chaos.scenario import ChaosOptions

    options = ChaosOptions(seed=seed, bad_inputs=bad_inputs, run_dir=run_dir or runner.default_run_dir(), lake=lake)
    if soak is not None:
        options = dataclasses.replace(options, duration_s=soak * 60, catch_up_s=max(options.catch_up_s, soak * 30))
    exit_on_sigterm()
    result = runner.run(options, say=lambda line: out.print(line, markup=False))
    for line in runner.report(result):
        out.print(line, markup=False)
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def status(
    bootstrap: BootstrapOpt = None,
    state_file: Annotated[Optional[Path], typer.Option(help="State file of a running `pipeline run` (env JOBSTREAM_RUN_STATE_FILE; default data/run/state.json).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="The TOML file a `pipeline run` was started with: its [pipeline] settings (Kafka, state file, the sink's database and Quack port).")] = None,
) -> None:
    """Per role and partition: whether it runs, its lag, and when it last moved (from Kafka).

    When a `pipeline run` is running, first its roles: pid, restarts, last exit status and
    each role's own /healthz (problems, and per partition its lag and when it last moved).
    The sink's database and Quack port come from that run's state file, else from --config,
    else from the environment.
    """
    from pipeline.run import status as status_module

    overrides = {"bootstrap": bootstrap, "run_state_file": state_file}
    if config is None:
        settings = load_settings(**overrides)
    else:
        from pipeline.kafka import clients
        from pipeline.run import production

        settings = production.load_settings(config, overrides)
        clients.configure(settings)  # the file's Kafka security, as load_settings does for the environment
    settings = settings.with_overrides(**status_module.run_sink_overrides(
        status_module.live_run_state(Path(settings.run_state_file))))
    quiet_kafka_logs()
    for line in asyncio.run(status_module.run_state_lines(Path(settings.run_state_file))):
        out.print(line, markup=False)
    roles = status_module.default_roles(settings)
    from pipeline.cli.sql import _sink_offsets

    offsets, where = _sink_offsets(settings)
    try:
        rows = asyncio.run(status_module.gather(settings.bootstrap, roles))
        rows += asyncio.run(status_module.sink_statuses(settings.bootstrap, offsets))
    except Exception as exc:  # noqa: BLE001 - aiokafka's connection errors: one line
        raise fail(f"cannot read the consumer groups from {settings.bootstrap}: {exc or type(exc).__name__}") from None
    if where:
        out.print(where, markup=False)
    for line in status_module.render(rows):
        out.print(line, markup=False)





@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1000, help="Documents in the seeded workload (every vendor).")] = 20_000,
    repeats: Annotated[int, typer.Option(min=1, help="Each stage is the median of this many runs.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the workload (the same seed, the same input).")] = 1,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the numbers as JSON here.")] = None,
    freshness_rate: Annotated[int, typer.Option(min=1, help="Raw records per second sent while freshness is measured.")] = 2000,
    freshness_seconds: Annotated[float, typer.Option(min=1, help="How long freshness is measured.")] = 20.0,
    site_rate: Annotated[int, typer.Option(min=0, help="Freshness measured again at this rate (raw records/s; a large site's); 0 skips it.")] = 200,
    state_runs: Annotated[int, typer.Option(min=0, help="Runs in the worker's table for its peak RSS and restart-to-ready (RocksDB, a broker of its own; minutes at 1,000,000); 0 skips it.")] = 1_000_000,
) -> None:
    """Measure each stage against its bare baseline, in one run on the embedded broker.

    Today: bare aiokafka + orjson, the bare Faust agent loop, the lifecycle alone,
    normalize alone per vendor, the worker (raw -> jobs.*), the sink alone (against a bare
    loop over the same jobs.* records), end to end (a worker and a sink, rows counted over
    Quack), freshness at a steady --freshness-rate (raw acknowledged -> visible over Quack)
    and again at --site-rate,
    the sink on a lake (one sink, two of a group) with the three sink stages' freshness at
    the same rate (jobs.events acknowledged -> visible in SQL), and the worker's peak RSS and restart-to-ready with --state-runs runs in its table.
    Ratios, not absolute numbers, are what compares across days on a shared machine.
    """
    from pipeline.bench import run as bench_run

    quiet_kafka_logs()
    results = bench_run.run(events, repeats=repeats, seed=seed, state_runs=state_runs, freshness_rate=freshness_rate,
                            freshness_seconds=freshness_seconds, site_rate=site_rate, say=lambda line: err.print(line, markup=False))
    for line in bench_run.table(results):
        out.print(line, markup=False)
    if out_file is not None:
        bench_run.write(results, out_file)
        out.print(f"numbers in {out_file}", markup=False)
