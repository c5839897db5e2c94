"""The one adapter over faust-streaming's private API refuses versions it does not know."""

from __future__ import annotations

import asyncio

import faust
import faust.tables
import pytest

from pipeline.settings import Settings
from pipeline.stream import faust_compat
from pipeline.stream.app import TABLE_NAME, create_app


def test_the_installed_faust_is_accepted():
    faust_compat.check_version()


@pytest.mark.parametrize("version", ["0.16.0", "1.0.0", "0.14.9"])
def test_an_unknown_faust_version_is_refused_with_one_clear_line(version):
    with pytest.raises(faust_compat.UnsupportedFaust) as refused:
        faust_compat.check_version(version)
    message = str(refused.value)
    assert "\n" not in message and version in message and "faust-streaming>=0.15.3,<0.16" in message


def test_current_event_is_set_inside_and_restored_after():
    from faust.streams import current_event

    class Event:
        pass

    event = Event()
    assert current_event() is None
    with faust_compat.current_event(event):
        assert current_event() is event
    assert current_event() is None


def test_a_faust_whose_consumer_renamed_the_committed_offsets_is_refused_not_read_as_none():
    """Issue 32.9: ``committed_offset`` read a missing ``_committed_offset`` as "nothing
    committed", which switched the worker's gap check off without a word."""

    class Renamed:  # Faust's consumer with ``_committed_offset`` renamed
        _committed_offsets: dict
        _gap: dict
        _unacked_messages: set

        async def seek(self, partition, offset): ...

    with pytest.raises(faust_compat.UnsupportedFaust, match="0.15.9: its consumer has no _committed_offset"):
        faust_compat.check_consumer("0.15.9", Renamed)
    faust_compat.check_consumer("0.15.3")


def test_committed_offset_refuses_a_consumer_without_the_attribute():
    class App:
        consumer = object()

    with pytest.raises(faust_compat.UnsupportedFaust, match="_committed_offset"):
        faust_compat.committed_offset(App(), ("raw.truenas", 0))


def test_committed_offset_reads_an_offset_and_none_for_faust_s_zero():
    class Consumer:
        _committed_offset = {"a": 7, "b": None}

    class App:
        consumer = Consumer()

    assert faust_compat.committed_offset(App(), "a") == 7
    assert faust_compat.committed_offset(App(), "b") is None  # 0 or nothing: gaps.Continuity checks from the log start


def _kafka_consumer_of(settings):
    """The aiokafka consumer the worker's Faust consumer thread builds at start, built
    the way ``on_start`` builds it (not started: no broker needed)."""
    app = create_app(settings)
    thread = app.consumer._thread
    return thread._create_consumer(loop=asyncio.get_running_loop())


async def test_the_worker_s_fetches_wait_the_setting_not_faust_s_1500_ms(tmp_path):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; Tansu answers a waiting fetch after a share
    of its wait, not when records arrive, so that wait was most of the worker's latency at 200 records/s."""
    settings = Settings(bootstrap="127.0.0.1:1", store="memory://", datadir=tmp_path, app_id="fetch-wait")
    assert settings.fetch_wait_ms == 100
    other = Settings(bootstrap="127.0.0.1:1", store="memory://", datadir=tmp_path, app_id="fetch-wait-2",
                     fetch_wait_ms=750)
    for given, expected in ((settings, 100), (other, 750)):
        kafka = _kafka_consumer_of(given)
        try:
            assert kafka._fetch_max_wait_ms == expected
        finally:
            await kafka.stop()


async def test_without_a_fetch_wait_faust_s_own_stays():
    app = faust_compat.App("fetch-wait-none", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    kafka = app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
    try:
        assert kafka._fetch_max_wait_ms == 1500, f"faust-streaming {faust.__version__} no longer waits 1,500 ms"
    finally:
        await kafka.stop()


def test_a_faust_that_builds_its_consumer_another_way_keeps_its_wait_with_a_warning(caplog):
    class Consumer:
        _thread = object()  # no _create_worker_consumer

    faust_compat.with_fetch_wait(Consumer(), 100)
    assert "fetches wait Faust's 1,500 ms" in caplog.text


class _ThreadAfterAFetch:
    """Faust's consumer thread as aiokafka leaves it: ``seek_to_committed`` seeks only the
    partitions with a committed offset above 0 and reports every assigned one."""

    def __init__(self, committed):
        self.committed = committed
        self.seeks = []

    async def seek_to_committed(self):
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.seek(tp, offset)
        return dict(self.committed)

    def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))

    async def seek_wait(self, partitions):
        for tp, offset in partitions.items():
            self.seek(tp, offset)


