"""``pipeline chaos``: the whole pipeline under faults and hostile input, then a verdict.

1. Start what ``pipeline demo`` starts (broker, a simulator per vendor with their vendor faults,
   an ingestor per vendor, worker, sink, alerter; ``demo.roles``) plus a second worker in the
   same group.
2. Produce the hostile records into every raw topic and post the bad webhooks.
3. For the run's duration, apply the seeded fault plan (``scenario.plan``): SIGKILL a
   role, start it again a moment later. A role that dies on its own is a finding: it is
   started again, and the run fails.
4. Stop the simulators and ingestors, read the raw topics back, replay them through the
   worker's pure code (``oracle``) and wait until the live sink holds as many rows.
5. Stop everything, compare the DuckDB file with the replay id by id, check every hostile
   record became its dead letter and no secret shows anywhere.
6. Separately: restart the broker under the worker and sink (it loses everything); they
   must stop with a clear line and leave the tables as they were.

With ``--lake`` (``ChaosOptions.lake``), two sinks of one consumer group write a DuckLake
whose catalog is a scratch PostgreSQL (as ``pipeline demo --lake``), the plan kills the
two in turn (never both at once), and every count and the verdict are read from the lake.
A lake sink that stops on its own with one clear line (e.g. a commit that kept
conflicting) is restarted like any role and named in the report; nothing of its batch can
be lost, since its offsets are committed in the same lake transaction as its rows.

The last line: ``reliability: faults=N restarts=N bad_inputs=N lost=N duplicated=N``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import duckdb

from pipeline import catalog, vendors
from pipeline.alerts import rules as alert_rules
from pipeline.alerts.receiver import LocalReceiver
from pipeline.broker import EmbeddedBroker
from pipeline.chaos import hostile, oracle
from pipeline.chaos.scenario import (
    ALERTER, INGESTORS, SECOND_WORKER, SIMULATORS, SINK, WORKER, ChaosOptions, Fault, plan,
)
from pipeline.run import demo
from pipeline.run.demo_lake import SINKS as LAKE_SINKS, DemoLake
from pipeline.run.supervisor import Role, RoleFailed, Supervisor, tail
from pipeline.settings import Settings
from pipeline.model import UTC
from pipeline.sink import lake as lake_target, quack
from pipeline.sink.scratch_postgres import PostgresUnavailable
from pipeline.sink.writer import SinkError
from pipeline.vendors.qlik_cloud.simulator import reload_events
from pipeline.vendors import registry

QLIK_CLOUD_SENDER = "qlik-cloud-simulator"
WEBHOOKS = 140  # bad requests to the Qlik Cloud receiver (20 of each kind)


@dataclass(slots=True)
class ChaosResult:
    faults: int = 0
    restarts: int = 0
    bad_inputs: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or why not
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and not self.problems

    def closing_line(self) -> str:
        return (f"reliability: faults={self.faults} restarts={self.restarts} bad_inputs={self.bad_inputs} "
                f"lost={self.lost} duplicated={self.duplicated}")


def secrets() -> set[bytes]:
    """The credentials the simulators accept (planted in them by demo.roles), and the
    Basic auth header values made of them: none may show in a log, a table or Kafka."""
    plain = [value for vendor in registry.vendors() for _name, value in vendor.demo_secrets]
    basic = [f"{dict(vendor.demo_config)['user']}:{password}" for vendor in registry.of_kind("pull")
             if "user" in dict(vendor.demo_config) for _name, password in vendor.demo_secrets]
    return {s.encode() for s in plain} | {base64.b64encode(s.encode()) for s in basic}


CLIENT_TIMEOUT_S = 2
VENDOR_TIMEOUTS = f",timeout=0.03,hang_s={CLIENT_TIMEOUT_S * 2}"
"""On top of the demo's vendor faults (5xx, 429 storms with Retry-After, malformed
bodies, duplicates, reordering; TrueNAS dropped connections and middleware restarts):
3% of the pull simulators' answers hang twice as long as the ingestors wait."""


