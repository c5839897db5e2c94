"""One module per vendor, each with the same small surface.

A vendor package ``pipeline/vendors/<name>/`` holds ``normalize.py``, which defines:

- ``VENDOR``: its name (also the suffix of its raw topic, ``raw.<name>``);
- ``STATES``: the native-to-canonical state table (every documented native value);
- ``normalize(doc, ctx=DEFAULT_CONTEXT) -> list[JobEvent]``: ``doc`` is the parsed JSON
  value or the raw text/bytes (which the module parses, tolerantly where the vendor
  needs it); raises ``Rejected`` with a one-line reason, never anything else;
- ``split(doc) -> list``: the document cut into pieces that each concern one job, so a
  producer can key each raw message by its job (see ``keyed_documents``).

Its ``__init__.py`` declares the vendor once (``VENDOR = Vendor(...)``, see ``registry``):
the CLI, ``pipeline run``, the demo, chaos and bench find it there. Adding a vendor means
adding one package here and one topic file in ``topics/``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pipeline.model import JobEvent
from pipeline.vendors._common import DEFAULT_CONTEXT, Context, Rejected
from pipeline.vendors.registry import names

VENDOR_NAMES: tuple[str, ...] = names()
"""Every vendor package's name, discovered (``registry.vendors()``)."""

__all__ = ["VENDOR_NAMES", "Context", "Rejected", "as_rejected", "get", "normalize", "keyed_documents", "stale_after_defaults"]


class UnknownVendor(KeyError):
    def __str__(self) -> str:
        return f"unknown vendor {self.args[0]!r}; known: {', '.join(VENDOR_NAMES)}"


def get(name: str) -> ModuleType:
    """The vendor module called ``name``."""
    module = _MODULES.get(name)
    if module is None:
        if name not in VENDOR_NAMES:
            raise UnknownVendor(name)
        module = _MODULES[name] = importlib.import_module(f"pipeline.vendors.{name}.normalize")
    return module


_MODULES: dict[str, ModuleType] = {}
"""Vendor modules imported so far: ``normalize`` runs once per raw record."""


def normalize(vendor: str, doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[JobEvent]:
    """Normalize with any failure inside the vendor module turned into ``Rejected``.

    The vendor modules are written to raise only ``Rejected``; this is the guard that
    keeps one unforeseen document from ever stopping a stream.
    """
    module = get(vendor)
    try:
        return module.normalize(doc, ctx)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - the guard is the point
        raise as_rejected(exc) from None


def as_rejected(exc: Exception) -> Rejected:
    """What ``normalize`` raises for a failure inside a vendor module that is not a
    ``Rejected`` (the stream calls the vendor's function directly and uses this too)."""
    if isinstance(exc, RecursionError):
        return Rejected("document nested too deeply")
    return Rejected(f"unexpected {type(exc).__name__}: {str(exc)[:200]}")


def keyed_documents(vendor: str, doc: Any, ctx: Context = DEFAULT_CONTEXT) -> list[tuple[str, Any]]:
    """Cut ``doc`` into ``(job_key, piece)`` pairs, one job per piece.

    Producers key raw messages by job so that one worker partition owns each job's
    state. The key is the ``job_key`` the normalizer itself gives the piece.
    """
    module = get(vendor)
    out: list[tuple[str, Any]] = []
    for piece in module.split(doc):
        events = normalize(vendor, piece, ctx)
        keys = {event.job_key for event in events}
        if len(keys) != 1:
            raise Rejected(f"a {vendor} piece concerns {len(keys)} jobs, expected exactly one")
        out.append((keys.pop(), piece))
    return out


def stale_after_defaults() -> dict[str, float]:
    """Each vendor's own default ``STALE_AFTER`` in seconds (a timedelta in its normalize
    module), where it declares one: what every process that runs the lifecycle (the
    worker, ``pipeline chaos``'s replay of it) puts under the environment and flags."""
    found = {}
    for name in VENDOR_NAMES:
        value = getattr(get(name), "STALE_AFTER", None)
        if value is not None:
            found[name] = value.total_seconds()
    return found