async def test_faust_s_seek_to_committed_also_rewinds_raw_partitions_with_nothing_committed():
    """Faust drops records fetched while its flow is stopped and counts on this seek to
    fetch them again; a raw partition without a committed offset was left past them (a
    worker silent after a rebalance). Changelog partitions are recovery's, never moved here."""
    app = faust_compat.App(
        "seek-uncommitted", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
        handoff=faust_compat.Handoff(["raw.truenas", "raw.zuora"], capacity=10),
    )
    consumer = app.consumer
    tp = consumer._new_topicpartition
    thread = consumer._thread = _ThreadAfterAFetch({
        tp("raw.truenas", 0): None, tp("raw.truenas", 1): 7, tp("raw.zuora", 3): 0,
        tp("seek-uncommitted-lifecycle-changelog", 0): None,
    })
    await consumer.perform_seek()
    assert sorted(thread.seeks) == [("raw.truenas", 0, 0), ("raw.truenas", 1, 7), ("raw.zuora", 3, 0)]
    assert consumer._read_offset[tp("raw.truenas", 0)] is None  # any offset is read again
    assert consumer._read_offset[tp("raw.truenas", 1)] == 7


async def test_without_a_handoff_faust_s_seek_is_left_as_it_is():
    app = faust_compat.App("seek-plain", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    consumer = app.consumer
    tp = consumer._new_topicpartition
    thread = consumer._thread = _ThreadAfterAFetch({tp("raw.truenas", 0): None, tp("raw.truenas", 1): 7})
    await consumer.perform_seek()
    assert thread.seeks == [("raw.truenas", 1, 7)]


async def test_the_rewind_is_one_log_line_per_seek(caplog):
    app = faust_compat.App(
        "seek-log", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
        handoff=faust_compat.Handoff(["raw.truenas", "raw.zuora"], capacity=10),
    )
    consumer = app.consumer
    tp = consumer._new_topicpartition
    consumer._thread = _ThreadAfterAFetch({tp("raw.truenas", 2): None, tp("raw.truenas", 0): None,
                                           tp("raw.zuora", 1): 0, tp("raw.zuora", 3): 4})
    with caplog.at_level("INFO", logger="pipeline.worker"):
        await consumer.perform_seek()
    lines = [r.getMessage() for r in caplog.records if "nothing committed" in r.getMessage()]
    assert lines == ["jobstream: nothing committed yet for raw.truenas 0,2; raw.zuora 1: read from their start"]


async def _started_steps(manager) -> list[str]:
    steps: list[str] = []

    async def step(name: str, *args) -> None:
        steps.append(name if not args else f"{name}{args}")

    manager.sleep = lambda seconds: step("sleep", seconds)
    manager._update_channels = lambda: step("update_channels")
    manager._recovery = type("Recovery", (), {"start": lambda self: step("recovery")})()
    await manager.on_start()
    return steps


async def test_the_worker_s_tables_start_without_faust_s_one_second_sleep(tmp_path):
    """Faust's table manager sleeps a second before it starts the tables (time for tables
    declared late): every worker start and restart waited that second."""
    app = create_app(Settings(bootstrap="localhost:1", datadir=str(tmp_path), store="memory://"))
    assert type(app.tables) is faust_compat.TableManager
    assert await _started_steps(app.tables) == ["update_channels", "recovery"]
    assert await _started_steps(faust.tables.TableManager(app)) == ["sleep(1.0,)", "update_channels", "recovery"]


def test_a_faust_whose_table_start_changed_keeps_its_own_table_manager(monkeypatch, tmp_path):
    monkeypatch.setattr(faust_compat, "TABLE_START_FINGERPRINT", "0000000000000000")
    app = create_app(Settings(bootstrap="localhost:1", datadir=str(tmp_path), store="memory://"))
    assert type(app.tables) is faust.tables.TableManager


def test_the_worker_s_rocksdb_table_is_read_as_stored_not_through_faust_s_serializers(tmp_path):
    """Faust's ``items()`` sends each key and value through its serializer registry; the
    worker's table is raw on both sides, so its RocksDB store's own items are the bytes."""
    rocksdb = create_app(Settings(bootstrap="localhost:1", datadir=str(tmp_path / "r"), store="rocksdb://"))
    store = rocksdb.tables[TABLE_NAME].data
    assert (store.key_serializer, store.value_serializer) == ("raw", "raw")
    assert faust_compat.stored_items(store).__qualname__ == type(store)._iteritems.__qualname__

    memory = create_app(Settings(bootstrap="localhost:1", datadir=str(tmp_path / "m"), store="memory://"))
    store = memory.tables[TABLE_NAME].data
    store[b"k"] = b"v"
    assert list(faust_compat.stored_items(store)) == [(b"k", b"v")]
