"""What the ingestor tests share: reading one source's raw records back from Kafka,
waiting for a condition with a deadline, and `pipeline ingest` as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import catalog
from datetime import datetime, timedelta

from pipeline.model import UTC, decode_envelope
from pipeline.vendors._simulator import SimClock
from pipeline.kafka.reading import read_to_end


async def raw_records(bootstrap: str, vendor: str, source: str) -> list[tuple[str | None, Any]]:
    """Every non-heartbeat (key, payload) of ``source`` in ``raw.<vendor>``, read to the end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False,
    )
    await consumer.start()
    found: list[tuple[str | None, Any]] = []
    topic = catalog.raw_topic(vendor)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    try:
        async for record in read_to_end(consumer, partitions):
            envelope = decode_envelope(record.value)
            if envelope.source == source and not envelope.heartbeat:
                found.append((record.key.decode() if record.key else None, envelope.payload))
    finally:
        await consumer.stop()
    return found


async def wait_for(condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class IngestProcess:
    """``pipeline ingest <vendor> --config FILE`` as a child process (asyncio, so the
    simulator in the test's own loop keeps answering it)."""

    def __init__(self, command: list[str], config: Path, bootstrap: str, log: Path, env: dict[str, str]) -> None:
        self.args = [sys.executable, "-m", "pipeline", "ingest", *command, "--config", str(config), "--bootstrap", bootstrap]
        self.log = log
        self.env = {**os.environ, **env}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> "IngestProcess":
        output = open(self.log, "ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdout=output, stderr=output, stdin=asyncio.subprocess.DEVNULL, env=self.env,
        )
        output.close()
        return self

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def past_clock(factor: float) -> SimClock:
    """A simulator clock whose vendor time starts two hours ago, so that even at a high
    factor it never runs ahead of real time: the session worker reads these raw topics
    too, and vendor times in the future would move its partitions' event time on."""
    return SimClock(factor=factor, epoch=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
