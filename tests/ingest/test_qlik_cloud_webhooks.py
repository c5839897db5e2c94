"""The Qlik Cloud webhook receiver over real HTTP, writing to the session broker: every
status code it answers and the exact raw records that reach Kafka (or do not)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from pipeline import catalog, vendors
from pipeline.broker import free_port
from pipeline.model import UTC
from pipeline.push import KafkaLink
from pipeline.vendors.qlik_cloud.ingest import Receiver, ReceiverConfig, serve, signature, signature_matches
from pipeline.vendors.qlik_cloud.simulator import Faults, WebhookSender, binary, delivery_plan, reload_events, structured
from tests.support.kafka import collect

SECRET = "webhook-secret-123"
RECENT = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # within the receiver's age limit
pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(bootstrap: str, *, secret: str | None = SECRET, max_body: int = 65_536, source: str = "qlik-test",
                  ssl_context: Any = None) -> AsyncIterator[str]:
    link = KafkaLink(bootstrap, "qlik_cloud", source, ack_timeout_s=3.0)
    receiver = Receiver(link, ReceiverConfig(secret=secret, max_body_bytes=max_body, heartbeat_every_s=0.5))
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(receiver, "127.0.0.1", 0, stop, ready=ready, ssl_context=ssl_context))
    port = await asyncio.wait_for(ready, 10)
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def event(tenant: str, n: int = 1, **data: Any) -> dict[str, Any]:
    return {
        "id": f"ce-{n}", "specversion": "1.0", "type": "com.qlik.v1.reload.finished",
        "source": "com.qlik/reloads", "time": RECENT, "tenantid": tenant,
        "datacontenttype": "application/json",
        "data": {"id": f"reload-{n}", "appId": "sales-app", "userId": "u-1", "succeeded": True,
                 "status": "SUCCEEDED", **data},
    }


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/webhooks/qlik", data=body, headers=headers) as answer:
            return answer.status, await answer.json(), dict(answer.headers)


def of_tenant(tenant: str):
    marker = tenant.encode()
    return lambda key, value: marker in value


async def raw_records(bootstrap: str, tenant: str, count: int) -> list[tuple[bytes | None, dict[str, Any]]]:
    found = await collect(bootstrap, catalog.raw_topic("qlik_cloud"), of_tenant(tenant), count=count, timeout=30)
    return [(key, orjson.loads(value)) for key, value in found]


def test_signature_is_hex_hmac_sha256_compared_case_insensitively():
    body = b'{"a":1}'
    sig = signature("key!", body)
    assert len(sig) == 64 and int(sig, 16) >= 0
    assert signature_matches("key!", body, sig)
    assert signature_matches("key!", body, sig.upper())
    assert signature_matches("key!", body, "sha256=" + sig)
    assert not signature_matches("key!", body + b" ", sig)
    assert not signature_matches("other", body, sig)
    assert not signature_matches("key!", body, "é" * 64)


def test_delivery_plan_duplicates_reorders_and_switches_to_binary():
    events = [{"id": str(n)} for n in range(6)]
    plan = delivery_plan(events, Faults(duplicate_every=3, reorder_every=2, binary_every=4))
    assert [(e["id"], b) for e, b in plan] == [
        ("0", False), ("2", False), ("1", False), ("1", False), ("4", True), ("3", False), ("5", False), ("5", False),
    ]


async def test_a_signed_event_is_acknowledged_only_with_its_record_in_kafka(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    doc = event(tenant)
    body, headers = structured(doc, SECRET)
    async with running(broker.bootstrap) as url:
        status, answer, _ = await post(url, body, headers)
    assert (status, answer) == (200, {"accepted": 1, "keyed": 1})
    [(key, value)] = await raw_records(broker.bootstrap, tenant, 1)
    assert key == f"qlik_cloud:{tenant}:sales-app".encode()
    assert value["vendor"] == "qlik_cloud" and value["source"] == "qlik-test" and value["heartbeat"] is False
    assert value["payload"] == doc


async def test_the_same_delivery_again_is_acknowledged_but_written_once(broker):
    """Issue 35 case 3: a signed request replayed is not written again (before: each replay
    was a new record); it is still acknowledged, so a Qlik retry is not taken for a failure."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    body, headers = structured(event(tenant), SECRET)
    later, later_headers = structured(event(tenant, 2), SECRET)
    async with running(broker.bootstrap) as url:
        assert (await post(url, body, headers))[0] == 200
        for _ in range(10):
            status, answer, _ = await post(url, body, headers)
            assert (status, answer) == (200, {"accepted": 0, "duplicate": True})
        assert (await post(url, later, later_headers))[0] == 200
    records = await raw_records(broker.bootstrap, tenant, 2)
    assert [value["payload"]["id"] for _, value in records] == ["ce-1", "ce-2"]


