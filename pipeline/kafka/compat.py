"""The one aiokafka internal the project relies on, in one place (as
``stream/faust_compat.py`` confines Faust's): aiokafka has no public call that refreshes
a consumer's metadata, and a topic created after the consumer started stays unknown to
it until that refresh. An aiokafka upgrade is checked here and in ``tests/test_kafka.py``.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for the cluster's metadata now (topics, partitions, leaders)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
