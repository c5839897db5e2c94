"""issue 33 case 9: demo data are never in the future. The pull simulators and their
ingestors share one vendor timeline that starts in the past, runs ``factor`` times
faster than real time and reaches real time at the demo's end."""

from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp
import pytest

from pipeline import vendors
from pipeline.model import UTC
from pipeline.vendors._common import TIMELINE_ENV, Timeline, receive_now
from pipeline.vendors._simulator import SimClock
from pipeline.vendors.zuora.ingest import ZuoraSettings, ZuoraSource
from pipeline.vendors.zuora.simulator import ZuoraSimulator, scenario


def test_the_timeline_starts_in_the_past_and_reaches_real_time_at_the_end_of_its_span():
    timeline = Timeline(start=1_000_000.0, factor=30.0, span_s=120.0)
    assert timeline.epoch == datetime.fromtimestamp(1_000_000.0 - 29 * 120, UTC)
    assert timeline.at(1_000_000.0) == timeline.epoch
    assert timeline.at(1_000_060.0) == timeline.epoch + timedelta(seconds=1800)  # 30x
    assert timeline.at(1_000_120.0) == datetime.fromtimestamp(1_000_120.0, UTC)  # now, at the end
    assert timeline.at(1_000_500.0) == datetime.fromtimestamp(1_000_500.0, UTC)  # then real time
    for wall in range(1_000_000, 1_000_600, 7):
        assert timeline.at(float(wall)) <= datetime.fromtimestamp(wall, UTC)  # never ahead
    assert Timeline.parse(timeline.text()) == timeline
    with pytest.raises(ValueError, match=TIMELINE_ENV):
        Timeline.parse("soon")


def test_simulators_and_the_receive_clock_follow_the_shared_timeline(monkeypatch):
    timeline = Timeline.starting_now(30.0, 120.0)
    monkeypatch.setenv(TIMELINE_ENV, timeline.text())
    clock = SimClock(factor=30.0)
    assert clock.epoch == timeline.epoch <= datetime.now(UTC) - timedelta(seconds=29 * 120 - 5)
    assert clock.now() <= datetime.now(UTC)
    assert abs(receive_now() - clock.now()) < timedelta(seconds=2)  # one clock for vendor and receive times


@pytest.mark.integration
async def test_a_demo_poll_gives_events_and_receive_times_in_the_past_on_one_clock(monkeypatch):
    monkeypatch.setenv(TIMELINE_ENV, Timeline.starting_now(30.0, 60.0).text())
    sim = ZuoraSimulator(scenario(2), clock=SimClock(factor=30.0))
    sim.clock.freeze(700.0)  # group 0 done or stale, group 1 running: 700 vendor s after the epoch
    async with sim:
        settings = ZuoraSettings(base_url=sim.base_url, user="revpro-user", password="revpro-password", role="admin",
                                 clientname="jobstream", source="t-demo", poll_interval_s=0.2, timeout_s=2.0)
        async with aiohttp.ClientSession() as http:
            poll = await ZuoraSource(settings, http).poll({"tasks": {}})
    now = datetime.now(UTC)
    events = [event for record in poll.records if record.key is not None
              for event in vendors.normalize("zuora", record.payload,
                                             vendors.Context(source="t-demo", received_at=record.received_at))]
    assert events
    assert all(event.occurred_at <= now and (event.finished_at is None or event.finished_at <= now) for event in events)
    assert all(record.received_at <= now for record in poll.records)
