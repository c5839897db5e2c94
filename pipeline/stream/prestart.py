"""What the worker checks before it starts (``pipeline worker``): a broker answers, every
raw topic has the partition count its table needs, its data folder can be made. Each
failure is a ``JobstreamError`` with one line; the CLI prints it and exits."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pipeline import catalog
from pipeline.errors import ConfigError, JobstreamError
from pipeline.kafka import clients
from pipeline.settings import Settings


class WorkerCannotStart(JobstreamError):
    """Kafka is unreachable or its raw topics do not fit the worker's table (exit 1)."""


def check_worker(settings: Settings) -> None:
    """Raise the first reason the worker cannot start with ``settings``; create its datadir."""
    from pipeline.kafka.probes import any_broker_answers

    if not any_broker_answers(settings.bootstrap, timeout=5, tls=settings.kafka_security().ssl_context()):
        raise WorkerCannotStart(f"cannot reach Kafka at {settings.bootstrap} (no broker answered within 5 s)")
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # for the check only: the worker itself logs what its clients say
    try:
        problems = asyncio.run(catalog.raw_partition_problems(settings, settings.partitions))
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        if settings.security_protocol != "PLAINTEXT":  # a refused certificate or password says so
            raise WorkerCannotStart(clients.unreachable(settings, exc)) from None
        raise WorkerCannotStart(f"cannot read the raw topics from {settings.bootstrap}: {exc or type(exc).__name__}") from None
    finally:
        kafka_log.setLevel(level)
    if problems:
        more = f"; {len(problems) - 1} more raw topics alike" if len(problems) > 1 else ""
        raise WorkerCannotStart(f"{problems[0]} (the worker's table needs that count on every raw topic: "
                                f"set --partitions / JOBSTREAM_PARTITIONS to match, or fix the topic){more}")
    try:
        Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use --datadir {settings.datadir}: {exc.strerror or exc}") from None
