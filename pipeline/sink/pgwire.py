"""The live database, read-only, over the PostgreSQL wire protocol (psql, psycopg, BI tools).

Served from the sink process beside Quack, on cursors of the writer's own connection (one
per client), so a query sees every committed batch. Why our own small server rather than
a library (measured 2026-12-05): ``riffq`` 0.1.11 ships no wheel for CPython 3.11 x86_64 and
its sdist needs a Rust toolchain and network access to crates.io and GitHub; ``buenavista``
0.5.0 (last release 2024-10) has no TLS (it answers an SSLRequest "N"), MD5 passwords only,
accepts only 127.0.0.1 peers, and fails psycopg's first parameterised query (it parses a
text parameter as a date). What is served here, per protocol 3.0:

- TLS when a certificate is given (SSLRequest answered "S"; a client without TLS is then
  refused), else "N": plain, which only a loopback address may serve.
- A cleartext password (AuthenticationCleartextPassword): the Quack token, or a password
  from a file; a wrong one is refused with SQLSTATE 28P01.
- Simple and extended queries (Parse / Bind / Describe / Execute / Sync / Close), text
  parameters (DuckDB casts them, as PostgreSQL does for "unknown"), binary integer and
  float parameters, text results. ``$1`` parameters are DuckDB's own.
- The read rule of ``pipeline sql`` (SELECT, DESCRIBE / SHOW / SUMMARIZE, EXPLAIN of a
  read): anything else is refused with its reason (SQLSTATE 25006). BEGIN / COMMIT /
  ROLLBACK are answered without effect (drivers send them around reads).
- A time limit per query: past it the query is interrupted (SQLSTATE 57014).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import os
import secrets
import socket
import socketserver
import ssl
import struct
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import JobstreamError

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608

# DuckDB type name (before any "(") -> PostgreSQL type oid; anything else is text.
TYPE_OIDS = {
    "BOOLEAN": 16, "BLOB": 17, "BIGINT": 20, "SMALLINT": 21, "INTEGER": 23, "VARCHAR": 25,
    "FLOAT": 700, "DOUBLE": 701, "DATE": 1082, "TIME": 1083, "TIMESTAMP": 1114,
    "TIMESTAMP WITH TIME ZONE": 1184, "INTERVAL": 1186, "DECIMAL": 1700, "HUGEINT": 1700,
    "UBIGINT": 1700, "UINTEGER": 20, "USMALLINT": 23, "UTINYINT": 21, "TINYINT": 21, "UUID": 2950,
    "JSON": 114,
}
_BINARY_PARAMETERS = {20: "!q", 21: "!h", 23: "!i", 700: "!f", 701: "!d"}
_TRANSACTION_WORDS = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"}


class PgError(Exception):
    """An error the client is sent: SQLSTATE and one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PgConfig:
    host: str
    port: int
    password: str = field(repr=False)
    query_timeout_s: float
    certificate: Path | None = None
    private_key: Path | None = None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def type_oid(duckdb_type: object) -> int:
    name = str(duckdb_type)
    if name.endswith("]"):
        return 25
    return TYPE_OIDS.get(name.split("(")[0], 25)


def _offset(value: dt.datetime) -> str:
    offset = value.utcoffset() or dt.timedelta(0)
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}" + (f":{minutes % 60:02d}" if minutes % 60 else "")


