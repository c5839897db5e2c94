"""A real worker (``create_app``, Faust's worker, memory store) that counts the asyncio
tasks its event loop creates while it applies raw records, for ``test_drain``.

    python tests/stream/task_counting_worker.py BOOTSTRAP DATADIR APP_ID RECORDS

Once its core has processed RECORDS raw records it prints ``<records> <tasks>`` (every task
since start-up) and exits.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pipeline.settings import Settings
from pipeline.stream import app as worker_app


def main(bootstrap: str, datadir: str, app_id: str, records: int) -> None:
    settings = Settings(bootstrap=bootstrap, store="memory://", tansu=True, app_id=app_id, datadir=datadir)
    app = worker_app.create_app(settings)
    core = app.jobstream_core
    counted = {"records": 0, "tasks": 0}
    process = core.process

    def counting_process(messages):
        messages = list(messages)
        counted["records"] += len(messages)
        if counted["records"] >= records:
            print(counted["records"], counted["tasks"], file=sys.__stdout__, flush=True)  # Faust redirects sys.stdout
            os._exit(0)
        return process(messages)

    core.process = counting_process
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory(loop, coro, **kwargs):
        counted["tasks"] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    worker_app._Worker(app, loglevel="warning", loop=loop, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
