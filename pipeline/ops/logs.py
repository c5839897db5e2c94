"""A role's logging: one line per record on stderr (what a service manager collects:
journald, docker logs; rotation is theirs), through the redactor when the role has secrets,
and aiokafka silenced unless asked for (it logs every failed connection attempt; the roles
say once themselves what is wrong).

Every line starts with its time in UTC, ISO 8601 with milliseconds (``2026-12-05T18:57:15.123Z``).
``JOBSTREAM_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; default INFO) and ``JOBSTREAM_LOG_FORMAT``
(``text`` or ``json``: one object per line with time, level, logger, message) apply to every
role, and to the lines ``pipeline run`` itself says (``stamp``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

import orjson

from pipeline.errors import ConfigError

LINE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LEVEL_ENV = "JOBSTREAM_LOG_LEVEL"
FORMAT_ENV = "JOBSTREAM_LOG_FORMAT"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class LogSettingError(ConfigError):
    """``JOBSTREAM_LOG_LEVEL`` or ``JOBSTREAM_LOG_FORMAT`` holds a value no role understands."""


def utc_time(created: float) -> str:
    """``created`` (epoch seconds) as UTC ISO 8601 with milliseconds and ``Z``."""
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UtcFormatter(logging.Formatter):
    """``%(asctime)s`` in UTC ISO 8601 (the standard Formatter writes local time, no zone)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return utc_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"time": utc_time(record.created), "level": record.levelname, "logger": record.name,
                    "message": record.getMessage()}
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def log_level(env: Mapping[str, str] | None = None, default: int = logging.INFO) -> int:
    """The level ``JOBSTREAM_LOG_LEVEL`` names (``default`` when unset)."""
    value = (os.environ if env is None else env).get(LEVEL_ENV, "").strip().upper()
    if not value:
        return default
    if value not in LEVELS:
        raise LogSettingError(f"{LEVEL_ENV}={value!r}: choose one of {', '.join(LEVELS)}")
    return getattr(logging, value)


def json_wanted(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(FORMAT_ENV, "").strip().lower() or "text"
    if value not in ("text", "json"):
        raise LogSettingError(f"{FORMAT_ENV}={value!r}: choose text or json")
    return value == "json"


def formatter(fmt: str = LINE_FORMAT) -> logging.Formatter:
    """The formatter the environment asks for: JSON, or ``fmt`` with UTC times."""
    return JsonFormatter() if json_wanted() else UtcFormatter(fmt)


def stamp(line: str, level: str = "INFO") -> str:
    """A line said by a command itself (``pipeline run``'s supervisor), shaped as its roles' lines."""
    record = logging.LogRecord("pipeline", getattr(logging, level), "", 0, line, None, None)
    return formatter().format(record)


def quiet_kafka_logs() -> None:
    if log_level() > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def setup_logging(
    *, level: int | None = None, redact: Callable[[logging.LogRecord], bool] | None = None,
    logger: str = "", fmt: str = LINE_FORMAT, datefmt: str | None = None,
) -> logging.Logger:
    """Log ``logger`` (the root by default) to stderr, one line per record; the level is
    ``JOBSTREAM_LOG_LEVEL`` when set, else ``level`` (INFO). ``datefmt`` is ignored: every
    time is UTC ISO 8601."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    if redact is not None:
        handler.addFilter(redact)
    target = logging.getLogger(logger or None)
    target.handlers[:] = [handler]
    target.setLevel(log_level(default=level if level is not None else logging.INFO))
    if logger:
        target.propagate = False
    quiet_kafka_logs()
    return target
