"""Each long-running role serves /metrics and /healthz (``--metrics-port``), and the numbers
move with real work on the broker; a consumer role whose broker disappears reports it on
/healthz and then exits 69 with one line, so its supervisor restarts it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from pipeline.ops.runtime import EXIT_BROKER_LOST
from tests.support.kafka import send_documents, truenas_probe
from tests.support.ports import report_env, reported_port
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration


async def scrape(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when it is not there yet)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for_metrics(port: int, accept: Callable[[str], bool], process: subprocess.Popen, log: Path,
                           timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the role exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            status, text = await scrape(port, "/metrics")
            if status == 200 and accept(text):
                return text
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"metrics never matched within {timeout:.0f} s:\n{text[-3000:]}\n{log.read_text()[-2000:]}")


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "ab") as output:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=output, stderr=output,
                                stdin=subprocess.DEVNULL, env={**os.environ, **env})


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_exit(process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert process.poll() is not None, f"still running after {timeout:.0f} s"
    return process.returncode


async def test_sink_metrics_move_with_its_batches(broker, tmp_path):
    log, report = tmp_path / "sink.log", tmp_path / "sink.ports"
    sink = start(["sink", "--bootstrap", broker.bootstrap, "--db", str(tmp_path / "m.duckdb"), "--quack-port", "0"],
                 log, **report_env(report, "metrics"))
    try:
        port = await asyncio.to_thread(reported_port, report, "metrics", sink)
        text = await wait_for_metrics(port, lambda t: "jobstream_batch_seconds" in t, sink, log)
        before = metric(text, "jobstream_records_in_total", role="sink", topic=catalog.EVENTS)
        story = Story()
        await produce(broker.bootstrap, [(catalog.EVENTS, story.event("j", "r", n, "RUNNING")) for n in range(5)])
        caught_up = re.compile(r'jobstream_consumer_lag\{partition="\d+",role="sink",topic="jobs.events"\} 0.0')
        text = await wait_for_metrics(  # the session broker's jobs.events holds earlier tests' backlog: wait for it too
            port, lambda t: metric(t, "jobstream_records_in_total", role="sink", topic=catalog.EVENTS) >= before + 5
            and caught_up.search(t) is not None, sink, log,
        )
        assert metric(text, "jobstream_rows_written_total", role="sink", table="job_events") >= 5
        assert metric(text, "jobstream_batch_seconds_count", role="sink") >= 1
        assert re.search(r'jobstream_consumer_lag\{partition="\d+",role="sink",topic="jobs.events"\} 0.0', text)
        assert metric(text, "jobstream_broker_reachable", role="sink") == 1
        assert re.search(r'jobstream_stale_runs\{role="sink"\} \d+\.0', text)  # counted at its first batch
        status, body = await scrape(port, "/healthz")
        health = orjson.loads(body)
        assert status == 200 and health["status"] == "ok" and health["role"] == "sink"
        assert any(name.startswith("jobs.events:") for name in health["partitions"])
    finally:
        stop(sink)
    assert sink.returncode == 0, log.read_text()[-2000:]


async def test_pull_ingestor_counts_its_polls(broker, tmp_path):
    sim_log, ingest_log = tmp_path / "sim.log", tmp_path / "ingest.log"
    sim_report, report = tmp_path / "sim.ports", tmp_path / "ingest.ports"
    simulator = start(["simulate", "qlik-qrs", "--port", "0", "--clock-factor", "30"], sim_log, **report_env(sim_report))
    ingestor = None
    try:
        sim_port = await asyncio.to_thread(reported_port, sim_report, "listen", simulator)
        config = tmp_path / "ingest.toml"
        config.write_text(f'[qlik_qrs]\nbase_url = "http://127.0.0.1:{sim_port}"\nsource = "metrics-test"\npoll_interval_s = 0.5\n')
        ingestor = start(["ingest", "qlik-qrs", "--config", str(config), "--bootstrap", broker.bootstrap],
                         ingest_log, **report_env(report, "metrics"))
        port = await asyncio.to_thread(reported_port, report, "metrics", ingestor)
        text = await wait_for_metrics(
            port, lambda t: metric(t, "jobstream_polls_total", role="qlik-qrs", outcome="ok") >= 2
            and metric(t, "jobstream_records_out_total", role="qlik-qrs", topic="raw.qlik_qrs") > 0,
            ingestor, ingest_log,
        )
        assert metric(text, "jobstream_last_success_timestamp_seconds", role="qlik-qrs") > time.time() - 60
        status, _ = await scrape(port, "/healthz")
        assert status == 200
    finally:
        if ingestor is not None:
            stop(ingestor)
        stop(simulator)


async def test_worker_metrics_then_exit_69_when_its_broker_is_gone(tmp_path):
    """A private broker: the worker counts a few documents, then the broker stops; the idle
    worker turns /healthz 503 and exits 69 with one line within the configured time."""
    private = EmbeddedBroker(log=tmp_path / "broker.log").start()
    log, report = tmp_path / "worker.log", tmp_path / "worker.ports"
    worker = None
    try:
        await catalog.apply(private.bootstrap)
        worker = start(["worker", "--bootstrap", private.bootstrap, "--store", "memory://", "--tansu",
                        "--app-id", "metrics-test", "--datadir", str(tmp_path / "w")],
                       log, JOBSTREAM_BROKER_LOST_EXIT_S="6", **report_env(report, "metrics"))
        port = await asyncio.to_thread(reported_port, report, "metrics", worker, 90)
        await send_documents(private.bootstrap, "truenas", [truenas_probe(n) for n in range(1, 4)], source="metrics-test")
        text = await wait_for_metrics(
            port, lambda t: metric(t, "jobstream_records_in_total", role="worker", topic="raw.truenas") >= 3,
            worker, log, timeout=90,
        )
        assert metric(text, "jobstream_batch_seconds_count", role="worker") >= 1
        assert sum(metric(text, "jobstream_records_out_total", role="worker", topic=t)
                   for t in (catalog.EVENTS, catalog.DEADLETTER)) >= 3
        status, _ = await scrape(port, "/healthz")
        assert status == 200
        private.stop()
        deadline = time.monotonic() + 20
        while True:
            status, body = await scrape(port, "/healthz")
            if status == 503:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
        assert "broker" in orjson.loads(body)["problems"]
        code = await wait_exit(worker, 30)
        assert code == EXIT_BROKER_LOST, log.read_text()[-2000:]
        assert "no Kafka broker at" in log.read_text()
    finally:
        if worker is not None:
            stop(worker)
        private.stop()


async def test_sink_exits_69_when_its_broker_is_gone(tmp_path):
    """The broker stops while the sink is consuming (it has written what was sent)."""
    private = EmbeddedBroker(log=tmp_path / "broker.log").start()
    log, report = tmp_path / "sink.log", tmp_path / "sink.ports"
    sink = None
    try:
        await catalog.apply(private.bootstrap)
        sink = start(["sink", "--bootstrap", private.bootstrap, "--db", str(tmp_path / "s.duckdb"), "--quack-port", "0"],
                     log, JOBSTREAM_BROKER_LOST_EXIT_S="4", **report_env(report, "metrics"))
        port = await asyncio.to_thread(reported_port, report, "metrics", sink)
        story = Story()
        await produce(private.bootstrap, [(catalog.EVENTS, story.event("j", "r", n, "RUNNING")) for n in range(3)])
        await wait_for_metrics(  # its consumer is assigned and fetching
            port, lambda t: metric(t, "jobstream_records_in_total", role="sink", topic=catalog.EVENTS) >= 3, sink, log,
        )
        private.stop()
        code = await wait_exit(sink, 30)
        assert code == EXIT_BROKER_LOST, log.read_text()[-2000:]
        assert log.read_text().count("no Kafka broker at") == 1
    finally:
        if sink is not None:
            stop(sink)
        private.stop()


async def test_alerter_serves_health_and_exits_69_when_its_broker_is_gone(tmp_path):
    private = EmbeddedBroker(log=tmp_path / "broker.log").start()
    log, report = tmp_path / "alerter.log", tmp_path / "alerter.ports"
    alerter = None
    try:
        await catalog.apply(private.bootstrap)
        alerter = start(["alert", "--bootstrap", private.bootstrap, "--url", "json://127.0.0.1:9/hook"],
                        log, JOBSTREAM_BROKER_LOST_EXIT_S="4", **report_env(report, "metrics"))
        port = await asyncio.to_thread(reported_port, report, "metrics", alerter)
        await wait_for_metrics(port, lambda t: metric(t, "jobstream_broker_reachable", role="alerter") == 1, alerter, log)
        status, body = await scrape(port, "/healthz")
        assert status == 200 and orjson.loads(body)["role"] == "alerter"
        private.stop()
        code = await wait_exit(alerter, 30)
        assert code == EXIT_BROKER_LOST, log.read_text()[-2000:]
        assert "pipeline alerter: no Kafka broker at" in log.read_text()
    finally:
        if alerter is not None:
            stop(alerter)
        private.stop()


async def test_push_receiver_counts_deliveries_kafka_acknowledged(broker, tmp_path):
    log, report = tmp_path / "receiver.log", tmp_path / "receiver.ports"
    env = {"JOBSTREAM_QLIK_WEBHOOK_SECRET": "metrics-test-secret"}
    receiver = start(["ingest", "qlik-cloud", "--bootstrap", broker.bootstrap, "--listen", "127.0.0.1:0",
                      "--source", "metrics-test"], log, **env, **report_env(report, "metrics"))
    try:
        port = await asyncio.to_thread(reported_port, report, "metrics", receiver)
        listen = await asyncio.to_thread(reported_port, report, "listen", receiver)
        await wait_for_metrics(port, lambda t: "jobstream_polls" in t, receiver, log)
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "simulate", "qlik-cloud", "--url", f"http://127.0.0.1:{listen}/",
            "--events", "4", "--duplicates", "0", "--clock", "1000", env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(sender.wait(), 60) == 0
        text = await wait_for_metrics(
            port, lambda t: metric(t, "jobstream_polls_total", role="qlik-cloud", outcome="ok") >= 4, receiver, log,
        )
        assert metric(text, "jobstream_records_out_total", role="qlik-cloud", topic="raw.qlik_cloud") >= 4
        assert metric(text, "jobstream_polls_total", role="qlik-cloud", outcome="error") == 0
    finally:
        stop(receiver)
