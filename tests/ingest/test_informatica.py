"""The Informatica CIH poller against its simulator over real HTTP and the session broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from pipeline.model import UTC
from pipeline.sources import Backoff, CursorStore, records_for, run_source
from pipeline.vendors import Context
from pipeline.vendors._simulator import Faults
from pipeline.vendors.informatica.ingest import InformaticaSettings, InformaticaSource, content_hash
from pipeline.vendors.informatica.simulator import InformaticaSimulator, RateLimit, scenario
from tests.support.ingest import past_clock, raw_records, wait_for
from tests.support.processes import IngestProcess

pytestmark = pytest.mark.integration

FAULTS = Faults(
    latency_s=0.01, timeout=0.05, hang_s=1.5, error=0.1, storm=0.08, storm_len=2, retry_after_s=0.7,
    malformed=0.08, duplicate=0.3, reorder=0.5, seed=17,
    first=("storm", "timeout", "error", "malformed"),
)


def settings_for(sim: InformaticaSimulator, source: str) -> InformaticaSettings:
    return InformaticaSettings(
        base_url=sim.base_url, user="iics-user", password="iics-password", source=source, page_size=2,
        calls=5, per_s=2.0, poll_interval_s=0.3, lookback_s=3 * 3600, settle_s=0.0, child_grace_s=10.0, timeout_s=1.0,
    )


def expected_pieces(sim: InformaticaSimulator, source: str) -> set[tuple[str, str]]:
    """(event id, content hash) of every event's final state, as the poller cuts it."""
    ctx = Context(source=source)
    return {
        (str(r.payload["eventId"]), content_hash(r.payload))
        for view in sim.final_views() for r in records_for("informatica", view, ctx)
    }


def check_sent(found: list[tuple[str | None, Any]], sim: InformaticaSimulator, source: str, *, restarted: bool) -> None:
    keyed = [(key, payload) for key, payload in found if key is not None]
    pieces = [(str(p["eventId"]), content_hash(p)) for _, p in keyed]
    assert expected_pieces(sim, source) <= set(pieces), "an event's final state is missing"
    if not restarted:
        assert len(pieces) == len(set(pieces)), "an unchanged event was sent twice"
    finals = {str(p["eventId"]): p for _, p in ((None, r.payload) for v in sim.final_views()
                                                 for r in records_for("informatica", v, Context(source=source)))}
    for key, payload in keyed:  # nothing invented: each record is a moment of the scripted history
        final = finals[str(payload["eventId"])]
        assert payload["eventHistory"] == final["eventHistory"][: len(payload["eventHistory"])]
        assert key == f"informatica:{source}:{final['applicationName']}/{final['pubSubName']}"
    unkeyed = [payload for key, payload in found if key is None]
    assert len(unkeyed) == sim.malformed_served, "each malformed answer is sent once, to be dead-lettered"


def check_retry_after(sim: InformaticaSimulator) -> None:
    calls = sim.calls
    for index, call in enumerate(calls[:-1]):
        if call.status == 429:
            assert calls[index + 1].at >= call.answered + call.retry_after, f"call {index + 1} came before Retry-After"


async def test_poller_with_faults_sends_every_final_state_once_and_honours_retry_after(broker):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = InformaticaSimulator(
        scenario(2), clock=past_clock(25.0), faults=FAULTS, rate_limit=RateLimit(calls=5, per_s=2.0),
    )
    async with sim:
        stop = asyncio.Event()
        settings = settings_for(sim, source)
        import aiohttp

        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(run_source(
                InformaticaSource(settings, http), broker.bootstrap, stop=stop, redact=settings.redactor(),
                backoff=Backoff(initial_s=0.1, maximum_s=0.5),
            ))

            async def complete() -> bool:
                assert not task.done(), task.exception()
                got = {(str(p["eventId"]), content_hash(p)) for k, p in await raw_records(broker.bootstrap, "informatica", source) if k}
                return expected_pieces(sim, source) <= got

            try:
                await wait_for(complete, timeout=90, what="every event's final state in raw.informatica", every=1.0)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    found = await raw_records(broker.bootstrap, "informatica", source)
    check_sent(found, sim, source, restarted=False)
    check_retry_after(sim)
    statuses = {call.status for call in sim.calls}
    assert {429, 503, 504} <= statuses, f"the faults did not all happen: {statuses}"
    assert sim.malformed_served > 0
    rate_limited = [c for c in sim.calls if c.status == 429 and c.retry_after != FAULTS.retry_after_s]
    assert not rate_limited, "the poller went over the 5-calls budget"
    bodies = [c.body for c in sim.calls if c.body]
    assert all(b["timeframe"]["range"] == "CUSTOM" for b in bodies)
    assert any(b["firstResult"] > 0 for b in bodies), "paging never went past the first page"


async def test_sigkill_in_the_middle_resumes_from_the_stored_cursor(broker, tmp_path):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = InformaticaSimulator(
        scenario(2), clock=past_clock(10.0), faults=Faults(error=0.05, duplicate=0.2, seed=3),
        rate_limit=RateLimit(calls=5, per_s=2.0),
    )
    async with sim:
        s = settings_for(sim, source)
        config = tmp_path / "ingest.toml"
        config.write_text(
            "[informatica]\n"
            f'base_url = "{s.base_url}"\nuser = "{s.user}"\nsource = "{source}"\npage_size = {s.page_size}\n'
            f"calls = {s.calls}\nper_s = {s.per_s}\npoll_interval_s = {s.poll_interval_s}\n"
            f"lookback_s = {s.lookback_s}\nsettle_s = 0.0\nchild_grace_s = 10.0\ntimeout_s = {s.timeout_s}\n"
        )
        env = {"JOBSTREAM_INFORMATICA_PASSWORD": "iics-password"}
        cursors = CursorStore(broker.bootstrap)
        await cursors.start()
        key = f"informatica:{source}"
        first = IngestProcess(["informatica"], config, broker.bootstrap, tmp_path / "first.log", env).start()
        try:
            async def some_progress() -> bool:
                assert first.alive(), first.text()
                cursor = await cursors.load(key)
                return cursor is not None and bool(cursor["seen"])

            await wait_for(some_progress, timeout=60, what="a stored cursor with events")
        finally:
            await first.kill_async()
        stored = await cursors.load(key)
        calls_before = len(sim.calls)
        second = IngestProcess(["informatica"], config, broker.bootstrap, tmp_path / "second.log", env).start()
        try:
            async def complete() -> bool:
                assert second.alive(), second.text()
                got = {(str(p["eventId"]), content_hash(p)) for k, p in await raw_records(broker.bootstrap, "informatica", source) if k}
                return expected_pieces(sim, source) <= got

            await wait_for(complete, timeout=90, what="every final state after the restart", every=1.0)
        finally:
            assert await second.stop_async() == 0, second.text()
            await cursors.stop()
    resumed = [c.body for c in sim.calls[calls_before:] if c.body]
    assert resumed[0]["timeframe"]["fromDate"] >= stored["from"], "the restart did not resume from the stored cursor"
    assert "iics-password" not in first.text() + second.text()
    check_sent(await raw_records(broker.bootstrap, "informatica", source), sim, source, restarted=True)
