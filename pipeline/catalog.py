"""The topic catalog: ``topics/*.toml``, one file per topic, read once.

Code asks the catalog for topic names (``catalog.raw_topic("zuora")``, ``catalog.EVENTS``)
instead of writing string literals, and ``pipeline topics apply`` makes a broker match it.
The folder ``topics/`` at the top of the repository is installed as ``pipeline.topics``.
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

EVENTS = "jobs.events"
TRANSITIONS = "jobs.transitions"
RUNS = "jobs.runs"
DEADLETTER = "jobs.deadletter"
ALERTS = "jobs.alerts"
CURSORS = "ingest.cursors"
RAW_PREFIX = "raw."


class CatalogError(ValueError):
    """A topic file is malformed, or a name asked for is not in the catalog."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str = "delete"
    retention_ms: int | None = None
    description: str = ""
    key: str = ""
    value: str = ""
    replication: int = 1
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, **self.extra_config}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


def _parse(filename: str, text: str) -> TopicSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{filename}: {exc}") from None
    name, partitions = data.get("name"), data.get("partitions")
    if not isinstance(name, str) or not name:
        raise CatalogError(f"{filename}: 'name' must be a non-empty string")
    if f"{name}.toml" != filename:
        raise CatalogError(f"{filename}: file name must be '{name}.toml'")
    if type(partitions) is not int or partitions < 1:
        raise CatalogError(f"{filename}: 'partitions' must be a positive integer")
    if data.get("cleanup_policy", "delete") not in ("delete", "compact", "compact,delete"):
        raise CatalogError(f"{filename}: unknown cleanup_policy {data['cleanup_policy']!r}")
    known = {f.name for f in TopicSpec.__dataclass_fields__.values()}
    unknown = set(data) - known
    if unknown:
        raise CatalogError(f"{filename}: unknown keys {sorted(unknown)}")
    return TopicSpec(**data)


def _folder() -> Traversable:
    """``pipeline.topics`` when installed; the repository's ``topics/`` when the package
    is imported from a source checkout (where the two are not joined)."""
    try:
        return resources.files("pipeline.topics")
    except ModuleNotFoundError:
        return resources.files("pipeline").joinpath("..", "topics")


@cache
def load() -> dict[str, TopicSpec]:
    """Every topic of the catalog, by name."""
    folder = _folder()
    specs = [
        _parse(entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    ]
    return {spec.name: spec for spec in sorted(specs, key=lambda s: s.name)}


def topic(name: str) -> TopicSpec:
    try:
        return load()[name]
    except KeyError:
        raise CatalogError(f"topic {name!r} is not in the catalog (topics/{name}.toml)") from None


def raw_topic(vendor: str) -> str:
    return topic(RAW_PREFIX + vendor).name


def raw_topics() -> list[str]:
    return [name for name in load() if name.startswith(RAW_PREFIX)]


@dataclass(frozen=True, slots=True)
class ApplyReport:
    created: list[str]
    present: list[str]
    mismatched: list[str]  # human lines: "jobs.events: 3 partitions on the broker, 4 in the catalog"

    @property
    def ok(self) -> bool:
        return not self.mismatched


async def apply(bootstrap: str, *, timeout: float = 10.0, partitions: int | None = None) -> ApplyReport:
    """Create the catalog's missing topics on ``bootstrap``; report partition mismatches.

    Idempotent like a migration: a second run creates nothing. Partition counts are
    never changed automatically (that would move keys between partitions).
    ``partitions`` overrides the catalog's count for every topic (tests, demos).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    specs = list(load().values())
    want = {s.name: partitions or s.partitions for s in specs}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
        client_id="jobstream-topics",
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await asyncio.wait_for(
                admin.create_topics([
                    NewTopic(s.name, want[s.name], s.replication, topic_configs=s.config)
                    for s in missing
                ]),
                timeout,
            )
            for name, code, message in response.topic_errors:
                if code not in (0, 36):  # 36: created meanwhile by someone else
                    raise CatalogError(f"creating {name} failed: error {code} {message or ''}".strip())
        present = [s.name for s in specs if s.name in existing]
        mismatched = []
        if present:
            described = await asyncio.wait_for(admin.describe_topics(present), timeout)
            for info in described:
                have = len(info["partitions"])
                if have != want[info["topic"]]:
                    mismatched.append(
                        f"{info['topic']}: {have} partitions on the broker, "
                        f"{want[info['topic']]} in the catalog"
                    )
        return ApplyReport([s.name for s in missing], present, mismatched)
    finally:
        await admin.close()
