"""``pipeline demo``: the whole pipeline on this machine, with nothing but the package.

One supervisor starts, as separate processes: the embedded broker (Tansu), the vendor
simulators, the ingestors, the worker, the DuckDB sink (serving live SQL over Quack) and
the alerter, delivering to a local webhook receiver. A few hostile documents per vendor
go in too, so the dead-letter path shows. Progress is printed while it runs; at the end
(``duration_s``, or Ctrl-C) everything is stopped and a summary is computed by SQL on the
DuckDB file, followed by the commands to query it.

Vendor time runs faster than real time (each simulator's clock factor), so one demo
minute shows hours of vendor life: retries, stale runs that come back or drain,
TrueNAS progress, aborts and a middleware restart.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
from aiokafka import TopicPartition

from pipeline import catalog
from pipeline.alerts.receiver import LocalReceiver
from pipeline.broker import EmbeddedBroker
from pipeline.ops import ports
from pipeline.kafka import clients
from pipeline.model import UTC
from pipeline.run.supervisor import Role, RoleFailed, Supervisor, Usage, read_usage
from pipeline.sources import RawProducer, records_for
from pipeline.vendors import VENDOR_NAMES, registry
from pipeline.vendors.registry import DemoContext
from pipeline.vendors import Context
from pipeline.vendors._common import TIMELINE_ENV, Timeline

PIPELINE = (sys.executable, "-P", "-m", "pipeline")
DEMO_SECRET = dict(registry.by_name("qlik_cloud").demo_secrets)["JOBSTREAM_QLIK_WEBHOOK_SECRET"]
DEMO_API_KEY = dict(registry.by_name("truenas").demo_secrets)["JOBSTREAM_TRUENAS_API_KEY"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 60.0
    run_dir: Path = Path("jobstream-demo")
    db: Path | None = None
    keep_running: bool = False
    lake: bool = False  # two sinks into a DuckLake with a throwaway PostgreSQL catalog (demo_lake.py)

    @property
    def db_path(self) -> Path:
        return self.db or self.run_dir / "jobstream.duckdb"


@dataclass(slots=True)
class DemoResult:
    summary: dict[str, Any]
    usage: dict[str, Usage]
    wall_s: float
    problems: list[str] = field(default_factory=list)


CLOCK_FACTOR = 30
"""Vendor seconds per real second in the demo: a one-minute demo shows half an hour of
vendor life (and 240 s stale timeouts happen within seconds)."""


def _toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _pull_config(path: Path) -> Path:
    """The pull ingestors' TOML, one table per pull vendor from its declared demo config
    (passwords come from the environment, as in production; each base URL too, since only
    its simulator knows its port once it listens: ``pull_base_url_env``)."""
    tables = []
    for vendor in registry.of_kind("pull"):
        lines = [f"[{vendor.name}]", *(f"{key} = {_toml_value(value)}" for key, value in vendor.demo_config)]
        tables.append("\n".join(lines) + "\n")
    path.write_text("\n".join(tables))
    return path


def pull_base_url_env(vendor_name: str, simulator_alias: str) -> dict[str, str]:
    """The ingestor's ``base_url`` (its variable wins over the file): the port its simulator
    reported, filled in by the supervisor when the ingestor starts."""
    return {f"JOBSTREAM_{vendor_name.upper()}_BASE_URL": f"http://127.0.0.1:{{port:{simulator_alias}}}"}


PULL_FAULTS = {vendor.command: vendor.demo_faults for vendor in registry.of_kind("pull")}
"""Faults each pull simulator injects (rates per call; see docs/ingestors.md)."""

PULL_SECRETS = {name: value for vendor in registry.of_kind("pull") for name, value in vendor.demo_secrets}
"""The simulators' own demo credentials (pipeline/vendors/*/simulator.py)."""


