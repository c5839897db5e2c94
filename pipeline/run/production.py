"""``pipeline run``: the production roles against a given Kafka, under one supervisor.

One TOML file configures everything (``jobstream.example.toml`` is the commented example):
``[pipeline]`` holds the typed ``Settings`` (the same names as the ``JOBSTREAM_*``
variables, lower case), ``[run]`` what this command runs, and one table per role that
needs one: ``[alerter]`` and one ``[<vendor>]`` per vendor in the registry (a push
vendor's checked by its declared ``run_command``; a pull ingestor's read by
``sources.load_config``, as ``pipeline ingest <vendor> --config`` reads them). Flags win over the environment, which
wins over the file. Everything is checked before anything starts, one line per problem;
a secret written in the file is refused (secrets come from the environment or a file).

Each role runs as its own command (``pipeline worker``, ``pipeline sink``, ...), a child
process whose settings arrive as ``JOBSTREAM_*`` variables, with a metrics port of its own.
A role that exits non-zero is started again after a backoff (1 s, doubling to
``restart_backoff_max_s``; reset after a minute of good running), except on status 2, a
configuration error that no restart heals: that stops the run with the role's error line. Ctrl-C or SIGTERM stops
every role at once within one deadline (``STOP_GRACE_S``), nothing is left running, and the exit status is 0 (a
requested stop, which systemd must not mark failed). The state (each role's pid, metrics
port, restarts, last exit) is in ``run_state_file`` for ``pipeline status``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_UNAVAILABLE, ConfigError
from pipeline.ops import ports
from pipeline.ops.stopping import hold_stop_signals
from pipeline.run.supervisor import Role, Supervisor
from pipeline.vendors import registry
from pipeline.settings import ENV_PREFIX, Settings, SettingsError

PIPELINE = (sys.executable, "-P", "-m", "pipeline")
CORE_ROLES = ("worker", "sink", "alerter")
PULL_INGESTORS = {vendor.command: vendor.name for vendor in registry.of_kind("pull")}
PUSH_INGESTORS = {vendor.command: vendor.name for vendor in registry.of_kind("push")}
ROLE_NAMES = (*CORE_ROLES, *PUSH_INGESTORS, *PULL_INGESTORS)
CONFIG_ERROR_EXIT = EXIT_CONFIG  # a role's command exits so on a configuration error: never restarted
GOOD_RUN_S = 60.0  # a role that ran this long before exiting restarts after the shortest backoff
SAME_FAILURES_STOP = 5
"""A role that exits this many times in a row with the same error line stops the run with
that line: a restart does not heal it (a full disk, offsets Kafka no longer holds)."""
STOP_GRACE_S = 30.0
"""Every role gets SIGTERM at once and this long before SIGKILL: above the worker's own 15 s
grace, well below systemd's default 90 s stop timeout (deploy/systemd/jobstream.service)."""


class RunConfigError(ConfigError):
    """The configuration cannot run; ``lines`` holds one line per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class RunOptions:
    """``[run]``: which roles, the first metrics port (each role the next; 0: a free port
    each), the restart backoff's ceiling and where the roles' logs go."""

    roles: tuple[str, ...] = ()
    metrics_port: int = 0
    restart_backoff_max_s: float = 30.0
    log_dir: Path = Path("data/run/logs")


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything checked: the settings, the options, each role's command, the children's env."""

    settings: Settings
    options: RunOptions
    roles: tuple[Role, ...]
    env: Mapping[str, str] = field(repr=False)


