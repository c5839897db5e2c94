"""The Zuora BI Views poller against its simulator over real HTTP and the session broker."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from pipeline.sources import Backoff, CursorStore, TerminalError, run_source
from pipeline.vendors._simulator import Faults
from pipeline.vendors.zuora.ingest import ZuoraApi, ZuoraSettings, ZuoraSource, cancel, fingerprint
from pipeline.vendors.zuora.simulator import STATUS_PATH, Activity, ScriptedToken, ZuoraSimulator, scenario
from tests.support.ingest import past_clock, raw_records, wait_for
from tests.support.processes import IngestProcess

pytestmark = pytest.mark.integration

FAULTS = Faults(
    latency_s=0.01, timeout=0.03, hang_s=1.5, error=0.08, storm=0.05, storm_len=2, retry_after_s=0.3,
    malformed=0.05, duplicate=0.3, reorder=0.5, seed=5, first=("storm", "timeout", "error", "malformed"),
)


def settings_for(sim: ZuoraSimulator, source: str, **extra: Any) -> ZuoraSettings:
    return ZuoraSettings(
        base_url=sim.base_url, user="revpro-user", password="revpro-password", role="admin", clientname="jobstream",
        source=source, poll_interval_s=0.2, timeout_s=1.0, **extra,
    )


def tasks_sent(found: list[tuple[str | None, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(queue, task) of every keyed record."""
    out = []
    for key, payload in found:
        if key is not None:
            ((queue, (task,)),) = payload.items()
            out.append((queue, task))
    return out


def by_kind(sent: list[tuple[str, dict[str, Any]]], kind: str) -> list[tuple[str, str, str | None]]:
    return [(q, t["status"], t["message"]) for q, t in sent if t["task_id"].startswith(kind + "-")]


async def test_poller_with_faults_sends_each_change_once_through_every_scenario(broker, caplog):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = ZuoraSimulator(_wide_comeback(scenario(1)), clock=past_clock(40.0), faults=FAULTS, token_ttl_s=200.0)
    caplog.set_level(logging.INFO)
    async with sim:
        settings = settings_for(sim, source)
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(run_source(
                ZuoraSource(settings, http), broker.bootstrap, stop=stop, redact=settings.redactor(),
                backoff=Backoff(initial_s=0.1, maximum_s=0.5),
            ))
            long_id = next(t for t in sim.tokens if t.startswith("long-"))
            await wait_for(lambda: _after(sim, 30), timeout=30, what="vendor second 30")
            done = await cancel(settings, long_id, attempts=30, backoff=Backoff(initial_s=0.1, maximum_s=0.5))
            assert done == f"cancelled BI Views task {long_id}"

            async def complete() -> bool:
                assert not task.done(), task.exception()
                sent = tasks_sent(await raw_records(broker.bootstrap, "zuora", source))
                return (
                    ("completed", "COMPLETED", None) in by_kind(sent, "back")
                    and any(q == "draining" for q, _, _ in by_kind(sent, "drain"))
                )

            try:
                await wait_for(complete, timeout=90, what="the stale-then-active and stale-then-drained tokens", every=1.0)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    found = await raw_records(broker.bootstrap, "zuora", source)
    sent = tasks_sent(found)
    marks = [(t["task_id"], fingerprint(q, t)) for q, t in sent]
    assert len(marks) == len(set(marks)), "an unchanged token was sent twice"
    assert ("completed", "COMPLETED", None) in by_kind(sent, "ok")
    assert ("completed", "FAILED", "ORA-01555: snapshot too old") in by_kind(sent, "fail")
    back = [q for q, _, _ in by_kind(sent, "back")]
    assert "stale" in back and back.index("stale") < len(back) - 1 - back[::-1].index("active"), back
    assert any(s == "CANCELLED" for _, s, _ in by_kind(sent, "long"))
    scripted = {t.task_id: {a.status for a in t.activities} for t in sim.tokens.values()}
    for queue, task in sent:  # nothing invented
        assert task["status"] in scripted[task["task_id"]]
    assert len([k for k, _ in found if k is None]) == sim.malformed_paths.count(STATUS_PATH)
    assert sim.malformed_paths
    assert sim.authentications >= 2, "the expired token was never renewed"
    assert {429, 503, 504} <= {c.status for c in sim.calls}
    assert "revpro-password" not in caplog.text
    assert not any(token in caplog.text for token in sim.auth_tokens)