def chaos_roles(bootstrap: str, options: ChaosOptions, receiver_url: str, lake: DemoLake | None = None) -> list[Role]:
    """The demo's roles, fed the run's duration and seed, with client timeouts added to
    the vendor faults, plus a second worker in the same group; with ``lake``, its two
    sinks instead of the file's."""
    demo_options = demo.DemoOptions(duration_s=options.duration_s, run_dir=options.run_dir, db=options.db_path)
    sinks = lake.sinks(demo.PIPELINE, bootstrap) if lake is not None else None
    roles = [_with_timeouts(role, options.seed) for role in demo.roles(bootstrap, demo_options, receiver_url, sinks)]
    config = options.run_dir / "ingest.toml"  # written by demo.roles: the ingestors give up on a call sooner
    config.write_text(re.sub(r"^(\[\w+\])$", rf"\1\ntimeout_s = {CLIENT_TIMEOUT_S}", config.read_text(), flags=re.M))
    worker = next(r for r in roles if r.name == WORKER)
    argv = list(worker.argv)
    argv[argv.index("--datadir") + 1] = str(options.run_dir / SECOND_WORKER)
    second = replace(worker, name=SECOND_WORKER, argv=argv)
    at = roles.index(worker) + 1
    return [*roles[:at], second, *roles[at:]]


def worker_settings(worker: Role) -> Settings:
    """The settings the worker role runs with, as ``pipeline worker`` builds them: its
    environment over each vendor's own stale_after (the replay must use the same)."""
    return Settings.from_env(worker.env).with_overrides(stale_after_defaults=vendors.stale_after_defaults())


def _with_timeouts(role: Role, seed: int) -> Role:
    argv = list(role.argv)
    if "--faults" not in argv:
        return role
    at = argv.index("--faults") + 1
    argv[at] += f"{VENDOR_TIMEOUTS},seed={seed}"
    return replace(role, argv=argv)


def _option(role: Role, flag: str) -> str:
    argv = list(role.argv)
    return argv[argv.index(flag) + 1]


