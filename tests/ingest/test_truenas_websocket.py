"""The TrueNAS ingestor against the middleware simulator (both API flavours) and the
session broker: dropped connections mid-job, middleware restarts with job ids back at 1,
and the pure JobBook that decides what is sent and under which boot."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest

from pipeline import catalog, vendors
from pipeline.broker import free_port
from pipeline.model import UTC, decode_envelope
from pipeline.push import KafkaLink
from pipeline.sources import Backoff, CursorStore, TerminalError
from pipeline.vendors.truenas.ingest import JobBook, TruenasConfig, TruenasIngestor, check_url
from pipeline.vendors.truenas.simulator import MiddlewareSimulator
from tests.support.kafka import collect

API_KEY = "1-simulated-api-key-abcdef"


def job(job_id: int, method: str = "pool.scrub.scrub", state: str = "RUNNING", started: int = 1000,
        finished: int | None = None, transient: bool = False, **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "method": method, "state": state, "transient": transient,
            "time_started": {"$date": started}, "time_finished": None if finished is None else {"$date": finished},
            "progress": {"percent": 10, "description": "", "extra": None}, **extra}


# --- JobBook (pure) ------------------------------------------------------------------


def test_partial_changes_are_merged_into_the_last_snapshot_without_secrets():
    book = JobBook("nas")
    book.connect("boot-aaaaaaaa", [])
    merged, restarted = book.update("added", 1, job(1, state="WAITING", arguments=["s3cr3t"], credentials={"k": "v"}))
    assert not restarted and "arguments" not in merged and "credentials" not in merged
    merged, _ = book.update("changed", 1, {"id": 1, "progress": {"percent": 50}})
    assert merged["method"] == "pool.scrub.scrub" and merged["state"] == "WAITING"
    assert merged["progress"] == {"percent": 50}
    assert book.update("removed", 1, None) == (None, False)


def test_resync_sends_what_kafka_has_not_acknowledged_yet():
    book = JobBook("nas")
    listing = [job(1, state="SUCCESS", finished=2000), job(2)]
    book.connect("boot-aaaaaaaa", listing)
    assert [j["id"] for j in book.resync(listing)] == [1, 2]
    assert [j["id"] for j in book.resync(listing)] == [1, 2]  # the send failed: again
    book.acknowledged(book.resync(listing))
    assert book.resync(listing) == []
    moved = [listing[0], job(2, state="SUCCESS", finished=3000)]
    assert [j["state"] for j in book.resync(moved)] == ["SUCCESS"]


def test_a_new_boot_id_starts_a_new_source():
    book = JobBook("nas")
    book.connect("aaaaaaaa-1111", [job(1, state="SUCCESS", finished=2000)])
    assert book.source == "nas@aaaaaaaa"
    assert book.connect("bbbbbbbb-2222", [job(1, state="RUNNING", started=5000)])
    assert book.source == "nas@bbbbbbbb"


def test_a_restart_under_the_same_boot_id_is_seen_from_the_job_ids():
    book = JobBook("nas")
    first = [job(1, state="SUCCESS", finished=2000), job(2, state="SUCCESS", finished=2500)]
    book.connect("aaaaaaaa", first)
    book.resync(first)
    assert not book.connect("aaaaaaaa", first)  # a reconnect to the same run
    # job 1 again, but started later and not finished: another run of middlewared
    assert book.connect("aaaaaaaa", [job(1, state="RUNNING", started=9000)])
    assert book.source == "nas@aaaaaaaa.1"


def test_a_waiting_job_1_created_at_another_time_is_another_run():
    book = JobBook("nas")
    listing = [job(1, state="WAITING", started=1000)]
    book.connect("aaaaaaaa", listing)
    book.resync(listing)
    assert not book.connect("aaaaaaaa", [job(1, state="RUNNING", started=1000)])  # same job, now running
    assert book.connect("aaaaaaaa", [job(1, state="WAITING", started=7000)])


def test_a_kept_job_that_vanished_without_newer_jobs_means_a_restart_but_a_transient_one_does_not():
    book = JobBook("nas")
    listing = [job(1, state="SUCCESS", finished=2), job(2, state="SUCCESS", finished=3, transient=True)]
    book.connect("aaaaaaaa", listing)
    book.resync(listing)
    assert not book.connect("aaaaaaaa", listing[:1])  # the transient job 2 was removed
    assert book.connect("aaaaaaaa", [])  # job 1 (kept) gone, nothing newer: restart
    assert book.source == "nas@aaaaaaaa.1"


def test_an_added_id_that_is_not_new_means_a_restart():
    book = JobBook("nas")
    book.connect("aaaaaaaa", [])
    book.update("added", 1, job(1, state="WAITING"))
    book.update("added", 2, job(2, state="WAITING"))
    _, restarted = book.update("added", 1, job(1, state="WAITING", started=5000))
    assert restarted and book.source == "nas@aaaaaaaa.1"


def test_the_cursor_keeps_the_source_across_an_ingestor_restart():
    book = JobBook("nas")
    listing = [job(1, state="SUCCESS", finished=2)]
    book.connect("aaaaaaaa", listing)
    book.resync(listing)
    assert book.connect("aaaaaaaa", [job(1, state="RUNNING", started=50)])
    book.resync([job(1, state="RUNNING", started=50)])
    again = JobBook.from_cursor("nas", orjson.loads(orjson.dumps(book.cursor())))
    assert not again.connect("aaaaaaaa", [job(1, state="RUNNING", started=50)])
    assert again.source == book.source == "nas@aaaaaaaa.1"


def test_urls_are_checked():
    assert check_url("wss://nas.local/api/current")
    assert TruenasConfig(url="ws://nas:81/websocket", api_key="x").legacy
    assert TruenasConfig(url="ws://nas:81/api/current", api_key="x").source_host == "nas"
    for bad in ("http://nas/api/current", "ws:///api/current", "ws://nas/"):
        with pytest.raises(ValueError):
            check_url(bad)


# --- against the simulator and the session broker ----------------------------------------


@contextlib.asynccontextmanager
async def ingesting(bootstrap: str, sim: MiddlewareSimulator, host: str, *, legacy: bool = False,
                    api_key: str = API_KEY) -> AsyncIterator[TruenasIngestor]:
    cursors = await CursorStore(bootstrap).start()
    config = TruenasConfig(url=sim.legacy_url if legacy else sim.url, api_key=api_key, host=host,
                           ping_every_s=0.3, heartbeat_every_s=0.5, call_timeout_s=5)
    ingestor = TruenasIngestor(config, KafkaLink(bootstrap, "truenas", host, ack_timeout_s=5), cursors,
                               backoff=Backoff(initial_s=0.05, maximum_s=0.3))
    stop = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stop))
    try:
        yield ingestor
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            await ingestor.link.close()
            await cursors.stop()


async def connected(ingestor: TruenasIngestor, timeout: float = 15) -> None:
    await asyncio.wait_for(ingestor.connected.wait(), timeout)


async def records_of(bootstrap: str, host: str, count: int) -> list[tuple[bytes | None, Any]]:
    marker = f'"source":"{host}@'.encode()
    found = await collect(
        bootstrap, catalog.raw_topic("truenas"),
        lambda key, value: marker in value and b'"heartbeat":false' in value, count=count, timeout=30,
    )
    records = [(key, decode_envelope(value)) for key, value in found]
    # partitions are read in any order; one key's records keep their log order
    return sorted(records, key=lambda record: record[1].received_at)


def fields_of(payload: Any) -> dict[str, Any]:
    if "params" in payload:
        return payload["params"]["fields"]
    return payload.get("fields", payload)


@pytest.mark.integration
async def test_a_connection_dropped_mid_job_loses_no_state_change(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            scrub = sim.add_job("pool.scrub.scrub")
            sim.update_job(scrub, state="RUNNING", percent=20)
            assert len(await records_of(broker.bootstrap, host, 2)) == 2
            sim.pause()
            assert await sim.drop_connections() == 1
            sim.update_job(scrub, percent=60)
            sim.update_job(scrub, state="SUCCESS", percent=100)
            backup = sim.add_job("cloudsync.sync")
            sim.update_job(backup, state="RUNNING", percent=5)
            sim.update_job(backup, state="FAILED")
            sim.resume()
            records = await records_of(broker.bootstrap, host, 4)
            assert ingestor.stats.connections == 2
    finally:
        await sim.stop()
    by_job: dict[int, list[str]] = {}
    for key, envelope in records:
        fields = fields_of(envelope.payload)
        by_job.setdefault(fields["id"], []).append(fields["state"])
        assert "credentials" not in fields and "arguments" not in fields
        # the job key is the host's, not the boot's; a scrub's pool is part of the job
        task = {"pool.scrub.scrub": ":tank", "cloudsync.sync": ":1"}[fields["method"]]
        assert key == f"truenas:{host}:{fields['method']}{task}".encode()
    assert by_job == {scrub: ["WAITING", "RUNNING", "SUCCESS"], backup: ["FAILED"]}
    assert all(b"never-leaves-the-nas" not in orjson.dumps(e.payload) for _, e in records)
    sources = {envelope.source for _, envelope in records}
    assert sources == {f"{host}@{sim.boot_id[:8]}"}


@pytest.mark.integration
async def test_the_legacy_api_with_partial_changes_sends_merged_jobs(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, partial_updates=True)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host, legacy=True) as ingestor:
            await connected(ingestor)
            replication = sim.add_job("replication.run")
            sim.update_job(replication, state="RUNNING", percent=0)
            sim.update_job(replication, percent=50, description="sending")
            sim.update_job(replication, state="ABORTED")
            records = await records_of(broker.bootstrap, host, 4)
    finally:
        await sim.stop()
    payloads = [envelope.payload for _, envelope in records]
    assert [p["msg"] for p in payloads] == ["added", "changed", "changed", "changed"]
    assert all(p["fields"]["method"] == "replication.run" for p in payloads)
    ctx = vendors.Context(source=records[0][1].source)
    states = [vendors.normalize("truenas", p, ctx)[0].state.value for p in payloads]
    assert states == ["PENDING", "RUNNING", "RUNNING", "CANCELED"]
    assert vendors.normalize("truenas", payloads[2], ctx)[0].progress == 50.0


@pytest.mark.integration
@pytest.mark.parametrize("keep_boot_id", [True, False], ids=["same-boot-id", "new-boot-id"])
async def test_a_middleware_restart_repeats_job_ids_without_merging_runs(broker, keep_boot_id):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, kernel_boot_id=keep_boot_id)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            first = sim.add_job("pool.scrub.scrub")
            sim.update_job(first, state="RUNNING", percent=10)
            sim.update_job(first, state="SUCCESS")
            assert len(await records_of(broker.bootstrap, host, 3)) == 3
            ingestor.connected.clear()
            await sim.restart()
            await connected(ingestor)
            again = sim.add_job("pool.scrub.scrub")
            sim.update_job(again, state="RUNNING", percent=10)
            sim.update_job(again, state="FAILED")
            records = await records_of(broker.bootstrap, host, 6)
            assert ingestor.stats.restarts_detected == 1
        # an ingestor restart reads the boot marker back from ingest.cursors
        async with ingesting(broker.bootstrap, sim, host) as second:
            await connected(second)
            assert second.book.source == ingestor.book.source
            assert second.stats.restarts_detected == 0
    finally:
        await sim.stop()
    assert first == again == 1
    sources = [envelope.source for _, envelope in records]
    assert len(set(sources[:3])) == 1 and len(set(sources[3:])) == 1 and sources[0] != sources[3]
    marker = sim.boot_id[:8]
    assert sources[3] == (f"{host}@{marker}.1" if keep_boot_id else f"{host}@{marker}")
    runs = set()
    for _, envelope in records:
        [event] = vendors.normalize("truenas", envelope.payload, vendors.Context(source=envelope.source))
        runs.add((event.run_key, event.state.value))
    run_keys = {run for run, _ in runs}
    assert len(run_keys) == 2, runs
    assert {state for run, state in runs if run.startswith(f"truenas:{sources[3]}:")} == {"PENDING", "RUNNING", "FAILED"}


@pytest.mark.integration
async def test_a_refused_api_key_ends_the_ingestor_with_one_clear_error(broker):
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start()
    try:
        cursors = await CursorStore(broker.bootstrap).start()
        config = TruenasConfig(url=sim.url, api_key="wrong-key-123", host="nas-refused", call_timeout_s=5)
        ingestor = TruenasIngestor(config, KafkaLink(broker.bootstrap, "truenas", "x"), cursors)
        with pytest.raises(TerminalError, match="refused the API key for user 'root'"):
            await asyncio.wait_for(ingestor.run(asyncio.Event()), 20)
        await ingestor.link.close()
        await cursors.stop()
    finally:
        await sim.stop()


@pytest.mark.integration
async def test_job_changes_kafka_did_not_acknowledge_are_sent_after_it_comes_back(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start()
    cursors = await CursorStore(broker.bootstrap).start()
    config = TruenasConfig(url=sim.url, api_key=API_KEY, host=host, ping_every_s=0.3, heartbeat_every_s=0.5, call_timeout_s=5)
    link = KafkaLink(f"127.0.0.1:{free_port()}", "truenas", host, ack_timeout_s=2)  # nothing listens there
    ingestor = TruenasIngestor(config, link, cursors, backoff=Backoff(initial_s=0.05, maximum_s=0.2))
    stop = asyncio.Event()
    done = sim.add_job("pool.scrub.scrub")
    sim.update_job(done, state="SUCCESS")
    task = asyncio.create_task(ingestor.run(stop))
    try:
        for _ in range(200):
            if ingestor.stats.connections >= 2:
                break
            await asyncio.sleep(0.05)
        assert ingestor.stats.connections >= 2 and ingestor.stats.records == 0
        link.bootstrap = broker.bootstrap  # Kafka is back
        await connected(ingestor)
        running = sim.add_job("replication.run")
        sim.update_job(running, state="RUNNING", percent=30)
        records = await records_of(broker.bootstrap, host, 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await link.close()
        await cursors.stop()
        await sim.stop()
    seen = [(fields_of(e.payload)["id"], fields_of(e.payload)["state"]) for _, e in records]
    assert seen == [(done, "SUCCESS"), (running, "WAITING"), (running, "RUNNING")]


@pytest.mark.integration
async def test_a_server_without_login_ex_is_logged_into_with_login_with_api_key(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, login_ex=False)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            sim.add_job("update.download")
            [(_, envelope)] = await records_of(broker.bootstrap, host, 1)
    finally:
        await sim.stop()
    assert sim.logins == 1 and envelope.payload["params"]["msg"] == "added"


@pytest.mark.integration
async def test_the_ingestor_follows_a_busy_middleware_through_drops_and_restarts(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, clock=100, seed=5)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            sim.workload(every_s=2.0)
            sim.faults(drop_every_s=50, restart_every_s=120)
            for _ in range(300):  # 30 s at most
                if ingestor.stats.restarts_detected >= 2 and ingestor.stats.connections >= 5:
                    break
                await asyncio.sleep(0.1)
            sent = ingestor.stats.records
            assert ingestor.stats.restarts_detected >= 2 and ingestor.stats.connections >= 5, ingestor.stats
            records = await records_of(broker.bootstrap, host, sent)
    finally:
        await sim.stop()
    assert len(records) >= sent > 0
    sources = {envelope.source for _, envelope in records}
    assert len(sources) >= 3  # one per middleware run
    for _, envelope in records:  # every record is a job the normalizer accepts, keyed by its run
        [event] = vendors.normalize("truenas", envelope.payload,
                                    vendors.Context(source=envelope.source, received_at=envelope.received_at))
        assert event.run_key.startswith(f"truenas:{envelope.source}:")
        assert event.job_key.startswith(f"truenas:{host}:")  # one job across middleware runs
    lost = [envelope for _, envelope in records if envelope.payload.get("msg") == "lost"]
    assert lost and ingestor.stats.lost_jobs == len(lost)  # jobs running at a restart were closed


class _CountingBackoff(Backoff):
    """Records the failure count the ingestor asks a delay for."""

    __slots__ = ()
    asked: list[int] = []

    def delay(self, failures: int, retry_after: float | None = None, rng: Any = None) -> float:
        _CountingBackoff.asked.append(failures)
        return 0.05


@pytest.mark.integration
async def test_each_drop_after_a_good_connection_starts_the_backoff_over(broker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start()
    _CountingBackoff.asked.clear()
    cursors = await CursorStore(broker.bootstrap).start()
    config = TruenasConfig(url=sim.url, api_key=API_KEY, host=host, heartbeat_every_s=0.5, call_timeout_s=5)
    ingestor = TruenasIngestor(config, KafkaLink(broker.bootstrap, "truenas", host), cursors, backoff=_CountingBackoff())
    stop = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stop))
    try:
        for _ in range(3):
            await connected(ingestor)
            ingestor.connected.clear()
            await sim.drop_connections()
        await connected(ingestor)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await ingestor.link.close()
        await cursors.stop()
        await sim.stop()
    assert _CountingBackoff.asked == [1, 1, 1]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """A test CA and a server certificate for 127.0.0.1 (trustme)."""
    import ssl

    import trustme

    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return server, str(ca_file)


@pytest.mark.integration
@pytest.mark.parametrize("trust", ["ca-file", "insecure"])
async def test_wss_with_the_nas_ca_or_insecure(broker, tls, trust):
    server_context, ca_file = tls
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start(ssl_context=server_context)
    cursors = await CursorStore(broker.bootstrap).start()
    config = TruenasConfig(url=sim.url, api_key=API_KEY, host=host, heartbeat_every_s=0.5, call_timeout_s=5,
                           ca_file=ca_file if trust == "ca-file" else None, verify_tls=trust != "insecure")
    ingestor = TruenasIngestor(config, KafkaLink(broker.bootstrap, "truenas", host), cursors)
    stop = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stop))
    try:
        await connected(ingestor)
        sim.add_job("pool.scrub.scrub")
        [(_, envelope)] = await records_of(broker.bootstrap, host, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await ingestor.link.close()
        await cursors.stop()
        await sim.stop()
    assert sim.url.startswith("wss://") and envelope.payload["params"]["fields"]["method"] == "pool.scrub.scrub"


@pytest.mark.integration
async def test_an_untrusted_certificate_ends_the_ingestor_with_what_to_do(broker, tls):
    server_context, _ = tls
    sim = MiddlewareSimulator(api_key=API_KEY)
    await sim.start(ssl_context=server_context)
    cursors = await CursorStore(broker.bootstrap).start()
    ingestor = TruenasIngestor(TruenasConfig(url=sim.url, api_key=API_KEY, host="nas-untrusted", call_timeout_s=5),
                               KafkaLink(broker.bootstrap, "truenas", "x"), cursors)
    try:
        with pytest.raises(TerminalError, match="is not trusted .*pass --ca-file with the NAS's CA, or --insecure"):
            await asyncio.wait_for(ingestor.run(asyncio.Event()), 20)
    finally:
        await ingestor.link.close()
        await cursors.stop()
        await sim.stop()


@pytest.mark.integration
async def test_through_the_worker_job_1_before_and_after_a_restart_are_two_runs(broker, worker):
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, kernel_boot_id=True)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            before = sim.add_job("pool.scrub.scrub")
            sim.update_job(before, state="RUNNING", percent=50)
            sim.update_job(before, state="SUCCESS")
            await records_of(broker.bootstrap, host, 3)
            ingestor.connected.clear()
            await sim.restart()
            await connected(ingestor)
            after = sim.add_job("pool.scrub.scrub")
            sim.update_job(after, state="RUNNING", percent=50)
            sim.update_job(after, state="FAILED")
            await records_of(broker.bootstrap, host, 6)
    finally:
        await sim.stop()
    prefix = f"truenas:{host}@".encode()
    marker = sim.boot_id[:8]
    # the run key is the normalizer's (it may add the job's creation time): compare by
    # the source it starts with and the job id it ends with
    want = {(f"{host}@{marker}", "1", "SUCCEEDED"), (f"{host}@{marker}.1", "1", "FAILED")}
    latest: dict[str, str] = {}
    seen: set[tuple[str, str, str]] = set()
    deadline = asyncio.get_running_loop().time() + 60
    while seen != want and asyncio.get_running_loop().time() < deadline:
        found = await collect(broker.bootstrap, catalog.RUNS, lambda key, value: key is not None and key.startswith(prefix),
                              count=2, timeout=10)
        latest = {}
        for key, value in found:  # one run key lives in one partition: the last read is the latest
            run = orjson.loads(value)
            latest[run["run_key"]] = run["state"]
        seen = {(key.split(":")[1], key.rsplit(":", 1)[1], state) for key, state in latest.items()}
    assert seen == want and len(latest) == 2, latest


def test_a_restart_reports_the_unfinished_jobs_of_the_ended_run_as_lost():
    """issue 33 case 2, the pure part: a restart seen in a listing (here after an ingestor
    restart, from the identities kept in the cursor) names the jobs that cannot finish."""
    book = JobBook("nas", boot_id="aaaaaaaa-1")
    book.update("added", 1, job(1, state="WAITING"))
    book.update("changed", 1, job(1, state="RUNNING"))
    book.update("added", 2, job(2, state="WAITING", method="update.download"))
    book.update("added", 3, job(3, state="WAITING", method="pool.scrub.scrub"))
    book.update("changed", 3, job(3, state="SUCCESS", time_finished={"$date": 1714640100000}))
    book.update("added", 4, job(4, state="RUNNING", method="replication.run", arguments=[7, True]))
    again = JobBook.from_cursor("nas", book.cursor())
    assert again.connect("bbbbbbbb-2", [job(1, state="RUNNING", method="cloudsync.sync")])
    assert [(lost.source, lost.job["id"], lost.job["state"]) for lost in again.lost] == [
        ("nas@aaaaaaaa", 1, "RUNNING"), ("nas@aaaaaaaa", 2, "WAITING"), ("nas@aaaaaaaa", 4, "RUNNING")]
    ctx = vendors.Context(source="nas@aaaaaaaa", received_at=datetime.now(UTC))
    [lost_replication] = vendors.normalize("truenas", again.lost[2].payload(), ctx)
    [running] = vendors.normalize("truenas", book.snapshots[4], ctx)
    assert lost_replication.job_key == running.job_key == "truenas:nas:replication.run:7"  # the task is in the cursor
    assert lost_replication.run_key == running.run_key
    [event] = vendors.normalize("truenas", again.lost[0].payload(),
                                vendors.Context(source="nas@aaaaaaaa", received_at=datetime.now(UTC)))
    assert (event.state.value, event.error_code) == ("FAILED", "LOST_IN_RESTART")


@pytest.mark.integration
async def test_a_job_running_through_a_restart_ends_lost_and_keeps_its_job_key(broker):
    """issue 33 cases 1 and 2 through the real ingestor and a real websocket: the job
    running when middlewared restarts is closed (FAILED, LOST_IN_RESTART) under its own
    boot's source, and the same task before and after the restart is one job key."""
    host = f"nas-{uuid.uuid4().hex[:6]}"
    sim = MiddlewareSimulator(api_key=API_KEY, kernel_boot_id=True)
    await sim.start()
    try:
        async with ingesting(broker.bootstrap, sim, host) as ingestor:
            await connected(ingestor)
            doomed = sim.add_job("replication.run")  # task 1, as the simulator lists it
            sim.update_job(doomed, state="RUNNING", percent=10)
            assert len(await records_of(broker.bootstrap, host, 2)) == 2
            ingestor.connected.clear()
            await sim.restart()
            await connected(ingestor)
            again = sim.add_job("replication.run")
            sim.update_job(again, state="RUNNING", percent=10)
            records = await records_of(broker.bootstrap, host, 5)
            assert ingestor.stats.lost_jobs == 1
    finally:
        await sim.stop()
    events = [(key, envelope, event) for key, envelope in records
              for event in vendors.normalize("truenas", envelope.payload,
                                             vendors.Context(source=envelope.source, received_at=envelope.received_at))]
    assert {key for key, _, _ in events} == {f"truenas:{host}:replication.run:1".encode()}
    assert {event.job_key for _, _, event in events} == {f"truenas:{host}:replication.run:1"}
    [lost] = [(envelope, event) for _, envelope, event in events if event.error_code == "LOST_IN_RESTART"]
    envelope, event = lost
    first_run = events[0][2].run_key
    assert event.run_key == first_run and envelope.source == f"{host}@{sim.boot_id[:8]}"
    assert event.state.value == "FAILED" and event.attrs["job_name"] == "replication.run [1]"
    assert {e.run_key for _, _, e in events if e.run_key != first_run}, "the new boot's run is another run"