def _wide_comeback(tokens: list[ScriptedToken]) -> list[ScriptedToken]:
    """The scenario with the come-back token stale for 120 and active again for 116 vendor
    seconds (3 s each at 40x): the stock windows (60 s and 36 s, under a second of real time)
    could fall between two polls when a simulated hang held the poller (a flaky failure on a
    loaded machine, not a poller fault)."""
    for token in tokens:
        if token.task_id.startswith("back-"):
            t = token.activities[0].at_s - 2
            token.activities = [
                Activity(t + 2, "ADDED-TO-QUEUE"), Activity(t + 4, "SCANNING-PAGE-1"),
                Activity(t + 364, "COMMITING-PAGE-1", 500, 500), Activity(t + 400, "COMMITING-PAGE-2", 800, 300),
                Activity(t + 436, "COMMITING-PAGE-3", 900, 100), Activity(t + 480, "COMPLETED", 900, 100),
            ]
    return tokens


async def _after(sim: ZuoraSimulator, second: float) -> bool:
    return sim.clock.elapsed() >= second


async def test_api_not_enabled_is_terminal(broker):
    sim = ZuoraSimulator(scenario(1), api_enabled=False)
    async with sim:
        settings = settings_for(sim, f"t-{uuid.uuid4().hex[:8]}")
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TerminalError, match="not enabled"):
                await run_source(ZuoraSource(settings, http), broker.bootstrap, stop=asyncio.Event(), redact=settings.redactor())


async def test_sigkill_then_restart_resends_nothing_the_stored_cursor_covers(broker, tmp_path):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = ZuoraSimulator(scenario(1), clock=past_clock(40.0), faults=Faults(duplicate=0.3, reorder=0.5, seed=2))
    async with sim:
        s = settings_for(sim, source)
        config = tmp_path / "ingest.toml"
        config.write_text(
            f'[zuora]\nbase_url = "{s.base_url}"\nuser = "{s.user}"\nrole = "{s.role}"\nclientname = "{s.clientname}"\n'
            f'source = "{source}"\npoll_interval_s = 0.2\ntimeout_s = 1.0\n'
        )
        env = {"JOBSTREAM_ZUORA_PASSWORD": "revpro-password"}
        cursors = CursorStore(broker.bootstrap)
        await cursors.start()
        key = f"zuora:{source}"
        first = IngestProcess(["zuora"], config, broker.bootstrap, tmp_path / "first.log", env).start()
        second = None
        try:
            await wait_for(lambda: _after(sim, 250), timeout=30, what="vendor second 250 (tokens stale)")
            sim.clock.freeze()
            frozen = {task["task_id"]: fingerprint(queue, task) for queue, tasks in sim.snapshot().items() for task in tasks}

            async def caught_up() -> bool:
                assert first.alive(), first.text()
                cursor = await cursors.load(key)
                return cursor is not None and {k: v["fp"] for k, v in cursor["tasks"].items()} == frozen

            await wait_for(caught_up, timeout=30, what="the stored cursor to match the frozen queues")
            await first.kill_async()
            before = len(await raw_records(broker.bootstrap, "zuora", source))
            calls = len(sim.calls)
            second = IngestProcess(["zuora"], config, broker.bootstrap, tmp_path / "second.log", env).start()

            async def polled_twice() -> bool:
                assert second.alive(), second.text()
                return sum(1 for c in sim.calls[calls:] if c.path.endswith("biviews-status") and c.status == 200) >= 2

            await wait_for(polled_twice, timeout=30, what="two polls by the restarted ingestor")
            assert len(await raw_records(broker.bootstrap, "zuora", source)) == before, "the restart re-sent covered tokens"
            sim.clock.thaw()

            async def back_completed() -> bool:
                sent = tasks_sent(await raw_records(broker.bootstrap, "zuora", source))
                return ("completed", "COMPLETED", None) in by_kind(sent, "back")

            await wait_for(back_completed, timeout=60, what="the stale token to come back and complete", every=1.0)
        finally:
            if first.alive():
                await first.kill_async()
            if second is not None:
                assert await second.stop_async() == 0, second.text()
            await cursors.stop()
    assert "revpro-password" not in first.text() + second.text()


async def test_a_stale_token_that_vanished_between_polls_is_sent_as_drained(broker):
    sim = ZuoraSimulator(scenario(1), clock=past_clock(1.0))
    drain_id = next(t for t in sim.tokens if t.startswith("drain-"))
    async with sim:
        settings = settings_for(sim, "t-vanish")
        async with aiohttp.ClientSession() as http:
            source = ZuoraSource(settings, http)
            sim.clock.freeze(300.0)  # the drain token is stale
            first = await source.poll(source.initial_cursor())
            assert first.cursor["tasks"][drain_id]["queue"] == "stale"
            sim.clock.freeze(900.0)  # long gone, its 5 s of draining missed
            second = await source.poll(first.cursor)
    vanished = [r for r in second.records if r.payload.get("draining", [{}])[0].get("task_id") == drain_id]
    assert len(vanished) == 1 and vanished[0].key == f"zuora:t-vanish:RPRO_BI3_ACCT_V"
    assert vanished[0].payload["draining"][0]["message"] == "token vanished from every queue (last seen stale)"
    assert drain_id not in second.cursor["tasks"]
    asked = [c.path for c in sim.calls if c.path.endswith(drain_id)]
    assert asked and all(c.status == 404 for c in sim.calls if c.path.endswith(drain_id))


