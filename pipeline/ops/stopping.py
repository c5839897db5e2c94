"""Stopping a role cleanly: SIGINT and SIGTERM set a stop event the loop checks between
batches, and a sleep ends early when that event is set. No imports beyond the standard
library, so any layer may use it."""

from __future__ import annotations

import asyncio
import signal


def stop_on_signals(stop: asyncio.Event) -> asyncio.Event:
    """SIGINT and SIGTERM set ``stop`` (call from inside the running loop); returns it."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    except asyncio.TimeoutError:
        return False
    return True


class StopRequested(KeyboardInterrupt):
    """SIGTERM (a service manager's stop) or SIGINT: a stop someone asked for, handled
    where Ctrl-C is (a KeyboardInterrupt), so the command stops its work and exits 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_stop_signals() -> None:
    """In a synchronous command (``pipeline run``): SIGTERM and SIGINT raise ``StopRequested``
    in the main thread (Python's default for SIGTERM ends the process on the spot, 143)."""

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stop_requested)


def _raise_stop_requested(signum: int, frame: object) -> None:
    raise StopRequested(signum)


def hold_stop_signals() -> None:
    """While stopping: a second SIGTERM or Ctrl-C must not cut the stop short (only where
    ``raise_on_stop_signals`` set the handlers, so an in-process caller keeps its own)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is _raise_stop_requested:
            signal.signal(signum, signal.SIG_IGN)