def roles(bootstrap: str, options: DemoOptions, receiver_url: str, sinks: list[Role] | None = None) -> list[Role]:
    """Every process of the demo, in start order (readiness probes where others depend).
    Every listener binds a port of its own choosing and reports it (``pipeline/ops/ports.py``);
    a role that needs another's port names it ``{port:<alias>}``, filled in at its start."""
    pull_vendors = registry.of_kind("pull")
    context = DemoContext(bootstrap, lambda alias: f"{{port:{alias}}}", options.duration_s, CLOCK_FACTOR)
    push = [
        Role(process.name, [*PIPELINE, *process.args], env=dict(process.env), one_shot=process.one_shot,
             ready_port="listen" if process.listens_as else None, listens_as=process.listens_as)
        for vendor in registry.of_kind("push") if vendor.demo_processes
        for process in registry.load(vendor.demo_processes)(context)
    ]
    config = _pull_config(options.run_dir / "ingest.toml")
    pull: list[Role] = []
    # one vendor timeline for the pull simulators and their ingestors: it reaches now at the demo's end
    timeline = {TIMELINE_ENV: Timeline.starting_now(CLOCK_FACTOR, options.duration_s).text()}
    for vendor in pull_vendors:
        command = vendor.command
        pull.append(Role(f"{command}-simulator", [
            *PIPELINE, "simulate", command, "--port", f"{{listen:{command}}}", "--clock-factor", str(CLOCK_FACTOR),
            "--faults", PULL_FAULTS[command], "--groups", "4",
        ], ready_port="listen", listens_as=command, env=timeline))
        pull.append(Role(f"{command}-ingestor", [*PIPELINE, "ingest", command, "--config", str(config),
                                                 "--bootstrap", bootstrap],
                         env={**PULL_SECRETS, **timeline, **pull_base_url_env(vendor.name, command)}))
    file_sink = Role("sink", [*PIPELINE, "sink", "--bootstrap", bootstrap, "--db", str(options.db_path),
                              "--quack-host", "127.0.0.1"],
                     env={ports.ANY_ENV: "quack"}, ready_port="quack", ready_timeout_s=60)
    return [
        *(sinks if sinks is not None else [file_sink]),
        # Vendor clocks run CLOCK_FACTOR times faster than the ingestors' receive clock: the
        # worker is told to trust vendor times that far ahead (a setting, 5 min by default).
        Role("worker", [*PIPELINE, "worker", "--bootstrap", bootstrap, "--store", "memory://", "--tansu",
                        "--app-id", "jobstream-demo", "--datadir", str(options.run_dir / "worker")],
             env={"JOBSTREAM_MAX_CLOCK_SKEW_S": str(int(options.duration_s * CLOCK_FACTOR * 4 + 3600))}),
        Role("alerter", [*PIPELINE, "alert", "--bootstrap", bootstrap, "--url", receiver_url]),
        *push,
        *pull,
    ]


def with_metrics_ports(demo_roles: list[Role]) -> list[Role]:
    """Each pipeline role (not the simulators) serving /metrics and /healthz on a port of
    its own choosing, which it reports (``Supervisor.ports``)."""

    def any_port(role: Role) -> Role:
        wanted = ",".join(filter(None, [role.env.get(ports.ANY_ENV), "metrics"]))
        return replace(role, env={**role.env, ports.ANY_ENV: wanted})

    return [role if role.name.endswith("-simulator") else any_port(role) for role in demo_roles]


HOSTILE: dict[str, list[Any]] = {vendor.name: list(vendor.hostile) for vendor in registry.vendors()}
"""One or two documents per vendor that no normalizer accepts: the dead-letter path."""


