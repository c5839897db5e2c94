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

from pipeline.errors import JobstreamError

KNOWN_VERSIONS = ("0.15.",)
_COMMITTED = "_committed_offset"
"""faust-streaming releases whose ``_current_event`` is a ContextVar of a weakref."""


class UnsupportedFaust(JobstreamError, RuntimeError):
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
    check_consumer(version)


def check_consumer(version: str, consumer: type | None = None) -> None:
    """The consumer attributes ``committed_offset``, ``seek_back`` and ``drop_early``
    rely on (declared on Faust's Consumer class)."""
    if consumer is None:
        from faust.transport.consumer import Consumer as consumer
    declared = {name for klass in consumer.__mro__ for name in getattr(klass, "__annotations__", {})}
    missing = [name for name in (_COMMITTED, "_gap", "_unacked_messages") if name not in declared]
    if missing or not hasattr(consumer, "seek"):
        raise UnsupportedFaust(
            f"faust-streaming {version}: its consumer has no {', '.join(missing) or 'seek'} "
            "(the worker's gap check reads them); install faust-streaming>=0.15.3,<0.16"
        )


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
    private ``_committed_offset``), or None when it has none. Faust's ``perform_seek``
    stores a committed 0 as None, and in a rebalance its cache can lag the group, so None
    means "not known here": the caller asks the broker (gaps.GapProbe.committed) and checks
    from the log start only when the group has nothing committed. A consumer without the attribute
    is refused, never read as "nothing committed" (that would switch the check off)."""
    offsets = getattr(app.consumer, _COMMITTED, None)
    if offsets is None:
        raise UnsupportedFaust(f"faust-streaming {faust.__version__}: its consumer has no {_COMMITTED}")
    value = offsets.get(tp)
    return value if isinstance(value, int) and value >= 0 else None


async def seek_back(app: faust.App, tp: Any, offset: int) -> None:
    """Read ``tp`` again from ``offset``, and withdraw the gap Faust recorded there (it
    would let a commit pass the records about to come again)."""
    await app.consumer.seek(tp, offset)
    gaps = getattr(app.consumer, "_gap", {})
    if tp in gaps:
        gaps[tp].chop(offset, 1 << 62)


def drop_early(app: faust.App, events: list[Any]) -> None:
    """Keep Faust from acknowledging ``events`` (records that came before the ones
    skipped): an acknowledged one would let a commit pass the skipped records. They are
    marked done without entering the consumer's acknowledged offsets."""
    unacked = getattr(app.consumer, "_unacked_messages", None)
    for event in events:
        event.message.acked = True
        if unacked is not None:
            unacked.discard(event.message)
