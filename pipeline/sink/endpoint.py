"""Where a running sink serves its live database: a small JSON file beside the .duckdb.

DuckDB lets one process hold a file, so a client that only knows the file must learn from
its owner where it is served (the demo picks a free port). The sink writes
``<db>.endpoint.json`` once it serves and removes it when it stops; a file left by a sink
that died is stale, told by its pid no longer running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A sink's live endpoints: Quack's ``quack:HOST:PORT`` and, when served, Postgres's."""

    pid: int
    quack: str
    postgres: str | None = None


def endpoint_file_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".endpoint.json")


def client_host(host: str) -> str:
    """The host a local client dials for a server bound to ``host`` (any-address: localhost)."""
    return "localhost" if host in ("0.0.0.0", "::", "") else host


def encode(endpoint: Endpoint) -> bytes:
    return orjson.dumps({"pid": endpoint.pid, "quack": endpoint.quack, "postgres": endpoint.postgres})


def decode(text: bytes) -> Endpoint | None:
    """The endpoint a file holds, or None for anything that is not one."""
    try:
        data = orjson.loads(text)
        return Endpoint(int(data["pid"]), str(data["quack"]), data.get("postgres"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def publish(db_path: Path, endpoint: Endpoint) -> Path:
    """Write the endpoint file atomically (readable by all: it holds no secret)."""
    path = endpoint_file_for(db_path)
    partial = path.with_name(path.name + f".{endpoint.pid}")
    partial.write_bytes(encode(endpoint))
    os.chmod(partial, 0o644)
    os.replace(partial, path)
    return path


def withdraw(db_path: Path, pid: int) -> None:
    """Remove the endpoint file if it is still this process's."""
    path = endpoint_file_for(db_path)
    try:
        current = decode(path.read_bytes())
    except OSError:
        return
    if current is None or current.pid == pid:
        path.unlink(missing_ok=True)


def process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discover(db_path: Path) -> Endpoint | None:
    """The endpoint of the sink running on ``db_path``, or None (no file, or a stale one)."""
    try:
        found = decode(endpoint_file_for(db_path).read_bytes())
    except OSError:
        return None
    if found is None or not process_runs(found.pid):
        return None
    return found
