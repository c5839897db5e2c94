"""Kafka helpers and the session-wide worker for the integration tests."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import clients
from pipeline.model import UTC, RawEnvelope, encode_envelope
from tests.support.processes import WorkerProcess


async def produce(bootstrap: str, vendor: str, items: list[tuple[str | None, Any]], *, source: str = "test") -> None:
    """Send ``(key, payload)`` pairs to ``raw.<vendor>`` in order, as RawEnvelopes.

    A payload of type ``bytes`` is sent as it is (to test poison messages).
    """
    producer = clients.producer(bootstrap)
    await producer.start()
    try:
        topic = catalog.raw_topic(vendor)
        for key, payload in items:
            if isinstance(payload, bytes):
                value = payload
            else:
                value = encode_envelope(RawEnvelope(
                    vendor=vendor, source=source, received_at=datetime.now(UTC), payload=payload,
                ))
            await producer.send_and_wait(topic, value, key=key.encode() if key else None)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str, topic: str, want: Callable[[bytes | None, bytes], bool], *,
    count: int, timeout: float = 60.0,
) -> list[tuple[bytes | None, bytes]]:
    """Read ``topic`` from the start until ``count`` records match ``want``, then on to
    the end of every partition as it was at that moment (its fetch highwater), so an
    extra match already written is caught too. Never waits for quiet."""
    consumer = clients.consumer(bootstrap, topic, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout
    ends: dict[Any, int] | None = None
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if want(record.key, record.value):
                        found.append((record.key, record.value))
            if ends is None and len(found) >= count:
                ends = {tp: consumer.highwater(tp) or 0 for tp in consumer.assignment()}
            if ends is not None and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                break
    finally:
        await consumer.stop()
    return found


async def group_members(bootstrap: str, group: str) -> list[str]:
    """The member ids the broker lists for consumer group ``group``."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        [answer] = await admin.describe_consumer_groups([group])  # one group a request (docs/design.md, "Tansu")
    finally:
        await admin.close()
    [(error_code, _group, _state, _protocol_type, _protocol, members)] = answer.groups
    assert error_code == 0, f"DescribeGroups for {group} answered error {error_code}"
    return [member[0] for member in members]


def decode(value: bytes) -> dict[str, Any]:
    return msgspec.json.decode(value)


def truenas_probe(job_id: int) -> dict[str, Any]:
    return {
        "id": job_id, "method": "probe.job", "state": "SUCCESS",
        "time_started": {"$date": 1_700_000_000_000}, "time_finished": {"$date": 1_700_000_001_000},
        "progress": {"percent": 100, "description": "done", "extra": None},
    }


async def wait_until_processing(bootstrap: str, source: str, timeout: float = 120.0) -> float:
    """Send a probe job until the worker turns it into an event; return seconds taken."""
    started = time.monotonic()
    job_id = int(uuid.uuid4().int % 1_000_000_000)
    await produce(bootstrap, "truenas", [(f"probe-{job_id}", truenas_probe(job_id))], source=source)
    key = f"truenas:{source}:probe.job".encode()
    found = await collect(
        bootstrap, catalog.EVENTS, lambda k, v: k == key, count=1, timeout=timeout,
    )
    if not found:
        raise TimeoutError(f"the worker did not process a probe within {timeout:.0f} s")
    return time.monotonic() - started


@pytest.fixture(scope="session")
def worker(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> WorkerProcess:
    """One worker for the session's scenario tests (each test uses its own sources). At
    INFO, so a test that waits in vain can show its joins, seeks and dropped fetches."""
    folder = tmp_path_factory.mktemp("worker")
    process = WorkerProcess(
        broker.bootstrap, "jobstream-test", folder / "data", folder / "worker.log", loglevel="info",
    ).start()
    try:
        asyncio.run(process.ready(broker.bootstrap))
    except (TimeoutError, RuntimeError) as exc:
        process.stop()
        pytest.fail(f"{exc}; the worker's log:\n{process.tail()}")
    yield process
    code = process.stop()
    assert code in (0, -15, None), f"worker exited with {code}; its log:\n{process.tail()}"


async def send_documents(bootstrap: str, vendor: str, docs: list[Any], *, source: str) -> None:
    """Send vendor documents as producers will: cut per job, keyed by job_key.

    ``bytes`` items are poison: sent raw (not even an envelope) under the key of the
    document before them, so they land in the same partition as the job they interrupt.
    """
    from pipeline import vendors

    ctx = vendors.Context(source=source, received_at=datetime.now(UTC))
    items: list[tuple[str | None, Any]] = []
    last_key: str | None = None
    for doc in docs:
        if isinstance(doc, bytes):
            items.append((last_key, doc))
            continue
        for job_key, piece in vendors.keyed_documents(vendor, doc, ctx):
            items.append((job_key, piece))
            last_key = job_key
    await produce(bootstrap, vendor, items, source=source)


async def transitions_of(bootstrap: str, vendor: str, source: str, *, count: int, timeout: float = 60.0) -> dict[str, list[tuple]]:
    """The transitions of one scenario's jobs, per run (native run id), in order.

    Deduplicated by transition_id, as every consumer downstream does: the restart and
    consumer-group tests run further workers that emit the same records again.
    """
    prefix = f"{vendor}:{source}:".encode()
    found = await collect(
        bootstrap, catalog.TRANSITIONS, lambda k, v: k is not None and k.startswith(prefix),
        count=count, timeout=timeout,
    )
    runs: dict[str, list[tuple]] = {}
    seen: set[str] = set()
    for _key, value in found:
        t = decode(value)
        if t["transition_id"] in seen:
            continue
        seen.add(t["transition_id"])
        flags = tuple(flag for flag in ("late", "duplicate", "illegal") if t[flag])
        runs.setdefault(t["run_key"].rsplit(":", 1)[1], []).append(  # the native id: the key's last part
            (t["from_state"], t["to_state"], t["cause"], t["attempt"], *flags)
        )
    return runs


async def dead_letters_of(
    bootstrap: str, vendor: str, *, source: str, count: int, timeout: float = 30.0,
    where: Callable[[dict[str, Any]], bool] = lambda _letter: True,
) -> list[dict[str, Any]]:
    """The dead letters of raw messages keyed ``vendor:source:...`` (a dead letter's own
    key is its id; the raw key is in ``key_b64``) for which ``where`` holds."""
    prefix = f"{vendor}:{source}:".encode()

    def of_source(_key: bytes | None, value: bytes) -> bool:
        try:
            letter = decode(value)
        except msgspec.DecodeError:  # another test's bytes on the topic
            return False
        raw_key = letter.get("key_b64")
        return raw_key is not None and base64.b64decode(raw_key).startswith(prefix) and where(letter)

    found = await collect(bootstrap, catalog.DEADLETTER, of_source, count=count, timeout=timeout)
    letters = {}
    for _key, value in found:
        letter = decode(value)
        letters.setdefault((letter["topic"], letter["partition"], letter["offset"]), letter)
    return list(letters.values())
