"""The sink stages' freshness (issue 37): acknowledged -> visible in SQL for one sink on a
file, one sink on a lake and two sinks of one group on a lake, on the real broker and a
real PostgreSQL catalog; checks that each is measured, not how fast."""

from __future__ import annotations

import asyncio

import pytest

from pipeline import catalog
from pipeline.bench.lake_stages import freshness_stages
from pipeline.bench.sink_stages import jobs_ends
from pipeline.sink.scratch_postgres import ScratchPostgres
from tests.support.records import Story, produce

pytestmark = pytest.mark.integration


def test_each_sink_stage_reports_its_freshness_over_copies_of_the_workers_events(broker, tmp_path):
    story = Story()
    start = asyncio.run(jobs_ends(broker.bootstrap))
    asyncio.run(produce(broker.bootstrap, [(catalog.EVENTS, story.event(f"job{n % 40}", "r", n, "RUNNING"))
                                           for n in range(200)]))
    end = asyncio.run(jobs_ends(broker.bootstrap))
    postgres = ScratchPostgres.start()
    try:
        results = freshness_stages(broker.bootstrap, postgres, tmp_path, start, end, rate=300, seconds=1.0,
                                   say=lambda _line: None)
    finally:
        postgres.stop()
    assert results["sink_freshness_rate"] == 300
    for prefix in ("sink", "lake_1_sink", "lake_2_sink"):
        assert results[f"{prefix}_freshness_events"] == 300, prefix
        assert 0 < results[f"{prefix}_freshness_p50_s"] <= results[f"{prefix}_freshness_p99_s"] <= results[f"{prefix}_freshness_max_s"]
    assert results["lake_1_sink_freshness_conflicts"] == 0  # one sink has nobody to conflict with
    assert results["lake_2_sink_freshness_conflicts"] >= 0
