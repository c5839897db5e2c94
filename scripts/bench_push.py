"""Push ingestor throughput on the embedded broker: Qlik Cloud webhooks and TrueNAS.

    python scripts/bench_push.py [--webhooks 5000] [--senders 16] [--jobs 500]

webhooks: a receiver (signature checked) and ``--senders`` concurrent HTTP clients
POSTing signed reload-finished events; reports acknowledged deliveries/s and the
latency of one delivery (each 200 means Kafka acknowledged the record).

truenas: the middleware simulator runs ``--jobs`` jobs through WAITING, RUNNING, three
progress updates and SUCCESS as fast as it can (6 notifications each); reports how long
the ingestor took until every one was acknowledged by Kafka.

kafka away: a receiver whose Kafka cannot be reached; how fast a sender gets its 503.

Everything runs in this one process (simulator, ingestor, clients share one event loop
and the machine's cores with the broker), so the numbers are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import catalog  # noqa: E402
from pipeline.broker import EmbeddedBroker  # noqa: E402
from pipeline.model import UTC  # noqa: E402
from pipeline.push import KafkaLink  # noqa: E402
from pipeline.sources import CursorStore  # noqa: E402
from pipeline.vendors.qlik_cloud.ingest import Receiver, ReceiverConfig, serve  # noqa: E402
from pipeline.vendors.qlik_cloud.simulator import reload_events, structured  # noqa: E402
from pipeline.vendors.truenas.ingest import TruenasConfig, TruenasIngestor  # noqa: E402
from pipeline.vendors.truenas.simulator import MiddlewareSimulator  # noqa: E402

SECRET = "bench-secret-1234"


async def bench_webhooks(bootstrap: str, count: int, senders: int) -> None:
    receiver = Receiver(KafkaLink(bootstrap, "qlik_cloud", "bench"), ReceiverConfig(secret=SECRET))
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(receiver, "127.0.0.1", 0, stop, ready=ready))
    url = f"http://127.0.0.1:{await ready}/"
    bodies = [structured(event, SECRET) for event in reload_events(count, tenant="bench", start=datetime(2026, 1, 1, tzinfo=UTC))]
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body, headers = queue.get_nowait()
            began = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"answer {answer.status}")
            latencies.append(time.perf_counter() - began)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=senders)) as session:
        await sender_warmup(session, url)
        began = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(senders)))
        took = time.perf_counter() - began
    stop.set()
    await server
    latencies.sort()
    print(f"webhooks: {count} signed deliveries acknowledged in {took:.2f} s = {count / took:,.0f}/s "
          f"with {senders} senders; latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")


async def bench_kafka_away(count: int) -> None:
    """How fast senders get their 503 while Kafka cannot be reached."""
    from pipeline.broker import free_port

    receiver = Receiver(KafkaLink(f"127.0.0.1:{free_port()}", "qlik_cloud", "bench", ack_timeout_s=5.0),
                        ReceiverConfig(secret=SECRET))
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(receiver, "127.0.0.1", 0, stop, ready=ready))
    url = f"http://127.0.0.1:{await ready}/"
    body, headers = structured(reload_events(1, tenant="away", start=datetime(2026, 1, 1, tzinfo=UTC))[0], SECRET)
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            began = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                assert answer.status == 503
            latencies.append(time.perf_counter() - began)
    stop.set()
    await server
    latencies.sort()
    print(f"kafka away: {count} deliveries answered 503; latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")


async def sender_warmup(session: aiohttp.ClientSession, url: str) -> None:
    body, headers = structured(reload_events(1, tenant="warmup", start=datetime(2026, 1, 1, tzinfo=UTC))[0], SECRET)
    async with session.post(url, data=body, headers=headers) as answer:
        await answer.read()


async def bench_truenas(bootstrap: str, jobs: int) -> None:
    sim = MiddlewareSimulator(api_key="bench-key-1234")
    await sim.start()
    cursors = await CursorStore(bootstrap).start()
    sent = 0
    expected = jobs * 6
    done = asyncio.Event()

    def on_sent(count: int) -> None:
        nonlocal sent
        sent += count
        if sent >= expected:
            done.set()

    config = TruenasConfig(url=sim.url, api_key="bench-key-1234", host="bench-nas", heartbeat_every_s=5.0)
    ingestor = TruenasIngestor(config, KafkaLink(bootstrap, "truenas", "bench-nas"), cursors, on_sent=on_sent)
    stop = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stop))
    await asyncio.wait_for(ingestor.connected.wait(), 30)
    began = time.perf_counter()
    for _ in range(jobs):
        job_id = sim.add_job("bench.job")
        sim.update_job(job_id, state="RUNNING", percent=0)
        for percent in (25, 50, 75):
            sim.update_job(job_id, percent=percent)
        sim.update_job(job_id, state="SUCCESS", percent=100)
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    took = time.perf_counter() - began
    stop.set()
    await task
    await ingestor.link.close()
    await cursors.stop()
    await sim.stop()
    print(f"truenas: {expected} job notifications ({jobs} jobs) acknowledged by Kafka in {took:.2f} s "
          f"= {expected / took:,.0f}/s")


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("pipeline").setLevel(logging.ERROR)  # one warning per 503 is noise here
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    broker = EmbeddedBroker().start()
    try:
        await catalog.apply(broker.bootstrap)
        await bench_webhooks(broker.bootstrap, args.webhooks, args.senders)
        await bench_truenas(broker.bootstrap, args.jobs)
        await bench_kafka_away(200)
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