async def test_unsigned_forged_oversized_and_malformed_requests_are_refused_and_never_sent(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    good_body, good_headers = structured(event(tenant, 1), SECRET)
    bad_body, bad_headers = structured(event(tenant, 2), SECRET)
    big = event(tenant, 3, errorMessage="x" * 70_000)
    big_body, big_headers = structured(big, SECRET)
    cases = [
        ("unsigned", bad_body, {"Content-Type": "application/json"}, 401, "missing Qlik-Signature header"),
        ("forged", bad_body, {**bad_headers, "Qlik-Signature": signature("not-the-secret", bad_body)}, 401,
         "Qlik-Signature does not match the body"),
        ("tampered", bad_body.replace(b"SUCCEEDED", b"FAILED   "), bad_headers, 401, "Qlik-Signature does not match the body"),
        ("oversized", big_body, big_headers, 413, "body of"),
        ("not JSON type", b"status=ok", {"Content-Type": "text/plain", "Qlik-Signature": signature(SECRET, b"status=ok")}, 415,
         "content type 'text/plain' is not JSON"),
        ("bad JSON", b'{"id": ', {"Content-Type": "application/json", "Qlik-Signature": signature(SECRET, b'{"id": ')}, 400,
         "body is not valid JSON"),
        ("empty", b"", {"Content-Type": "application/json", "Qlik-Signature": signature(SECRET, b"")}, 400, "empty body"),
    ]
    async with running(broker.bootstrap) as url:
        for name, body, headers, want_status, want_reason in cases:
            status, answer, _ = await post(url, body, headers)
            assert status == want_status, name
            assert answer["error"].startswith(want_reason), (name, answer)
            assert SECRET not in answer["error"]
        assert (await post(url, good_body, good_headers))[0] == 200
    records = await raw_records(broker.bootstrap, tenant, 1)
    assert [value["payload"]["id"] for _, value in records] == ["ce-1"]


async def test_binary_mode_keeps_the_ce_headers_and_drops_the_others(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    doc = event(tenant)
    body, headers = binary(doc, SECRET)
    async with running(broker.bootstrap) as url:
        status, _, _ = await post(url, body, {**headers, "Authorization": "Bearer proxy-token"})
    assert status == 200
    [(key, value)] = await raw_records(broker.bootstrap, tenant, 1)
    assert key == f"qlik_cloud:{tenant}:sales-app".encode()
    payload = value["payload"]
    assert payload["data"] == doc["data"]
    assert payload["headers"]["ce-id"] == "ce-1" and payload["headers"]["content-type"] == "application/json"
    assert all(name.startswith("ce-") or name == "content-type" for name in payload["headers"])
    [normalized] = vendors.normalize("qlik_cloud", payload)
    assert normalized.event_id == vendors.normalize("qlik_cloud", doc)[0].event_id


async def test_an_event_the_normalizer_refuses_is_still_recorded_unkeyed_for_the_dead_letters(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    doc = {**event(tenant), "type": "com.qlik.v1.app.created"}
    body, headers = structured(doc, SECRET)
    async with running(broker.bootstrap) as url:
        assert (await post(url, body, headers))[:2] == (200, {"accepted": 1, "keyed": 0})
    [(key, value)] = await raw_records(broker.bootstrap, tenant, 1)
    assert key is None and value["payload"] == doc


async def test_without_a_secret_unsigned_events_are_accepted(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    body = orjson.dumps(event(tenant))
    async with running(broker.bootstrap, secret=None) as url:
        assert (await post(url, body, {"Content-Type": "application/json"}))[0] == 200
    assert len(await raw_records(broker.bootstrap, tenant, 1)) == 1


async def test_kafka_down_answers_503_with_retry_after_and_healthz_says_so():
    body, headers = structured(event("nobody"), SECRET)
    async with running(f"127.0.0.1:{free_port()}") as url:  # nothing listens there
        status, answer, answer_headers = await post(url, body, headers)
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as health:
                health_status = health.status
    assert status == 503 and answer_headers["Retry-After"] == "5"
    assert "deliver it again" in answer["error"]
    assert health_status == 503


async def test_healthz_is_200_with_kafka(broker):
    async with running(broker.bootstrap) as url:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as health:
                assert health.status == 200
                assert (await health.json())["status"] == "ok"


async def test_the_sender_signs_duplicates_reorders_and_every_event_reaches_kafka(broker):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    events = reload_events(12, tenant=tenant, start=datetime.now(UTC) - timedelta(hours=2), seed=3)
    faults = Faults(duplicate_every=4, reorder_every=5, binary_every=3, legacy_every=4)
    async with running(broker.bootstrap) as url:
        report = await WebhookSender(url + "/hook", secret=SECRET, clock=1000).run(events, faults, interval_s=0.01)
    assert (report.delivered, report.duplicates, report.reordered, report.failed) == (15, 3, 2, 0)
    # binary at 3, 6, 9 (12 goes as CloudEvents 1.0.2); legacy at 4, hybrid at 8, 1.0.2 at 12, each sent twice
    assert (report.binary, report.legacy) == (3, 6)
    records = await raw_records(broker.bootstrap, tenant, 12)  # a repeat of the same bytes is not written again
    assert len(records) == 12 and all(key is not None for key, _ in records)
    envelopes = {(value["payload"].get("specversion"), "eventType" in value["payload"])
                 for _, value in records if "reloadId" in value["payload"]["data"]}
    assert envelopes == {(None, True), ("1.0.2", True), ("1.0.2", False)}  # legacy, hybrid, CloudEvents 1.0.2
    runs = {vendors.normalize("qlik_cloud", value["payload"])[0].run_key for _, value in records}
    assert len(runs) == 12  # every reload once, whatever envelope or repeat it came in


async def test_the_sender_retries_5xx_until_the_receiver_takes_the_event():
    answers = [503, 502, 200]
    bodies: list[bytes] = []

    async def flaky(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=answers[len(bodies) - 1], headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_post("/", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        events = reload_events(1, tenant="flaky", start=datetime(2026, 11, 30, tzinfo=UTC))
        report = await WebhookSender(f"http://127.0.0.1:{port}/", secret=SECRET, clock=100).run(events)
    finally:
        await runner.cleanup()
    assert (report.delivered, report.retries, report.statuses) == (1, 2, {503: 1, 502: 1, 200: 1})
    assert len(set(bodies)) == 1


async def test_a_chunked_body_without_length_is_cut_off_at_the_limit(broker):
    async def chunks():
        for _ in range(100):
            yield b"x" * 1000

    async with running(broker.bootstrap, max_body=65_536) as url:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/", data=chunks(), headers={"Content-Type": "application/json"}) as answer:
                assert answer.status == 413
                assert (await answer.json())["error"] == "body exceeds the 65,536-byte limit"


async def test_https_with_a_certificate_and_key(broker, tmp_path):
    import ssl

    import trustme

    from pipeline.vendors.qlik_cloud.ingest import tls_context

    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    client = ssl.create_default_context()
    authority.configure_trust(client)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    body, headers = structured(event(tenant), SECRET)
    async with running(broker.bootstrap, ssl_context=tls_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))) as url:
        assert url.startswith("https://")
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/", data=body, headers=headers, ssl=client) as answer:
                assert answer.status == 200
    assert len(await raw_records(broker.bootstrap, tenant, 1)) == 1


@pytest.mark.parametrize("fixture", ["app_reload_finished_legacy.json", "app_reload_finished_hybrid.json"])
async def test_the_older_app_reload_finished_envelopes_are_keyed_by_their_app(broker, fixture):
    from pathlib import Path

    doc = orjson.loads((Path(__file__).parents[1] / "vendors" / "fixtures" / "qlik_cloud" / fixture).read_bytes())
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    doc = orjson.loads(orjson.dumps(doc).replace(b'"t1"', f'"{tenant}"'.encode()))
    doc.update({name: RECENT for name in ("time", "eventTime") if name in doc})  # within the receiver's age limit
    body, headers = structured(doc, SECRET)
    async with running(broker.bootstrap) as url:
        assert (await post(url, body, headers))[:2] == (200, {"accepted": 1, "keyed": 1})
    [(key, value)] = await raw_records(broker.bootstrap, tenant, 1)
    assert key == f"qlik_cloud:{tenant}:app-1".encode() and value["payload"] == doc
