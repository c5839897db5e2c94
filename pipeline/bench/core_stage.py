"""The worker's own work per raw record, without Kafka: ``StreamCore.process`` over the
bench workload cut into raw records as the ingestors cut them, in batches of the
worker's ``batch_max``, with the table as a dict (writes applied after each batch, as
the agent's step 3 does).

What the worker pays on top of Faust's consumer (decode, normalize, lifecycle, expiry,
record and entry encoding) is this stage's inverse: it is the number to move when the
worker trails the bare Faust loop, and it needs no broker, so it is cheap to repeat
before and after a change on the same machine state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiokafka.partitioner import murmur2

from pipeline import catalog
from pipeline.bench.workload import Document
from pipeline.model import RawEnvelope, encode_envelope
from pipeline.settings import Settings
from pipeline.sources import records_for
from pipeline.stream import collector
from pipeline.stream.core import StreamCore
from pipeline.stream.records import Message
from pipeline.vendors import Context


def raw_messages(docs: Iterable[Document], partitions: int | None = None) -> list[Message]:
    """The raw records the loader would write for ``docs``, with the partition the
    default (murmur2) partitioner gives their key and offsets per partition."""
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for doc in docs:
        topic = catalog.raw_topic(doc.vendor)
        count = partitions or catalog.topic(topic).partitions
        ctx = Context(source=doc.source, received_at=doc.at)
        for record in records_for(doc.vendor, doc.payload, ctx):
            key = None if record.key is None else record.key.encode("utf-8", "surrogatepass")
            partition = 0 if key is None else (murmur2(key) & 0x7FFFFFFF) % count
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            value = encode_envelope(RawEnvelope(
                vendor=doc.vendor, source=doc.source, received_at=record.received_at, payload=record.payload,
            ))
            messages.append(Message(topic, partition, offset, key, value, int(doc.at.timestamp() * 1000)))
    return messages


def core_rate(messages: list[Message], settings: Settings | None = None) -> float:
    """Raw records per CPU second through ``StreamCore.process`` (a fresh core and table).

    CPU time of this process, not wall time: on a machine shared with other work the
    cost per record is what stays comparable from one run to the next. The garbage
    collector is set as the worker sets it (``collector.tune``)."""
    settings = settings or Settings()
    table: dict[bytes, bytes] = {}
    core = StreamCore(settings, lookup=table.get, entries=table.items)
    size = settings.batch_max
    thresholds = collector.tune()
    try:
        started = time.process_time()
        for begin in range(0, len(messages), size):
            batch = core.process(messages[begin:begin + size])
            for key, (_partition, value) in batch.writes.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        return len(messages) / (time.process_time() - started)
    finally:
        collector.restore(thresholds)
