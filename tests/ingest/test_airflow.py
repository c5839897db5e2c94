"""The Airflow poller against its simulator over real HTTP and the session broker: both API
versions and auths, faults (5xx, 429 with Retry-After, malformed bodies, duplicates,
reorders, timeouts), paging, token renewal, 401 terminal, and a SIGKILL in the middle."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from collections import Counter
from typing import Any

import aiohttp
import pytest

from pipeline.sources import Backoff, CursorStore, TerminalError, basic_auth, run_source
from pipeline.vendors._simulator import Faults
from pipeline.vendors.airflow.ingest import AirflowSettings, AirflowSource, digest, item_id
from pipeline.vendors.airflow.normalize import relevant_log
from pipeline.vendors.airflow.simulator import AirflowSimulator, scenario
from tests.support.ingest import past_clock, raw_records, wait_for
from tests.support.processes import IngestProcess

pytestmark = pytest.mark.integration

PASSWORD = "airflow-password"
FAULTS = Faults(
    latency_s=0.01, timeout=0.03, hang_s=1.5, error=0.08, storm=0.05, storm_len=2, retry_after_s=0.7,
    malformed=0.05, duplicate=0.3, reorder=0.5, seed=11, first=("storm", "timeout", "error", "malformed"),
)
COLLECTION = {"dag_run": "dag_runs", "task_instance": "task_instances", "event_log": "event_logs"}


def settings_for(sim: AirflowSimulator, source: str, version: str, password: str = PASSWORD) -> AirflowSettings:
    return AirflowSettings(
        base_url=sim.base_url, api_version=version, user="airflow", password=password, source=source, page_size=3,
        poll_interval_s=0.3, overlap_s=5.0, lookback_s=3 * 3600, timeout_s=1.0,
    )


def expected_pieces(sim: AirflowSimulator, version: str) -> set[tuple[str, str]]:
    """(id, digest) of every object's final state: what the poller must have sent last."""
    return {
        (item_id(COLLECTION[kind], view), digest(view)) for kind, view in sim.final_views(version)
        if kind != "event_log" or relevant_log(view)
    }


def sent_pieces(found: list[tuple[str | None, Any]]) -> list[tuple[str, str]]:
    pieces = []
    for key, payload in found:
        if key is None:
            continue
        kind = "event_logs" if "event_log_id" in payload else "task_instances" if "task_id" in payload else "dag_runs"
        pieces.append((item_id(kind, payload), digest(payload)))
    return pieces


def check_retry_after(sim: AirflowSimulator) -> None:
    for index, call in enumerate(sim.calls[:-1]):
        if call.status == 429:
            assert sim.calls[index + 1].at >= call.answered + call.retry_after, f"call {index + 1} came before Retry-After"


async def poll_until_complete(broker, sim: AirflowSimulator, settings: AirflowSettings) -> None:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(run_source(
            AirflowSource(settings, http), broker.bootstrap, stop=stop, redact=settings.redactor(),
            backoff=Backoff(initial_s=0.1, maximum_s=0.5),
        ))

        async def complete() -> bool:
            assert not task.done(), task.exception()
            found = await raw_records(broker.bootstrap, "airflow", settings.source)
            return expected_pieces(sim, settings.api_version) <= set(sent_pieces(found))

        try:
            await wait_for(complete, timeout=90, what="every object's final state in raw.airflow", every=1.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_poller_with_faults_sends_each_final_state_once_and_honours_retry_after(broker, version, caplog):
    caplog.set_level(logging.DEBUG)
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = AirflowSimulator(scenario(1), clock=past_clock(30.0), faults=FAULTS, token_ttl_s=2.0)
    async with sim:
        await poll_until_complete(broker, sim, settings_for(sim, source, version))
    found = await raw_records(broker.bootstrap, "airflow", source)
    pieces = sent_pieces(found)
    assert len(pieces) == len(set(pieces)), "an unchanged object was sent twice"
    assert sum(1 for key, _ in found if key is None) == sim.malformed_served, "each malformed body is dead-lettered once"
    assert sim.malformed_served > 0
    check_retry_after(sim)
    assert {429, 503, 504} <= {call.status for call in sim.calls}
    prefix = f"/api/{version}/"
    assert all(call.path.startswith(prefix) or call.path == "/auth/token" for call in sim.calls)
    if version == "v2":
        assert sim.tokens_issued > 1, "the expired token was never renewed"
    else:
        assert sim.tokens_issued == 0
    keys = {key for key, _ in found if key}
    assert f"airflow:{source}:etl_orders.load_partition" in keys and f"airflow:{source}:etl_orders" in keys
    zombies = [p for k, p in found if k and p.get("event") == "heartbeat timeout"]
    marked = [p for k, p in found if k and p.get("event") == "patch_dag_run"]
    assert len(zombies) == 1 and len(marked) == 1
    assert not [p for k, p in found if k and p.get("event") in ("cli_task_run", "clear")], "unrelated audit entries were sent"
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_refused_credentials_are_terminal_and_never_logged(broker, version, caplog):
    sim = AirflowSimulator(scenario(1), clock=past_clock(30.0))
    async with sim:
        settings = settings_for(sim, f"t-{uuid.uuid4().hex[:8]}", version, password="wrong-password-123")
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TerminalError) as refused:
                await run_source(AirflowSource(settings, http), broker.bootstrap, stop=asyncio.Event(),
                                 redact=settings.redactor(), backoff=Backoff(initial_s=0.1, maximum_s=0.2))
    assert "401" in str(refused.value)
    assert "wrong-password-123" not in str(refused.value) + caplog.text
    assert len(sim.calls) == 1, "a refused credential was retried"


