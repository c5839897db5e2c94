"""All configuration in one typed object, read from ``JOBSTREAM_*`` environment variables
and overridden by command-line flags (flags win)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.vendors import VENDOR_NAMES

ENV_PREFIX = "JOBSTREAM_"
DEFAULT_STALE_AFTER_S = 240.0


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What every process reads. Defaults suit a local run against ``localhost:9092``.

    ``tansu`` turns on the workarounds for the embedded broker's ListOffsets bug
    (DESIGN.md): never needed, and never turned on, against real Kafka.
    """

    bootstrap: str = "localhost:9092"
    app_id: str = "jobstream"
    store: str = "rocksdb://"
    datadir: Path = Path("data/worker")
    partitions: int | None = None
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    stale_after_by_vendor: Mapping[str, float] = field(default_factory=dict)
    run_retention_s: float = 3600.0
    stale_retention_s: float = 7 * 86400.0
    vendor_tz: Mapping[str, str] = field(default_factory=dict)
    tansu: bool = False
    session_timeout_s: float = 8.0
    standby_replicas: int = 1
    batch_max: int = 1000
    batch_within_s: float = 0.05
    entry_cache_size: int = 50_000
    # Stream core bounds (issues 23 and 25): event-time trust and the size of state.
    max_clock_skew_s: float = 300.0
    max_finished_runs: int = 8
    max_runs_per_job: int = 100
    evicted_memory: int = 256
    forget_after_s: float = 7 * 86400.0
    max_entry_bytes: int = 64 * 1024
    max_record_bytes: int = 1_000_000

    def stale_after(self, vendor: str) -> timedelta:
        return timedelta(seconds=self.stale_after_by_vendor.get(vendor, self.stale_after_s))

    def tz(self, vendor: str) -> tzinfo:
        name = self.vendor_tz.get(vendor, "UTC")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise SettingsError(f"{ENV_PREFIX}TZ_{vendor.upper()}={name!r} is not a time zone") from None

    @property
    def run_retention(self) -> timedelta:
        """Finished runs leave the worker's table this long (event time) after their
        last event; their history lives downstream."""
        return timedelta(seconds=self.run_retention_s)

    @property
    def stale_retention(self) -> timedelta:
        """STALE runs silent this long leave too: a run that never resumes must not
        keep state forever (its last record, STALE, is already downstream)."""
        return timedelta(seconds=self.stale_retention_s)

    @property
    def max_clock_skew(self) -> timedelta:
        """How far a vendor time may run ahead of ``received_at`` (and ``received_at``
        ahead of the Kafka record timestamp) and still move event time."""
        return timedelta(seconds=self.max_clock_skew_s)

    @property
    def forget_after(self) -> timedelta:
        """A job with no runs left is deleted this long (event time) after its last
        eviction; until then it remembers its evicted runs."""
        return timedelta(seconds=self.forget_after_s)

    def with_overrides(self, **overrides: object) -> "Settings":
        """A copy with the flags that were given (``None`` means "not given")."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or f.name in ("stale_after_by_vendor", "vendor_tz"):
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        stale = {}
        zones = {}
        for vendor in VENDOR_NAMES:
            raw = env.get(f"{ENV_PREFIX}STALE_AFTER_{vendor.upper()}")
            if raw is not None:
                stale[vendor] = _convert(f"stale_after_{vendor}", "float", raw)
            if f"{ENV_PREFIX}TZ_{vendor.upper()}" in env:
                zones[vendor] = env[f"{ENV_PREFIX}TZ_{vendor.upper()}"]
        settings = cls(**values, stale_after_by_vendor=stale, vendor_tz=zones)
        for vendor in zones:
            settings.tz(vendor)
        return settings


def _convert(name: str, kind: object, raw: str) -> object:
    kind = str(kind)
    try:
        if "bool" in kind:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if "Path" in kind:
            return Path(raw)
        if kind.startswith("int"):
            value: object = int(raw)
        elif kind.startswith("float"):
            value = float(raw)
        else:
            return raw
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    if isinstance(value, (int, float)) and value < 0:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} must not be negative")
    return value
