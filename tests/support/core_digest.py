"""Run as a script (``python -P core_digest.py DOCS BAD``): the worker's core over a fixed
input, printed as one JSON line with a digest of every output record and table write.

tests/test_compiled.py runs it once on the pure-Python source and once on the compiled
wheel: the same digest means the compiled hot modules behave as their source does. The
input: ``DOCS`` documents of the bench workload (every vendor, happy paths, retries,
stale runs) and ``BAD`` hostile records (what the chaos run sends: each must be refused).
"""

from __future__ import annotations

import hashlib
import sys

import orjson

from pipeline import catalog, compiled
from pipeline.bench import core_stage, workload
from pipeline.chaos.hostile import Generator
from pipeline.settings import Settings
from pipeline.stream.core import Batch, StreamCore
from pipeline.stream.records import Message


def digest(docs: int, bad: int) -> dict[str, object]:
    settings = Settings()
    digest = hashlib.sha256()
    counts = {"outputs": 0, "writes": 0}

    def fold(batch: Batch, table: dict[bytes, bytes]) -> None:
        for output in batch.outputs:
            digest.update(orjson.dumps([output.topic, output.key, output.value, output.partition], default=bytes.hex))
        for key, (partition, value) in sorted(batch.writes.items()):
            digest.update(orjson.dumps([key, partition, value], default=bytes.hex))
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        counts["outputs"] += len(batch.outputs)
        counts["writes"] += len(batch.writes)

    table: dict[bytes, bytes] = {}
    core = StreamCore(settings, lookup=table.get, entries=table.items)
    messages = core_stage.raw_messages(workload.documents(docs, seed=7))
    for begin in range(0, len(messages), settings.batch_max):
        fold(core.process(messages[begin:begin + settings.batch_max]), table)

    hostile: dict[bytes, bytes] = {}
    core = StreamCore(settings, lookup=hostile.get, entries=hostile.items)
    for offset, record in enumerate(Generator(seed=3).records(bad)):
        message = Message(catalog.raw_topic(record.vendor), 0, offset, record.key, record.value, 1_800_000_000_000)
        fold(core.process([message]), hostile)
    return {"digest": digest.hexdigest(), **counts, "compiled": compiled.compiled()}


if __name__ == "__main__":
    print(orjson.dumps(digest(int(sys.argv[1]), int(sys.argv[2]))).decode())
