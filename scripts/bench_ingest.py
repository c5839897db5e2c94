"""Pull ingestor throughput: one poll of a large answer, then its records sent to Kafka.

    python scripts/bench_ingest.py [--groups 500] [--tokens 2000]

Against the embedded broker (Tansu) and the in-package simulators over real HTTP on
127.0.0.1: Informatica with ``--groups`` rounds of its scenario (6 events each, all
finished, one page of up to 2000 events a call, the call budget lifted), and Zuora with
``--tokens`` tokens in the active queue (the first poll sends every token, the second
none: the diff). Reports records per second of poll (HTTP + JSON + split + hashing)
and of send (envelopes, acks=all).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timedelta

import aiohttp

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC
from pipeline.sources import RawProducer
from pipeline.vendors._simulator import SimClock
from pipeline.vendors.informatica.ingest import InformaticaSettings, InformaticaSource
from pipeline.vendors.informatica.simulator import InformaticaSimulator, RateLimit, scenario as cih_scenario
from pipeline.vendors.zuora.ingest import ZuoraSettings, ZuoraSource
from pipeline.vendors.zuora.simulator import Activity, ScriptedToken, ZuoraSimulator


async def timed(label: str, work, count=None) -> object:
    """Await ``work``; print its records (``count`` or the poll's) per second."""
    started = time.perf_counter()
    result = await work
    seconds = time.perf_counter() - started
    count = count if count is not None else len(result.records)
    print(f"{label:<40} {count:>7,} records  {seconds:7.3f} s  {count / seconds if seconds else 0:>10,.0f} rec/s")
    return result


async def bench(bootstrap: str, groups: int, tokens: int) -> None:
    span = groups * 120.0 + 600
    clock = SimClock(factor=1.0, epoch=datetime.now(UTC) - timedelta(seconds=span))
    clock.freeze(span)  # every scripted event has happened, vendor now = real now
    async with InformaticaSimulator(cih_scenario(groups), clock=clock, rate_limit=RateLimit(10_000, 1.0)) as sim, \
            aiohttp.ClientSession() as http, RawProducer(bootstrap, "informatica", "bench") as producer:
        settings = InformaticaSettings(
            base_url=sim.base_url, user="iics-user", password="iics-password", source="bench", page_size=2000,
            calls=10_000, per_s=1.0, lookback_s=span + 60, settle_s=0.0, child_grace_s=0.0,
        )
        source = InformaticaSource(settings, http)
        await source.poll(source.initial_cursor())  # warm-up: connection, and the vendor's clock
        poll = await timed("informatica poll (first window)", source.poll(source.initial_cursor()))
        await timed("informatica send", producer.send(poll.records), len(poll.records))
        again = await source.poll(poll.cursor)
        print(f"informatica second poll sends {len(again.records)} records (content unchanged)")

    zclock = SimClock(factor=1.0)
    scripted = [ScriptedToken(f"bench-{n}", f"VIEW_{n % 50}", [Activity(0, "SCANNING-PAGE-1", n, 10)]) for n in range(tokens)]
    async with ZuoraSimulator(scripted, clock=zclock) as sim, aiohttp.ClientSession() as http, \
            RawProducer(bootstrap, "zuora", "bench") as producer:
        settings = ZuoraSettings(base_url=sim.base_url, user="revpro-user", password="revpro-password",
                                 role="r", clientname="c", source="bench")
        source = ZuoraSource(settings, http)
        zclock.freeze(10.0)
        poll = await timed("zuora poll (every token new)", source.poll(source.initial_cursor()))
        await timed("zuora send", producer.send(poll.records), len(poll.records))
        again = await timed("zuora poll (nothing changed)", source.poll(poll.cursor), tokens)
        print(f"zuora second poll sends {len(again.records)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=500, help="Informatica scenario rounds (6 events each)")
    parser.add_argument("--tokens", type=int, default=2000, help="Zuora tokens in the active queue")
    args = parser.parse_args()
    broker = EmbeddedBroker().start()
    try:
        asyncio.run(catalog.apply(broker.bootstrap))
        asyncio.run(bench(broker.bootstrap, args.groups, args.tokens))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
