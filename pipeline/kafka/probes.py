"""Is a Kafka there: hand-built requests on a bare socket, independent of any client
library's retry loops (a Kafka client hides a dead broker behind endless reconnects)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

from pipeline.settings import host_port


def _request(host: str, port: int, api_key: int, version: int, body: bytes, timeout: float,
             tls: ssl.SSLContext | None = None) -> bytes | None:
    """One hand-built Kafka request (correlation id 1); the response body, or None.

    A bare socket keeps the probes independent of any client library's retry loops;
    ``tls`` wraps it for a broker that speaks TLS (ApiVersions comes before SASL)."""
    client_id = b"jobstream-probe"
    message = struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            sock = plain if tls is None else tls.wrap_socket(plain, server_hostname=host)
            sock.sendall(struct.pack(">i", len(message)) + message)
            header = _read_exactly(sock, 4)
            size = struct.unpack(">i", header)[0]
            if not 4 <= size <= 1 << 20:
                return None
            response = _read_exactly(sock, size)
    except (OSError, EOFError):
        return None
    if struct.unpack(">i", response[:4])[0] != 1:
        return None
    return response[4:]


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def tls_problem(host: str, port: int, tls: ssl.SSLContext, timeout: float = 3.0) -> str | None:
    """Why a TLS handshake with host:port fails (the certificate check's own words), or
    None when it succeeds or nothing listens (that is another problem)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            with tls.wrap_socket(plain, server_hostname=host) as sock:
                # TLS 1.3: a server refuses a client certificate only after the handshake
                sock.sendall(struct.pack(">ihhih", 10, 18, 0, 1, 0))
                if not sock.recv(1):
                    return "the broker closed the connection right after the TLS handshake (does it want a client certificate?)"
                return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    except (OSError, EOFError):
        return None


def kafka_api_versions(host: str, port: int, timeout: float = 1.0, tls: ssl.SSLContext | None = None) -> bool:
    """True when something on host:port answers a Kafka ApiVersions request (v0)."""
    return _request(host, port, 18, 0, b"", timeout, tls) is not None


def serves_idempotence(host: str, port: int, timeout: float = 2.0, tls: ssl.SSLContext | None = None) -> bool | None:
    """Whether the broker answers InitProducerId as aiokafka asks it (v0, no
    transactional id) without an error: what an idempotent aiokafka producer needs
    (None: no answer). Tansu 0.6.0 answers error -1 (it wants the producer id and epoch
    of later versions)."""
    body = _request(host, port, 22, 0, struct.pack(">hi", -1, 60_000), timeout, tls)
    if body is None or len(body) < 6:
        return None
    return struct.unpack_from(">h", body, 4)[0] == 0


def kafka_cluster_id(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The cluster id a Kafka on host:port reports (Metadata v2, no topics), or None.

    The embedded broker starts with a cluster id of its own, so this tells our child
    apart from any other Kafka that answers on the same address."""
    body = _request(host, port, 3, 2, struct.pack(">i", 0), timeout)
    if body is None:
        return None
    try:
        offset = 4
        (brokers,) = struct.unpack_from(">i", body, 0)
        for _ in range(brokers):
            offset += 4  # node id
            (length,) = struct.unpack_from(">h", body, offset)
            offset += 2 + length + 4  # host, port
            (length,) = struct.unpack_from(">h", body, offset)
            offset += 2 + max(length, 0)  # rack
        (length,) = struct.unpack_from(">h", body, offset)
        if length < 0:
            return None
        return body[offset + 2: offset + 2 + length].decode("utf-8", "replace")
    except struct.error:
        return None


def any_broker_answers(bootstrap: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> bool:
    """True when one of the bootstrap addresses answers an ApiVersions request."""
    return any(kafka_api_versions(*host_port(address), timeout=timeout, tls=tls) for address in str(bootstrap).split(","))


async def any_broker_answers_async(bootstrap: str, timeout: float = 2.0, tls: ssl.SSLContext | None = None) -> bool:
    """``any_broker_answers`` off the event loop, one address at a time."""
    for address in str(bootstrap).split(","):
        if await asyncio.to_thread(kafka_api_versions, *host_port(address), timeout, tls):
            return True
    return False
