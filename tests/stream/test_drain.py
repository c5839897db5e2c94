"""faust_compat.App's fetch loop: a record's delivery runs in the loop's own task unless
it must wait, and then behaves as Faust's (raced against suspend_flow, cancelled with it)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from mode.utils.queues import FlowControlEvent

from pipeline.model import UTC
from pipeline.settings import Settings
from pipeline.stream import faust_compat
from pipeline.stream.app import create_app
from tests.support.kafka import produce


class _Consumer:
    """What ``deliver`` uses of Faust's consumer: ``wait_first`` as mode's Service has it."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()  # mode's Service name: drain_messages reads it too

    async def wait_first(self, *coros):
        futures = [asyncio.ensure_future(c if asyncio.iscoroutine(c) else c) for c in coros]
        futures.append(asyncio.ensure_future(self._stopped.wait()))
        try:
            done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future.exception() is not None:
                    future.result()
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()


def _tasks_created(loop: asyncio.AbstractEventLoop) -> list[int]:
    created = [0]
    default = loop.get_task_factory()

    def factory(loop, coro, **kwargs):
        created[0] += 1
        return default(loop, coro, **kwargs) if default else asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return created


async def test_a_delivery_that_never_waits_runs_in_the_callers_task():
    delivered = []

    async def on_message(n):
        delivered.append(n)

    loop = asyncio.get_running_loop()
    created = _tasks_created(loop)
    try:
        for n in range(1000):
            await faust_compat.deliver(_Consumer(), on_message(n))
    finally:
        loop.set_task_factory(None)
    assert delivered == list(range(1000))
    assert created[0] == 0  # Faust's wait_first: four tasks per record


async def test_a_delivery_that_waits_goes_on_and_gets_the_futures_result():
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    got = []

    async def on_message():
        got.append(await ready)
        await asyncio.sleep(0)  # a bare yield as well
        got.append("end")

    delivering = asyncio.ensure_future(faust_compat.deliver(_Consumer(), on_message()))
    await asyncio.sleep(0.01)
    assert not delivering.done() and got == []
    ready.set_result("value")
    await asyncio.wait_for(delivering, 5)
    assert got == ["value", "end"]


async def test_the_delivery_reads_an_error_of_the_future_it_waited_on():
    loop = asyncio.get_running_loop()
    failing = loop.create_future()
    seen = []

    async def on_message():
        try:
            await failing
        except KeyError as exc:
            seen.append(exc.args[0])

    delivering = asyncio.ensure_future(faust_compat.deliver(_Consumer(), on_message()))
    await asyncio.sleep(0.01)
    failing.set_exception(KeyError("lost"))
    await asyncio.wait_for(delivering, 5)
    assert seen == ["lost"]


