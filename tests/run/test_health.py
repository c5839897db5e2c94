"""/metrics and /healthz over real HTTP; a partition that stops moving turns /healthz 503."""

from __future__ import annotations

import aiohttp
import orjson

from pipeline.broker import free_port
from pipeline.ops.health import RoleMetrics, serve


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _get(port: int, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_and_health_over_http_and_a_stalled_partition():
    clock = _Clock()
    metrics = RoleMetrics("worker", stall_after_s=30, clock=clock)
    metrics.records_in.labels("worker", "raw.zuora").inc(5)
    metrics.dead_letters.labels("worker", "normalize").inc()
    metrics.position("raw.zuora", 0, offset=10, highwater=12)
    metrics.position("raw.zuora", 1, offset=7, highwater=7)
    port = free_port()
    runner = await serve(metrics, "127.0.0.1", port)
    try:
        status, kind, text = await _get(port, "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        assert 'jobstream_records_in_total{role="worker",topic="raw.zuora"} 5.0' in text
        assert 'jobstream_consumer_lag{partition="0",role="worker",topic="raw.zuora"} 2.0' in text
        assert 'jobstream_dead_letters_total{role="worker",stage="normalize"} 1.0' in text

        status, _, body = await _get(port, "/healthz")
        assert status == 200 and '"status":"ok"' in body

        clock.now += 31  # partition 0 has lag and did not move; partition 1 is caught up
        status, _, body = await _get(port, "/healthz")
        assert status == 503
        assert list(orjson.loads(body)["problems"]) == ["stalled raw.zuora:0"]

        metrics.position("raw.zuora", 0, offset=12, highwater=12)  # it moved again
        status, _, _ = await _get(port, "/healthz")
        assert status == 200

        metrics.problem("kafka", "broker unreachable for 20 s")
        status, _, body = await _get(port, "/healthz")
        assert status == 503 and "broker unreachable" in body
        metrics.problem("kafka", None)
        metrics.forget("raw.zuora", 0)
        status, _, text = await _get(port, "/metrics")
        assert 'partition="0"' not in text
    finally:
        await runner.cleanup()
