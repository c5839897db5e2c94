"""A throwaway PostgreSQL for a lake's catalog: the tests, the bench and the demo start
one in a temporary directory, listening on a unix socket only (no TCP port to pick), and
stop it. Debian's ``postgresql`` package puts the server in /usr/lib/postgresql/N/bin
(not on PATH); PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
user the package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATABASE = "lake"
USER = "jobstream"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or they would not start); one line for the user."""


def server_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").exists() and Path(candidate, "initdb").exists():
            return Path(candidate)
    raise PostgresUnavailable("no PostgreSQL server found (initdb, pg_ctl): apt-get install postgresql")


@dataclass(frozen=True, slots=True)
class ScratchPostgres:
    """One running throwaway server: ``catalog`` is the libpq string of its database."""

    directory: Path
    bin: Path
    run_as: str | None

    @property
    def catalog(self) -> str:
        return f"dbname={DATABASE} host={self.directory} user={USER}"

    def conninfo(self, database: str) -> str:
        return f"dbname={database} host={self.directory} user={USER}"

    @classmethod
    def start(cls, parent: Path | None = None) -> "ScratchPostgres":
        directory = Path(tempfile.mkdtemp(prefix="jobstream-pg-", dir=parent))
        run_as = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from None
            os.chown(directory, account.pw_uid, account.pw_gid)
            run_as = "postgres"
        server = cls(directory, server_bin(), run_as)
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")
        server._run(
            "pg_ctl", "-D", str(server.data), "-l", str(directory / "server.log"), "-w", "-t", "60",
            "-o", f"-k {directory} -c listen_addresses='' -c fsync=off -c max_connections=200", "start",
        )
        server.create_database(DATABASE)
        return server

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", str(self.directory), "-U", USER, name)

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin / tool), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if check and done.returncode != 0:
            raise PostgresUnavailable(f"{tool} failed: {(done.stderr or done.stdout).strip()[-500:]}")