async def test_suspended_flow_cancels_a_waiting_delivery_as_faust_does():
    consumer = _Consumer()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("full")
    outcome = []

    async def on_message():
        try:
            await queue.put("next")  # the stream's buffer is full: this waits
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    delivering = asyncio.ensure_future(faust_compat.deliver(consumer, on_message()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # a rebalance: Faust stops waiting for the callback
    await asyncio.wait_for(delivering, 5)
    await asyncio.sleep(0.01)
    assert outcome == ["cancelled"]
    assert queue.qsize() == 1 and not queue._putters  # the cancelled put left nothing behind


async def test_an_error_of_the_delivery_reaches_the_fetch_loop():
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    async def fails_at_once():
        raise ValueError("bad at once")

    async def fails_later():
        await ready
        raise ValueError("bad later")

    with pytest.raises(ValueError, match="bad at once"):
        await faust_compat.deliver(_Consumer(), fails_at_once())
    delivering = asyncio.ensure_future(faust_compat.deliver(_Consumer(), fails_later()))
    await asyncio.sleep(0.01)
    ready.set_result(None)
    with pytest.raises(ValueError, match="bad later"):
        await asyncio.wait_for(delivering, 5)


class _FetchingConsumer(_Consumer):
    """What ``drain_messages`` uses of Faust's consumer: one fetch of ``records``, then
    the fetcher stops; ``wait_first`` calls are counted (Faust's way of delivering)."""

    consumer_stopped_errors = (ConnectionError,)

    def __init__(self, records: list[tuple[str, int]], *, rebalancing: bool) -> None:
        super().__init__()
        self.app = SimpleNamespace(rebalancing=rebalancing, topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._read_offset: dict = defaultdict(lambda: None)  # as Faust's: None until read
        self.log = logging.getLogger("test_drain")
        self._commit_every = None
        self.should_stop = False
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.records = records
        self.delivered: list[int] = []
        self.waited_first = 0

    async def callback(self, message) -> None:
        self.delivered.append(message.offset)

    async def getmany(self, timeout: float):
        for tp, offset in self.records:
            yield tp, SimpleNamespace(offset=offset, topic=tp)
        self.fetcher._stopped.set()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_first(self, *coros):
        self.waited_first += 1
        await super().wait_first(*coros)


@pytest.mark.parametrize("rebalancing", [False, True])
async def test_during_a_rebalance_every_record_goes_fausts_own_way(rebalancing):
    """Inline delivery of records fetched while recovery seeks the stream partitions lost
    all but one of them (docs/design.md, "Worker cost"): until "Worker ready" each record
    goes through ``wait_first`` as in Faust's loop."""
    consumer = _FetchingConsumer([("raw.truenas", offset) for offset in range(5)], rebalancing=rebalancing)
    await asyncio.wait_for(faust_compat.drain_messages(consumer, consumer.fetcher), 5)
    assert consumer.delivered == [0, 1, 2, 3, 4]
    assert consumer.waited_first == (5 if rebalancing else 0)


async def test_records_of_handed_off_topics_go_to_the_handoff_and_others_to_faust():
    consumer = _FetchingConsumer([("raw.truenas", 0), ("other", 1), ("raw.truenas", 2)], rebalancing=False)
    consumer.app.flow_control = FlowControlEvent(initially_suspended=False)
    handoff = faust_compat.Handoff(["raw.truenas"], capacity=10)
    setattr(consumer, faust_compat.HANDOFF, handoff)
    await asyncio.wait_for(faust_compat.drain_messages(consumer, consumer.fetcher), 5)
    assert consumer.delivered == [1]
    assert [m.offset for m in handoff._records] == [0, 2]


async def test_the_fetch_loop_holds_a_record_while_flow_control_is_suspended():
    """As Faust's stream buffer holds it: put once the flow resumes (after recovery's
    seek and clearing), dropped when the consumer stops its flow meanwhile."""
    consumer = _FetchingConsumer([("raw.truenas", 0)], rebalancing=True)
    consumer.app.flow_control = FlowControlEvent(initially_suspended=True)
    handoff = faust_compat.Handoff(["raw.truenas"], capacity=10)
    setattr(consumer, faust_compat.HANDOFF, handoff)
    draining = asyncio.ensure_future(faust_compat.drain_messages(consumer, consumer.fetcher))
    await asyncio.sleep(0.05)
    assert not draining.done() and not handoff._records
    consumer.app.flow_control.resume()
    await asyncio.wait_for(draining, 5)
    assert [m.offset for m in handoff._records] == [0]

    stopped = _FetchingConsumer([("raw.truenas", 1)], rebalancing=True)
    stopped.app.flow_control = FlowControlEvent(initially_suspended=True)
    setattr(stopped, faust_compat.HANDOFF, handoff)
    draining = asyncio.ensure_future(faust_compat.drain_messages(stopped, stopped.fetcher))
    await asyncio.sleep(0.05)
    stopped.suspend_flow.set()  # the consumer stops its flow: a revocation
    await asyncio.wait_for(draining, 5)
    assert [m.offset for m in handoff._records] == [0]


def test_the_installed_faust_has_the_fetch_loop_that_was_copied():
    from faust.transport.consumer import Consumer

    assert faust_compat.draining_supported(Consumer)

    class Changed(Consumer):
        async def _drain_messages(self, fetcher):
            await fetcher.something_else()

    assert not faust_compat.draining_supported(Changed)


def test_the_workers_consumer_uses_the_cheaper_loop_and_falls_back_when_faust_changed(tmp_path, monkeypatch, caplog):
    app = create_app(Settings(store="memory://", datadir=tmp_path / "w", app_id=f"drain-{uuid.uuid4().hex[:6]}"))
    assert app.consumer._drain_messages.__func__ is faust_compat.drain_messages
    monkeypatch.setattr(faust_compat, "DRAIN_FINGERPRINT", "another faust")
    other = create_app(Settings(store="memory://", datadir=tmp_path / "o", app_id=f"drain-{uuid.uuid4().hex[:6]}"))
    assert getattr(other.consumer._drain_messages, "__func__", None) is not faust_compat.drain_messages
    assert "has a fetch loop this worker does not know" in caplog.text


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_real_worker_creates_almost_no_tasks_per_record(broker, tmp_path):
    """Faust's own loop: four tasks per record (12,208 for 3,000 records, start-up included,
    when this was written); the worker's: 208, nearly all of them start-up's."""
    source = f"drain-{uuid.uuid4().hex[:8]}"
    started = {"$date": int(datetime.now(UTC).timestamp() * 1000)}
    asyncio.run(produce(broker.bootstrap, "truenas", [
        (f"truenas:{source}:pool.scrub", {"id": n, "method": "pool.scrub", "state": "RUNNING", "time_started": started})
        for n in range(3000)
    ], source=source))
    script = Path(__file__).with_name("task_counting_worker.py")
    done = subprocess.run(
        [sys.executable, str(script), broker.bootstrap, str(tmp_path / "w"), f"drain-{uuid.uuid4().hex[:8]}", "3000"],
        capture_output=True, text=True, timeout=200, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records, tasks = map(int, done.stdout.split())
    assert records >= 3000
    assert tasks < records / 4, f"{tasks} tasks for {records} records"  # start-up's own tasks included