def text_value(value: Any) -> bytes | None:
    """A DuckDB value as PostgreSQL's text format."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, dt.datetime):
        text = value.replace(tzinfo=None).isoformat(sep=" ")
        return (text + _offset(value) if value.tzinfo is not None else text).encode()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat().encode()
    if isinstance(value, dt.timedelta):
        seconds = value.seconds + value.microseconds / 1e6
        return f"{value.days} days {int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:09.6f}".encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\\x" + bytes(value).hex().encode()
    if isinstance(value, Decimal):
        return format(value, "f").encode()
    return str(value).encode()


_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def binary_parameter(raw: bytes, oid: int) -> Any:
    """A parameter a driver sent in binary (psycopg does for datetimes and integers)."""
    if oid in _BINARY_PARAMETERS:
        return struct.unpack(_BINARY_PARAMETERS[oid], raw)[0]
    if oid in (1184, 1114):
        moment = _EPOCH_2000 + dt.timedelta(microseconds=struct.unpack("!q", raw)[0])
        return moment if oid == 1184 else moment.replace(tzinfo=None)
    if oid == 1082:
        return _EPOCH_2000.date() + dt.timedelta(days=struct.unpack("!i", raw)[0])
    if oid == 16:
        return raw == b"\x01"
    if oid in (0, 25, 1043, 114):
        return raw.decode()
    if oid == 17:
        return bytes(raw)
    raise PgError("0A000", f"binary parameters of type oid {oid} are not supported; send text")


def command_word(sql: str) -> str:
    words = sql.strip().split(None, 1)
    return words[0].rstrip(";").upper() if words else ""


@dataclass(slots=True)
class _Result:
    columns: list[tuple[str, int]]
    rows: list[tuple[Any, ...]]
    tag: str


class _Session:
    """One client's state: its cursor, statements and portals."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, config: PgConfig) -> None:
        self.cursor = cursor
        self.config = config
        self.statements: dict[str, tuple[str, list[int]]] = {}
        self.portals: dict[str, tuple[str, list[Any]]] = {}
        self.described: dict[str, _Result] = {}
        self.in_transaction = False

    def run(self, sql: str, parameters: list[Any] | None = None) -> _Result:
        from pipeline.sink.sql import refusal

        word = command_word(sql)
        if word in _TRANSACTION_WORDS:
            self.in_transaction = word in ("BEGIN", "START")
            return _Result([], [], "BEGIN" if self.in_transaction else ("ROLLBACK" if word in ("ROLLBACK", "ABORT") else "COMMIT"))
        reason = refusal(sql)
        if reason is not None:
            code = "42601" if "Parser Error" in reason else "25006"
            raise PgError(code, reason)
        timer = threading.Timer(self.config.query_timeout_s, self.cursor.interrupt)
        timer.start()
        try:
            cursor = self.cursor.execute(sql, parameters or None)
            description = cursor.description or []
            rows = cursor.fetchall() if description else []
        except duckdb.InterruptException:
            raise PgError("57014", f"canceled: the live database's limit of {self.config.query_timeout_s:g} s per query was reached") from None
        except duckdb.Error as exc:
            raise PgError("XX000", " ".join(str(exc).split())) from None
        finally:
            timer.cancel()
        columns = [(d[0], type_oid(d[1])) for d in description]
        return _Result(columns, rows, f"SELECT {len(rows)}" if description else word)


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        try:
            if not self._startup():
                return
            session = _Session(self.server.cursor_factory(), self.server.config)
            try:
                self._serve(session)
            finally:
                session.cursor.close()
        except (ConnectionError, EOFError, ssl.SSLError, OSError):
            return

    # -- framing --------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        self.wfile.write(kind + struct.pack("!i", len(payload) + 4) + payload)

    def _error(self, code: str, message: str, severity: str = "ERROR") -> None:
        fields = b"S" + severity.encode() + b"\0V" + severity.encode() + b"\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0"
        self._send(b"E", fields)

    def _ready(self, session: _Session) -> None:
        self._send(b"Z", b"T" if session.in_transaction else b"I")
        self.wfile.flush()

    # -- startup and password ----------------------------------------------------------

    def _startup(self) -> bool:
        while True:
            length, code = struct.unpack("!ii", self._read(8))
            body = self._read(length - 8)
            if code == SSL_REQUEST:
                context = self.server.tls
                self.wfile.write(b"S" if context else b"N")
                self.wfile.flush()
                if context:
                    self.request = context.wrap_socket(self.request, server_side=True)
                    self.rfile = self.request.makefile("rb")
                    self.wfile = self.request.makefile("wb")
                continue
            if code == GSS_REQUEST:
                self.wfile.write(b"N")
                self.wfile.flush()
                continue
            if code != PROTOCOL_3:
                return False
            if self.server.tls is not None and not isinstance(self.request, ssl.SSLSocket):
                self._error("28000", "this endpoint requires TLS (connect with sslmode=require or verify-full)", "FATAL")
                self.wfile.flush()
                return False
            parts = body.split(b"\0")
            params = dict(zip((p.decode() for p in parts[0::2]), (p.decode() for p in parts[1::2])))
            break
        self._send(b"R", struct.pack("!i", 3))
        self.wfile.flush()
        kind = self._read(1)
        (length,) = struct.unpack("!i", self._read(4))
        password = self._read(length - 4).rstrip(b"\0")
        if kind != b"p" or not hmac.compare_digest(password, self.server.config.password.encode()):
            self._error("28P01", f'password authentication failed for user "{params.get("user", "")}"', "FATAL")
            self.wfile.flush()
            return False
        self._send(b"R", struct.pack("!i", 0))
        for name, value in (("server_version", "16.0"), ("server_encoding", "UTF8"), ("client_encoding", "UTF8"),
                            ("DateStyle", "ISO, MDY"), ("TimeZone", "UTC"), ("integer_datetimes", "on"),
                            ("standard_conforming_strings", "on"), ("application_name", params.get("application_name", ""))):
            self._send(b"S", name.encode() + b"\0" + value.encode() + b"\0")
        self._send(b"K", struct.pack("!ii", os.getpid() & 0x7FFFFFFF, secrets.randbits(31)))
        self._send(b"Z", b"I")
        self.wfile.flush()
        return True

    # -- queries ---------------------------------------------------------------------

    def _serve(self, session: _Session) -> None:
        failed = False  # in the extended protocol, skip to Sync after an error
        while True:
            kind = self._read(1)
            (length,) = struct.unpack("!i", self._read(4))
            body = self._read(length - 4)
            if kind == b"X":
                return
            if kind == b"S":
                failed = False
                self._ready(session)
                continue
            if kind == b"Q":
                self._simple(session, body.rstrip(b"\0").decode())
                continue
            if failed:
                continue
            try:
                self._extended(session, kind, body)
            except PgError as exc:
                self._error(exc.code, exc.message)
                failed = True

    def _simple(self, session: _Session, sql: str) -> None:
        if not sql.strip().rstrip(";").strip():
            self._send(b"I")
        else:
            try:
                self._result(session.run(sql), describe=True)
            except PgError as exc:
                self._error(exc.code, exc.message)
        self._ready(session)

    def _extended(self, session: _Session, kind: bytes, body: bytes) -> None:
        if kind == b"P":
            name, rest = body.split(b"\0", 1)
            query, rest = rest.split(b"\0", 1)
            (count,) = struct.unpack("!h", rest[:2])
            oids = list(struct.unpack(f"!{count}i", rest[2:2 + 4 * count]))
            session.statements[name.decode()] = (query.decode(), oids)
            self._send(b"1")
        elif kind == b"B":
            self._bind(session, body)
            self._send(b"2")
        elif kind == b"D":
            target, name = body[:1], body[1:].rstrip(b"\0").decode()
            if target == b"S":
                sql, oids = self._statement(session, name)
                self._send(b"t", struct.pack(f"!h{len(oids)}i", len(oids), *[oid or 25 for oid in oids]))
                self._row_description(self._shape(session, sql, len(oids)))
            else:
                sql, parameters = self._portal(session, name)
                result = session.run(sql, parameters)
                session.described[name] = result
                self._row_description(result)
        elif kind == b"E":
            name = body.split(b"\0", 1)[0].decode()
            result = session.described.pop(name, None)
            if result is None:
                sql, parameters = self._portal(session, name)
                result = session.run(sql, parameters)
            self._result(result, describe=False)
        elif kind == b"C":
            target, name = body[:1], body[1:].rstrip(b"\0").decode()
            (session.statements if target == b"S" else session.portals).pop(name, None)
            self._send(b"3")
        elif kind == b"H":
            self.wfile.flush()
        else:
            raise PgError("08P01", f"unsupported protocol message {kind!r}")

    def _statement(self, session: _Session, name: str) -> tuple[str, list[int]]:
        if name not in session.statements:
            raise PgError("26000", f"prepared statement {name!r} does not exist")
        return session.statements[name]

    def _portal(self, session: _Session, name: str) -> tuple[str, list[Any]]:
        if name not in session.portals:
            raise PgError("34000", f"portal {name!r} does not exist")
        return session.portals[name]

    def _bind(self, session: _Session, body: bytes) -> None:
        portal, rest = body.split(b"\0", 1)
        statement, rest = rest.split(b"\0", 1)
        sql, oids = self._statement(session, statement.decode())
        (nformats,) = struct.unpack("!h", rest[:2])
        formats = list(struct.unpack(f"!{nformats}h", rest[2:2 + 2 * nformats]))
        offset = 2 + 2 * nformats
        (count,) = struct.unpack("!h", rest[offset:offset + 2])
        offset += 2
        parameters: list[Any] = []
        for i in range(count):
            (size,) = struct.unpack("!i", rest[offset:offset + 4])
            offset += 4
            raw = None if size < 0 else rest[offset:offset + size]
            offset += max(size, 0)
            binary = (formats[i] if nformats > 1 else (formats[0] if nformats == 1 else 0)) == 1
            parameters.append(self._parameter(raw, binary, oids[i] if i < len(oids) else 0))
        (nresults,) = struct.unpack("!h", rest[offset:offset + 2])
        result_formats = struct.unpack(f"!{nresults}h", rest[offset + 2:offset + 2 + 2 * nresults])
        if any(result_formats):
            raise PgError("0A000", "only text results are served; ask for text format")
        session.portals[portal.decode()] = (sql, parameters)

    @staticmethod
    def _parameter(raw: bytes | None, binary: bool, oid: int) -> Any:
        if raw is None:
            return None
        if not binary:
            return raw.decode()
        return binary_parameter(raw, oid)

    @staticmethod
    def _shape(session: _Session, sql: str, count: int) -> _Result | None:
        """The columns a statement would return, from running it on no rows."""
        if command_word(sql) in _TRANSACTION_WORDS:
            return None
        result = session.run(f"SELECT * FROM ({sql.strip().rstrip(';')}) LIMIT 0", [None] * count)
        return result

    def _row_description(self, result: _Result | None) -> None:
        if result is None or not result.columns:
            self._send(b"n")
            return
        payload = struct.pack("!h", len(result.columns))
        for name, oid in result.columns:
            payload += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, oid, -1, -1, 0)
        self._send(b"T", payload)

    def _result(self, result: _Result, describe: bool) -> None:
        if describe and result.columns:
            self._row_description(result)
        for row in result.rows:
            payload = struct.pack("!h", len(row))
            for value in row:
                text = text_value(value)
                payload += struct.pack("!i", -1) if text is None else struct.pack("!i", len(text)) + text
            self._send(b"D", payload)
        self._send(b"C", result.tag.encode() + b"\0")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: PgConfig, cursor_factory, tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.cursor_factory = cursor_factory
        self.tls = tls
        super().__init__((config.host, config.port), _Handler)


