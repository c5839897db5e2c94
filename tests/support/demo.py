"""Running ``pipeline demo`` as a newcomer runs it, once per session where tests can share
it: the demo is the slowest thing the suite starts (about a minute of real time)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "DEMO_TEST_RUN"
"""Not a JOBSTREAM_ variable: the demo passes those on selectively, this to every child."""

SHARED_DURATION_S = 70
"""Long enough for every scenario (retries, stale episodes reactivated and drained, alerts)."""


@dataclass(frozen=True, slots=True)
class DemoRun:
    run_dir: Path
    db: Path
    result: subprocess.CompletedProcess


def run_demo(run_dir: Path, duration: int, interrupt_after: float | None = None) -> subprocess.CompletedProcess:
    """The demo in ``run_dir`` for ``duration`` seconds; with ``interrupt_after``, Ctrl-C then."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {MARKER: run_dir.name}
    command = [sys.executable, "-m", "pipeline", "demo", "--duration", str(duration), "--run-dir", str(run_dir)]
    if interrupt_after is None:
        return subprocess.run(command, capture_output=True, text=True, timeout=duration + 240, env=env)
    # Started as a script's `cmd &` starts it: SIGINT ignored, which the demo must undo.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(interrupt_after)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def shared_demo(folder: Path) -> DemoRun:
    run_dir = folder / "demo"
    result = run_demo(run_dir, SHARED_DURATION_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return DemoRun(run_dir, run_dir / "jobstream.duckdb", result)


def left_behind(marker: str) -> list[str]:
    """Live processes started by the demo run marked ``marker`` (their environment carries
    it): on a shared machine, other people's brokers and roles come and go meanwhile."""
    time.sleep(1)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0") and state != "Z":
            found.append(cmdline)
    return found