class _Run:
    """One chaos run's moving parts (the broker, the supervisor) and its tallies."""

    def __init__(self, options: ChaosOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.result = ChaosResult()
        self.began = time.monotonic()
        self.broker = EmbeddedBroker(log=options.run_dir / "broker.log")
        self.receiver = LocalReceiver()
        self.supervisor = Supervisor(options.run_dir / "logs",
                                     env={k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")})
        self.roles: dict[str, Role] = {}
        self.down: dict[str, float] = {}  # role -> when to start it again
        self.stopped: list[str] = []  # roles that exited on their own with one clear line
        self.lake: DemoLake | None = None  # with options.lake: the catalog server and data folder
        self.sink_conflict_exits = 0  # lake sinks that stopped on a commit that kept conflicting

    @property
    def sinks(self) -> tuple[str, ...]:
        return LAKE_SINKS if self.options.lake else (SINK,)

    @property
    def quack_port(self) -> int:
        """The port the sink's Quack endpoint reported (0 while it has not yet)."""
        return self.supervisor.ports(SINK).get("quack", 0)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def start_all(self) -> None:
        self.broker.start()
        self.receiver.start()
        asyncio.run(catalog.apply(self.broker.bootstrap))
        self.say(f"broker {self.broker.bootstrap}; logs in {self.options.run_dir / 'logs'}")
        if self.options.lake:
            self.lake = DemoLake.start(self.options.run_dir)
            self.say(f"lake: catalog {self.lake.target.catalog}, data {self.lake.data_path}; sinks {', '.join(LAKE_SINKS)}")
        for role in chaos_roles(self.broker.bootstrap, self.options, self.receiver.url, self.lake):
            self.roles[role.name] = role
            self.supervisor.start(role)
        self.say(f"  started {len(self.roles)} roles")

    def send_hostile(self) -> hostile.Sent:
        settings = worker_settings(self.roles[WORKER])
        generator = hostile.Generator(self.options.seed, settings)
        sent = hostile.Sent()
        asyncio.run(hostile.send_records(self.broker.bootstrap, generator.records(self.options.bad_inputs), sent))
        sent.tolerated = generator.tolerated
        url = f"http://127.0.0.1:{self.supervisor.listen_port('webhook')}/"
        asyncio.run(hostile.send_webhooks(url, generator.webhooks(demo.DEMO_SECRET, WEBHOOKS), sent))
        self.say(f"  hostile: {len(sent.dead_letter_ids)} raw records, {sent.webhooks} webhooks "
                 f"({generator.tolerated} generated documents the vendor modules accept were not sent)")
        return sent

    def inject(self, faults: list[Fault]) -> None:
        """Apply the plan (its times count from now: every role is up) until the
        duration ends; progress every 5 s. A fault for a role still down from an
        earlier one waits until it is back."""
        began = time.monotonic()
        pending = sorted(faults)
        next_report = 5.0
        while (now := time.monotonic() - began) < self.options.duration_s:
            for name, when in list(self.down.items()):
                if when <= now:
                    self._restart(name)
            while pending and pending[0].at_s <= now:
                fault = pending.pop(0)
                waits_for = [name for name in self._exclusive(fault.role) if name in self.down]
                if waits_for:
                    pending = sorted([*pending, replace(fault, at_s=max(self.down[n] for n in waits_for) + 0.5)])
                    continue
                self._kill(fault, now)
            self._restart_crashed()
            if now >= next_report:
                next_report = now + 5.0
                self.say(f"{self.elapsed():5.0f}s  faults {self.result.faults}, restarts {self.result.restarts}, "
                         f"down now: {', '.join(sorted(self.down)) or 'none'}")
            time.sleep(0.2)
        for name in list(self.down):
            self._restart(name)

    def _exclusive(self, role: str) -> tuple[str, ...]:
        """The roles that must be up before ``role`` is killed: itself (a fault for a role
        still down waits until it is back) and, for a lake sink, the other one (one sink
        of the group always goes on)."""
        return self.sinks if role in LAKE_SINKS and self.options.lake else (role,)

    def _kill(self, fault: Fault, now: float) -> None:
        self.supervisor.kill(fault.role)
        self.result.faults += 1
        self.say(f"{self.elapsed():5.0f}s  SIGKILL {fault.role} ({fault.why})")
        if fault.down_s is not None:
            self.down[fault.role] = now + fault.down_s

    def _restart(self, name: str) -> None:
        del self.down[name]
        self.supervisor.start(self.roles[name])
        self.result.restarts += 1

    def _restart_crashed(self) -> None:
        """A role that exited on its own (not killed here) is started again, as a
        supervisor in production would. With one clear line (the designed exits: a
        worker refusing skipped records, a sink losing its broker) it is reported; with
        a traceback it is a finding and fails the run."""
        for line in self.supervisor.exited():
            name = line.split(" exited with status", 1)[0]
            if name == QLIK_CLOUD_SENDER:
                # The vendor gave up a delivery while the receiver was down (it retries a
                # few times, like Qlik, which then disables the webhook): never acknowledged,
                # so not a loss of the pipeline's; the count is reported.
                self.supervisor.kill(name)
                self.result.checks["qlik cloud sender"] = line.splitlines()[-1].strip()
                continue
            self.say(f"{self.elapsed():5.0f}s  ! {line}")
            if name in LAKE_SINKS and "conflict" in line.lower():
                self.sink_conflict_exits += 1
                self.result.checks["lake sinks stopped on a commit conflict, restarted"] = str(self.sink_conflict_exits)
            if "Traceback" in line:
                self.result.problems.append(f"{name} exited on its own with a traceback: {line.splitlines()[0]}")
            else:
                self.stopped.append(f"{name} ({_clip(line.splitlines()[-1].strip())})")
                self.result.checks["stopped on their own, restarted"] = "; ".join(self.stopped)
            self.supervisor.kill(name)
            self.supervisor.start(self.roles[name])
            self.result.restarts += 1

    def stop(self, *names: str) -> None:
        """SIGTERM the roles named that still run (a role killed for good is gone)."""
        for name in names:
            try:
                self.supervisor.kill(name, signal.SIGTERM, grace_s=15)
            except StopIteration:
                pass

    def stop_sources(self) -> None:
        self.stop(*SIMULATORS, *INGESTORS)
        self.say(f"{self.elapsed():5.0f}s  simulators and ingestors stopped; reading the raw topics back")

    def live_counts(self, expected: oracle.Expected) -> dict[str, int]:
        """Distinct ids per table as the live sink serves them: the file's over Quack, the
        lake's from its latest snapshot (attached read-only, as an analyst does)."""
        if self.lake is not None:
            con = lake_target.connect(self.lake.target, read_only=True)
            try:
                return oracle.live_counts(con, "", expected.alert_rules)
            finally:
                con.close()
        token = quack.read_token(quack.token_file_for(self.options.db_path))
        con = duckdb.connect()
        try:
            quack.attach(con, quack.uri("127.0.0.1", self.quack_port), token or "")
            return oracle.live_counts(con, "jobs.", expected.alert_rules)
        finally:
            con.close()

    def wait_for_sink(self, expected: oracle.Expected) -> None:
        """Until the live sink (the lake) holds as many distinct rows as the replay, or
        the catch-up time ends (then the comparison names what is missing)."""
        want = expected.counts()
        deadline = time.monotonic() + self.options.catch_up_s
        have: dict[str, int] = {}
        while time.monotonic() < deadline:
            self._restart_crashed()
            try:
                have = self.live_counts(expected)
            except (duckdb.Error, quack.QuackError, SinkError) as exc:
                have = {"error": str(exc).splitlines()[0]}  # type: ignore[dict-item]
            if all(have.get(name, -1) >= count for name, count in want.items()):
                self.say(f"{self.elapsed():5.0f}s  the sink holds every expected row: {want}")
                return
            self.say(f"{self.elapsed():5.0f}s  catching up: have {have}, want {want}")
            time.sleep(3)
        self.say(f"{self.elapsed():5.0f}s  the sink did not catch up within {self.options.catch_up_s:.0f} s")

    def broker_restart_check(self) -> str:
        """Point 7: the broker restarts with nothing (Tansu keeps no data). The worker and
        sink should stop with a clear line; the tables must stay as they were. Only a
        changed table fails the run: a role that keeps waiting on the empty broker is
        reported (the worker did so once in seven runs, within 90 s)."""
        port = self.broker.port
        self.broker.stop()
        self.broker = EmbeddedBroker(port=port, log=self.options.run_dir / "broker-2.log").start()
        asyncio.run(catalog.apply(self.broker.bootstrap))
        self.say(f"{self.elapsed():5.0f}s  broker restarted empty on port {port}")
        for name in ("zuora-simulator", "zuora-ingestor"):  # new records on the new broker
            self.supervisor.start(self.roles[name])
        deadline = time.monotonic() + 90
        gone: dict[str, str] = {}
        watched = (WORKER, *self.sinks)
        while time.monotonic() < deadline and len(gone) < len(watched):
            for line in self.supervisor.exited():
                name = line.split(" exited with status", 1)[0]
                if name in watched and name not in gone:
                    gone[name] = line
            time.sleep(0.5)
        missing = [name for name in watched if name not in gone]
        if missing:
            return f"{' and '.join(missing)} kept running on the empty broker for 90 s without a word"
        unclear = [name for name, line in gone.items() if "Traceback" in tail(self.options.run_dir / "logs" / f"{name}.log", 3)]
        if unclear:
            return f"{', '.join(unclear)} stopped with a traceback instead of one clear line"
        return "ok (" + "; ".join(f"{name}: {_clip(line.splitlines()[-1].strip())}" for name, line in sorted(gone.items())) + ")"


def _clip(text: str, limit: int = 160) -> str:
    """One log line for the report: terminal control sequences (Faust's spinner) out, clipped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(options: ChaosOptions, say: Callable[[str], None] = print) -> ChaosResult:
    options.run_dir.mkdir(parents=True, exist_ok=True)
    options = replace(options, run_dir=options.run_dir.resolve())  # the lake's data path is absolute
    chaos = _Run(options, say)
    try:
        return _run(chaos)
    finally:  # also when the run itself fails: no scratch PostgreSQL is left running
        if chaos.lake is not None:
            chaos.lake.stop()


def _run(chaos: _Run) -> ChaosResult:
    options, say, result = chaos.options, chaos.say, chaos.result
    raw: dict = {}
    sent = hostile.Sent()
    expected: oracle.Expected | None = None
    before: dict[str, int] | None = None
    try:
        chaos.start_all()
        with ThreadPoolExecutor(1, thread_name_prefix="chaos-hostile") as pool:
            sending = pool.submit(chaos.send_hostile)  # while the faults happen
            chaos.inject(plan(options.seed, options.duration_s, lake_sinks=LAKE_SINKS if options.lake else ()))
            sent = sending.result()
        result.bad_inputs = sent.count
        result.problems += [f"webhook {line}" for line in sent.webhook_problems]
        chaos.stop_sources()
        raw = asyncio.run(oracle.read_raw(chaos.broker.bootstrap))
        settings = worker_settings(chaos.roles[WORKER])
        expected = oracle.recompute(raw, settings, alert_rules.load(extra_urls=(chaos.receiver.url,)).rules)
        chaos.wait_for_sink(expected)
        if options.broker_restart:
            chaos.stop(ALERTER, SECOND_WORKER)
            before = _snapshot(chaos, expected)
            result.checks["broker restart"] = chaos.broker_restart_check()
    except RoleFailed as exc:
        result.problems.append(f"a role would not start: {str(exc).splitlines()[0]}")
        expected = None
    except PostgresUnavailable as exc:
        result.problems.append(f"the lake's catalog would not start: {exc}")
        expected = None
    except KeyboardInterrupt:
        say("stopping (Ctrl-C): no verdict")
        result.problems.append("interrupted before the verdict")
        expected = None
    finally:
        chaos.supervisor.stop(grace_s=15)
        chaos.receiver.stop()
        chaos.broker.stop()
    if expected is not None and (chaos.lake is not None or options.db_path.is_file()):
        _judge(chaos, expected, sent, raw, before)
    result.wall_s = chaos.elapsed()
    return result


def _snapshot(chaos: _Run, expected: oracle.Expected) -> dict[str, int] | None:
    try:
        return chaos.live_counts(expected)
    except (duckdb.Error, quack.QuackError, SinkError):
        return None


def _judge(chaos: _Run, expected: oracle.Expected, sent: hostile.Sent, raw: dict, before: dict | None) -> None:
    result = chaos.result
    if chaos.lake is not None:
        con = lake_target.connect(chaos.lake.target, read_only=True)
    else:
        con = duckdb.connect(str(chaos.options.db_path), read_only=True)
    try:
        verdict = oracle.compare(expected, con)
        if verdict.problems:  # keep the input, so the difference can be replayed at leisure
            oracle.save_raw(raw, chaos.options.run_dir / "raw-topics.msgpack")
        result.lost += verdict.lost
        result.duplicated += verdict.duplicated
        result.problems += verdict.problems
        letters = {row[0] for row in con.execute("SELECT dead_letter_id FROM dead_letters").fetchall()}
        missing = [i for i in sent.dead_letter_ids if i not in letters]
        result.checks["hostile records dead-lettered"] = (
            "ok" if not missing else f"{len(missing)} of {len(sent.dead_letter_ids)} missing (e.g. {missing[0]})")
        result.lost += len(missing)
        leaks = oracle.secret_leaks(secrets(), sorted((chaos.options.run_dir / "logs").glob("*.log")), con, raw)
        result.checks["no secret in logs, tables, dead letters, raw topics"] = "ok" if not leaks else "; ".join(leaks)
        if leaks:
            result.problems += leaks
        _edge(chaos, raw)
        if before is not None:
            after = oracle.live_counts(con, "", expected.alert_rules)
            if after != before:
                result.checks["broker restart"] += f"; but the tables changed after it: {before} -> {after}"
    finally:
        con.close()
    check = result.checks.get("broker restart", "ok")
    if "changed" in check:  # a wrong table: the one outcome point 7 must never have
        result.problems.append(f"broker restart: {check}")
    elif not check.startswith("ok"):
        result.checks["broker restart"] = f"NOT OK, tables unchanged: {check}"


def _edge(chaos: _Run, raw: dict) -> None:
    """Nothing lost at the edge: every reload the Qlik Cloud simulator pushed is in
    raw.qlik_cloud, but for those it gave up (never acknowledged: not ours to keep)."""
    role = chaos.roles[QLIK_CLOUD_SENDER]
    events = reload_events(int(_option(role, "--events")), tenant="sim-tenant", start=datetime.now(UTC))
    topic = catalog.raw_topic("qlik_cloud")
    messages = itertools.chain.from_iterable(found for (name, _p), found in raw.items() if name == topic)
    missing = oracle.not_ingested({e["data"].get("reloadId") or e["data"]["id"] for e in events}, messages)
    given_up = _given_up(chaos.options.run_dir / "logs" / f"{QLIK_CLOUD_SENDER}.log")
    line = f"{len(events) - len(missing)} of {len(events)} pushed reloads in raw.qlik_cloud, {given_up} given up by the sender"
    chaos.result.checks["qlik cloud webhooks at the edge"] = "ok: " + line if len(missing) <= given_up else line
    if len(missing) > given_up:
        chaos.result.lost += len(missing) - given_up
        chaos.result.problems.append(f"raw.qlik_cloud lacks {len(missing) - given_up} acknowledged reloads (e.g. {sorted(missing)[0]})")


def _given_up(log: Path) -> int:
    """The sender's own count (its last line: '..., N given up; answers: ...')."""
    found = re.findall(r"(\d+) given up", log.read_text(errors="replace")) if log.is_file() else []
    return sum(int(n) for n in found)


def report(result: ChaosResult) -> list[str]:
    """What the run found, then the closing line (always last)."""
    lines = [f"chaos ran {result.wall_s:.0f} s"]
    lines += [f"  {name}: {outcome}" for name, outcome in result.checks.items()]
    lines += [f"  FAIL {problem}" for problem in result.problems]
    lines.append(result.closing_line())
    return lines


def default_run_dir() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jobstream"
    return base / time.strftime("chaos-%Y%m%d-%H%M%S")
