"""Issue 35 case 5: an ingestor's /healthz tells the truth. It was 200 "ok" with its vendor
hung for 50 s and Kafka gone; now it is 503 once no poll or push was acknowledged by Kafka
for ``stall_after_s`` beyond the next planned poll, and at once while no broker answers.
A real QRS simulator, a real broker, the real poller under ``run_with_operations``, and
/healthz read over HTTP from the role's own server."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import orjson

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.ops.health import serve
from pipeline.ops.runtime import run_with_operations
from pipeline.settings import Settings
from pipeline.sources import SOURCE_METRICS
from pipeline.vendors._simulator import Faults, SimClock
from pipeline.vendors.qlik_qrs import ingest
from pipeline.vendors.qlik_qrs.simulator import demo_simulator

BOUND_S = 2.0


async def _healthz(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as answer:
        return answer.status, orjson.loads(await answer.read())


async def _acknowledged(port: int, timeout_s: float = 30.0) -> None:
    """Until the first poll Kafka acknowledged shows in /metrics."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as answer:
            text = await answer.text()
        if 'jobstream_polls_total{outcome="ok",role="qlik-qrs"}' in text:
            return
        assert time.monotonic() < deadline, "no poll was acknowledged"
        await asyncio.sleep(0.2)


async def _until(port: int, status: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        got, body = await _healthz(port)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/healthz stayed {got} {body}"
        await asyncio.sleep(0.2)


async def _run_and_probe(tmp_path, disturb) -> dict:
    """Run the QRS ingestor until /healthz is 200, ``disturb`` the world, return the 503 body."""
    broker = EmbeddedBroker(log=tmp_path / "tansu.log").start()
    simulator = demo_simulator(clock=SimClock(factor=30), faults=Faults.parse(""), groups=1)
    url = await simulator.start()
    stop = asyncio.Event()
    try:
        await catalog.apply(broker.bootstrap)
        settings = Settings(bootstrap=broker.bootstrap, stall_after_s=BOUND_S)
        qrs = ingest.QrsSettings(base_url=url, source="health-test", poll_interval_s=0.2, timeout_s=1.0)

        async def main() -> dict:
            metrics = SOURCE_METRICS.get()
            with socket.create_server(("127.0.0.1", 0)) as listening:
                runner = await serve(metrics, "127.0.0.1", 0, listening=listening)
                polling = asyncio.ensure_future(ingest.run(qrs, broker.bootstrap, stop=stop))
                try:
                    await _acknowledged(listening.getsockname()[1])
                    await _until(listening.getsockname()[1], 200)
                    await disturb(broker, simulator)
                    return await _until(listening.getsockname()[1], 503)
                finally:
                    stop.set()
                    polling.cancel()
                    await asyncio.gather(polling, return_exceptions=True)
                    await runner.cleanup()

        return await run_with_operations("qlik-qrs-ingestor", settings, main)
    finally:
        await simulator.stop()
        broker.stop()


async def test_healthz_turns_503_when_the_vendor_stops_answering(tmp_path):
    async def vendor_gone(broker, simulator) -> None:
        await simulator.stop()

    body = await _run_and_probe(tmp_path, vendor_gone)
    assert body["role"] == "qlik-qrs"
    assert body["problems"]["ingest"].startswith("no poll or push acknowledged by Kafka for ")
    assert "last error" in body["problems"]["ingest"]


async def test_healthz_turns_503_when_kafka_is_gone(tmp_path):
    async def kafka_gone(broker, simulator) -> None:
        await asyncio.to_thread(broker.stop)

    body = await _run_and_probe(tmp_path, kafka_gone)
    assert "broker" in body["problems"] or "ingest" in body["problems"]
