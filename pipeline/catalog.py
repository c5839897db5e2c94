"""The topic catalog: ``topics/*.toml``, one file per topic, read once.

Code asks the catalog for topic names (``catalog.raw_topic("zuora")``, ``catalog.EVENTS``)
instead of writing string literals, and ``pipeline topics apply`` makes a broker match it.
The folder ``topics/`` at the top of the repository is installed as ``pipeline.topics``.
"""

from __future__ import annotations

from pipeline.errors import ConfigError

import asyncio
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

EVENTS = "jobs.events"
TRANSITIONS = "jobs.transitions"
RUNS = "jobs.runs"
DEADLETTER = "jobs.deadletter"
ALERTS = "jobs.alerts"
CURSORS = "ingest.cursors"
RAW_PREFIX = "raw."


class CatalogError(ConfigError):
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
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, **self.extra_config}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        if self.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(self.min_insync_replicas)
        return config

    def replicated(self, replication_factor: int | None = None, min_insync_replicas: int | None = None) -> "TopicSpec":
        """This topic with a deployment's replication (None keeps the catalog's): one
        broker of three lost loses nothing with 3 and min.insync.replicas 2."""
        return replace(
            self, replication_factor=replication_factor or self.replication_factor,
            min_insync_replicas=min_insync_replicas or self.min_insync_replicas,
        )


def changelog_replication(replication_factor: int | None = None) -> int:
    """The replication factor of the worker's changelog (its state): the deployment's,
    else the raw topics' in the catalog (the changelog follows their partitions)."""
    return replication_factor or max(topic(name).replication_factor for name in raw_topics())


def changelog_config(min_insync_replicas: int | None = None) -> dict[str, str]:
    """The changelog's topic settings beyond Faust's own: min.insync.replicas as the
    deployment's, else as the raw topics' in the catalog."""
    wanted = min_insync_replicas or max((topic(n).min_insync_replicas or 0) for n in raw_topics())
    return {"min.insync.replicas": str(wanted)} if wanted else {}


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
    for key in ("replication_factor", "min_insync_replicas"):
        if key in data and (type(data[key]) is not int or data[key] < 1):
            raise CatalogError(f"{filename}: '{key}' must be a positive integer")
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


def config_mismatches(spec: TopicSpec, broker_config: dict[str, str | None]) -> list[str]:
    """One line per setting the catalog states that the broker's topic does not have.

    Real Kafka describes every setting (defaults included); Tansu only those given at
    creation, so a stated setting it lacks is reported as left to the broker's default.
    """
    lines = []
    for name, wanted in sorted(spec.config.items()):
        have = broker_config.get(name)
        if have is None:
            lines.append(f"{spec.name}: {name} is not set on the broker (its default applies), {wanted} in the catalog")
        elif _canonical(name, have) != _canonical(name, wanted):
            lines.append(f"{spec.name}: {name} is {have} on the broker, {wanted} in the catalog")
    return lines


def _canonical(name: str, value: str) -> object:
    if name == "cleanup.policy":
        return frozenset(part.strip() for part in value.split(","))
    return value.strip()


def replication_mismatches(replicas: dict[str, int], want: dict[str, int]) -> list[str]:
    """One line per topic whose replication factor on the broker differs from ``want``."""
    return [f"{name}: replication factor {replicas[name]} on the broker, {wanted} in the catalog"
            for name, wanted in sorted(want.items()) if name in replicas and replicas[name] != wanted]


def partition_mismatches(counts: dict[str, int], want: dict[str, int]) -> list[str]:
    """One line per topic whose partition count on the broker differs from ``want``."""
    lines = []
    for name, wanted in sorted(want.items()):
        have = counts.get(name)
        if have is None:
            lines.append(f"{name} does not exist on the broker (run: pipeline topics apply)")
        elif have != wanted:
            lines.append(f"{name}: {have} partitions on the broker, {wanted} expected")
    return lines


async def apply(bootstrap: Any, *, timeout: float = 10.0, partitions: int | None = None,
                replication_factor: int | None = None, min_insync_replicas: int | None = None) -> ApplyReport:
    """Create the catalog's missing topics on ``bootstrap`` (an address, a
    ``clients.Connection`` or the settings); report every mismatch of the topics already
    there (partition count, replication factor and each setting the catalog states).

    Idempotent like a migration: a second run creates nothing. Existing topics are
    never changed automatically (new partition counts would move keys between
    partitions; changed settings are the operator's call).
    ``partitions`` overrides the catalog's count for every topic (tests, demos);
    ``replication_factor`` and ``min_insync_replicas`` its replication (a deployment's).
    """
    specs = [s.replicated(replication_factor, min_insync_replicas) for s in load().values()]
    by_name = {s.name: s for s in specs}
    want = {s.name: partitions or s.partitions for s in specs}
    async with _admin(bootstrap, timeout) as admin:
        from aiokafka.admin import NewTopic

        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await asyncio.wait_for(
                admin.create_topics([
                    NewTopic(s.name, want[s.name], s.replication_factor, topic_configs=s.config)
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
            counts = await _partition_counts(admin, present, timeout)
            mismatched.extend(
                line.replace(" expected", " in the catalog")
                for line in partition_mismatches(counts, {name: want[name] for name in present})
            )
            replicas = await _replication_factors(admin, present, timeout)
            mismatched.extend(replication_mismatches(replicas, {n: by_name[n].replication_factor for n in present}))
            configs = await _configs(admin, present, timeout)
            for name in present:
                mismatched.extend(config_mismatches(by_name[name], configs.get(name, {})))
        return ApplyReport([s.name for s in missing], present, mismatched)


async def raw_partition_problems(bootstrap: Any, partitions: int | None, *, timeout: float = 10.0) -> list[str]:
    """What stops a worker from starting: a raw topic missing, or with another
    partition count than the worker's table (``partitions``, else the catalog's)."""
    table = partitions or topic(raw_topics()[0]).partitions  # as stream.app.create_app
    want = {name: table for name in raw_topics()}
    async with _admin(bootstrap, timeout) as admin:
        counts = await _partition_counts(admin, list(want), timeout)
    return partition_mismatches(counts, want)


@asynccontextmanager
async def _admin(bootstrap: Any, timeout: float) -> AsyncIterator[Any]:
    from pipeline.kafka import clients

    admin = clients.admin(bootstrap, request_timeout_ms=int(timeout * 1000), client_id="jobstream-topics")
    try:
        await asyncio.wait_for(admin.start(), timeout)
        yield admin
    finally:
        await admin.close()


async def _partition_counts(admin: Any, names: list[str], timeout: float) -> dict[str, int]:
    described = await asyncio.wait_for(admin.describe_topics(names), timeout)
    return {info["topic"]: len(info["partitions"]) for info in described if info.get("error_code", 0) == 0}


async def _replication_factors(admin: Any, names: list[str], timeout: float) -> dict[str, int]:
    """Each topic's replication factor: the most replicas any of its partitions has."""
    described = await asyncio.wait_for(admin.describe_topics(names), timeout)
    return {info["topic"]: max((len(p.get("replicas") or []) for p in info["partitions"]), default=0)
            for info in described if info.get("error_code", 0) == 0 and info["partitions"]}


async def _configs(admin: Any, names: list[str], timeout: float) -> dict[str, dict[str, str | None]]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    responses = await asyncio.wait_for(
        admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names]), timeout,
    )
    found: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            if error_code != 0:
                raise CatalogError(f"describing {name}'s settings failed: error {error_code} {error_message or ''}".strip())
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found
