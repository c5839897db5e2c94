"""The roles as child processes (``python -m pipeline <role> ...``), one wrapper for all:
start with the log kept for failures, stop (SIGTERM, then SIGKILL after a grace time),
kill, and the log's tail. ``stop_async`` / ``kill_async`` wait in a thread, so a simulator
served by the test's own event loop keeps answering the child while it shuts down.
``WorkerProcess``, ``SinkProcess`` and ``IngestProcess`` only add their arguments and
how each tells it is ready."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from pipeline.ops import ports
from pipeline.sink import quack


class RoleProcess:
    """``python -m pipeline ARGS`` with stdout and stderr appended to ``log``."""

    def __init__(self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "pipeline", *args]
        self.name = f"pipeline {args[0]}" if args else "pipeline"
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "RoleProcess":
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(self.args, stdout=output, stderr=output, stdin=subprocess.DEVNULL, env=self.env)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def exited(self, timeout: float) -> int:
        """Wait for the child to end on its own (a one-shot command); its exit status."""
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    async def stop_async(self, timeout: float = 20.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)

    async def kill_async(self) -> None:
        await asyncio.to_thread(self.kill)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    async def logged(self, line: str, timeout: float = 120.0) -> float:
        """Wait until the role's log holds ``line``; return seconds. Fails at once if the
        role exits, with its log's end after ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}:\n{self.tail()}")
            if line in self.text():
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not log {line!r} within {timeout:.0f} s:\n{self.tail()}")


class WorkerProcess(RoleProcess):
    """``pipeline worker`` (Tansu workarounds on)."""

    def __init__(
        self, bootstrap: str, app_id: str, datadir: Path, log: Path, *, store: str = "memory://",
        loglevel: str = "warning", **env: str,
    ) -> None:
        super().__init__(
            ["worker", "--bootstrap", bootstrap, "--store", store, "--tansu", "--app-id", app_id,
             "--datadir", str(datadir), "--loglevel", loglevel],
            log, env,
        )

    async def ready_from_log(self, timeout: float = 120.0) -> float:
        """Wait for Faust's "Worker ready" line (needs --loglevel info); return seconds.

        For workers beside the session worker, which would answer a probe for them.
        """
        return await self.logged("Worker ready", timeout)

    async def ready(self, bootstrap: str, timeout: float = 120.0) -> float:
        """Wait until the worker processes a probe; fail at once if it exits."""
        from tests.support.kafka import wait_until_processing

        probe = asyncio.ensure_future(
            wait_until_processing(bootstrap, source=f"probe-{uuid.uuid4().hex[:8]}", timeout=timeout)
        )
        while not probe.done():
            if self.process is not None and self.process.poll() is not None:
                probe.cancel()
                raise RuntimeError(f"the worker exited with status {self.process.returncode}")
            await asyncio.sleep(0.2)
        return probe.result()


class SinkProcess(RoleProcess):
    """``pipeline sink`` with its own file and token, serving Quack on a port it chooses
    and reports (``pipeline/ops/ports.py``): no port is picked here and bound there later."""

    def __init__(
        self, bootstrap: str, db: Path, *, token: str | None = "test-token-1234", env: dict[str, str] | None = None,
        postgres: bool = False,
    ) -> None:
        """``postgres``: serve Postgres too, on a port the sink chooses and reports (``pg_port``)."""
        self.db = db
        self.token = token
        self.port_file = db.with_suffix(".ports")
        super().__init__(["sink", "--bootstrap", bootstrap, "--db", str(db)], db.with_suffix(".log"))
        self.env = {k: v for k, v in self.env.items() if k != quack.TOKEN_ENV} | (env or {})
        self.env |= {ports.ANY_ENV: "quack,pg" if postgres else "quack", ports.REPORT_ENV: str(self.port_file)}
        if token is not None:
            self.env[quack.TOKEN_ENV] = token

    def start(self) -> "SinkProcess":
        self.port_file.unlink(missing_ok=True)
        super().start()
        return self

    @property
    def port(self) -> int:
        """The Quack port this start of the sink reported (waits for it while the sink runs)."""
        return self._reported("quack")

    @property
    def pg_port(self) -> int:
        """The Postgres port this start of the sink reported (with ``postgres=True``)."""
        return self._reported("pg")

    def _reported(self, name: str) -> int:
        deadline = time.monotonic() + 60
        while (port := ports.reported(self.port_file).get(name)) is None:
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sink reported no {name} port: {self.tail()}")
            time.sleep(0.05)
        return port

    @property
    def uri(self) -> str:
        return quack.uri("localhost", self.port)

    def connect(self, timeout: float = 30.0) -> duckdb.DuckDBPyConnection:
        """A client attached over Quack, once the sink serves."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the sink exited with {self.process.returncode}: {self.tail()}")
            con = duckdb.connect()
            try:
                token = self.token or quack.read_token(quack.token_file_for(self.db), env={}) or "none"
                quack.attach(con, self.uri, token)
                return con
            except duckdb.Error:
                con.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_for(self, sql: str, expected: Any, timeout: float = 60.0) -> None:
        """Poll ``sql`` over Quack until it answers ``expected`` (an exact value, or a
        predicate on the answer), with a deadline."""
        accept = expected if callable(expected) else (lambda got: got == expected)
        con = self.connect()
        deadline = time.monotonic() + timeout
        try:
            while True:
                got = con.execute(sql).fetchone()[0]
                if accept(got):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sql} answered {got!r}, not {expected!r}, within {timeout:.0f} s; {self.tail()}")
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the sink exited with {self.process.returncode}: {self.tail()}")
                time.sleep(0.05)
        finally:
            con.close()


    def wait_until_read(self, written: Mapping[tuple[str, int], int], timeout: float = 60.0) -> None:
        """Wait until the sink has committed, per (topic, partition), at least the next
        offset given (what ``tests.support.records.produce`` returns): everything sent
        there is in the file, whatever other partitions the sink was busy with."""
        wanted = " UNION ALL ".join(f"SELECT '{topic}' AS topic, {partition} AS p, {offset} AS next_offset"
                                    for (topic, partition), offset in written.items())
        self.wait_for(
            f'SELECT count(*) FROM kafka_offsets o JOIN ({wanted}) w ON o.topic = w.topic AND o."partition" = w.p'
            " WHERE o.next_offset >= w.next_offset",
            len(written), timeout,
        )


class IngestProcess(RoleProcess):
    """``pipeline ingest <vendor> --config FILE``."""

    def __init__(self, command: list[str], config: Path, bootstrap: str, log: Path, env: dict[str, str]) -> None:
        super().__init__(["ingest", *command, "--config", str(config), "--bootstrap", bootstrap], log, env)


def pipeline(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` to completion, with no JOBSTREAM_* from the test run's
    environment (only ``env``'s) and a wide terminal, so help and errors are not wrapped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout,
        env={**base, "COLUMNS": "200", **(env or {})},
    )
