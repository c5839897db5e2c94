"""Live SQL over Quack, DuckDB's client-server protocol: everything Quack-specific is here.

Quack was beta in DuckDB 1.5 and is stable in 2.0; moving to 2.0 builds is one change to
this module. Facts it relies on (docs/design.md, "DuckDB and Quack", and measured with duckdb 1.5.5):

- Extensions load by path from the PyPI wheels ``duckdb-extension-httpfs`` and
  ``duckdb-extension-quack`` (never ``INSTALL``), httpfs first on both sides.
- ``CALL quack_serve('quack:HOST:PORT', token => T)`` serves the connection's database;
  clients ``CREATE SECRET (TYPE quack, TOKEN T)`` and ``ATTACH 'quack:HOST:PORT'``.
- ``quack_authorization_function`` names a function ``f(session, sql) -> sql`` that the
  server calls for every statement a client sends: ``session`` is the client
  connection's id (hex), ``sql`` the text the server is about to run. The server runs
  the text the function returns; NULL (or an error inside it) refuses the statement
  with "Authorization failed", without the reason.

``READ_ONLY`` passes reads through and turns every other statement into
``SELECT error('jobstream: ... read-only ...')``, so the client sees why. Once serving,
the database also turns off file access (``enable_external_access``: no reading the
server's files with read_csv or glob) and locks its configuration. A read is a
statement ``json_serialize_sql`` accepts (it serializes SELECT only, including
DESCRIBE / SHOW / SUMMARIZE) that calls none of the functions in ``_DENIED_FUNCTIONS``,
or a bare BEGIN / COMMIT / ROLLBACK. One exception: an INSERT through an attached
catalog reaches the server as an append, which ignores a rewritten text and honours only
a refusal, so INSERTs are answered NULL ("Authorization failed"); ``pipeline sql``
refuses writes itself, with the reason, before sending anything.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import duckdb

from pipeline.errors import JobstreamError
from pipeline.ops import ports

DUCKDB_VERSION = "v1.5.5"
SCHEME = "quack:"
TOKEN_ENV = "JOBSTREAM_QUACK_TOKEN"
AUTHORIZATION_MACRO = "jobstream_read_only"
TOKEN_FILE_MODE = 0o640

_DENIED_FUNCTIONS = ("quack_", "nextval", "checkpoint", "force_checkpoint", "set_variable")

_DENIED_PATTERN = "|".join(f"{n}[a-z_]*" if n.endswith("_") else n for n in _DENIED_FUNCTIONS)

# A read: SELECT text json_serialize_sql accepts (DESCRIBE / SHOW / SUMMARIZE included) that
# calls no denied function; EXPLAIN [ANALYZE] of such a read is one too.
_IS_READ = f"""NOT (json_serialize_sql(q::VARCHAR)::JSON ->> 'error')::BOOLEAN
    AND NOT regexp_matches(json_serialize_sql(q::VARCHAR), '"function_name":"({_DENIED_PATTERN})"')"""

READ_ONLY = rf"""
CREATE OR REPLACE MACRO jobstream_is_read(q) AS {_IS_READ};
CREATE OR REPLACE MACRO {AUTHORIZATION_MACRO}(session, query) AS
CASE
    WHEN regexp_full_match(trim(query::VARCHAR), '(?is)(BEGIN( TRANSACTION)?|COMMIT|ROLLBACK|ABORT);?') THEN query
    WHEN regexp_matches(trim(query::VARCHAR), '(?is)^INSERT\b') THEN NULL
    WHEN jobstream_is_read(query::VARCHAR) THEN query
    WHEN regexp_matches(trim(query::VARCHAR), '(?is)^EXPLAIN\s')
         AND jobstream_is_read(regexp_replace(trim(query::VARCHAR), '(?is)^EXPLAIN\s+(ANALYZE\s+)?', '')) THEN query
    ELSE 'SELECT error(' || '''' || replace(
        'jobstream: the live database is read-only over Quack (SELECT and EXPLAIN only); refused: '
        || left(regexp_replace(trim(query::VARCHAR), '\s+', ' ', 'g'), 80), '''', '''''') || '''' || ')'
