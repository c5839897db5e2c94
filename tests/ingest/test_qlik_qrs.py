"""The QRS poller and --start-task against the QRS simulator over real HTTP and the session broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from pipeline.sources import Backoff, CursorStore, run_source
from pipeline.vendors._common import parse_time
from pipeline.vendors._simulator import Faults
from pipeline.vendors.qlik_qrs.ingest import QrsSettings, QrsSource
from pipeline.vendors.qlik_qrs.simulator import EMPTY_GUID, QrsSimulator, scenario
from tests.support.ingest import past_clock, raw_records, wait_for
from tests.support.processes import IngestProcess

pytestmark = pytest.mark.integration

FAULTS = Faults(
    latency_s=0.01, timeout=0.03, hang_s=1.5, error=0.08, storm=0.05, storm_len=2, retry_after_s=0.3,
    malformed=0.05, duplicate=0.3, reorder=0.5, seed=11, first=("storm", "timeout", "error", "malformed"),
)
RESULTS_PATH = "/qrs/executionresult/full"


def settings_for(sim: QrsSimulator, source: str) -> QrsSettings:
    return QrsSettings(base_url=sim.base_url, source=source, poll_interval_s=0.2, overlap_s=2.0, lookback_s=3 * 3600, timeout_s=1.0)


def results_sent(found: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    return [p for k, p in found if k is not None and isinstance(p, dict) and p.get("schemaPath") == "ExecutionResult"]


def final_results(sim: QrsSimulator) -> set[tuple[str, int]]:
    return {(r.result_id, r.status) for s in sim.sessions for r in s.results}


def config_text(sim: QrsSimulator, source: str) -> str:
    return (
        f'[qlik_qrs]\nbase_url = "{sim.base_url}"\nsource = "{source}"\npoll_interval_s = 0.2\n'
        "overlap_s = 2.0\nlookback_s = 10800\ntimeout_s = 1.0\nfollow_interval_s = 0.1\n"
    )


async def test_poller_with_faults_sends_every_result_state_once(broker):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = QrsSimulator(scenario(2), clock=past_clock(20.0), faults=FAULTS)
    async with sim:
        settings = settings_for(sim, source)
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(run_source(
                QrsSource(settings, http), broker.bootstrap, stop=stop, redact=settings.redactor(),
                backoff=Backoff(initial_s=0.1, maximum_s=0.5),
            ))

            async def complete() -> bool:
                assert not task.done(), task.exception()
                got = {(r["id"], r["status"]) for r in results_sent(await raw_records(broker.bootstrap, "qlik_qrs", source))}
                return final_results(sim) <= got

            try:
                await wait_for(complete, timeout=90, what="every result's final status", every=1.0)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    found = await raw_records(broker.bootstrap, "qlik_qrs", source)
    results = results_sent(found)
    marks = [(r["id"], r["modifiedDate"]) for r in results]
    assert len(marks) == len(set(marks)), "a result was sent twice at the same modifiedDate"
    assert {r["status"] for r in results} <= {2, 6, 7, 8}
    running = [r for r in results if r["status"] == 2]
    assert running and all(r["stopTime"].startswith("1753-01-01") for r in running)
    sessions = [p for k, p in found if k is not None and p.get("schemaPath") == "ExecutionSession"]
    assert sessions and {s["retries"] for s in sessions} <= {0, 1}
    session_marks = [(s["id"], s["modifiedDate"]) for s in sessions]
    assert len(session_marks) == len(set(session_marks)), "an unchanged session was sent twice"
    unkeyed = [p for k, p in found if k is None]
    assert len(unkeyed) == len([p for p in sim.malformed_paths if p.startswith("/qrs/execution")])
    assert sim.malformed_paths and {429, 503, 504} <= {c.status for c in sim.calls}
    assert {c.status for c in sim.calls if c.path == RESULTS_PATH} <= {200, 429, 503, 504}


async def test_xrfkey_must_match_and_the_user_header_is_required(broker):
    async with QrsSimulator(scenario(1)) as sim, aiohttp.ClientSession() as http:
        url = sim.base_url + RESULTS_PATH
        user = {"X-Qlik-User": "UserDirectory=INTERNAL; UserId=sa_repository"}
        async with http.get(url, params={"xrfkey": "abcdefghijklmnop"}, headers={"X-Qlik-Xrfkey": "abcdefghijklmnoX", **user}) as r:
            assert r.status == 403
        async with http.get(url, params={"xrfkey": "abcdefghijklmnop"}, headers={"X-Qlik-Xrfkey": "abcdefghijklmnop"}) as r:
            assert r.status == 403
        async with http.get(url, params={"xrfkey": "abcdefghijklmnop"}, headers={"X-Qlik-Xrfkey": "abcdefghijklmnop", **user}) as r:
            assert r.status == 200


async def test_start_task_follows_the_session_to_its_end_and_refuses_the_empty_guid(broker, tmp_path):
    source = f"t-{uuid.uuid4().hex[:8]}"
    disabled = "33333333-3333-4333-8333-000000000001"
    sim = QrsSimulator([], disabled_tasks=(disabled,), clock=past_clock(10.0))
    async with sim:
        config = tmp_path / "qrs.toml"
        config.write_text(config_text(sim, source))
        task = "22222222-2222-4222-8222-000000000001"
        run = IngestProcess(["qlik-qrs", "--start-task", task], config, broker.bootstrap, tmp_path / "start.log", {}).start()
        assert await run.exited(60) == 0, run.text()
        refused = IngestProcess(["qlik-qrs", "--start-task", disabled], config, broker.bootstrap, tmp_path / "off.log", {}).start()
        assert await refused.exited(60) == 1
        assert "did not start task" in refused.text() and "Traceback" not in refused.text()
        unknown = IngestProcess(["qlik-qrs", "--start-task", "nope"], config, broker.bootstrap, tmp_path / "nope.log", {}).start()
        assert await unknown.exited(60) == 1
        assert "knows no task" in unknown.text()
    found = await raw_records(broker.bootstrap, "qlik_qrs", source)
    starts = [p for _, p in found if isinstance(p, dict) and "value" in p]
    assert {p["value"] == EMPTY_GUID for p in starts} == {True, False} and len(starts) == 2
    session_id = sim.sessions[0].execution_id
    (results,) = [p for _, p in found if isinstance(p, list)]  # the session's results, together
    assert [r["status"] for r in results] == [8, 7] and {r["executionID"] for r in results} == {session_id}


async def test_sigkill_then_restart_resends_nothing_the_stored_cursor_covers(broker, tmp_path):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = QrsSimulator(scenario(1), clock=past_clock(10.0), faults=Faults(duplicate=0.3, reorder=0.5, seed=4))
    async with sim:
        config = tmp_path / "qrs.toml"
        config.write_text(config_text(sim, source))
        cursors = CursorStore(broker.bootstrap)
        await cursors.start()
        first = IngestProcess(["qlik-qrs"], config, broker.bootstrap, tmp_path / "first.log", {}).start()
        second = None
        try:
            await wait_for(_after(sim, 21), timeout=30, what="vendor second 21 (a retry running)")
            sim.clock.freeze()
            now_s = sim.clock.elapsed()
            frozen = {(r["id"], r["modifiedDate"]) for s in sim.sessions for r in s.result_views(sim.clock, now_s)}

            async def caught_up() -> bool:
                assert first.alive(), first.text()
                got = {(r["id"], r["modifiedDate"]) for r in results_sent(await raw_records(broker.bootstrap, "qlik_qrs", source))}
                cursor = await cursors.load(f"qlik_qrs:{source}")
                latest = max(parse_time(m) for _, m in frozen)
                return frozen <= got and cursor is not None and datetime.fromisoformat(cursor["mark"]) >= latest

            await wait_for(caught_up, timeout=30, what="the stored cursor to cover the frozen results")
            await first.kill_async()
            before = len(await raw_records(broker.bootstrap, "qlik_qrs", source))
            calls = len(sim.calls)
            second = IngestProcess(["qlik-qrs"], config, broker.bootstrap, tmp_path / "second.log", {}).start()

            async def polled_twice() -> bool:
                assert second.alive(), second.text()
                return sum(1 for c in sim.calls[calls:] if c.path == RESULTS_PATH and c.status == 200) >= 2

            await wait_for(polled_twice, timeout=30, what="two polls by the restarted ingestor")
            assert len(await raw_records(broker.bootstrap, "qlik_qrs", source)) == before, "the restart re-sent covered results"
            sim.clock.thaw()

            async def complete() -> bool:
                got = {(r["id"], r["status"]) for r in results_sent(await raw_records(broker.bootstrap, "qlik_qrs", source))}
                return final_results(sim) <= got

            await wait_for(complete, timeout=60, what="every final result after the restart", every=1.0)
        finally:
            if first.alive():
                await first.kill_async()
            if second is not None:
                assert await second.stop_async() == 0, second.text()
            await cursors.stop()


def _after(sim: QrsSimulator, second: float):
    async def check() -> bool:
        return sim.clock.elapsed() >= second
    return check


async def test_client_certificate_auth_over_tls(tmp_path):
    """QRS on 4242 wants a client certificate: the simulator here requires one, signed
    by the CA it trusts, and the poller presents it from cert_file/key_file."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("jobstream-client")
    cert, key, root = tmp_path / "client.pem", tmp_path / "client_key.pem", tmp_path / "root.pem"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(root))
    sim = QrsSimulator(scenario(1), clock=past_clock(1.0))
    sim.clock.freeze(60.0)
    await sim.start(ssl_context=server_ctx)
    try:
        assert sim.base_url.startswith("https://")
        settings = QrsSettings(base_url=sim.base_url, source="tls", lookback_s=3 * 3600, timeout_s=5.0,
                               cert_file=str(cert), key_file=str(key), ca_file=str(root))
        async with aiohttp.ClientSession() as http:
            poll = await QrsSource(settings, http).poll(QrsSource(settings, http).initial_cursor())
            assert len([r for r in poll.records if r.payload.get("schemaPath") == "ExecutionResult"]) == 5
            with pytest.raises(aiohttp.ClientError):  # no client certificate: the handshake is refused
                async with http.get(sim.base_url + RESULTS_PATH, ssl=ssl.create_default_context(cafile=str(root))) as r:
                    await r.read()
    finally:
        await sim.stop()