async def test_the_token_is_renewed_before_it_runs_out_and_sent_in_the_configured_header():
    sim = ZuoraSimulator(scenario(1), token_header="X-Revpro-Token")
    async with sim:
        settings = ZuoraSettings(
            base_url=sim.base_url, user="revpro-user", password="revpro-password", role="admin", clientname="jobstream",
            token_header="X-Revpro-Token", token_ttl_s=1.0, renew_margin_s=0.5, timeout_s=5.0,
        )
        async with aiohttp.ClientSession() as http:
            api = ZuoraApi(settings, http, settings.redactor())
            assert (await api.call("GET", STATUS_PATH, "status")).status == 200
            assert (await api.call("GET", STATUS_PATH, "status")).status == 200
            assert sim.authentications == 1
            await asyncio.sleep(0.6)  # past ttl - margin: the next call renews first
            assert (await api.call("GET", STATUS_PATH, "status")).status == 200
    assert sim.authentications == 2
    assert all(c.status == 200 for c in sim.calls)


async def test_stale_and_drain_times_are_when_the_poll_saw_them_as_the_script_says(broker):
    """issue 33 case 3, against the simulator's script: the drain token (last activity
    t+5) is stale from t+245 and drains at t+545, so its stale episode lasts 300 s; the
    back token (last activity t+4) is stale from t+244 and active again at t+304. Stale is
    dated by Zuora's 240 s rule, the drain by the poll that saw it (its Date header)."""
    from pipeline import vendors

    sim = ZuoraSimulator(scenario(1), clock=past_clock(1.0))
    drain_id = next(t for t in sim.tokens if t.startswith("drain-"))
    back_id = next(t for t in sim.tokens if t.startswith("back-"))
    events: dict[str, list] = {drain_id: [], back_id: []}
    async with sim:
        async with aiohttp.ClientSession() as http:
            source = ZuoraSource(settings_for(sim, "t-times"), http)
            cursor = source.initial_cursor()
            for second in (100.0, 245.0, 250.0, 305.0, 545.5, 900.0):
                sim.clock.freeze(second)
                poll = await source.poll(cursor)
                cursor = poll.cursor
                for record in poll.records:
                    if record.key is None:
                        continue
                    ctx = vendors.Context(source="t-times", received_at=record.received_at)
                    for event in vendors.normalize("zuora", record.payload, ctx):
                        if event.run_key.rsplit(":", 1)[1] in events:
                            events[event.run_key.rsplit(":", 1)[1]].append(event)
    at = sim.clock.at
    drain = {event.attrs["queue"]: event for event in events[drain_id]}
    assert drain["stale"].occurred_at == at(245) and drain["stale"].state.value == "STALE"  # last activity + 240 s
    assert drain["draining"].occurred_at == drain["draining"].finished_at == at(545)  # the poll's Date (s)
    assert drain["draining"].finished_at - drain["stale"].occurred_at == timedelta(seconds=300)
    back = [(event.attrs["queue"], event.occurred_at) for event in events[back_id]]
    assert ("stale", at(244)) in back and ("active", at(304)) in back  # 60 s, as scripted


async def test_a_vanished_token_drains_when_the_poll_found_it_gone(broker):
    """issue 33 case 3: the vanished-token path dates the drain by the call that found
    the token gone, not by the old snapshot's last activity."""
    from pipeline import vendors

    sim = ZuoraSimulator(scenario(1), clock=past_clock(1.0))
    drain_id = next(t for t in sim.tokens if t.startswith("drain-"))
    async with sim:
        async with aiohttp.ClientSession() as http:
            source = ZuoraSource(settings_for(sim, "t-vanish2"), http)
            sim.clock.freeze(300.0)
            first = await source.poll(source.initial_cursor())
            sim.clock.freeze(900.0)
            second = await source.poll(first.cursor)
    [record] = [r for r in second.records if r.payload.get("draining", [{}])[0].get("task_id") == drain_id]
    [event] = vendors.normalize("zuora", record.payload, vendors.Context(source="t-vanish2", received_at=record.received_at))
    assert event.state.value == "FAILED" and event.error_code == "DRAINED_STALE"
    assert event.finished_at == event.occurred_at == sim.clock.at(900)