class _Tally:
    """Counts raw records per vendor and distinct canonical events per vendor (a re-sent
    raw record makes the worker emit its events again, with the same ids, which DuckDB
    keeps once), from Kafka, in a thread of its own (group-less consumers: it never
    disturbs the pipeline's groups)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.raw: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self._event_ids: set[str] = set()
        self.dead_letters = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="demo-tally")

    def start(self) -> "_Tally":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        consumer = clients.consumer(self.bootstrap)
        await consumer.start()
        try:
            topics = [*catalog.raw_topics(), catalog.EVENTS, catalog.DEADLETTER]
            tps = [TopicPartition(t, p) for t in topics for p in range(catalog.topic(t).partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=300, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        self._count(tp.topic, record.value)
        finally:
            await consumer.stop()

    def _count(self, topic: str, value: bytes | None) -> None:
        if topic == catalog.DEADLETTER:
            self.dead_letters += 1
            return
        try:
            doc = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        if topic == catalog.EVENTS:
            event_id = str(doc.get("event_id"))
            if event_id not in self._event_ids:
                self._event_ids.add(event_id)
                self.events[str(doc.get("vendor"))] += 1
        elif not doc.get("heartbeat"):
            self.raw[topic.removeprefix(catalog.RAW_PREFIX)] += 1


async def _send_hostile(bootstrap: str) -> int:
    """Send the hostile documents the way an ingestor does (``records_for``: a document
    its vendor refuses still goes to Kafka, unkeyed), so the worker dead-letters each."""
    sent = 0
    now = datetime.now(UTC)
    for vendor, docs in HOSTILE.items():
        async with RawProducer(bootstrap, vendor, "demo-hostile") as producer:
            for doc in docs:
                report = await producer.send(records_for(vendor, doc, Context(source="demo-hostile", received_at=now)))
                sent += report.sent
    return sent


SUMMARY_QUERIES: dict[str, str] = {
    "runs": "SELECT vendor, state, count(*) AS runs FROM job_runs GROUP BY ALL ORDER BY ALL",
    "retries": "SELECT vendor, sum(retries) AS retries, sum(attempt) AS attempts FROM job_runs GROUP BY ALL ORDER BY ALL",
    "stale": "SELECT vendor, count(*) AS episodes, count(*) FILTER (ended_by = 'reactivated') AS reactivated, "
             "count(*) FILTER (ended_by = 'drained') AS drained, count(*) FILTER (ended_by = 'still_stale') AS still_stale "
             "FROM stale_episodes GROUP BY ALL ORDER BY ALL",
    "durations": "SELECT vendor, round(quantile_cont(duration_s, 0.5), 1) AS p50_s, "
                 "round(quantile_cont(duration_s, 0.95), 1) AS p95_s FROM job_runs "
                 "WHERE duration_s IS NOT NULL GROUP BY ALL ORDER BY ALL",
    "dead_letters": "SELECT vendor, stage, reason, dead_letters FROM dead_letter_reasons ORDER BY ALL",
    "alerts": "SELECT rule, status, count(*) AS alerts FROM alerts GROUP BY ALL ORDER BY ALL",
}


def summary(db_path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The demo's closing numbers, each one SQL query on the DuckDB file (read-only):
    per section its column names and rows."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        found = {}
        for name, query in SUMMARY_QUERIES.items():
            cursor = con.execute(query)
            found[name] = ([d[0] for d in cursor.description or []], cursor.fetchall())
        return found
    finally:
        con.close()


def small_table(columns: list[str], rows: list[tuple[Any, ...]], indent: str = "    ") -> list[str]:
    """A section of the summary: its column names over its rows, aligned."""
    cells = [columns, *(["" if v is None else str(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return lines if rows else [*lines, indent + "(none)"]


def installed_command(name: str) -> str:
    """``name`` as the user can run it: bare when this installation's bin directory (the
    venv's, next to the running Python) is on PATH, else its absolute path there, since
    README's first line runs the demo without activating the venv."""
    bin_dir = Path(sys.executable).absolute().parent
    on_path = any(Path(entry).absolute() == bin_dir for entry in os.environ.get("PATH", "").split(os.pathsep) if entry)
    return name if on_path else str(bin_dir / name)


RECENT_RUNS_QUERY = ("SELECT vendor, state, attempt, round(duration_s) AS secs, strftime(last_event_at, '%H:%M:%S') AS last_event, "
                     "job_key FROM job_runs ORDER BY last_event_at DESC LIMIT 20")