def load_plan(config: Path, chosen: Sequence[str], overrides: Mapping[str, Any],
              env: Mapping[str, str] | None = None) -> RunPlan:
    """Read and check the whole configuration; ``RunConfigError`` lists every problem."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    document = _read_document(config)
    known_tables = {"pipeline", "run", "alerter", *PUSH_INGESTORS.values(), *PULL_INGESTORS.values()}
    problems += [f"[{name}]: unknown table (known: {', '.join(sorted(known_tables))})" for name in document if name not in known_tables]
    table = _table(document, "pipeline", problems)
    settings = None
    try:
        settings = Settings.from_file_and_env(table, env, file=config).with_overrides(**overrides)
    except SettingsError as exc:
        problems += str(exc).splitlines()
    checked = settings or _without_wrong_values(table, env, config, overrides)
    options = _options(_table(document, "run", problems), problems)
    roles = list(chosen) or list(options.roles) or [
        *CORE_ROLES, *(r for r, section in {**PUSH_INGESTORS, **PULL_INGESTORS}.items() if section in document)
    ]
    problems += [f"unknown role {r!r}; choose from {', '.join(ROLE_NAMES)}" for r in roles if r not in ROLE_NAMES]
    roles = [r for r in dict.fromkeys(roles) if r in ROLE_NAMES]
    argv: dict[str, list[str]] = {}
    for role in roles:
        argv[role] = _command(role, config, document, checked, env, problems)
    if problems or settings is None:
        raise RunConfigError(problems)
    child_env = children_env(table, env, overrides)
    return RunPlan(
        settings=settings, options=options, env=child_env,
        roles=tuple(Role(name, argv[name], env=_metrics_env(options.metrics_port, i)) for i, name in enumerate(roles)),
    )


def _without_wrong_values(table: Mapping[str, Any], env: Mapping[str, str], config: Path,
                          overrides: Mapping[str, Any]) -> Settings | None:
    """The settings without the ``[pipeline]`` values that are wrong, so that one wrong value
    does not hide the roles' own checks (each problem is said once, by ``load_plan``)."""

    def valid(name: str, value: Any) -> bool:
        try:
            Settings.from_file_and_env({name: value}, env, file=config)
        except SettingsError:
            return False
        return True

    try:
        return Settings.from_file_and_env({k: v for k, v in table.items() if valid(k, v)}, env,
                                          file=config).with_overrides(**overrides)
    except SettingsError:
        return None


