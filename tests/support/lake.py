"""What the lake's tests share (tests/lake/): the consumer group's session timeout
(short, so a killed sink's partitions move within seconds), a story written straight
into a lake as one batch, and an analyst's plain DuckDB session on it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import duckdb
import orjson

from pipeline import catalog
from pipeline.sink import lake as lake_module
from pipeline.sink.lake import LakeWriter
from pipeline.sink.records import KafkaRecord, decode_batch
from tests.support.records import KEY_FIELDS, T0, Story, iso
from tests.support.sink_story import stream_of

SESSION_TIMEOUT_S = 3

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


def finished(topic: str, record):
    """The stream's runs, those in a terminal state with their finish (the checks ask it)."""
    if topic == catalog.RUNS and record["state"] in TERMINAL:
        return record | {"finished_at": iso(T0 + timedelta(seconds=60)), "duration_s": 60.0}
    return record


def write_story(writer: LakeWriter, story: Story, first_offset: int = 0) -> None:
    records = []
    for n, (topic, record) in enumerate(stream_of(story)):
        record = finished(topic, record)
        value = record if isinstance(record, bytes) else orjson.dumps(record)
        key = None if isinstance(record, bytes) else str(record[KEY_FIELDS[topic]]).encode()
        records.append(KafkaRecord(topic, 0, first_offset + n, 0, key, value))
    writer.write(decode_batch(records))


def analyst(target) -> duckdb.DuckDBPyConnection:
    """A plain DuckDB session that attaches the lake under its own name, without USE."""
    con = duckdb.connect()
    lake_module.load_extensions(con)
    con.execute(target.attach_sql("analytics", read_only=True))
    return con


@contextmanager
def committing_back_to_back(commit: Callable[[int], None]) -> Iterator[list[BaseException]]:
    """``commit(n)`` for n = 0, 1, ... in a thread, one right after the other, from before the
    body (the first commit is waited for) until it ends; yields the thread's failures."""
    stop, committed, failed = threading.Event(), threading.Semaphore(0), []

    def run() -> None:
        n = 0
        try:
            while not stop.is_set():
                commit(n)
                n += 1
                committed.release()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert committed.acquire(timeout=60), failed
        yield failed
    finally:
        stop.set()
        thread.join(60)
