"""The one place that touches faust-streaming's private API.

The worker writes its table through the store directly (app.py says why). Faust's
RocksDB store picks the partition database of a write from the *current event*, a
private context variable (``faust.streams._current_event``); ``take_events`` batches
have none. ``current_event`` sets it around one write. Its shape is checked for the
faust-streaming versions below; any other version is refused at start with one line,
instead of corrupting the store later.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import faust

KNOWN_VERSIONS = ("0.15.",)
"""faust-streaming releases whose ``_current_event`` is a ContextVar of a weakref."""


class UnsupportedFaust(RuntimeError):
    """The installed faust-streaming is one this adapter was not checked against."""


def check_version(version: str | None = None) -> None:
    version = faust.__version__ if version is None else version
    if not version.startswith(KNOWN_VERSIONS):
        raise UnsupportedFaust(
            f"faust-streaming {version} is not supported (known: {', '.join(v + 'x' for v in KNOWN_VERSIONS)}): "
            "the worker sets its private _current_event; install faust-streaming>=0.15.3,<0.16"
        )
    from faust import streams

    if not hasattr(streams, "_current_event") or not hasattr(streams._current_event, "set"):
        raise UnsupportedFaust(f"faust-streaming {version} has no faust.streams._current_event context variable")


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (for the store's partition) while inside
    (None: no current event, enough for deletes, which look in every partition)."""
    from faust.streams import _current_event

    token = _current_event.set(None if event is None else weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def committed_offset(app: faust.App, tp: Any) -> int | None:
    """The next offset of ``tp`` as Faust's consumer last committed or sought it (its
    private ``_committed_offset``), or None when it has none."""
    offsets = getattr(app.consumer, "_committed_offset", None) or {}
    value = offsets.get(tp)
    return value if isinstance(value, int) and value >= 0 else None
