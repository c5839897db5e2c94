"""``pipeline status``: per role and partition, whether it runs, its lag and when it last
moved, read from Kafka itself (so it works for any deployment of the roles).

For each role's consumer group: its state and member count (DescribeGroups), its
committed offset per partition (OffsetFetch through a consumer that only *assigns*, so
it never joins or disturbs the group), the partition's end (the fetch high-water mark,
which Tansu answers right, unlike ListOffsets: docs/design.md, "Tansu") and the Kafka timestamp of the
last record the group consumed: "last moved" without asking the role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.kafka.compat import refresh_metadata
from pipeline.kafka.reading import highwaters
from pipeline.model import UTC

if TYPE_CHECKING:
    from pipeline.settings import Settings


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
    admin = clients.admin(bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        # One group per request: Tansu answers a DescribeGroups for two live groups with
        # bytes aiokafka cannot decode ("Buffer underrun decoding string").
        described = [
            response
            for group in dict.fromkeys(r.group for r in roles)
            for response in await admin.describe_consumer_groups([group])
        ]
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
    consumer = clients.consumer(bootstrap, group_id=role.group, request_timeout_ms=int(timeout_s * 1000))
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
    await refresh_metadata(consumer)
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


def default_roles(settings: "Settings") -> list[RoleGroup]:
    """The roles that commit offsets to Kafka: the worker (its Faust app id is its group)
    and the alerter. The sink keeps its offsets in DuckDB (``sink_offsets``)."""
    return [
        RoleGroup("worker", settings.app_id, catalog.raw_topics()),
        RoleGroup("alerter", settings.alert_group, [catalog.TRANSITIONS, catalog.DEADLETTER]),
    ]


async def sink_statuses(bootstrap: str, offsets: dict[tuple[str, int], tuple[int, datetime]], *, timeout_s: float = 10.0) -> list[PartitionStatus]:
    """The sink's partitions: its offsets (read from its own ``kafka_offsets`` table) against
    each partition's end; ``last_consumed_at`` is when the sink last committed there."""
    ends = await _ends(bootstrap, [TopicPartition(t, p) for t, p in offsets], timeout_s)
    return [
        PartitionStatus(role="sink", group="(DuckDB kafka_offsets)", state="-", members=0, topic=topic,
                        partition=partition, committed=next_offset, end=ends.get(TopicPartition(topic, partition), 0),
                        last_consumed_at=committed_at)
        for (topic, partition), (next_offset, committed_at) in sorted(offsets.items())
    ]


async def _ends(bootstrap: str, tps: list[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
    """Each partition's end, from a fetch's high-water mark (right on Tansu)."""
    if not tps:
        return {}
    consumer = clients.consumer(bootstrap)
    await consumer.start()
    try:
        return await highwaters(consumer, tps, timeout_s=timeout_s)
    finally:
        await consumer.stop()


def render(rows: list[PartitionStatus], now: datetime | None = None) -> list[str]:
    """One line per role and partition, plus a line per role that is not running."""
    lines = [f"{'role':<8} {'group state':<14} {'members':>7}  {'topic:partition':<22} {'committed':>9} {'end':>9} {'lag':>7}  last moved"]
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        lines.append(
            f"{row.role:<8} {row.state:<14} {row.members:>7}  {row.topic + ':' + str(row.partition):<22} "
            f"{committed:>9} {row.end:>9} {row.lag:>7}  {age(row.last_consumed_at, now)}"
        )
    for role in sorted({r.role for r in rows if r.state in ("Empty", "Dead", "Unknown")}):
        lines.append(f"{role}: no member in its group: not running")
    return lines


# --- what `pipeline run` reports about its roles (its state file and their /healthz) ---


def live_run_state(path: Path) -> dict | None:
    """The state file of a ``pipeline run`` whose supervisor is alive, else None."""
    import json
    import os

    try:
        state = json.loads(path.read_text())
        os.kill(int(state["supervisor_pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def run_sink_overrides(state: dict | None) -> dict[str, object]:
    """Where a running ``pipeline run``'s sink writes and serves (its state file says), as
    Settings overrides, so status finds a sink configured in the run's own file."""
    sink = (state or {}).get("sink") or {}
    if not sink:
        return {}
    return {
        "db_path": Path(sink["db_path"]), "quack_host": sink["quack_host"], "quack_port": sink["quack_port"],
        "quack_token_file": Path(sink["quack_token_file"]) if sink.get("quack_token_file") else None,
    }


async def run_state_lines(path: Path, *, timeout_s: float = 2.0) -> list[str]:
    """Per role of a running ``pipeline run``: pid, restarts, last exit, health, and per
    partition the lag and seconds since it last moved, from the role's own /healthz.
    One line saying so when no ``pipeline run`` is running with that state file."""
    import aiohttp

    if not path.exists():
        return [f"pipeline run: not running (no state file at {path})"]
    state = live_run_state(path)
    if state is None:
        return [f"pipeline run: not running ({path} is left from a run that is gone)"]
    lines = [f"pipeline run (pid {state['supervisor_pid']}, Kafka {state.get('bootstrap')}):",
             f"  {'role':<12} {'pid':>7} {'state':<10} {'restarts':>8} {'last exit':>9}  {'metrics':<22} health"]
    host = state.get("metrics_host", "127.0.0.1")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for name, role in state.get("roles", {}).items():
            address = f"{host}:{role['metrics_port']}" if role.get("metrics_port") else "(not reported yet)"
            health, partitions = "no answer", {}
            try:
                if not role.get("metrics_port"):
                    raise aiohttp.ClientError(address)
                async with session.get(f"http://{address}/healthz") as response:
                    body = await response.json()
                    problems = body.get("problems") or {}
                    health = body.get("status", "?") + (f" ({'; '.join(f'{k}: {v}' for k, v in problems.items())})" if problems else "")
                    partitions = body.get("partitions") or {}
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            last_exit = "-" if role.get("last_exit") is None else str(role["last_exit"])
            lines.append(f"  {name:<12} {role['pid']:>7} {role['state']:<10} {role['restarts']:>8} {last_exit:>9}  {address:<22} {health}")
            for where, numbers in sorted(partitions.items()):
                lines.append(f"      {where:<28} lag {numbers['lag']:>7}  last moved {numbers['last_moved_s']:.0f} s ago")
    return lines
