"""pipeline/ops/stopping.py: a real SIGTERM sets a role's stop event and ends its sleep."""

from __future__ import annotations

import asyncio
import os
import signal

from pipeline.ops.stopping import sleep_unless, stop_on_signals


async def test_sigterm_sets_the_stop_event_and_ends_a_sleep_at_once():
    loop = asyncio.get_running_loop()
    stop = stop_on_signals(asyncio.Event())
    try:
        sleeper = asyncio.create_task(sleep_unless(stop, 600))
        await asyncio.sleep(0)  # let the sleeper start waiting
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(sleeper, 10) is True
        assert stop.is_set()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def test_a_sleep_nobody_stops_runs_its_time():
    assert await sleep_unless(asyncio.Event(), 0.01) is False
