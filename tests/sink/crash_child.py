"""A sink that SIGKILLs itself at one point of the commit protocol (consumer.py's table).

Run as ``python -m tests.sink.crash_child DB BOOTSTRAP POINT``; POINT is one of
``after_assign`` (steps 1-2 done), ``before_write`` (steps 3-4 done: a batch fetched and
decoded, nothing written), ``before_commit`` (rows and offsets inserted, COMMIT not run),
``after_commit`` (the first batch committed). A real SIGKILL: no ``finally`` runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.writer import DuckDBWriter
from tests.support.crash import CrashesAt, die


class CrashingWriter(CrashesAt, DuckDBWriter):
    def __init__(self, path: Path, point: str) -> None:
        super().__init__(path)
        self.point = point

    def read_offsets(self):
        offsets = super().read_offsets()
        if self.point == "after_assign":
            asyncio.get_running_loop().call_soon(die)  # at consume()'s next await: before any fetch
        return offsets


def main() -> None:
    db, bootstrap, point = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = Settings(bootstrap=bootstrap, db_path=Path(db), sink_batch_max=int(os.environ.get("BATCH", "50")))
    writer = CrashingWriter(Path(db), point).open()
    asyncio.run(consume(settings, writer, stop=asyncio.Event()))


if __name__ == "__main__":
    main()