END
"""


class QuackError(JobstreamError, RuntimeError):
    """Quack cannot serve or attach; the message is one line for the user."""


def extension_path(name: str) -> Path:
    """Where the PyPI wheel ``duckdb-extension-<name>`` keeps its extension binary."""
    try:
        module = import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise QuackError(
            f"the DuckDB extension '{name}' is not installed: pip install duckdb-extension-{name}=={DUCKDB_VERSION[1:]}"
        ) from None
    path = Path(module.__file__).parent / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
    if not path.is_file():
        raise QuackError(f"{path} is missing: duckdb-extension-{name} must be version {DUCKDB_VERSION[1:]}")
    return path


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """httpfs first (without it the server refuses: "read-only crypto module"), then quack."""
    for name in ("httpfs", "quack"):
        con.execute(f"LOAD '{extension_path(name)}'")


def uri(host: str, port: int) -> str:
    return f"{SCHEME}{host}:{port}"


def token_file_for(db_path: Path) -> Path:
    """The token file that sits next to a database: ``<db>.quack-token``."""
    return db_path.with_name(db_path.name + ".quack-token")


def resolve_token(token_file: Path, env: dict[str, str] | None = None) -> str:
    """The server's token: ``JOBSTREAM_QUACK_TOKEN``, else the one already in ``token_file``
    (kept across sink restarts until rotated), else a new one written there. Never logged."""
    env = dict(os.environ) if env is None else env
    token = env.get(TOKEN_ENV, "")
    if token:
        return token
    try:
        kept = token_file.read_text().strip()
    except FileNotFoundError:
        kept = ""
    return kept or rotate_token(token_file)


def rotate_token(token_file: Path) -> str:
    """Write a new random token to ``token_file``, mode 0640, its group the directory's
    (so an analysts' group owning the directory can read it); a running sink keeps
    serving the old one until it restarts."""
    token = secrets.token_urlsafe(24)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fresh = token_file.with_name(token_file.name + ".new")
    fresh.unlink(missing_ok=True)
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(fresh, TOKEN_FILE_MODE)
    try:
        os.chown(fresh, -1, token_file.parent.stat().st_gid)
    except PermissionError:
        pass
    os.replace(fresh, token_file)
    return token


def read_token(token_file: Path, env: dict[str, str] | None = None) -> str | None:
    """What a client uses: ``JOBSTREAM_QUACK_TOKEN``, else the token file, else None."""
    env = dict(os.environ) if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    try:
        return token_file.read_text().strip() or None
    except OSError:
        return None


@dataclass(slots=True)
class QuackServer:
    """A Quack endpoint serving a database read-only, on its own connection."""

    connection: duckdb.DuckDBPyConnection
    uri: str

    @classmethod
    def start(cls, con: duckdb.DuckDBPyConnection, host: str, port: int, token: str) -> "QuackServer":
        server = con.cursor()
        try:
            load_extensions(server)
            server.execute(READ_ONLY)
            server.execute(f"SET GLOBAL quack_authorization_function = '{AUTHORIZATION_MACRO}'")
            address = uri(host, port)
            server.execute(
                "CALL quack_serve(?, token => ?, allow_other_hostname => ?)",
                [address, token, host not in ("localhost", "127.0.0.1", "::1")],
            ).fetchall()
            # Clients must not read the server's files (read_csv('/etc/...'), glob) nor
            # change settings: the sink itself needs neither once it serves.
            server.execute("SET enable_external_access = false")
            server.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            server.close()
            text = " ".join(str(exc).split())
            raise QuackError(f"cannot serve live SQL on {uri(host, port)}: {text}") from None
        return cls(server, address)

    @classmethod
    def start_on_any_port(cls, con: duckdb.DuckDBPyConnection, host: str, token: str) -> "QuackServer":
        """``start`` on a port of its own choosing: Quack refuses port 0, so a candidate is
        tried and, when another process took it meanwhile, the next (``ops/ports.py``)."""

        def attempt(port: int) -> "QuackServer":
            try:
                return cls.start(con, host, port, token)
            except QuackError as exc:
                if "Failed to bind" in str(exc):
                    raise ports.PortTaken(str(exc)) from None
                raise

        try:
            return ports.first_free(attempt, host)
        except ports.PortTaken as exc:
            raise QuackError(str(exc)) from None

    @property
    def port(self) -> int:
        return int(self.uri.rsplit(":", 1)[1])

    def stop(self) -> None:
        try:
            self.connection.execute("CALL quack_stop(?)", [self.uri]).fetchall()
        except duckdb.Error:
            pass
        self.connection.close()


def attach(con: duckdb.DuckDBPyConnection, address: str, token: str, alias: str = "jobs") -> None:
    """Attach a served database as ``alias`` and make it the default catalog."""
    load_extensions(con)
    escaped = token.replace("'", "''")
    con.execute(f"CREATE OR REPLACE SECRET jobstream_quack (TYPE quack, TOKEN '{escaped}')")
    con.execute(f"ATTACH '{address}' AS {alias}")
    con.execute(f"USE {alias}")


def query(con: duckdb.DuckDBPyConnection, address: str, token: str, sql: str) -> list[tuple]:
    """One read run by the server (``quack_query``), so a filter is applied there rather than
    after pulling the attached table whole; ``con`` needs ``load_extensions`` first."""
    return con.execute("FROM quack_query(?, ?, token => ?)", [address, sql, token]).fetchall()


def attach_script(address: str, token: str) -> str:
    """The SQL a ``duckdb`` CLI runs (``-init FILE``) to attach the live database as ``jobs``."""
    httpfs, quack = extension_path("httpfs"), extension_path("quack")
    escaped = token.replace("'", "''")
    return (
        f"LOAD '{httpfs}';\nLOAD '{quack}';\n"
        f"CREATE SECRET jobstream_quack (TYPE quack, TOKEN '{escaped}');\n"
        f"ATTACH '{address}' AS jobs;\nUSE jobs;\n"
    )
