"""One `pipeline run` per configuration: the supervisor holds an exclusive lock beside its
state file for as long as it runs. Two supervisors on one configuration wrote one state file
(which the first to stop deleted), appended to the same logs and collided on metrics ports;
the second is now refused with one line naming the first."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import JobstreamError


class RunLocked(JobstreamError):
    """Another `pipeline run` holds this configuration's lock."""


def lock_file_for(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".lock")


@contextmanager
def run_lock(state_file: Path) -> Iterator[Path]:
    """Hold the run's lock (``<state file>.lock``, with this pid in it) or raise ``RunLocked``.
    The kernel releases it when this process ends, however it ends; children do not inherit it."""
    path = lock_file_for(Path(state_file))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(descriptor)
        raise RunLocked(f"another `pipeline run` (pid {holder}) is running with the state file {state_file}: "
                        "stop it first, or give this run its own run_state_file") from None
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(descriptor)
