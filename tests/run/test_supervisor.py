"""The supervisor with real child processes: readiness, a crashed role named with its
log, stop in reverse order, and no child left behind even when the supervisor is
SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.run import supervisor
from pipeline.run.supervisor import Role, RoleFailed, Supervisor, read_usage

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _sleeper(marker: Path, order_log: Path, name: str) -> list[str]:
    """A child that writes a marker when ready and logs its name when it gets SIGTERM."""
    code = textwrap.dedent(f"""
        import signal, sys, time, pathlib
        def stop(*_):
            with open({str(order_log)!r}, "a") as f: f.write({name!r} + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(marker)!r}).write_text("ready")
        print("started {name}", flush=True)
        while True: time.sleep(0.1)
    """)
    return [PY, "-c", code]


def test_roles_start_when_ready_and_stop_newest_first(tmp_path, monkeypatch):
    order = tmp_path / "order.log"
    signalled: list[tuple[int, int]] = []
    real_signal = supervisor._signal

    def recording(process, sig):
        signalled.append((process.pid, sig))
        real_signal(process, sig)

    monkeypatch.setattr(supervisor, "_signal", recording)
    with Supervisor(tmp_path / "run") as sup:
        pids = {}
        for name in ("first", "second"):
            marker = tmp_path / f"{name}.ready"
            pids[name] = sup.start(Role(name, _sleeper(marker, order, name), ready=marker.exists, ready_timeout_s=20)).pid
        assert sup.exited() == []
        usage = sup.usage()
        assert set(usage) == {"first", "second"} and all(u.peak_rss_mb > 1 for u in usage.values())
        statuses = sup.stop(grace_s=10)
    assert statuses == {"second": 0, "first": 0}
    # SIGTERM goes out newest first; which child handles it first is the scheduler's choice.
    assert signalled[:2] == [(pids["second"], signal.SIGTERM), (pids["first"], signal.SIGTERM)]
    assert sorted(order.read_text().split()) == ["first", "second"]  # both stopped on SIGTERM
    assert "started first" in (tmp_path / "run" / "first.log").read_text()


def test_a_role_that_exits_before_ready_is_named_with_its_log(tmp_path):
    crash = [PY, "-c", "import sys; print('cannot open the database: locked', flush=True); sys.exit(3)"]
    with Supervisor(tmp_path) as sup:
        with pytest.raises(RoleFailed) as failed:
            sup.start(Role("sink", crash, ready=lambda: False, ready_timeout_s=20))
    message = str(failed.value)
    assert message.startswith("sink exited with status 3")
    assert "cannot open the database: locked" in message


def test_a_role_that_dies_later_shows_in_exited(tmp_path):
    with Supervisor(tmp_path) as sup:
        process = sup.start(Role("worker", [PY, "-c", "import time,sys; time.sleep(0.3); sys.exit(70)"]))
        process.wait(timeout=20)
        lines = sup.exited()
    assert len(lines) == 1 and lines[0].startswith("worker exited with status 70")


def test_a_role_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    marker = tmp_path / "ready"
    stubborn = [PY, "-c", textwrap.dedent(f"""
        import signal, time, pathlib
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(marker)!r}).write_text("x")
        while True: time.sleep(0.1)
    """)]
    with Supervisor(tmp_path) as sup:
        process = sup.start(Role("stubborn", stubborn, ready=marker.exists, ready_timeout_s=20))
        statuses = sup.stop(grace_s=0.5)
    assert statuses == {"stubborn": -signal.SIGKILL}
    assert process.poll() == -signal.SIGKILL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_sigkilled_supervisor(tmp_path):
    pid_file = tmp_path / "child.pid"
    child_code = "import os, time, pathlib; pathlib.Path(%r).write_text(str(os.getpid())); time.sleep(600)" % str(pid_file)
    parent_code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pipeline.run.supervisor import Role, Supervisor
        sup = Supervisor(Path({str(tmp_path / 'run')!r}))
        sup.start(Role("child", [sys.executable, "-c", {child_code!r}], ready=Path({str(pid_file)!r}).exists))
        print("ready", flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([PY, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline().strip() == b"ready"
        child_pid = int(pid_file.read_text())
        assert _alive(child_pid)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_gone(child_pid), "the child outlived its SIGKILLed supervisor"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_read_usage_of_a_gone_process_is_none():
    process = subprocess.Popen([PY, "-c", "pass"])
    process.wait()
    assert read_usage(process.pid) is None


def test_a_killed_role_is_not_reported_and_starts_again(tmp_path):
    order = tmp_path / "order.log"
    marker = tmp_path / "ready"
    with Supervisor(tmp_path / "run") as sup:
        first = sup.start(Role("worker", _sleeper(marker, order, "worker"), ready=marker.exists, ready_timeout_s=20))
        role = sup.kill("worker")
        assert first.poll() == -signal.SIGKILL and sup.exited() == []
        marker.unlink()
        second = sup.start(role)
        assert second.pid != first.pid and second.poll() is None
        assert sup.stop(grace_s=10) == {"worker": 0}