async def test_sigkill_in_the_middle_resumes_from_the_stored_cursor(broker, tmp_path):
    source = f"t-{uuid.uuid4().hex[:8]}"
    sim = AirflowSimulator(scenario(1), clock=past_clock(20.0), faults=Faults(error=0.05, duplicate=0.2, seed=3))
    async with sim:
        s = settings_for(sim, source, "v2")
        config = tmp_path / "ingest.toml"
        config.write_text(
            "[airflow]\n"
            f'base_url = "{s.base_url}"\napi_version = "v2"\nuser = "airflow"\nsource = "{source}"\n'
            f"page_size = 3\npoll_interval_s = 0.3\noverlap_s = 5.0\nlookback_s = {s.lookback_s}\ntimeout_s = 1.0\n"
        )
        env = {"JOBSTREAM_AIRFLOW_PASSWORD": PASSWORD}
        cursors = CursorStore(broker.bootstrap)
        await cursors.start()
        key = f"airflow:{source}"
        first = IngestProcess(["airflow"], config, broker.bootstrap, tmp_path / "first.log", env).start()
        try:
            async def some_progress() -> bool:
                assert first.alive(), first.text()
                cursor = await cursors.load(key)
                return cursor is not None and len(cursor["seen"]) >= 5

            await wait_for(some_progress, timeout=60, what="a stored cursor with objects")
        finally:
            await first.kill_async()
        before = sent_pieces(await raw_records(broker.bootstrap, "airflow", source))
        stored = await cursors.load(key)
        second = IngestProcess(["airflow"], config, broker.bootstrap, tmp_path / "second.log", env).start()
        try:
            async def complete() -> bool:
                assert second.alive(), second.text()
                found = await raw_records(broker.bootstrap, "airflow", source)
                return expected_pieces(sim, "v2") <= set(sent_pieces(found))

            await wait_for(complete, timeout=90, what="every final state after the restart", every=1.0)
        finally:
            assert await second.stop_async() == 0, second.text()
            await cursors.stop()
    after = sent_pieces(await raw_records(broker.bootstrap, "airflow", source))
    by_second = Counter(after) - Counter(before)  # records come back partition by partition: count, not slice
    covered = set(stored["seen"].items())
    assert by_second, "the second process sent nothing"
    assert not [piece for piece in by_second if piece in covered], "the restart re-sent what its stored cursor covers"
    assert PASSWORD not in first.text() + second.text()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_server_page_cap_below_page_size_still_reads_every_object(version):
    """Airflow caps ``limit`` at its ``maximum_page_limit``: a short page is then not the last."""
    sim = AirflowSimulator(scenario(1), clock=past_clock(30.0), maximum_page_limit=2)
    async with sim:
        sim.clock.freeze(5000)
        settings = settings_for(sim, "cap", version)
        async with aiohttp.ClientSession() as http:
            api = AirflowSource(replace(settings, page_size=5), http).api
            found = await api.listing("/dags/~/dagRuns/~/taskInstances", "task_instances", {}, "task instances")
    assert len(found) == sum(1 for obj in sim.objects if obj.kind == "task_instance") == 13


async def test_the_simulator_serves_each_flavour_with_its_own_auth_and_field_names():
    sim = AirflowSimulator(scenario(1), clock=past_clock(30.0))
    async with sim:
        sim.clock.freeze(5000)
        basic = {"Authorization": basic_auth("airflow", PASSWORD)}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sim.base_url}/api/v1/dags/~/dagRuns/~/taskInstances", headers=basic) as v1:
                v1_items = (await v1.json())["task_instances"]
            async with http.get(f"{sim.base_url}/api/v2/dags/~/dagRuns/~/taskInstances", headers=basic) as refused:
                assert refused.status == 401, "basic auth on /api/v2"
            async with http.post(f"{sim.base_url}/auth/token", json={"username": "airflow", "password": PASSWORD}) as token:
                assert token.status == 201
                bearer = {"Authorization": f"Bearer {(await token.json())['access_token']}"}
            async with http.get(f"{sim.base_url}/api/v2/dags/~/dagRuns/~/taskInstances", headers=bearer) as v2:
                v2_items = (await v2.json())["task_instances"]
            async with http.get(f"{sim.base_url}/api/v1/dags/~/dagRuns", headers=bearer) as refused:
                assert refused.status == 401, "a JWT on /api/v1"
    assert len(v1_items) == len(v2_items) == 13
    assert all("execution_date" in item and "scheduled_when" not in item for item in v1_items)
    assert all("logical_date" in item and "execution_date" not in item for item in v2_items)
    assert {item["state"] for item in v2_items} >= {"success", "failed", "upstream_failed", "skipped"}
