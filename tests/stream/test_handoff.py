"""faust_compat.Handoff: records from Faust's fetch loop to the worker's agent in batches,
with what Faust's stream does per record (drop across rebalances, track, acknowledge)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from pipeline.stream import faust_compat


class Consumer:
    def __init__(self) -> None:
        self.tracked: list[int] = []
        self.acked: list[int] = []

    def track_message(self, message) -> None:
        self.tracked.append(message.offset)

    def ack(self, message) -> bool:
        self.acked.append(message.offset)
        return True


def _installed(capacity: int = 100) -> tuple[faust_compat.Handoff, SimpleNamespace, Consumer]:
    app = SimpleNamespace(flow_control=FlowControlEvent(initially_suspended=False), consumer_generation_id=1,
                          monitor=SimpleNamespace(stream_inbound_time={}))
    consumer = Consumer()
    handoff = faust_compat.Handoff(["raw.a"], capacity=capacity)
    handoff.install(app, consumer)
    return handoff, app, consumer


def _message(offset: int, generation: int = 1, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="raw.a", offset=offset, generation_id=generation, tp=TP("raw.a", partition))


async def _next(batches, timeout: float = 10.0) -> list[int]:
    return [d.message.offset for d in await asyncio.wait_for(anext(batches), timeout)]


async def test_a_full_batch_goes_at_once_and_the_rest_follows():
    handoff, _, consumer = _installed()
    batches = handoff.batches(3, within=600)
    for n in range(5):
        handoff.put(_message(n))
    assert await _next(batches) == [0, 1, 2]
    assert consumer.tracked == [0, 1, 2] and consumer.acked == []
    handoff.put(_message(5))  # the rest fills the next batch: it goes at once too
    assert await _next(batches) == [3, 4, 5]
    assert consumer.acked == [0, 1, 2]  # acknowledged once the next batch was asked for


async def test_the_window_counts_from_the_first_record_not_from_the_request(monkeypatch):
    """Faust's take_events waits ``within`` after the previous batch even with records
    waiting; here records that waited their window while a batch was processed go at once."""
    clock = [1000.0]
    monkeypatch.setattr(faust_compat, "time", SimpleNamespace(monotonic=lambda: clock[0]))  # not the loop's clock
    handoff, _, _ = _installed()
    batches = handoff.batches(100, within=600)
    handoff.put(_message(0))
    clock[0] += 601  # the first record's window is over (a batch was being processed meanwhile)
    assert await _next(batches, timeout=5) == [0]


async def test_a_lone_record_goes_when_its_window_ends():
    handoff, _, _ = _installed()
    batches = handoff.batches(100, within=0.05)
    handoff.put(_message(7))
    assert await _next(batches) == [7]


async def test_records_taken_while_the_flow_is_suspended_or_of_an_older_generation_are_dropped_untracked(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.worker")
    handoff, app, consumer = _installed()
    batches = handoff.batches(2, within=600)
    handoff.put(_message(0, generation=0))
    handoff.put(_message(1))
    assert await _next(batches) == [1]  # generation 0 is gone: Faust seeks to the committed offsets
    app.flow_control.suspend()
    handoff.put(_message(2))
    handoff.put(_message(3))
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # taken while suspended: dropped, untracked
    assert not handoff._records and consumer.tracked == [1]
    app.flow_control.resume()
    handoff.put(_message(2))  # fetched again after recovery's seek
    handoff.put(_message(3))
    assert [d.message.offset for d in await asyncio.wait_for(waiting, 10)] == [2, 3]
    assert consumer.tracked == [1, 2, 3]
    dropped = [r.getMessage() for r in caplog.records if "handoff dropped" in r.getMessage()]
    assert dropped == [
        "jobstream: handoff dropped 1 records fetched before a rebalance (raw.a[0] 0-0)",
        "jobstream: handoff dropped 2 records fetched before a rebalance (raw.a[0] 2-3)",
    ]


async def test_each_batch_marks_its_partitions_as_delivering_for_faust_s_livelock_check():
    """Faust's stream records ``monitor.stream_inbound_time`` per event; without it Faust logs
    an ERROR ("has not started processing") for every partition behind its high-water mark."""
    handoff, app, _ = _installed()
    handoff.put(_message(0, partition=0))
    handoff.put(_message(1, partition=2))
    assert await _next(handoff.batches(2, within=600)) == [0, 1]
    assert set(app.monitor.stream_inbound_time) == {("raw.a", 0), ("raw.a", 2)}


async def test_a_suspended_flow_clears_the_waiting_records_and_frees_the_fetch_loop():
    handoff, app, _ = _installed(capacity=2)
    assert handoff.put(_message(0)) is False
    assert handoff.put(_message(1)) is True  # full: the fetch loop waits for room
    room = asyncio.ensure_future(handoff.room())
    await asyncio.sleep(0)
    assert not room.done()
    app.flow_control.suspend()
    app.flow_control.clear()  # Faust's revocation: suspend, pause, clear
    await asyncio.wait_for(room, 5)
    app.flow_control.resume()
    handoff.put(_message(5))
    assert await _next(handoff.batches(1, within=600)) == [5]


async def test_records_fetched_before_the_flow_resumes_are_kept_when_it_resumes():
    """Recovery seeks the partitions to their committed offsets, then resumes the flow,
    which clears flow control's queues: records fetched in between were dropped there and
    never fetched again (a worker restarted after SIGKILL stayed silent)."""
    handoff, app, consumer = _installed()
    handoff.put(_message(0))
    handoff.put(_message(1))
    app.flow_control.resume()
    assert await _next(handoff.batches(2, within=600)) == [0, 1]


async def test_the_fetch_loop_gets_room_once_the_agent_takes_a_batch():
    handoff, _, _ = _installed(capacity=3)
    for n in range(3):
        full = handoff.put(_message(n))
    assert full
    room = asyncio.ensure_future(handoff.room())
    assert await _next(handoff.batches(2, within=600)) == [0, 1]
    await asyncio.wait_for(room, 5)


async def test_a_batch_the_agent_failed_on_is_not_acknowledged():
    handoff, _, consumer = _installed()
    batches = handoff.batches(1, within=600)
    handoff.put(_message(0))
    assert await _next(batches) == [0]
    with pytest.raises(RuntimeError):
        await batches.athrow(RuntimeError("the agent failed"))
    assert consumer.acked == []


async def test_an_app_without_an_installed_handoff_uses_faust_s_take_events():
    class Stream:
        def take_events(self, max_, within):
            return ("take_events", max_, within)

    app = SimpleNamespace(handoff=faust_compat.Handoff(["raw.a"], capacity=10))  # never installed
    assert faust_compat.batches(app, Stream(), 5, 0.2) == ("take_events", 5, 0.2)
    assert faust_compat.batches(SimpleNamespace(), Stream(), 5, 0.2) == ("take_events", 5, 0.2)
