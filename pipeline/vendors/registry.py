"""The vendor registry: every package under ``pipeline/vendors/`` that declares ``VENDOR``.

Each vendor package's ``__init__.py`` declares itself once with a ``Vendor``; everything
that lists vendors (the CLI's ``ingest``/``simulate`` commands, ``pipeline run``, the demo,
chaos, bench, settings) iterates over ``vendors()``. The declaration names modules and
attributes as strings (``"module:attribute"``), imported on use, so reading the registry
imports only the small ``__init__`` files and ``pipeline.settings`` stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import resources
from pathlib import Path
from dataclasses import dataclass, field
from functools import cache
from collections.abc import Callable
from typing import Any, Literal

PACKAGE = "pipeline.vendors"


def load(reference: str) -> Any:
    """The object a ``"package.module:attribute"`` string names, imported now."""
    module, _, attribute = reference.partition(":")
    found: Any = importlib.import_module(module)
    for part in filter(None, attribute.split(".")):
        found = getattr(found, part)
    return found


@dataclass(frozen=True, slots=True)
class DemoProcess:
    """One process a push vendor adds to ``pipeline demo``: ``pipeline <args>`` with ``env``;
    ``listens_as``: it listens on a port of its own choosing (give it ``{listen:<alias>}``),
    others start once it does and name that port ``DemoContext.port(alias)``; ``one_shot``:
    it ends by itself."""

    name: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    listens_as: str | None = None
    one_shot: bool = False


@dataclass(frozen=True, slots=True)
class DemoContext:
    """What a vendor's demo processes are built from: the broker, the port a process that
    ``listens_as`` an alias reported (a placeholder the supervisor fills in when the process
    that needs it starts), the demo's length and its vendor clock factor."""

    bootstrap: str
    port: Callable[[str], str]
    duration_s: float
    clock_factor: int


@dataclass(frozen=True, slots=True)
class Vendor:
    """One vendor, declared once in its package's ``__init__.py``.

    ``name`` is the package name and the raw topic's suffix (``raw.<name>``); ``command``
    (the name with dashes) names its CLI commands and its role in ``pipeline run``.
    """

    name: str
    kind: Literal["push", "pull"]
    added: int
    """Its place in the order vendors were added (1, 2, ...): every vendor list follows it, so
    a seeded workload, hostile input or chaos plan stays the same when a vendor is added."""
    ingest_help: str
    """First line of ``pipeline ingest <command> --help`` for a generated pull command."""
    simulate_help: str = ""
    ingest_command: str | None = None
    """``module:function`` of a hand-written ``pipeline ingest`` command; None: the generic
    pull command (``--config``, ``--bootstrap``, ``--metrics-port``) is generated."""
    simulate_command: str | None = None
    """``module:function`` of a hand-written ``pipeline simulate`` command; None for a pull
    vendor: the generic simulator command (``--port``, ``--faults`` ...) is generated."""
    settings: str | None = None
    """Pull vendors: ``module:Class`` of the ingestor's settings, read from ``[<name>]``."""
    simulator: str | None = None
    """Pull vendors: ``module:function`` building the demo simulator (``demo_simulator``)."""
    run_command: str | None = None
    """Push vendors: ``module:function(table, settings, problems) -> argv tail`` that checks
    its ``[<name>]`` table for ``pipeline run`` and gives its ingest command's arguments."""
    demo_processes: str | None = None
    """Push vendors: ``module:function(DemoContext) -> list[DemoProcess]``, its receiver and
    its simulator in ``pipeline demo`` (pull vendors' are generated from the fields below)."""
    demo_faults: str = ""
    """Pull vendors: the faults its simulator injects in ``pipeline demo``."""
    demo_config: tuple[tuple[str, Any], ...] = ()
    """Pull vendors: its ``[<name>]`` table in the demo's TOML (besides ``base_url``)."""
    demo_secrets: tuple[tuple[str, str], ...] = ()
    """Environment the demo gives its ingestor (the simulator's own demo credentials)."""
    hostile: tuple[Any, ...] = ()
    """Documents its normalizer must reject: the demo's dead-letter path."""
    bench: str | None = None
    """``module:function(rng, job, run, start) -> list[Document]``: one run's documents."""
    role_names: tuple[str, ...] = field(default=())
    """Names of its ingesting roles in demo and chaos (default ``<command>-ingestor``)."""

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    @property
    def ingestor_role(self) -> str:
        return self.role_names[0] if self.role_names else f"{self.command}-ingestor"

    @property
    def simulator_role(self) -> str:
        return f"{self.command}-simulator"

    @property
    def topic(self) -> str:
        return f"raw.{self.name}"

    def normalizer(self) -> Any:
        return importlib.import_module(f"{PACKAGE}.{self.name}.normalize")

    def sample_folder(self) -> Path:
        """Its bundled sample documents: the package's own ``samples/`` folder, else
        ``pipeline/samples/<name>/`` (where the first vendors keep theirs)."""
        own = Path(str(resources.files(f"{PACKAGE}.{self.name}") / "samples"))
        return own if own.is_dir() else Path(str(resources.files("pipeline") / "samples" / self.name))


@cache
def vendors() -> tuple[Vendor, ...]:
    """Every declared vendor in the order they were added (discovered: a new package needs no
    list edited)."""
    import pipeline.vendors as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        declared = getattr(importlib.import_module(f"{PACKAGE}.{info.name}"), "VENDOR", None)
        if not isinstance(declared, Vendor) or declared.name != info.name:
            raise TypeError(f"{PACKAGE}.{info.name} must declare VENDOR = Vendor({info.name!r}, ...)")
        found.append(declared)
    return tuple(sorted(found, key=lambda vendor: (vendor.added, vendor.name)))


def names() -> tuple[str, ...]:
    return tuple(vendor.name for vendor in vendors())


def by_name(name: str) -> Vendor:
    return {vendor.name: vendor for vendor in vendors()}[name]


def by_command(command: str) -> Vendor:
    return {vendor.command: vendor for vendor in vendors()}[command]


def of_kind(kind: str) -> tuple[Vendor, ...]:
    return tuple(vendor for vendor in vendors() if vendor.kind == kind)