class NewestFirstQrs(QrsSimulator):
    """QRS promises no order in a list answer; this one lists the newest change first."""

    def shaped(self, items: list[Any]) -> list[Any]:
        return sorted(items, key=lambda item: item["modifiedDate"], reverse=True)


async def test_a_poll_sends_a_sessions_results_in_the_order_qrs_changed_them():
    """A reload failed and then succeeded on retry before the first poll, and QRS listed
    the success first. Sent in the answer's order, the worker (which numbers results of
    one execution by arrival, lifecycle R15) took the failed attempt for a late copy:
    one attempt, no failure, the run's start from the failed attempt (issue 33, seen on a
    10-minute demo)."""
    from pipeline import lifecycle
    from pipeline.vendors import Context
    from pipeline.vendors.qlik_qrs.normalize import normalize

    retried_reload = [session for session in scenario(1) if session.task_name == "Reload HR"]
    sim = NewestFirstQrs(retried_reload, clock=past_clock(1.0))
    sim.clock.freeze(60.0)
    async with sim:
        settings = QrsSettings(base_url=sim.base_url, source="order", lookback_s=3 * 3600, timeout_s=5.0)
        async with aiohttp.ClientSession() as http:
            source = QrsSource(settings, http)
            poll = await source.poll(source.initial_cursor())
    results = [r.payload for r in poll.records if r.payload.get("schemaPath") == "ExecutionResult"]
    assert [r["status"] for r in results] == [8, 7]  # FinishedFail, then FinishedSuccess
    run = None
    for record in poll.records:
        for event in normalize(record.payload, Context(source="order", received_at=record.received_at)):
            run, _ = lifecycle.apply(run, event)
    assert run is not None and (run.state.name, run.attempt, run.retries) == ("SUCCEEDED", 2, 1)