class PgWireError(JobstreamError, RuntimeError):
    """The Postgres endpoint cannot start; one line for the user."""


@dataclass(slots=True)
class PgServer:
    """A running Postgres endpoint; ``stop`` closes it."""

    server: _Server
    thread: threading.Thread
    uri: str

    @classmethod
    def start(cls, connection: duckdb.DuckDBPyConnection, config: PgConfig) -> "PgServer":
        tls = None
        if config.certificate is not None:
            try:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(config.certificate, config.private_key)
            except (OSError, ssl.SSLError) as exc:
                raise PgWireError(f"cannot load the Postgres TLS certificate {config.certificate}: {exc}") from None
        host = "127.0.0.1" if config.host == "localhost" else config.host
        if tls is None and not is_loopback(host):
            raise PgWireError(
                f"refusing to serve Postgres on {host} without TLS (the password and results would cross the network "
                "in clear): give pg_tls_cert and pg_tls_key, or bind localhost"
            )
        try:
            server = _Server(PgConfig(host, config.port, config.password, config.query_timeout_s), connection.cursor, tls)
        except OSError as exc:
            raise PgWireError(f"cannot serve Postgres on {host}:{config.port}: {exc.strerror or exc}") from None
        thread = threading.Thread(target=server.serve_forever, name="pgwire", daemon=True)
        thread.start()
        client = "localhost" if host in ("0.0.0.0", "::") else host
        return cls(server, thread, f"postgresql://{client}:{server.server_address[1]}/jobs")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def harden(connection: duckdb.DuckDBPyConnection) -> None:
    """No reading the server's files (read_csv, glob) and no changing settings, for clients."""
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")


def read_password(password_file: Path | None, token: str) -> str:
    """The Postgres password: the first line of ``password_file`` when given, else the token."""
    if password_file is None:
        return token
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise PgWireError(f"cannot read the Postgres password file {password_file}: {exc.strerror}") from None
    if not password:
        raise PgWireError(f"the Postgres password file {password_file} is empty")
    return password

