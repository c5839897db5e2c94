"""The one place aiokafka producers, consumers and admin clients are built.

Each takes the settings (or, for tools and tests that only know an address, the bootstrap
string) and the options of its use; the connection options come from here, so a change
of how Jobstream connects (TLS, SASL) is made once. Producers write with ``acks="all"``
and without idempotence: Tansu has no InitProducerId (docs/design.md, "Tansu").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from pipeline.settings import Settings

PRODUCER_DEFAULTS: dict[str, Any] = {"acks": "all", "enable_idempotence": False}
CONSUMER_DEFAULTS: dict[str, Any] = {"group_id": None, "enable_auto_commit": False}


def connection_options(connection: "Settings | str") -> dict[str, Any]:
    """What every client needs to reach the cluster."""
    bootstrap = connection if isinstance(connection, str) else connection.bootstrap
    return {"bootstrap_servers": bootstrap}


def producer(connection: "Settings | str", **options: Any) -> AIOKafkaProducer:
    """A producer: acks=all, no idempotence, plus ``options`` (client_id, linger_ms ...)."""
    return AIOKafkaProducer(**{**connection_options(connection), **PRODUCER_DEFAULTS, **options})


def consumer(connection: "Settings | str", *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer: no group and no auto-commit unless ``options`` say otherwise."""
    return AIOKafkaConsumer(*topics, **{**connection_options(connection), **CONSUMER_DEFAULTS, **options})


def admin(connection: "Settings | str", **options: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, groups, configs)."""
    return AIOKafkaAdminClient(**{**connection_options(connection), **options})
