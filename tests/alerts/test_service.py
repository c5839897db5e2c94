"""The alerter on the embedded broker: contract records produced straight to
jobs.transitions / jobs.runs / jobs.deadletter, alerts read back from jobs.alerts and
from real receivers. Each test has its own consumer group and its own source, and its
rules match only that source's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from pipeline import catalog
from pipeline.alerts import delivery, records
from pipeline.alerts.rules import parse
from pipeline.alerts.service import Alerter
from pipeline.broker import EmbeddedBroker
from pipeline.model import UTC
from pipeline.settings import Settings
from tests.support.alerts import dead_letter_record, run_snapshot, transition
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.kafka import collect, decode

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def produce(bootstrap: str, items: list[tuple[str, str, dict[str, Any]]]) -> None:
    """(topic, key, value) records, sent in order and acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for topic, key, value in items:
            await producer.send(topic, msgspec.json.encode(value), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


def run_and_transitions(job: str, run: str, steps: list[tuple[str | None, str, datetime, dict]], **snapshot: Any):
    """The snapshot first (as the worker may write it), then the run's transitions."""
    items = [(catalog.RUNS, f"{job}:{run}", run_snapshot(job, run, **snapshot))]
    for from_state, to_state, at, extra in steps:
        items.append((catalog.TRANSITIONS, job, transition(job, run, from_state, to_state, at, **extra)))
    return items


async def alerts_of(bootstrap: str, source: str, count: int, timeout: float = 60.0) -> list[dict]:
    found = await collect(
        bootstrap, catalog.ALERTS, lambda k, v: f":{source}:" in (decode(v).get("job_key") or ""),
        count=count, timeout=timeout,
    )
    return [decode(v) for _k, v in found]


def latest(alert_records: list[dict]) -> dict[str, dict]:
    """What the sink keeps: the latest status per alert_id."""
    result: dict[str, dict] = {}
    for record in alert_records:
        result[record["alert_id"]] = record
    return result


def settings_for(bootstrap: str, **overrides: Any) -> Settings:
    values = dict(
        bootstrap=bootstrap, alert_group=unique("alerts-test-"), alert_retry_base_s=0.05,
        alert_context_wait_s=1.0, alert_digest_window_s=1.0,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def alerter_running(settings: Settings, rules_text: str):
    alerter = Alerter(settings, parse(rules_text, source="test rules", env={}))
    stop = asyncio.Event()
    task = asyncio.create_task(alerter.run(stop=stop))
    try:
        yield alerter
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def rules_for(source: str, url: str, body: str, digest_after: int = 5) -> str:
    return f'[defaults]\nurls = ["{url}"]\ndigest_after = {digest_after}\n' + body.replace("JOBS", f"*:{source}:*")


async def test_rules_fire_on_known_transitions_and_every_alert_is_recorded(
    broker: EmbeddedBroker, webhook: WebhookReceiver,
) -> None:
    source = unique("known-")
    job = f"zuora:{source}:bi-export"
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(hours=1)
    items = run_and_transitions(
        job, "tok-1", [(None, "RUNNING", t0, {}), ("RUNNING", "FAILED", t0 + timedelta(seconds=125), {})],
        state="FAILED", started_at=t0, finished_at=t0 + timedelta(seconds=125), error=("E42", "Page is not cached"),
    )
    items += run_and_transitions(
        job, "tok-2", [
            (None, "RUNNING", t0, {}),
            ("RUNNING", "STALE", t0 + timedelta(minutes=5), {"cause": "stale_timeout"}),
            ("STALE", "RUNNING", t0 + timedelta(minutes=20), {"cause": "reactivation"}),
            ("RUNNING", "RUNNING", t0 + timedelta(minutes=21), {"duplicate": True}),
        ],
        state="RUNNING", version=3, started_at=t0, last_event_at=t0 + timedelta(minutes=21),
    )
    items += run_and_transitions(  # old news: recorded, not sent
        job, "tok-0", [("RUNNING", "FAILED", now - timedelta(days=2), {})], state="FAILED",
    )
    await produce(broker.bootstrap, items)
    rules = rules_for(source, webhook.url, """
[[rules]]
name = "failed"
kind = "failed"
jobs = "JOBS"
[[rules]]
name = "stale"
kind = "stale"
jobs = "JOBS"
[[rules]]
name = "back"
kind = "reactivated"
jobs = "JOBS"
stale_minutes = 10
""")
    async with alerter_running(settings_for(broker.bootstrap), rules):
        received = await webhook.wait_for_async(3, timeout=60)
        found = await alerts_of(broker.bootstrap, source, count=8)
    old = [r for r in found if r["run_key"].endswith(":tok-0")]
    assert [r["status"] for r in old] == ["fired", "suppressed"] and "too old to send" in old[1]["reason"]
    found = [r for r in found if r not in old]
    assert sorted(d.body["title"].split(":")[0] for d in received) == [
        "[jobstream] run FAILED", "[jobstream] run STALE", "[jobstream] run reactivated after 15m 00s STALE",
    ]
    by_id = latest(found)
    assert sorted(r["status"] for r in found) == ["delivered"] * 3 + ["fired"] * 3
    assert {d.headers[delivery.ALERT_ID_HEADER] for d in received} == set(by_id)
    assert {d.body["alert_id"] for d in received} == set(by_id)
    failed = next(r for r in by_id.values() if r["rule"] == "failed")
    assert failed["alert_id"] == records.alert_id("failed", failed["transition_id"])
    assert failed["vendor"] == "zuora" and failed["source"] == source and failed["state"] == "FAILED"
    assert failed["channels"] == ["json"] and failed["delivered_at"] is not None and failed["schema_version"] == 1
    for part in ("E42 Page is not cached", "Duration: 2m 05s", "FROM job_transitions WHERE run_key"):
        assert part in failed["message"]


async def test_rate_limit_per_job_and_a_digest_for_many_jobs(broker: EmbeddedBroker, webhook: WebhookReceiver) -> None:
    source = unique("storm-")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    items = []
    for n in range(8):  # eight jobs fail at once: one digest
        items += run_and_transitions(f"truenas:{source}:job{n}", "r1", [("RUNNING", "FAILED", at, {})], state="FAILED")
    rules = rules_for(source, webhook.url, '[[rules]]\nname = "failed"\nkind = "failed"\njobs = "JOBS"\n', digest_after=5)
    settings = settings_for(broker.bootstrap, alert_digest_window_s=2.0)  # room for a slow, shared machine
    async with alerter_running(settings, rules):
        await produce(broker.bootstrap, items)
        [digest] = await webhook.wait_for_async(1, timeout=60)
        found = latest(await alerts_of(broker.bootstrap, source, count=16))
        # the same jobs fail again within 300 s: every alert is suppressed, none sent
        again = []
        for n in range(8):
            again += run_and_transitions(f"truenas:{source}:job{n}", "r2", [("RUNNING", "FAILED", at + timedelta(minutes=1), {})], state="FAILED")
        await produce(broker.bootstrap, again)
        after = latest(await alerts_of(broker.bootstrap, source, count=32))
    assert "8 alerts from rule failed" in digest.body["title"]
    assert all(alert_id in digest.body["message"] for alert_id in found)
    assert len(found) == 8 and {r["status"] for r in found.values()} == {"delivered"}
    assert all("in digest" in r["reason"] for r in found.values())
    second = {k: r for k, r in after.items() if k not in found}
    assert len(second) == 8 and {r["status"] for r in second.values()} == {"suppressed"}
    assert all("rate limit, one alert per 300 s" in r["reason"] for r in second.values())
    assert len(webhook.received()) == 1


async def test_a_receiver_that_fails_then_recovers_and_one_that_stays_down(
    broker: EmbeddedBroker, webhook: WebhookReceiver,
) -> None:
    source = unique("flaky-")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rules = rules_for(source, webhook.url, '[[rules]]\nname = "failed"\nkind = "failed"\njobs = "JOBS"\n')
    settings = settings_for(broker.bootstrap, alert_delivery_attempts=3)
    webhook.fail_next = 2  # two 500s, then the third attempt lands
    await produce(broker.bootstrap, run_and_transitions(f"qlik_cloud:{source}:app1", "r1", [("RUNNING", "FAILED", at, {})], state="FAILED"))
    async with alerter_running(settings, rules):
        [first] = await webhook.wait_for_async(1, timeout=60)
        webhook.fail_next = 100  # down for good: given up after 3 attempts
        await produce(broker.bootstrap, run_and_transitions(f"qlik_cloud:{source}:app2", "r1", [("RUNNING", "FAILED", at, {})], state="FAILED"))
        found = latest(await alerts_of(broker.bootstrap, source, count=4))
        webhook.fail_next = 0  # back: the next alert is delivered, the failed one is not retried
        await produce(broker.bootstrap, run_and_transitions(f"qlik_cloud:{source}:app3", "r1", [("RUNNING", "FAILED", at, {})], state="FAILED"))
        await webhook.wait_for_async(2, timeout=60)
    statuses = {r["job_key"].rsplit(":", 1)[1]: r for r in found.values()}
    assert statuses["app1"]["status"] == "delivered"
    assert statuses["app2"]["status"] == "failed"
    assert statuses["app2"]["reason"].startswith("json: gave up after 3 attempts")
    assert webhook.refused == 2 + 3
    # offsets were committed after each outcome: a restart in the same group repeats nothing
    async with alerter_running(settings, rules):
        extra = await webhook.wait_for_async(3, timeout=8)
    assert [d.body["alert_id"] for d in extra].count(first.body["alert_id"]) == 1 and len(extra) == 2


async def test_a_slow_run_is_noticed_while_it_runs(broker: EmbeddedBroker, webhook: WebhookReceiver) -> None:
    source = unique("slow-")
    job = f"informatica:{source}:pub-orders"
    now = datetime.now(UTC).replace(microsecond=0)
    items = []
    for n in range(5):  # usual duration: 10 s
        start = now - timedelta(hours=2, minutes=n)
        items.append((catalog.RUNS, f"{job}:ok{n}", run_snapshot(job, f"ok{n}", "SUCCEEDED", started_at=start, finished_at=start + timedelta(seconds=10))))
    items += run_and_transitions(job, "long", [("PENDING", "RUNNING", now - timedelta(seconds=60), {})],
                                 state="RUNNING", started_at=now - timedelta(seconds=60))
    items += run_and_transitions(job, "quick", [("PENDING", "RUNNING", now, {})], state="RUNNING", started_at=now)
    await produce(broker.bootstrap, items)
    rules = rules_for(source, webhook.url, '[[rules]]\nname = "slow"\nkind = "slow"\njobs = "JOBS"\nfactor = 3\nmin_runs = 5\n')
    async with alerter_running(settings_for(broker.bootstrap), rules):
        received = await webhook.wait_for_async(1, timeout=60)
    assert len(received) == 1
    assert received[0].body["title"].startswith("[jobstream] run still RUNNING after 30s, 3.0x its usual 10s")
    assert received[0].body["alert_id"] == records.alert_id("slow", f"{job}:long", 1)


async def test_dead_letters_over_the_limit_in_one_minute(broker: EmbeddedBroker, webhook: WebhookReceiver) -> None:
    # a minute of its own, hours back (other tests' dead letters carry their real times)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minute = now - timedelta(hours=3, minutes=uuid.uuid4().int % 120)
    made_up = [dead_letter_record(n, minute + timedelta(seconds=n)) for n in range(4)]
    letters = [(catalog.DEADLETTER, record["dead_letter_id"], record) for record in made_up]
    await produce(broker.bootstrap, letters)
    rules = f'[defaults]\nurls = ["{webhook.url}"]\n[[rules]]\nname = "dead"\nkind = "dead_letters"\nper_minute = 3\n'
    wanted = records.alert_id("dead", minute.isoformat())
    async with alerter_running(settings_for(broker.bootstrap), rules):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and wanted not in {d.body["alert_id"] for d in webhook.received()}:
            await asyncio.sleep(0.1)
    mine = [d for d in webhook.received() if d.body["alert_id"] == wanted]
    assert len(mine) == 1 and "more than 3 dead letters in one minute" in mine[0].body["title"]


async def test_a_record_from_a_newer_writer_is_dead_lettered(broker: EmbeddedBroker, webhook: WebhookReceiver) -> None:
    source = unique("future-")
    job = f"zuora:{source}:x"
    newer = {**transition(job, "r1", "RUNNING", "FAILED", datetime.now(UTC)), "schema_version": 2}
    await produce(broker.bootstrap, [(catalog.TRANSITIONS, job, newer)])
    rules = rules_for(source, webhook.url, '[[rules]]\nname = "failed"\nkind = "failed"\njobs = "JOBS"\n')
    async with alerter_running(settings_for(broker.bootstrap), rules):
        found = await collect(
            broker.bootstrap, catalog.DEADLETTER,
            lambda k, v: decode(v).get("stage") == "alerts" and source in (decode(v).get("value_preview") or ""),
            count=1, timeout=60,
        )
    letter = decode(found[0][1])
    assert "schema_version 2" in letter["reason"] and letter["topic"] == catalog.TRANSITIONS
    assert webhook.received() == []


def test_sigkill_between_delivery_and_commit_delivers_again_with_the_same_id(
    broker: EmbeddedBroker, webhook: WebhookReceiver, smtp: SmtpReceiver, tmp_path: Path,
) -> None:
    """The receiver kills ``pipeline alert`` as the first delivery lands, so the batch's
    offsets are never committed; the restarted alerter delivers the same alert id again.
    Secrets of both URLs stay out of the logs and out of jobs.alerts."""
    source = unique("kill-")
    job = f"qlik_qrs:{source}:task-7"
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    asyncio.run(produce(broker.bootstrap, run_and_transitions(
        job, "exec-1", [("RUNNING", "FAILED", at, {})], state="FAILED", error=("8", "FinishedFail"),
    )))
    webhook_secret = "hookpw-" + uuid.uuid4().hex[:10]
    secret_url = f"json://hookuser:{webhook_secret}@127.0.0.1:{webhook.port}/hook"
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        f'[[rules]]\nname = "failed"\nkind = "failed"\njobs = "*:{source}:*"\n'
        f'urls = ["{secret_url}", "${{SMTP_URL}}"]\n'
    )
    log = tmp_path / "alerter.log"
    env = {**os.environ, "SMTP_URL": smtp.url, "JOBSTREAM_ALERT_RETRY_BASE_S": "0.05"}
    args = [sys.executable, "-m", "pipeline", "alert", "--rules", str(rules_file), "--bootstrap", broker.bootstrap,
            "--group", unique("alerts-kill-")]
    processes: list[subprocess.Popen] = []

    def kill_on_first(delivery_: Any) -> None:
        if len(webhook.received()) == 1:
            processes[0].send_signal(signal.SIGKILL)

    webhook.on_delivery = kill_on_first
    try:
        with open(log, "ab") as output:
            processes.append(subprocess.Popen(args, stdout=output, stderr=output, env=env))
        processes[0].wait(timeout=90)
        assert processes[0].returncode == -signal.SIGKILL
        assert smtp.messages() == []  # killed before the email went out
        with open(log, "ab") as output:
            processes.append(subprocess.Popen(args, stdout=output, stderr=output, env=env))
        received = webhook.wait_for(2, timeout=90)
        mails = smtp.wait_for(1, timeout=60)
        found = asyncio.run(alerts_of(broker.bootstrap, source, count=3))
        processes[1].terminate()  # SIGTERM: a clean stop (leaves the group, closes clients)
        assert processes[1].wait(timeout=30) in (0, 128 + signal.SIGTERM)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
    assert len(received) == 2
    assert received[0].body["alert_id"] == received[1].body["alert_id"]
    assert received[0].headers[delivery.ALERT_ID_HEADER] == received[1].headers[delivery.ALERT_ID_HEADER]
    assert mails[0][delivery.ALERT_ID_HEADER] == received[0].body["alert_id"]
    assert [r["status"] for r in found] == ["fired", "fired", "delivered"]
    assert {r["alert_id"] for r in found} == {received[0].body["alert_id"]}
    assert found[-1]["channels"] == ["json", "mailto"]
    text = log.read_text(errors="replace") + "".join(r["message"] + str(r["reason"]) for r in found)
    assert "alerter ready" in text and "Traceback" not in text
    for secret in (webhook_secret, smtp.password):
        assert secret not in text
