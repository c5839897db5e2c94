"""A role's logging: one line per record on stderr, through the redactor when the role has
secrets, and aiokafka silenced (it logs every failed connection attempt; the roles say
once themselves what is wrong)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LINE_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def quiet_kafka_logs() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def setup_logging(
    *, level: int = logging.INFO, redact: Callable[[logging.LogRecord], bool] | None = None,
    logger: str = "", fmt: str = LINE_FORMAT, datefmt: str | None = None,
) -> logging.Logger:
    """Log ``logger`` (the root by default) to stderr, one line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    if redact is not None:
        handler.addFilter(redact)
    target = logging.getLogger(logger or None)
    target.handlers[:] = [handler]
    target.setLevel(level)
    if logger:
        target.propagate = False
    quiet_kafka_logs()
    return target
