"""Ports a role binds itself and tells its starter about, so nobody picks a port by binding
and closing it (another process can take it before the role binds it again: the demo once
failed with "cannot listen on 127.0.0.1:53835: address already in use").

A supervisor sets two variables for a child:

- ``JOBSTREAM_PORT_REPORT``: a file; each listener the role opens appends one line
  ``<name> <port>`` (``listen``, ``metrics``, ``quack``), the last line per name wins
  (a restarted role appends again);
- ``JOBSTREAM_ANY_PORT``: the names of listeners that should bind a port of their own
  choosing instead of a configured one (``metrics``, ``quack``; 0 in their settings means
  "off", so "any" needs its own word).

Listeners that can bind port 0 do so and report the port the kernel gave; one that
cannot (Quack refuses port 0, Tansu must advertise its port) tries a candidate and, when
it is taken meanwhile, another (``first_free``). Standard library only: any layer uses it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

REPORT_ENV = "JOBSTREAM_PORT_REPORT"
ANY_ENV = "JOBSTREAM_ANY_PORT"
ATTEMPTS = 8
"""Candidates a listener that cannot bind port 0 tries before it gives up."""

T = TypeVar("T")


class PortTaken(Exception):
    """The candidate port was taken between choosing it and binding it: try another."""


def wants_any(name: str, env: Mapping[str, str] | None = None) -> bool:
    """True when the starter asked listener ``name`` to bind a port of its own choosing."""
    value = (os.environ if env is None else env).get(ANY_ENV, "")
    return name in {part.strip() for part in value.split(",")}


def report(name: str, port: int, env: Mapping[str, str] | None = None) -> None:
    """Tell the starter (``JOBSTREAM_PORT_REPORT``, when set) that ``name`` listens on ``port``:
    one line appended in one write, so readers never see half a line."""
    path = (os.environ if env is None else env).get(REPORT_ENV)
    if not path:
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{name} {int(port)}\n".encode("ascii"))
    finally:
        os.close(descriptor)


def reported(path: Path) -> dict[str, int]:
    """The ports a role reported in ``path`` (the last per name); {} before any."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, port = line.partition(" ")
        if port.strip().isdigit():
            found[name] = int(port)
    return found


def candidate(host: str = "127.0.0.1") -> int:
    """A port free a moment ago: only for a listener that cannot bind port 0 and retries
    with ``first_free`` when it was taken meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def first_free(start: Callable[[int], T], host: str = "127.0.0.1", attempts: int = ATTEMPTS) -> T:
    """``start(port)`` on candidates until one does not raise ``PortTaken``; the last
    ``PortTaken`` when every attempt found its port taken."""
    last: PortTaken | None = None
    for _ in range(attempts):
        try:
            return start(candidate(host))
        except PortTaken as exc:
            last = exc
    assert last is not None
    raise last
