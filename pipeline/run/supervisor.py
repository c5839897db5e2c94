"""Runs the pipeline's roles as child processes under one parent: the piece behind
``pipeline demo`` and ``pipeline run``.

Each role (broker, simulators, ingestors, worker, sink, alerter) is its own process, as in
production, so one crash is one role's exit status and not a dead demo. The supervisor:

- starts roles in the order given, each with its log in the run folder, and waits for each
  to be ready (a probe: a port that answers, a file that appears) before the next;
- never leaves a child behind: children die with it (PR_SET_PDEATHSIG on Linux, even when
  the supervisor is SIGKILLed) and ``stop`` ends them all at once, SIGTERM first,
  SIGKILL to those still running when one grace period ends;
- notices a role that exited and says which, with its status and the last lines of its log;
- reads each role's CPU time and peak RSS from /proc for the summary.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.broker import die_with_parent
from pipeline.ops import ports

PLACEHOLDER = re.compile(r"\{(port|listen):([\w.-]+)\}")
"""In a role's argv or env: another role's reported listen port (``Supervisor._resolve``)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class RoleFailed(RuntimeError):
    """A role exited or never became ready; the message names it and shows its log tail."""


@dataclass(frozen=True, slots=True)
class Role:
    """One process to run: its name, command line, extra environment and readiness probe."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 60.0
    one_shot: bool = False  # expected to finish: only a non-zero exit is a problem
    ready_port: str | None = None  # ready once it reported this port (ops/ports.py) and it answers
    listens_as: str | None = None  # other roles name its reported "listen" port "{port:<this>}"


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_s: float
    peak_rss_mb: float


@dataclass(slots=True)
class _Child:
    role: Role
    process: subprocess.Popen[bytes]
    log: Path
    usage: Usage | None = None
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Start roles, watch them, stop them all. Use as a context manager."""

    def __init__(self, run_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._env = dict(os.environ if env is None else env)
        self._children: list[_Child] = []
        self._owners: dict[str, str] = {}  # listens_as alias -> role name
        self._known: dict[str, int] = {}  # listens_as alias -> its last reported port

    def _spawn(self, role: Role) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.run_dir / f"{role.name}.log"
        argv = [self._resolve(part) for part in role.argv]
        env = {name: self._resolve(value) for name, value in role.env.items()}
        report = self.port_file(role.name)
        report.unlink(missing_ok=True)
        if role.listens_as is not None:
            self._owners[role.listens_as] = role.name
        with open(log, "ab") as output:
            process = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self._env, **env, ports.REPORT_ENV: str(report)}, start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return process, log

    def listen_port(self, alias: str) -> int | None:
        """The port the role that ``listens_as`` ``alias`` reported (kept across its restarts)."""
        owner = self._owners.get(alias)
        port = None if owner is None else self.ports(owner).get("listen")
        if port is not None:
            self._known[alias] = port
        return self._known.get(alias)

    def _resolve(self, text: str) -> str:
        """``{port:A}``: the port role A reported (it must have started); ``{listen:A}``:
        the same for role A itself, 0 on its first start (it binds a port of its choosing,
        then keeps that one when it is started again)."""

        def port(match: re.Match[str]) -> str:
            kind, alias = match.groups()
            found = self.listen_port(alias)
            if found is None and kind == "port":
                raise RoleFailed(f"no role has reported the port of {alias!r} yet (start it first)")
            return str(found or 0)

        return PLACEHOLDER.sub(port, text)

    def port_file(self, name: str) -> Path:
        """Where role ``name`` reports the ports it bound (``pipeline/ops/ports.py``)."""
        return self.run_dir / f"{name}.ports"

    def ports(self, name: str) -> dict[str, int]:
        """The ports role ``name`` reported since it was last started (``{"metrics": 40123}``)."""
        return ports.reported(self.port_file(name))

    def _is_ready(self, role: Role) -> bool:
        if role.ready_port is not None:
            port = self.ports(role.name).get(role.ready_port)
            if port is None or not _answers(port):
                return False
        return role.ready is None or role.ready()

    def start(self, role: Role) -> subprocess.Popen[bytes]:
        """Start ``role`` and wait until its probe answers; RoleFailed if it exits first."""
        process, log = self._spawn(role)
        child = _Child(role, process, log)
        self._children.append(child)
        if role.ready is None and role.ready_port is None:
            return process
        deadline = time.monotonic() + role.ready_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RoleFailed(self._exit_line(child))
            if self._is_ready(role):
                return process
            time.sleep(0.05)
        raise RoleFailed(f"{role.name} was not ready within {role.ready_timeout_s:.0f} s\n{tail(log)}")

    def exited(self) -> list[str]:
        """One line (with log tail) per role that has exited since it was started."""
        return [
            self._exit_line(c) for c in self._children
            if c.process.poll() is not None and not (c.role.one_shot and c.process.returncode == 0)
        ]

    def children(self) -> list[tuple[Role, subprocess.Popen[bytes], int]]:
        """Each role, its current process and how often it was restarted."""
        return [(c.role, c.process, c.restarts) for c in self._children]

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start role ``name`` again (its old process has exited); no readiness wait."""
        child = next(c for c in self._children if c.role.name == name)
        if child.process.poll() is None:
            raise RuntimeError(f"{name} is still running")
        child.process, child.log = self._spawn(child.role)
        child.restarts += 1
        child.started_at = time.monotonic()
        return child.process

    def usage(self) -> dict[str, Usage]:
        """CPU seconds and peak RSS per role (the last reading for roles already gone)."""
        for child in self._children:
            reading = read_usage(child.process.pid)
            if reading is not None:
                child.usage = reading
        return {c.role.name: c.usage for c in self._children if c.usage is not None}

    def stop(self, grace_s: float = 10.0) -> dict[str, int | None]:
        """Stop every role within one deadline: SIGTERM to all at once (newest first), then
        SIGKILL to whatever still runs ``grace_s`` later; returns each role's exit status.
        One at a time, eight roles with 20 s each took up to 160 s, beyond systemd's 90 s."""
        self.usage()
        children = list(reversed(self._children))
        for child in children:
            if child.process.poll() is None:
                _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in children:
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass
        statuses = {child.role.name: stop_process(child.process, 0.0) for child in children}
        self._children.clear()
        return statuses

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, grace_s: float = 10.0) -> Role:
        """End the running instance of role ``name`` with ``sig`` (SIGKILL: no goodbye) and
        forget it, so its exit is not reported as a problem; returns the role (``pipeline
        chaos`` starts it again with ``start``)."""
        child = next(c for c in reversed(self._children) if c.role.name == name)
        if sig == signal.SIGKILL:
            _signal(child.process, sig)
            child.process.wait(timeout=grace_s)
        else:
            stop_process(child.process, grace_s)
        self._children.remove(child)
        return child.role

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _exit_line(child: _Child) -> str:
        return f"{child.role.name} exited with status {child.process.returncode}\n{tail(child.log)}"


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts a connection on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace_s``; the exit status (None if it would not die)."""
    if process.poll() is None:
        _signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return None
    return process.returncode


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """The role and whatever it started (its own session) get the signal."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass


def read_usage(pid: int) -> Usage | None:
    """CPU time (user + system) and peak RSS of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    peak_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return Usage(cpu_s=cpu, peak_rss_mb=peak_kb / 1024)


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log, indented, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    last = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in last) or "    (empty log)"
