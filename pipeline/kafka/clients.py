"""The one place aiokafka producers, consumers and admin clients are built.

Each takes where and how to connect: the settings, a ``Connection`` (the bootstrap
address and the security of ``pipeline/kafka/security.py``), or for tools and tests that
only know an address the bootstrap string (PLAINTEXT); then the options of its use. No
other module builds a Kafka client (tests/test_kafka.py checks it), so TLS and SASL
reach every role, and Faust gets the same security from ``faust_options``.

Producers write with ``acks="all"`` and are idempotent where the broker serves it (a
retried send is not written twice; Kafka clients default to it since 3.0). The setting
``kafka_idempotence`` says on, off, or (unset) ask the broker once per process: an
InitProducerId request as aiokafka sends it (v0). Tansu 0.6.0, the embedded broker,
answers that one with error -1 (it wants the producer id and epoch of v3+), so producers
to it are not idempotent (tests/test_kafka.py). A broker that does not answer the
question is not assumed to serve it (SASL brokers are asked after authentication).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.kafka import compat
from pipeline.kafka.probes import serves_idempotence, tls_problem
from pipeline.kafka.security import KafkaSecurity
from pipeline.settings import host_port

if TYPE_CHECKING:
    from pipeline.settings import Settings

PRODUCER_DEFAULTS: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
CONSUMER_DEFAULTS: dict[str, Any] = {"group_id": None, "enable_auto_commit": False}


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the brokers are and how to talk to them. Its str is the bootstrap address,
    so messages that name where Kafka is stay as they were."""

    bootstrap: str
    security: KafkaSecurity = KafkaSecurity()
    idempotent: bool | None = None  # None: where the broker serves it

    def __str__(self) -> str:
        return self.bootstrap


ConnectionLike = Union["Settings", Connection, str]


_configured: Connection | None = None


def configure(settings: "Settings") -> Connection:
    """Make ``settings``' connection this process's: a bare address equal to its
    bootstrap gets its security too (roles that hand an address down, ``pipeline
    status``). Reads the password and checks the security now: a ``SettingsError`` at
    start, not a client that fails later."""
    global _configured
    conn = connection(settings)
    conn.security.ssl_context()
    _configured = conn
    return conn


def connection(of: ConnectionLike) -> Connection:
    """The ``Connection`` of settings (security read now), a connection, or a bare
    bootstrap string: the configured connection's when it is that address, else
    PLAINTEXT (an embedded broker, a tool)."""
    if isinstance(of, Connection):
        return of
    if isinstance(of, str):
        if _configured is not None and of == _configured.bootstrap:
            return _configured
        return Connection(of)
    return Connection(of.bootstrap, of.kafka_security(), of.kafka_idempotence)


def connection_options(of: ConnectionLike) -> dict[str, Any]:
    """What every client needs to reach the cluster: the addresses and the security."""
    conn = connection(of)
    return {"bootstrap_servers": conn.bootstrap, **conn.security.client_options()}


_served: dict[tuple[str, KafkaSecurity], bool] = {}
_served_lock = threading.Lock()


def idempotent(of: ConnectionLike) -> bool:
    """Whether producers of this connection are idempotent (module docstring)."""
    conn = connection(of)
    if conn.idempotent is not None:
        return conn.idempotent
    key = (conn.bootstrap, conn.security)
    with _served_lock:
        if key not in _served:
            address = host_port(conn.bootstrap.split(",")[0])
            if conn.security.sasl:
                answer = _in_a_thread(compat.serves_idempotence(*address, conn.security.client_options()))
            else:
                answer = serves_idempotence(*address, tls=conn.security.ssl_context())
            if answer is not None:
                _served[key] = answer
        return _served.get(key, False)


def producer(of: ConnectionLike, **options: Any) -> AIOKafkaProducer:
    """A producer: acks=all, idempotent where the broker serves it (``idempotent``),
    plus ``options`` (client_id, linger_ms ...)."""
    conn = connection(of)
    defaults = {**PRODUCER_DEFAULTS, "enable_idempotence": idempotent(conn)}
    return AIOKafkaProducer(**{**connection_options(conn), **defaults, **options})


def consumer(of: ConnectionLike, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer: no group and no auto-commit unless ``options`` say otherwise. One in a
    group leaves it when it stops, whatever the broker numbered its generation
    (``compat.leaves_its_group``)."""
    merged = {**connection_options(of), **CONSUMER_DEFAULTS, **options}
    built = AIOKafkaConsumer(*topics, **merged)
    return built if merged["group_id"] is None else compat.leaves_its_group(built)


def admin(of: ConnectionLike, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, groups, configs)."""
    return AIOKafkaAdminClient(**{**connection_options(of), **options})


def faust_options(of: ConnectionLike) -> dict[str, Any]:
    """faust.App's keyword arguments for the same connection: the broker URL, the
    credentials (TLS, SASL) and idempotence, as the aiokafka clients above get them."""
    conn = connection(of)
    return {"broker": f"kafka://{conn.bootstrap}", "producer_acks": -1,
            "producer_enable_idempotence": idempotent(conn), **conn.security.faust_options()}


def unreachable(of: ConnectionLike, error: BaseException | None = None, *, within_s: float | None = None) -> str:
    """One line on why the cluster cannot be used: the TLS handshake's reason (a wrong CA,
    a refused client certificate), SASL authentication refused, else ``error``'s text."""
    conn = connection(of)
    where = f"Kafka at {conn.bootstrap}" + (f" within {within_s:g} s" if within_s is not None else "")
    if conn.security.protocol != "PLAINTEXT":
        where += f" ({conn.security.describe()})"
    if conn.security.tls:
        for address in conn.bootstrap.split(","):
            problem = tls_problem(*host_port(address), conn.security.ssl_context())
            if problem:
                verify = "verify failed" in problem and conn.security.ca_file
                hint = f"; ssl_ca_file is {conn.security.ca_file}" if verify else ""
                return f"cannot reach {where}: TLS handshake with {address} failed: {problem}{hint}"
    if conn.security.sasl:
        refusal = _in_a_thread(compat.authentication_refusal(*host_port(conn.bootstrap.split(",")[0]),
                                                              conn.security.client_options()))
        if refusal:
            return f"cannot reach {where}: SASL authentication as {conn.security.username} refused ({refusal})"
    reason = f" ({str(error) or type(error).__name__})" if error is not None else ""
    return f"cannot reach {where}{reason}"


def _in_a_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on a loop of its own (callers may be inside a loop)."""
    result: list[Any] = [None]

    def run() -> None:
        result[0] = asyncio.run(coroutine)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    return result[0]
