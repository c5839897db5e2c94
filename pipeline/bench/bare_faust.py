"""The bare Faust baseline: one agent over the raw topics that does nothing per event.

Run as its own process (Faust owns its event loop and signals):

    python -m pipeline.bench.bare_faust --bootstrap H:P --count N --app-id ID

It consumes the same topics the worker does, in the same batches (``take_events`` with
the worker's batch settings), and prints one line ``bare-faust: N events in S s`` timed
from the end of its first batch to the last event (the first batch's events are not
counted), then exits. The worker's throughput is judged against
this line, measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import faust

from pipeline import catalog
from pipeline.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--app-id", default="jobstream-bench-bare")
    worker = Settings.from_env()  # the worker's own batch settings by default: the same batches on both sides
    parser.add_argument("--batch-max", type=int, default=worker.batch_max)
    parser.add_argument("--batch-within", type=float, default=worker.batch_within_s)
    args = parser.parse_args(argv)

    app = faust.App(
        args.app_id, broker=f"kafka://{args.bootstrap}", store="memory://",
        datadir=tempfile.mkdtemp(prefix="jobstream-bare-"), key_serializer="raw", value_serializer="raw",
        broker_session_timeout=8, broker_heartbeat_interval=2, consumer_auto_offset_reset="earliest",
        web_enabled=False, topic_disable_leader=True, stream_buffer_maxsize=args.batch_max * 4,
    )
    raw = app.topic(*catalog.raw_topics(), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = 0
    first: float | None = None
    first_batch = 0

    @app.agent(raw, name="bare")
    async def bare(stream: faust.StreamT) -> None:
        nonlocal seen, first, first_batch
        async for events in stream.take_events(args.batch_max, within=args.batch_within):
            seen += len(events)
            if first is None:  # timed from the end of the first batch: the rest is the rate
                first, first_batch = time.monotonic(), len(events)
            if seen >= args.count:
                print(f"bare-faust: {seen - first_batch} events in {time.monotonic() - first:.3f} s", flush=True)
                os._exit(0)

    faust.Worker(app, loglevel="warning", loop=_loop(), quiet=True).execute_from_commandline()


def _loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as the worker uses: the same loop for both sides of the ratio."""
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


if __name__ == "__main__":
    main()
