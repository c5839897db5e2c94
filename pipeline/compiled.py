"""The worker's hot modules, and whether this installation runs them compiled.

A wheel build (``pip install .``) compiles these modules with Cython when it can
(``setup.py``): the same source, about 1.4x fewer CPU seconds per raw record for the
worker's own work (docs/design.md, "Compiled hot modules"). Without a C compiler, and
always for an editable install, they stay pure Python: same outputs, slower. ``setup.py``
reads this file with ``runpy`` before the package is installed, so it imports nothing of
the package.
"""

from __future__ import annotations

import glob
import importlib
import importlib.machinery
import os

HOT_MODULES = (
    "pipeline/model.py",
    "pipeline/lifecycle.py",
    "pipeline/stream/core.py",
    "pipeline/stream/records.py",
    "pipeline/stream/state.py",
    "pipeline/vendors/_common.py",
    "pipeline/vendors/*/normalize.py",  # a new vendor's normalizer is compiled without an edit here
)
"""Paths (globs) from the directory that holds ``pipeline/``: what the profile of the
worker's own work is made of (normalize, lifecycle, the core and its records)."""


def hot_modules(root: str) -> list[tuple[str, str]]:
    """(module name, path relative to ``root``) of each hot module found under ``root``."""
    found = []
    for pattern in HOT_MODULES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            relative = os.path.relpath(path, root)
            found.append((relative[: -len(".py")].replace(os.sep, "."), relative))
    return found


def compiled() -> dict[str, bool]:
    """Each hot module of the running installation: True when it was loaded compiled."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return {
        name: str(getattr(importlib.import_module(name), "__file__", "")).endswith(suffixes)
        for name, _path in hot_modules(root)
    }


def summary() -> str:
    """One line for people: how many hot modules run compiled."""
    status = compiled()
    if not status:
        return "hot modules: none found beside the package (their .py files are missing): compiled or not, unknown"
    count = sum(status.values())
    if count == len(status):
        return f"hot modules compiled (Cython): {count} of {len(status)}"
    if count == 0:
        return f"hot modules pure Python: 0 of {len(status)} compiled (an editable install, JOBSTREAM_PURE_PYTHON=1, or no C compiler at build)"
    pure = ", ".join(name for name, done in status.items() if not done)
    return f"hot modules compiled (Cython): {count} of {len(status)}; pure Python: {pure}"
