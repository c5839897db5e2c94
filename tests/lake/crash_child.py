"""A lake sink of a consumer group that SIGKILLs itself at one point of the lake's commit
protocol (pipeline/sink/lake.py's table).

``python -m tests.lake.crash_child CATALOG DATA_PATH BOOTSTRAP GROUP POINT``; POINT is
``after_assign`` (steps 1-2: partitions claimed and sought), ``before_write`` (3-4: a batch
fetched and decoded), ``before_commit`` (5b: rows and offsets inserted, COMMIT not run) or
``after_commit`` (the first batch committed). A real SIGKILL: no ``finally`` runs.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pipeline.settings import Settings
from pipeline.sink.consumer import consume
from pipeline.sink.lake import LakeTarget, LakeWriter
from tests.support.crash import CrashesAt, die


class CrashingLakeWriter(CrashesAt, LakeWriter):
    def __init__(self, target: LakeTarget, point: str) -> None:
        super().__init__(target)
        self.point = point

    def claim(self, partitions):
        stored = super().claim(partitions)
        if self.point == "after_assign":
            die()
        return stored


def main() -> None:
    catalog, data_path, bootstrap, group, point = sys.argv[1:6]
    settings = Settings(bootstrap=bootstrap, sink_batch_max=int(os.environ.get("BATCH", "50")), session_timeout_s=3)
    writer = CrashingLakeWriter(LakeTarget(catalog, data_path), point).open()
    asyncio.run(consume(settings, writer, stop=asyncio.Event(), group=group))


if __name__ == "__main__":
    main()
