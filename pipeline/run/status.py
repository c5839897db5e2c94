"""``pipeline status``: per role and partition, whether it runs, its lag and when it last
moved, read from Kafka itself (so it works for any deployment of the roles).

For each role's consumer group: its state and member count (DescribeGroups), its
committed offset per partition (OffsetFetch through a consumer that only *assigns*, so
it never joins or disturbs the group), the partition's end (the fetch high-water mark,
which Tansu answers right, unlike ListOffsets: DESIGN.md) and the Kafka timestamp of the
last record the group consumed: "last moved" without asking the role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.model import UTC


@dataclass(frozen=True, slots=True)
class RoleGroup:
    """A role, the consumer group it commits under, and the topics it reads."""

    role: str
    group: str
    topics: Sequence[str]


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    role: str
    group: str
    state: str  # the group's state: Stable, Empty, Dead, PreparingRebalance, ...
    members: int
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    end: int
    last_consumed_at: datetime | None  # Kafka timestamp of the record before `committed`

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


async def gather(bootstrap: str, roles: Sequence[RoleGroup], *, timeout_s: float = 10.0) -> list[PartitionStatus]:
    """The status of every partition of every role's topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([r.group for r in roles])
    finally:
        await admin.close()
    groups: dict[str, tuple[str, int]] = {}
    for response in described:
        for group in response.groups:
            error_code, name, state, _protocol_type, _protocol, members = group[:6]
            groups[name] = ("Unknown" if error_code else state, len(members))
    statuses: list[PartitionStatus] = []
    for role in roles:
        state, members = groups.get(role.group, ("Unknown", 0))
        statuses.extend(await _partitions(bootstrap, role, state, members, timeout_s))
    return statuses


async def _partitions(bootstrap: str, role: RoleGroup, state: str, members: int, timeout_s: float) -> list[PartitionStatus]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=role.group, enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in role.topics
            for p in sorted(consumer.partitions_for_topic(topic) or await _fetch_partitions(consumer, topic))
        ]
        if not tps:
            return []
        consumer.assign(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        for tp in tps:
            position = committed[tp]
            if position:
                consumer.seek(tp, position - 1)
            else:
                await consumer.seek_to_beginning(tp)
        last_at: dict[TopicPartition, datetime] = {}
        pending = set(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while pending and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=300, max_records=1)
            for tp, records in batches.items():
                if records and committed[tp] and records[0].offset == committed[tp] - 1:
                    last_at[tp] = datetime.fromtimestamp(records[0].timestamp / 1000, UTC)
            for tp in list(pending):
                if consumer.highwater(tp) is not None:
                    pending.discard(tp)
        return [
            PartitionStatus(
                role=role.role, group=role.group, state=state, members=members, topic=tp.topic,
                partition=tp.partition, committed=committed[tp], end=consumer.highwater(tp) or 0,
                last_consumed_at=last_at.get(tp),
            )
            for tp in tps
        ]
    finally:
        await consumer.stop()


async def _fetch_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
    return consumer.partitions_for_topic(topic) or set()


def age(at: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', or 'never'."""
    if at is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - at).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
