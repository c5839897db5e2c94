"""Issue 35 case 13: every role's /metrics carries process_* metrics and the build's
versions; the sink counts rows by ``table`` (they sat in a label called ``topic``); an
ingestor's role label is its role name in ``pipeline run`` (``qlik-qrs``, not
``qlik-qrs-ingestor``)."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from prometheus_client import generate_latest

from pipeline.ops.health import RoleMetrics, observe_fetch
from pipeline.ops.runtime import run_with_operations
from pipeline.settings import Settings
from pipeline.sources import SOURCE_METRICS


def _text(metrics: RoleMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_role_exports_process_metrics_and_its_build():
    text = _text(RoleMetrics("alerter"))
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    assert 'jobstream_build_info{aiokafka="' in text and 'version="' in text


def test_the_sink_counts_rows_by_table_not_by_topic():
    metrics = RoleMetrics("sink")
    tp = TopicPartition("jobs.events", 0)
    record = SimpleNamespace(offset=4, timestamp=None)
    observe_fetch(metrics, lambda _tp: 5, {tp: [record]}, {"job_events": 1}, 0.01)
    text = _text(metrics)
    assert 'jobstream_rows_written_total{role="sink",table="job_events"} 1.0' in text
    assert 'topic="job_events"' not in text


async def test_an_ingestors_role_label_is_its_role_name():
    async def main() -> str:
        return SOURCE_METRICS.get().role

    assert await run_with_operations("qlik-qrs-ingestor", Settings(bootstrap="127.0.0.1:9"), main) == "qlik-qrs"