def _read_document(config: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunConfigError([f"cannot read config file {config}: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RunConfigError([f"config file {config} is not valid TOML: {exc}"]) from None


def load_settings(config: Path, overrides: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Only the ``[pipeline]`` settings of a run's file (env and flags on top), as ``pipeline
    run`` reads them: what ``pipeline status --config`` needs to find that run's sink."""
    problems: list[str] = []
    table = _table(_read_document(config), "pipeline", problems)
    try:
        settings = Settings.from_file_and_env(table, dict(os.environ if env is None else env), file=config).with_overrides(**overrides)
    except SettingsError as exc:
        problems += str(exc).splitlines()
    if problems:
        raise RunConfigError(problems)
    return settings


def _table(document: Mapping[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[{name}] must be a table")
        return {}
    return value


def _options(table: Mapping[str, Any], problems: list[str]) -> RunOptions:
    known = {"roles": list, "metrics_port": int, "restart_backoff_max_s": (int, float), "log_dir": str}
    values: dict[str, Any] = {}
    for name, raw in table.items():
        kind = known.get(name)
        if kind is None:
            problems.append(f"[run] {name}: unknown setting (known: {', '.join(known)})")
        elif not isinstance(raw, kind) or isinstance(raw, bool):
            problems.append(f"[run] {name} = {raw!r}: wrong type")
        else:
            values[name] = tuple(raw) if name == "roles" else Path(raw) if name == "log_dir" else raw
    if not 0 <= values.get("metrics_port", 0) <= 65535 - len(ROLE_NAMES):
        problems.append(f"[run] metrics_port = {values['metrics_port']}: must be 0 (free ports) or a port")
    if not 0 < values.get("restart_backoff_max_s", 30.0) <= 3600:
        problems.append(f"[run] restart_backoff_max_s = {values['restart_backoff_max_s']}: must be in (0, 3600]")
    return RunOptions(**values)


def _command(role: str, config: Path, document: Mapping[str, Any], settings: Settings | None,
             env: Mapping[str, str], problems: list[str]) -> list[str]:
    """The role's own command line; its configuration checked the way that command will."""
    if role == "worker":
        return [*PIPELINE, "worker"]
    if role == "sink":
        if settings is not None:
            problems += sink_problems(Path(settings.db_path))
        return [*PIPELINE, "sink"]
    if role == "alerter":
        return _alerter(_table(document, "alerter", problems), settings, env, problems)
    if role in PULL_INGESTORS:
        from pipeline.ingest_cli import settings_class
        from pipeline.sources import ConfigError as SourceConfigError, load_config

        try:
            load_config(settings_class(role), config, PULL_INGESTORS[role], env=dict(env))
        except SourceConfigError as exc:
            problems += str(exc).splitlines()
        return [*PIPELINE, "ingest", role, "--config", str(config)]
    import pipeline.cli  # noqa: F401 - first: a vendor's commands module imports the CLI, which imports it back
    section = PUSH_INGESTORS[role]
    vendor = registry.by_name(section)
    assert vendor.run_command is not None, f"push vendor {section} declares no run_command"
    arguments = registry.load(vendor.run_command)(_table(document, section, problems), settings, problems)
    return [*PIPELINE, "ingest", role, *arguments]


def _alerter(table: Mapping[str, Any], settings: Settings | None, env: Mapping[str, str], problems: list[str]) -> list[str]:
    from pipeline.alerts import rules as rules_module

    problems += [f"[alerter] {k}: unknown setting (known: rules)" for k in table if k != "rules"]
    rules = Path(str(table["rules"])) if "rules" in table else None
    if settings is not None:
        from pipeline.alerts.delivery import DeliveryError, open_channel

        try:
            loaded = rules_module.load(rules, extra_urls=rules_module.split_urls(settings.alert_url_text()), env=dict(env))
        except (rules_module.RulesError, SettingsError) as exc:
            problems.append(f"alerter: {exc}")
        else:  # a URL Apprise cannot use made the alerter exit 1 and restart forever
            urls = dict.fromkeys(url for rule in loaded.rules for url in rule.urls)
            for number, url in enumerate(urls, 1):
                try:
                    open_channel(url, f"alerter: Apprise URL {number} of {len(urls)}")
                except DeliveryError as exc:
                    problems.append(str(exc))
    return [*PIPELINE, "alert", *(["--rules", str(rules)] if rules else [])]


def sink_problems(db_path: Path) -> list[str]:
    """What the sink would die of at once, checked before anything starts: a database whose
    folder cannot be written, or that another process holds (DuckDB's one-process lock)."""
    import duckdb

    folder = db_path.absolute().parent
    while not folder.exists() and folder != folder.parent:  # the sink creates the missing folders
        folder = folder.parent
    if not folder.is_dir():
        return [f"sink: db_path {db_path}: {folder} is not a folder"]
    try:  # by trying (os.access says yes to root, even in /proc)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return [f"sink: db_path {db_path}: the folder {folder} is not writable (DuckDB writes a WAL beside the file)"]
    if db_path.exists():
        try:
            duckdb.connect(str(db_path), read_only=True).close()
        except duckdb.Error as exc:
            return [f"sink: db_path {db_path} cannot be opened: {' '.join(str(exc).split())[:300]}"]
    return []


def _metrics_env(first: int, index: int) -> dict[str, str]:
    """Role ``index``'s metrics port: ``first + index``, or (``first`` 0) one it binds
    itself and reports (``pipeline/ops/ports.py``): never a port picked here and bound there."""
    return {f"{ENV_PREFIX}METRICS_PORT": str(first + index)} if first else {ports.ANY_ENV: "metrics"}


def metrics_port(role: Role, supervisor: Supervisor) -> int | None:
    """The role's metrics port: the fixed one, else the one it reported (None until it did)."""
    fixed = role.env.get(f"{ENV_PREFIX}METRICS_PORT")
    return int(fixed) if fixed else supervisor.ports(role.name).get("metrics")


def children_env(table: Mapping[str, Any], env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, str]:
    """The environment every role starts with: this one, plus the file's ``[pipeline]``
    values as ``JOBSTREAM_*`` where the environment does not set them, plus the flags."""
    child = dict(env)

    def put(name: str, value: Any, *, force: bool = False) -> None:
        variable = ENV_PREFIX + name.upper()
        if force or not child.get(variable):
            child[variable] = ("1" if value else "0") if isinstance(value, bool) else str(value)

    for name, value in table.items():
        if name == "stale_after_by_vendor":
            for vendor, seconds in value.items():
                put(f"stale_after_{vendor}", seconds)
        elif name == "vendor_tz":
            for vendor, zone in value.items():
                put(f"tz_{vendor}", zone)
        else:
            put(name, value)
    for name, value in overrides.items():
        if value is not None:
            put(name, value, force=True)
    return child


# --- running ---------------------------------------------------------------------


def backoff_s(failures: int, ceiling: float) -> float:
    """1 s after the first quick failure, doubling, at most ``ceiling``."""
    return min(2.0 ** max(failures - 1, 0), ceiling)


def run(plan: RunPlan, say: Callable[[str], None] = print, *, tick_s: float = 0.5) -> int:
    """Start every role, restart the ones that fail, until Ctrl-C / SIGTERM; then stop all.
    A role that exits with status 2 (its configuration is wrong, which no restart heals)
    stops the run: the result is then 2, with that role's error line said; else 0."""
    state_file = Path(plan.settings.run_state_file)
    supervisor = Supervisor(plan.options.log_dir, env=plan.env)
    started: dict[str, float] = {}
    failures: dict[str, int] = {}
    due: dict[str, float] = {}
    last_exit: dict[str, int] = {}
    same = SameFailures(SAME_FAILURES_STOP)
    finished: set[str] = set()
    result = 0
    try:
        for role in plan.roles:
            process = supervisor.start(role)
            started[role.name] = time.monotonic()
            port = metrics_port(role, supervisor)
            metrics = f"http://{plan.settings.metrics_host}:{port}/metrics" if port else "on a port it reports (pipeline status)"
            say(f"started {role.name} (pid {process.pid}, metrics {metrics}, log {plan.options.log_dir / (role.name + '.log')})")
        write_state(state_file, plan, supervisor, last_exit, due)
        while True:
            time.sleep(tick_s)
            now = time.monotonic()
            for role, process, restarts in supervisor.children():
                code = process.poll()
                if code is None or role.name in finished:
                    continue
                if code == 0:
                    finished.add(role.name)
                    last_exit[role.name] = 0
                    say(f"{role.name} exited with status 0: not restarted")
                    continue
                if code == CONFIG_ERROR_EXIT:
                    say(f"{role.name} exited with status 2 (a configuration error; not restarted): "
                        f"{error_line(plan.options.log_dir / (role.name + '.log'))}")
                    result = CONFIG_ERROR_EXIT
                    raise _StopRun
                if role.name not in due:
                    line = error_line(plan.options.log_dir / (role.name + ".log"))
                    if same.failed(role.name, code, line):
                        say(f"{role.name} exited with status {code} {SAME_FAILURES_STOP} times in a row with the same error "
                            f"(a restart does not heal it; stopping the run): {line}")
                        result = EXIT_FAILED
                        raise _StopRun
                    quick = now - started[role.name] < GOOD_RUN_S
                    failures[role.name] = failures.get(role.name, 0) + 1 if quick else 1
                    delay = backoff_s(failures[role.name], plan.options.restart_backoff_max_s)
                    due[role.name] = now + delay
                    last_exit[role.name] = code
                    say(f"{role.name} exited with status {code}: {line}; restart {restarts + 1} in {delay:.0f} s")
                elif now >= due[role.name]:
                    del due[role.name]
                    process = supervisor.restart(role.name)
                    started[role.name] = now
                    say(f"restarted {role.name} (pid {process.pid})")
            write_state(state_file, plan, supervisor, last_exit, due)
    except KeyboardInterrupt as stop:
        say(f"stopping ({'SIGTERM' if getattr(stop, 'signum', None) == signal.SIGTERM else 'Ctrl-C'}) ...")
    except _StopRun:
        say("stopping every role ...")
    finally:
        hold_stop_signals()
        statuses = supervisor.stop(grace_s=STOP_GRACE_S)
        state_file.unlink(missing_ok=True)
        say("stopped: " + ", ".join(f"{name} {code}" for name, code in statuses.items()))
    return result


class SameFailures:
    """Counts each role's exits in a row with the same error line (digits aside: offsets and
    times differ between tries). A lost broker (exit 69) is an outage a restart outlives: never counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._last: dict[str, tuple[str, int]] = {}

    def failed(self, role: str, code: int, line: str) -> bool:
        """Record one exit; True when it is the ``limit``-th in a row with the same line."""
        if code == EXIT_UNAVAILABLE:
            self._last.pop(role, None)
            return False
        shape = re.sub(r"\d+", "#", line)
        previous, count = self._last.get(role, ("", 0))
        count = count + 1 if previous == shape else 1
        self._last[role] = (shape, count)
        return count >= self.limit


class _StopRun(Exception):
    """A role's configuration error ends the whole run."""


def error_line(log: Path) -> str:
    """The role's own one-line error (its last ``error:`` line), else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1]


def write_state(path: Path, plan: RunPlan, supervisor: Supervisor, last_exit: Mapping[str, int],
                due: Mapping[str, float]) -> None:
    """The run's state for ``pipeline status``, replaced atomically."""
    roles = {}
    for role, process, restarts in supervisor.children():
        running = process.poll() is None
        roles[role.name] = {
            "pid": process.pid, "state": "running" if running else "restarting" if role.name in due else "exited",
            "metrics_port": metrics_port(role, supervisor), "restarts": restarts,
            "last_exit": last_exit.get(role.name),
        }
    settings = plan.settings
    sink = {"db_path": str(Path(settings.db_path).absolute()), "quack_host": settings.quack_host,
            "quack_port": settings.quack_port,
            "quack_token_file": str(Path(settings.quack_token_file).absolute()) if settings.quack_token_file else None}
    document = {"supervisor_pid": os.getpid(), "bootstrap": settings.bootstrap,
                "metrics_host": settings.metrics_host, "updated_at": time.time(), "roles": roles, "sink": sink}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)