"""The first query the demo suggests: a few named columns, readable at 80 columns."""


def run(options: DemoOptions, say: Callable[[str], None] = print) -> DemoResult:
    """Start everything, show progress until the duration ends (or Ctrl-C), stop, summarize."""
    began = time.monotonic()
    options.run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    problems: list[str] = []
    broker = EmbeddedBroker(log=options.run_dir / "broker.log").start()
    receiver = LocalReceiver().start()
    tally = _Tally(broker.bootstrap)
    supervisor = Supervisor(options.run_dir / "logs", env=env)
    usage: dict[str, Usage] = {}
    numbers: dict[str, Any] = {}
    lake = None
    try:
        asyncio.run(catalog.apply(broker.bootstrap))
        if options.lake:
            from pipeline.run.demo_lake import DemoLake, LakeProgress

            lake = DemoLake.start(options.run_dir)
        where = f"the lake {lake.target.catalog} ({lake.data_path})" if lake else f"database {options.db_path}"
        say(f"broker {broker.bootstrap}; logs in {options.run_dir / 'logs'}; {where}")
        for role in with_metrics_ports(roles(broker.bootstrap, options, receiver.url,
                                             lake.sinks(PIPELINE, broker.bootstrap) if lake else None)):
            supervisor.start(role)
            say(f"  started {role.name}")
        if lake:
            progress: Any = LakeProgress(lake.target)
            say(f'live SQL while it runs: {installed_command("pipeline")} sql --lake "{lake.target.catalog}" "FROM active_runs"')
        else:
            from pipeline.sink import quack

            live = quack.uri("127.0.0.1", supervisor.ports("sink")["quack"])
            progress = _Progress(live, quack.token_file_for(options.db_path),
                                 lambda name: supervisor.ports(name).get("metrics") if name in ("worker", "sink") else None)
            say(f'live SQL while it runs: {installed_command("pipeline")} sql --db {options.db_path} --quack {live} "FROM active_runs"')
        tally.start()
        asyncio.run(_send_hostile(broker.bootstrap))
        deadline = None if options.keep_running else began + options.duration_s
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(3)
                problems = supervisor.exited()
                say(_progress_line(time.monotonic() - began, tally, len(set(receiver.alert_ids())), problems,
                                   progress.in_duckdb(), progress.lag()))
                if problems:
                    break
            time.sleep(3)  # the last records reach the sink
        except KeyboardInterrupt:
            say("stopping (Ctrl-C) ...")
        finally:
            progress.close()
    except KeyboardInterrupt:
        say("stopping (Ctrl-C) while starting ...")
    except RoleFailed as exc:
        problems.append(str(exc))
    finally:
        usage = supervisor.usage()
        usage.update(_own_usage(broker))
        supervisor.stop(grace_s=15)
        tally.stop()
        receiver.stop()
        broker.stop()
        if lake is not None:
            try:
                from pipeline.run.demo_lake import summary as lake_summary

                numbers = lake_summary(lake.target, SUMMARY_QUERIES)
            finally:
                lake.stop()
    if lake is None and options.db_path.is_file():
        numbers = summary(options.db_path)
    return DemoResult(summary=numbers, usage=usage, wall_s=time.monotonic() - began, problems=problems)


def _own_usage(broker: EmbeddedBroker) -> dict[str, Usage]:
    """The broker's and this process's own share (the supervisor, the progress tally and
    the alert receiver run here), read like the roles'."""
    found = {"demo (this process)": read_usage(os.getpid())}
    if broker.pid is not None:
        found["broker (Tansu)"] = read_usage(broker.pid)
    return {name: reading for name, reading in found.items() if reading is not None}


