"""What the two push ingestors (Qlik Cloud webhooks, TrueNAS websocket) share.

A push ingestor cannot stop its sender while Kafka is away: the webhook receiver must
keep answering (503, so Qlik retries) and the TrueNAS ingestor must notice and resync
later. ``KafkaLink`` is a ``RawProducer`` that may be down: it is started on first use,
every send waits for acks=all within a deadline, and a failed producer is dropped so
the next send starts a fresh one. Nothing is taken as sent unless Kafka acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from aiokafka.errors import KafkaError

from pipeline.ops.logs import setup_logging
from pipeline.ops.stopping import stop_on_signals  # noqa: F401 - the push ingestors import it from here
from pipeline.sources import SOURCE_METRICS, RawProducer, Record, Redactor, SendReport

log = logging.getLogger("pipeline.ingest")

RETRY_CONNECT_S = 1.0
"""After a failed connect, the next attempt waits this long; callers meanwhile fail at once."""


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time (or could not be reached); nothing was confirmed."""


class KafkaLink:
    """One vendor's raw topic, reachable or not; ``source`` may change (TrueNAS boots)."""

    def __init__(
        self, bootstrap: str, vendor: str, source: str, *, ack_timeout_s: float = 10.0,
        client_id: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.vendor = vendor
        self._source = source
        self.ack_timeout_s = ack_timeout_s
        self.client_id = client_id
        self._producer: RawProducer | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0
        self.last_error: str | None = None
        self._metrics = SOURCE_METRICS.get()

    @property
    def source(self) -> str:
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        self._source = value
        if self._producer is not None:
            self._producer.source = value

    def _fail_fast(self) -> None:
        """Right after a failed connect, callers fail at once instead of queueing for
        another attempt (a webhook sender must get its 503 quickly)."""
        if self._producer is None and asyncio.get_running_loop().time() < self._down_until:
            raise KafkaUnavailable(f"Kafka at {self.bootstrap} did not acknowledge: {self.last_error}")

    async def _ready(self) -> RawProducer:
        self._fail_fast()
        async with self._lock:
            self._fail_fast()
            if self._producer is None:
                producer = RawProducer(
                    self.bootstrap, self.vendor, self._source, client_id=self.client_id,
                    request_timeout_s=self.ack_timeout_s,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.ack_timeout_s)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    await _quietly_stop(producer)
                    self._down_until = asyncio.get_running_loop().time() + RETRY_CONNECT_S
                    raise self._failed(exc) from None
                self._producer = producer
                self.last_error = None
            return self._producer

    def _failed(self, exc: BaseException) -> KafkaUnavailable:
        self.last_error = str(exc) or type(exc).__name__
        return KafkaUnavailable(f"Kafka at {self.bootstrap} did not acknowledge: {self.last_error}")

    async def _drop(self, producer: RawProducer) -> None:
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        await _quietly_stop(producer)

    async def connect(self) -> None:
        """Start the producer if it is not running, or raise ``KafkaUnavailable``."""
        await self._ready()

    async def send(self, records: Sequence[Record]) -> SendReport:
        """Send and wait for every acknowledgement, or raise ``KafkaUnavailable``."""
        try:
            producer = await self._ready()
            report = await self._send(producer, records)
        except KafkaUnavailable as exc:
            if self._metrics is not None:
                self._metrics.polled(False, error=str(exc))
            raise
        if self._metrics is not None:
            self._metrics.polled(True, topic=producer.topic, sent=report.sent)
        return report

    async def _send(self, producer: RawProducer, records: Sequence[Record]) -> SendReport:
        try:
            return await asyncio.wait_for(producer.send(records), self.ack_timeout_s)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            error = self._failed(exc)
            await self._drop(producer)
            raise error from None

    async def heartbeat(self, at: datetime | None = None) -> int:
        """One heartbeat per raw partition (docs/records.md), or ``KafkaUnavailable``."""
        producer = await self._ready()
        try:
            sent = await asyncio.wait_for(producer.heartbeat(at), self.ack_timeout_s)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            error = self._failed(exc)
            await self._drop(producer)
            raise error from None
        if self._metrics is not None:
            self._metrics.acknowledged()  # a quiet receiver is healthy while Kafka takes its heartbeats
        return sent

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer)


async def _quietly_stop(producer: RawProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5.0)
    except Exception as exc:  # noqa: BLE001 - a producer that failed may fail to stop too
        log.debug("stopping a failed producer: %s", exc)


def log_to_stderr(redact: Redactor, level: int = logging.INFO) -> None:
    """One line per log record on stderr, every line through ``redact``."""
    setup_logging(level=level, redact=redact, logger="pipeline", datefmt="%H:%M:%S")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means all interfaces) -> (host, port), or ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)
