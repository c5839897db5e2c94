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