class _Progress:
    """What the live line needs beyond the Kafka tally: rows per vendor in DuckDB (one
    query over the sink's live Quack endpoint, on one connection kept open) and the worker's
    and sink's consumer lag (their own /metrics). Both cheap enough for every few seconds."""

    def __init__(self, quack_address: str, token_file: Path, metrics_port: Callable[[str], int | None]) -> None:
        self.quack_address = quack_address
        self.token_file = token_file
        self.metrics_port = metrics_port
        self._con: duckdb.DuckDBPyConnection | None = None

    def in_duckdb(self) -> Counter[str]:
        from pipeline.sink import quack

        try:
            if self._con is None:
                token = quack.read_token(self.token_file)
                if token is None:
                    return Counter()
                con = duckdb.connect()
                quack.attach(con, self.quack_address, token)
                self._con = con
            return Counter(dict(self._con.execute("SELECT vendor, count(*) FROM job_events GROUP BY ALL").fetchall()))
        except (duckdb.Error, quack.QuackError):
            self.close()
            return Counter()

    def lag(self) -> dict[str, int | None]:
        """Per role, the sum of its partitions' lag (None: its /metrics did not answer)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        found: dict[str, int | None] = {}
        for role in ("worker", "sink"):
            port = self.metrics_port(role)
            if port is None:
                found[role] = None
                continue
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
            except OSError:
                found[role] = None
                continue
            found[role] = int(sum(sample.value for family in text_string_to_metric_families(text)
                                  if family.name == "jobstream_consumer_lag" for sample in family.samples))
        return found

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _progress_line(elapsed: float, tally: _Tally, alerts: int, problems: list[str],
                   in_duckdb: Counter[str] | None = None, lag: dict[str, int | None] | None = None) -> str:
    """Per vendor: records ingested / events normalized / rows in DuckDB; then dead
    letters, the consumer lag of the worker and the sink, and alerts."""
    stored = in_duckdb or Counter()
    vendors = " ".join(f"{v} {tally.raw[v]}/{tally.events[v]}/{stored[v]}" for v in VENDOR_NAMES)
    lags = " ".join(f"{role} {'?' if n is None else n}" for role, n in (lag or {}).items())
    line = (f"{elapsed:5.0f}s  ingested/normalized/in DuckDB: {vendors} | dead letters {tally.dead_letters}"
            f" | lag: {lags or '?'} | alerts {alerts}")
    return line + (f" | {len(problems)} role(s) stopped" if problems else "")


def default_run_dir() -> Path:
    """A new folder per demo under the user's data directory (a demo's broker is new each
    time, so its database is too: offsets of an old broker mean nothing to a new one)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jobstream"
    return base / time.strftime("demo-%Y%m%d-%H%M%S")


def report(options: DemoOptions, result: DemoResult) -> list[str]:
    """The closing summary (each block one SQL query on the file) and what to run next."""
    source = f"the lake written by two sinks ({options.run_dir / 'lake-data'})" if options.lake else options.db_path
    lines = ["", f"demo ran {result.wall_s:.0f} s; summary from {source}:"]
    for name, (columns, rows) in result.summary.items():
        lines.append(f"  {name}:")
        lines.extend(small_table(columns, rows))
    if result.usage:
        lines.append("  roles (CPU s, peak RSS MB):")
        lines.extend(f"    {name}: {u.cpu_s:.1f} s, {u.peak_rss_mb:.0f} MB" for name, u in sorted(result.usage.items()))
    pipeline, duckdb_cli = installed_command("pipeline"), installed_command("duckdb")
    if options.lake:
        return [*lines, "", "the lake's catalog was a throwaway PostgreSQL, stopped with the demo (its Parquet files stay);",
                "query it live: pipeline demo --lake --keep-running (it prints the pipeline sql --lake line)"]
    lines += [
        "",
        "query it:",
        f'  {pipeline} sql --db {options.db_path} "{RECENT_RUNS_QUERY}"',
        f'  {pipeline} sql --db {options.db_path} "FROM stale_episodes"',
        f"  {duckdb_cli} -readonly {options.db_path}",
        "live while it runs: pipeline demo --keep-running (it prints the pipeline sql line for its Quack port)",
    ]
    return lines
