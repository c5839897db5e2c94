"""Ports for tests without binding and closing (another process could take a port between
the close and its use; issue 35 case 14).

- ``refused_port``: an address where nothing listens, for as long as the test runs: the
  port is bound and never listened on, so a connection is refused and no other process
  can take the port meanwhile.
- ``reported_port``: the port a role bound itself (port 0) and reported through
  ``JOBSTREAM_PORT_REPORT`` (``pipeline/ops/ports.py``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.ops import ports


class HeldPorts:
    """Bound, never listening sockets: each call gives one more port nothing answers on."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def __call__(self, host: str = "127.0.0.1") -> int:
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.bind((host, 0))
        self._held.append(held)
        return held.getsockname()[1]

    def close(self) -> None:
        for held in self._held:
            held.close()
        self._held.clear()


@pytest.fixture
def refused_port() -> Iterator[HeldPorts]:
    """``refused_port()`` -> a loopback port where connections are refused until the test ends."""
    held = HeldPorts()
    try:
        yield held
    finally:
        held.close()


def report_env(path: Path, *names: str) -> dict[str, str]:
    """The environment asking a role to bind ``names`` on ports of its choosing and to
    report them in ``path``."""
    return {ports.ANY_ENV: ",".join(names), ports.REPORT_ENV: str(path)}


def reported_port(path: Path, name: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> int:
    """The port ``name`` was reported on in ``path``, once it is (while ``process`` runs)."""
    deadline = time.monotonic() + timeout
    while (port := ports.reported(path).get(name)) is None:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode} before it reported its {name} port")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name} port reported in {path} within {timeout:.0f} s")
        time.sleep(0.05)
    return port
