"""How fast is the alerter?

1. The rules alone (pure ``logic.on_transition`` with the shipped default rules, plus
   decoding each record): transitions per second on one core. Mix over 2,000 jobs:
   per run PENDING->RUNNING, RUNNING->SUCCEEDED (85 %) or FAILED (10 %) or a retry
   (FAILED->RUNNING, 5 %), and 2 % of runs go STALE and come back.
2. End to end on the embedded broker, with a local aiohttp webhook: the backlog
   (``--backlog`` transitions of which 10 % fail, over ``--jobs`` jobs) processed from a
   fresh consumer group until every alert has its outcome on jobs.alerts, with how many
   webhook messages that took (rate limits and digests); then one failure produced while
   the alerter is idle, timed from produce to the webhook's receipt.

    .venv/bin/python scripts/bench_alerts.py [--transitions 200000] [--backlog 20000] [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
import uuid
from datetime import datetime, timedelta

import msgspec

from pipeline import catalog
from pipeline.alerts import logic
from pipeline.alerts.records import decode_transition
from pipeline.alerts.rules import load
from pipeline.kafka import clients
from pipeline.model import UTC

T0 = datetime.now(UTC) - timedelta(hours=1)


def transitions(count: int, jobs: int, rng: random.Random, source: str = "bench") -> list[bytes]:
    out: list[bytes] = []
    n = 0
    while len(out) < count:
        job = f"qlik_qrs:{source}:task-{rng.randrange(jobs)}"
        run = f"{job}:exec-{n}"
        at = T0 + timedelta(milliseconds=n)
        n += 1

        def t(from_state, to_state, cause="vendor", attempt=1, offset=0, job=job, run=run, at=at):
            return msgspec.json.encode({
                "transition_id": uuid.uuid4().hex, "vendor": "qlik_qrs", "job_key": job, "run_key": run,
                "attempt": attempt, "from_state": from_state, "to_state": to_state,
                "at": (at + timedelta(seconds=offset)).isoformat(), "cause": cause, "event_id": None,
                "late": False, "duplicate": False, "illegal": False, "schema_version": 1,
            })

        out.append(t("PENDING", "RUNNING"))
        roll = rng.random()
        if roll < 0.02:
            out += [t("RUNNING", "STALE", "stale_timeout", offset=300), t("STALE", "RUNNING", "reactivation", offset=1200)]
        if roll < 0.10:
            out.append(t("RUNNING", "FAILED", offset=60))
        elif roll < 0.15:
            out += [t("RUNNING", "FAILED", offset=30), t("FAILED", "RUNNING", "retry", 2, offset=31), t("RUNNING", "SUCCEEDED", attempt=2, offset=60)]
        else:
            out.append(t("RUNNING", "SUCCEEDED", offset=60))
    return out[:count]


def bench_rules(count: int) -> None:
    rules = load(None, extra_urls=("json://127.0.0.1:9/hook",), env={}).rules
    data = transitions(count, 2000, random.Random(7))
    memory: dict[str, logic.JobMemory] = {}
    fired = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for value in data:
        t = decode_transition(value)
        memory[t.job_key], firings, _wakes = logic.on_transition(rules, memory.get(t.job_key) or logic.JobMemory(), t, None)
        fired += len(firings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"rules: {count} transitions, {fired} alerts fired: {count / wall:,.0f} transitions/s wall, {count / cpu:,.0f} /s CPU")


class Receiver:
    def __init__(self) -> None:
        from aiohttp import web

        from pipeline.broker import free_port

        self.port = free_port()
        self.ids: list[str] = []
        self.arrived = threading.Event()
        app = web.Application()

        async def hook(request):
            self.ids.append((await request.json())["alert_id"])
            self.arrived.set()
            return web.json_response({})

        app.router.add_post("/hook", hook)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(runner.setup())
            self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)


async def bench_end_to_end(backlog: int, jobs: int) -> None:
    from pipeline.alerts.rules import default_rules_text, parse
    from pipeline.alerts.service import Alerter
    from pipeline.broker import EmbeddedBroker
    from pipeline.settings import Settings

    broker = EmbeddedBroker().start()
    try:
        await catalog.apply(broker.bootstrap)
        receiver = Receiver()
        url = f"json://127.0.0.1:{receiver.port}/hook"
        producer = clients.producer(broker.bootstrap)
        await producer.start()
        for value in transitions(backlog, jobs, random.Random(11)):
            key = msgspec.json.decode(value)["job_key"].encode()
            await producer.send(catalog.TRANSITIONS, value, key=key)
        await producer.flush()
        rules = parse(default_rules_text().replace("urls = []", f'urls = ["{url}"]'), source="bench", env={})
        settings = Settings(bootstrap=broker.bootstrap, alert_group="bench", alert_context_wait_s=0.0)
        alerter = Alerter(settings, rules)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(alerter.run(stop=stop))
        last, last_change = None, time.perf_counter()
        while time.perf_counter() - started < 600:  # done: no change for 3 s (> digest window)
            await asyncio.sleep(0.05)
            now_counts = tuple(alerter.counts.values())
            if now_counts != last:
                last, last_change = now_counts, time.perf_counter()
            elif alerter.counts["fired"] and time.perf_counter() - last_change > 3:
                break
        backlog_s = last_change - started
        print(f"backlog: {backlog} transitions -> {alerter.counts['fired']} alerts "
              f"({alerter.counts['delivered']} delivered, {alerter.counts['suppressed']} suppressed, "
              f"{alerter.counts['failed']} failed) in {len(receiver.ids)} webhook messages, "
              f"{backlog_s:.1f} s from start (incl. ~5 s group join): {backlog / backlog_s:,.0f} transitions/s")
        receiver.arrived.clear()
        before = len(receiver.ids)
        job = "zuora:bench:latency"
        value = msgspec.json.encode({
            "transition_id": uuid.uuid4().hex, "vendor": "zuora", "job_key": job, "run_key": f"{job}:r1",
            "attempt": 1, "from_state": "RUNNING", "to_state": "FAILED", "at": datetime.now(UTC).isoformat(),
            "cause": "vendor", "event_id": None, "late": False, "duplicate": False, "illegal": False, "schema_version": 1,
        })
        sent = time.perf_counter()
        await producer.send_and_wait(catalog.TRANSITIONS, value, key=job.encode())
        while len(receiver.ids) == before and time.perf_counter() - sent < 30:
            await asyncio.sleep(0.005)
        print(f"latency: one failure, produce -> webhook: {(time.perf_counter() - sent) * 1000:.0f} ms "
              f"(digest window {settings.alert_digest_window_s:g} s included)")
        stop.set()
        await asyncio.wait_for(task, 30)
        await producer.stop()
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    bench_rules(args.transitions)
    asyncio.run(bench_end_to_end(args.backlog, args.jobs))


if __name__ == "__main__":
    main()
