"""The aiokafka internals the project relies on, in one place (as
``stream/faust_compat.py`` confines Faust's): aiokafka has no public call that refreshes
a consumer's metadata, and a topic created after the consumer started stays unknown to
it until that refresh. An aiokafka upgrade is checked here and in ``tests/test_kafka.py``.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for the cluster's metadata now (topics, partitions, leaders)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh


async def authentication_refusal(host: str, port: int, options: dict) -> str | None:
    """Why one broker refuses this client's SASL authentication (its own message), or None.

    aiokafka's clients report any failed bootstrap as "Unable to bootstrap"; one bare
    connection (``aiokafka.conn.create_conn``) raises the broker's actual answer."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=5000, **_connection(options)), 10)
    except KafkaError as exc:
        return str(exc) if "Authentication" in type(exc).__name__ or "Sasl" in type(exc).__name__ else None
    except (OSError, asyncio.TimeoutError):
        return None
    conn.close()
    return None


async def serves_idempotence(host: str, port: int, options: dict) -> bool | None:
    """``probes.serves_idempotence`` over an authenticated connection (SASL): the
    InitProducerId (v0) an idempotent aiokafka producer sends; None when no answer."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.transaction import InitProducerIdRequest

    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=5000, **_connection(options)), 10)
    except (KafkaError, OSError, asyncio.TimeoutError):
        return None
    try:
        answer = await asyncio.wait_for(conn.send(InitProducerIdRequest(None, 60_000)), 10)
    except (KafkaError, OSError, asyncio.TimeoutError):
        return None
    finally:
        conn.close()
    return answer.error_code == 0


def _connection(options: dict) -> dict:
    wanted = ("ssl_context", "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    return {k: v for k, v in options.items() if k in wanted}
