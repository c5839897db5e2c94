"""The aiokafka internals the project relies on, in one place (as
``stream/faust_compat.py`` confines Faust's): aiokafka has no public call that refreshes
a consumer's metadata, and a topic created after the consumer started stays unknown to
it until that refresh; and it leaves a group only from a generation above 0. An aiokafka
upgrade is checked here and in ``tests/test_kafka.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for the cluster's metadata now (topics, partitions, leaders)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh


def leaves_its_group(consumer: Any) -> Any:
    """Make ``consumer`` leave its group when it stops, from generation 0 too; returns it.

    aiokafka sends LeaveGroup only from a generation above 0, its sign of a joined member.
    Kafka numbers a group's first generation 1, but Tansu, the embedded broker, numbers it
    0: a member of a new group then stopped without leaving, and the next member's join
    waited for the old one's session to time out (a restarted worker ready in 15 s instead
    of 4; docs/design.md, "Tansu"). The group coordinator exists only once the consumer has
    started, so the hook goes in then. A consumer without a group is left as it is."""
    start = consumer.start

    async def start_then_hook() -> None:
        await start()
        coordinator = getattr(consumer, "_coordinator", None)
        leave = getattr(coordinator, "_maybe_leave_group", None)
        if leave is None:
            return

        async def leave_from_generation_zero_too() -> None:
            # Called by the coordinator's close(), after its heartbeats stopped.
            if coordinator.generation == 0 and coordinator.member_id and coordinator._group_instance_id is None:
                from aiokafka.errors import KafkaError
                from aiokafka.protocol.group import LeaveGroupRequest

                try:
                    await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
                except KafkaError as err:
                    log.warning("LeaveGroup (generation 0) for group %s failed: %s", coordinator.group_id, err)
                else:
                    log.info("LeaveGroup (generation 0) for group %s succeeded", coordinator.group_id)
            await leave()

        coordinator._maybe_leave_group = leave_from_generation_zero_too  # noqa: SLF001

    consumer.start = start_then_hook
    return consumer


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
