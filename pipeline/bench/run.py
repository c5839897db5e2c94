"""``pipeline bench``: every stage against its bare baseline, measured in one run.

Absolute numbers on a shared 2-core machine drift by 2x from day to day; ratios measured
in the same run do not. So one run starts the embedded broker, loads one seeded workload
(``workload.documents``: every vendor) into the raw topics, and measures each stage
over that same input, each the median of ``repeats``:

1. bare aiokafka: read the raw topics and orjson-parse every value;
2. bare Faust: an agent loop over the raw topics doing nothing per event;
3. the lifecycle alone (``apply_job`` + ``evict``, pure Python, no I/O), and the worker's
   own work per raw record (``StreamCore.process`` without Kafka, in CPU seconds:
   ``core_stage``), what the worker pays on top of Faust's consumer;
4. normalize alone, per vendor (parse included);
5. the worker: raw topics -> jobs.* topics (``worker_stages.worker_rate``), and beside it
   the peer: the same normalize + lifecycle as a quix-streams application with its own
   consumer, RocksDB state and changelog (``quix_peer``; only with the ``bench`` extra);
   then two workers in one consumer group over the same input, against one;
6. the sink alone: jobs.* -> committed DuckDB rows, against a bare aiokafka loop over the
   same jobs.* records (``sink_stages``);
7. end to end: raw in Kafka -> rows visible over Quack, one worker and one sink;
8. freshness under a steady ``freshness_rate`` raw records/s, acknowledged -> visible;
   then again at ``site_rate`` (200 a second: what a large site really produces);
9. the worker's peak RSS and restart-to-ready with ``state_runs`` runs in its RocksDB
   table, on a broker of its own (``worker_stages.state_stage``; 0 skips it).

It prints a table with the ratios and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from pipeline import catalog, compiled
from pipeline.bench import core_stage, sink_stages, stages, worker_stages
from pipeline.bench.workload import documents
from pipeline.broker import EmbeddedBroker

SAMPLE_FOR_PURE_STAGES = 50_000
"""The pure stages time a sample: their rate does not depend on the input's length."""


def run(events: int, *, repeats: int = 3, seed: int = 1, state_runs: int = 0, freshness_rate: int = 2000,
        freshness_seconds: float = 20.0, site_rate: int = 200,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every stage; returns the JSON-ready numbers."""
    results: dict[str, Any] = {"events": events, "seed": seed, "repeats": repeats, "hot_modules": compiled.summary()}
    say(results["hot_modules"])  # the worker's rows depend on it: pure Python is ~1.4x the CPU (docs/design.md)
    sample = list(itertools.islice(documents(events, seed=seed), min(events, SAMPLE_FOR_PURE_STAGES)))

    say(f"normalize alone over {len(sample):,} documents ...")
    per_vendor = [stages.normalize_rates(sample) for _ in range(repeats)]
    results["normalize_eps_by_vendor"] = {
        vendor: statistics.median(r[vendor] for r in per_vendor) for vendor in per_vendor[0]
    }
    results["normalize_eps"] = statistics.median(_overall(sample, r) for r in per_vendor)

    say("lifecycle alone ...")
    results["lifecycle_eps"] = statistics.median(stages.lifecycle_rate(sample) for _ in range(repeats))

    say("the worker's own work alone (StreamCore, no Kafka, CPU time) ...")
    messages = core_stage.raw_messages(sample)
    results["core_eps"] = statistics.median(core_stage.core_rate(messages) for _ in range(repeats))
    del messages

    with EmbeddedBroker() as broker:
        asyncio.run(catalog.apply(broker.bootstrap))
        say(f"loading {events:,} documents into the raw topics ...")
        began = time.perf_counter()
        loaded = asyncio.run(stages.load(broker.bootstrap, documents(events, seed=seed),
                                         progress=lambda n: say(f"  {n:,} raw records sent")))
        results["raw_records"] = loaded
        results["load_eps"] = loaded / (time.perf_counter() - began)

        say("bare aiokafka consume + orjson parse ...")
        results["bare_aiokafka_eps"] = statistics.median(
            asyncio.run(stages.bare_aiokafka(broker.bootstrap, loaded)) for _ in range(repeats)
        )
        say("bare faust agent loop ...")
        results["bare_faust_eps"] = statistics.median(stages.bare_faust(broker.bootstrap, loaded) for _ in range(repeats))
        if stages.has_quix():
            say("the peer: normalize + lifecycle as a quix-streams application ...")
            try:
                results["quix_peer_eps"] = statistics.median(
                    stages.quix_peer(broker.bootstrap, loaded) for _ in range(repeats))
            except (stages.BenchError, subprocess.TimeoutExpired) as exc:  # the peer's failure is not the worker's
                results["quix_peer_error"] = " ".join(str(exc).split())[:300]
        else:
            results["quix_peer_error"] = "quixstreams is not installed (pip install 'jobstream[bench]')"
        say("the worker: raw -> jobs.* ...")
        raw_records, output_events = worker_stages.expected_events(documents(events, seed=seed))
        results["worker_eps"] = statistics.median(
            worker_stages.worker_rate(broker.bootstrap, raw_records, output_events, repeats=repeats))
        say("two workers in one group: raw -> jobs.* ...")
        results["two_workers_eps"] = statistics.median(
            worker_stages.worker_rate(broker.bootstrap, raw_records, output_events, repeats=repeats, workers=2))
        results.update(sink_stages.run_stages(broker.bootstrap, events=events, seed=seed, repeats=repeats,
                                              rate=freshness_rate, seconds=freshness_seconds, site_rate=site_rate,
                                              say=say))
    if state_runs:
        say(f"the worker with {state_runs:,} runs in its table (RocksDB): peak RSS, restart-to-ready ...")
        results.update(worker_stages.state_stage(state_runs, say=say))
        results["state_runs"] = state_runs
    return results


def _overall(sample: list, rates: dict[str, float]) -> float:
    """All vendors' events over the time all vendors took (not a mean of rates)."""
    counts: dict[str, int] = {}
    from pipeline import vendors
    from pipeline.vendors import Context

    for doc in sample:
        counts[doc.vendor] = counts.get(doc.vendor, 0) + len(
            vendors.normalize(doc.vendor, doc.payload, Context(source=doc.source, received_at=doc.at))
        )
    seconds = sum(counts[v] / rates[v] for v in counts)
    return sum(counts.values()) / seconds


def table(results: dict[str, Any]) -> list[str]:
    """The printed table: each stage, its rate, and its ratio to the baseline it is judged by."""
    bare_kafka = results.get("bare_aiokafka_eps")
    bare_faust = results.get("bare_faust_eps")
    rows = [
        ("bare aiokafka + orjson", results.get("bare_aiokafka_eps"), None, ""),
        ("bare faust agent loop", bare_faust, bare_kafka, "of bare aiokafka"),
        ("lifecycle alone", results.get("lifecycle_eps"), None, ""),
        ("worker's own work (no Kafka, CPU)", results.get("core_eps"), None, ""),
        ("normalize alone (all vendors)", results.get("normalize_eps"), None, ""),
    ]
    rows += [(f"  normalize {v}", r, None, "") for v, r in results.get("normalize_eps_by_vendor", {}).items()]
    rows.append(("worker (raw -> jobs.*)", results.get("worker_eps"), bare_faust, "of bare faust (target 0.75x)"))
    rows.append(("2 workers, one group", results.get("two_workers_eps"), results.get("worker_eps"), "of one worker"))
    rows.append(("quix-streams peer (normalize+lifecycle)", results.get("quix_peer_eps"), bare_kafka,
                 "of bare aiokafka"))
    rows += [
        ("bare aiokafka over jobs.* + orjson", results.get("bare_aiokafka_jobs_eps"), None, ""),
        ("sink (jobs.* -> committed rows)", results.get("sink_rows_per_s"), results.get("bare_aiokafka_jobs_eps"),
         "of bare aiokafka over them (target 0.5x, 100k)"),
        ("sink on a lake, 1 sink", results.get("lake_1_sink_rows_per_s"), results.get("sink_rows_per_s"), "of the sink on a file"),
        ("sink on a lake, 2 sinks (group)", results.get("lake_2_sink_rows_per_s"), results.get("sink_rows_per_s"), "of the sink on a file"),
        ("end to end (raw -> visible)", results.get("end_to_end_eps"), bare_faust, "of bare faust (target 0.6x)"),
    ]
    rows = [row for row in rows if row[1] is not None]
    width = max([len("stage"), *(len(name) for name, *_ in rows)])
    lines = [f"{'stage':<{width}} {'events/s':>12}  ratio"]
    if results.get("hot_modules"):
        lines.insert(0, results["hot_modules"])
    for name, rate, base, label in rows:
        ratio = f"{rate / base:.2f}x {label}" if base else ""
        lines.append(f"{name:<{width}} {rate:>12,.0f}  {ratio}")
    if results.get("quix_peer_eps") and results.get("worker_eps"):
        lines.append(f"worker / quix-streams peer: {results['worker_eps'] / results['quix_peer_eps']:.2f}x "
                     "(the peer sends no outputs and keeps no clock: a best case for it)")
    elif results.get("quix_peer_error"):
        lines.append(f"quix-streams peer: not measured: {results['quix_peer_error']}")
    if results.get("sink_rows_per_s") and bare_kafka:
        lines.append(f"sink / bare aiokafka over the raw topics (stage 1, timed earlier in the run): "
                     f"{results['sink_rows_per_s'] / bare_kafka:.2f}x")
    if results.get("lake_error"):
        lines.append(f"sink on a lake: not measured: {results['lake_error']}")
    lines += sink_table(results)
    if results.get("freshness_p99_s") is not None:
        lines.append(f"freshness at {results['freshness_rate']:,} raw records/s, acknowledged -> visible over Quack: "
                     f"p50 {results['freshness_p50_s']:.2f} s, p99 {results['freshness_p99_s']:.2f} s (target <= 2); "
                     f"of it the worker's p50 {results['freshness_worker_p50_s']:.2f} s, p99 {results['freshness_worker_p99_s']:.2f} s")
        if results.get("end_to_end_eps") and results["end_to_end_eps"] < results["freshness_rate"]:
            lines.append(f"  (end to end runs at {results['end_to_end_eps']:,.0f} raw records/s, below that rate: "
                         "the delay is the backlog that builds up)")
    elif results.get("freshness_error"):
        lines.append(f"freshness at {results['freshness_rate']:,} raw records/s: not measured: {results['freshness_error']}")
    if results.get("site_freshness_p99_s") is not None:
        lines.append(f"freshness at {results['site_freshness_rate']:,} raw records/s (a large site's rate): "
                     f"p50 {results['site_freshness_p50_s']:.2f} s, p99 {results['site_freshness_p99_s']:.2f} s; "
                     f"of it the worker's p99 {results['site_freshness_worker_p99_s']:.2f} s")
    elif results.get("site_freshness_error"):
        lines.append(f"freshness at {results['site_freshness_rate']:,} raw records/s: not measured: "
                     f"{results['site_freshness_error']}")
    if results.get("restart_to_ready_s") is not None:
        rss = results.get("worker_peak_rss_mb")
        lines.append(f"worker with {results['state_runs']:,} runs (RocksDB): peak RSS "
                     f"{'unknown' if rss is None else f'{rss:,.0f} MB'} (target <= 500), "
                     f"restart-to-ready {results['restart_to_ready_s']:.1f} s (target <= 30)")
    return lines


SINK_STAGES = (("one sink on a file", "sink_rows_per_s", "sink"),
               ("one sink on a lake", "lake_1_sink_rows_per_s", "lake_1_sink"),
               ("two sinks on a lake (group)", "lake_2_sink_rows_per_s", "lake_2_sink"))


def sink_table(results: dict[str, Any]) -> list[str]:
    """The three sink stages side by side: rows/s and freshness (acknowledged -> visible in SQL)."""
    if results.get("sink_freshness_rate") is None:
        error = results.get("sink_freshness_error")
        return [f"sink freshness: not measured: {error}"] if error else []
    lines = [f"sink stages, freshness at {results['sink_freshness_rate']:,} jobs.events records/s "
             "(acknowledged -> visible in SQL):",
             f"  {'stage':<30} {'records/s':>10} {'p50 s':>7} {'p99 s':>7}"]
    for name, rate_key, prefix in SINK_STAGES:
        rate, p50, p99 = results.get(rate_key), results.get(f"{prefix}_freshness_p50_s"), results.get(f"{prefix}_freshness_p99_s")
        if rate is None and p99 is None:
            continue
        lines.append(f"  {name:<30} {_or_dash(rate, '{:,.0f}'):>10} {_or_dash(p50, '{:.2f}'):>7} {_or_dash(p99, '{:.2f}'):>7}")
    repeated = [f"{results[f'lake_{n}_sink_freshness_conflicts']} with {n} sink(s)" for n in (1, 2)
                if results.get(f"lake_{n}_sink_freshness_conflicts") is not None]
    if repeated:
        lines.append(f"  lake commits repeated after a conflict while freshness was measured: {', '.join(repeated)}")
    if results.get("sink_freshness_error"):
        lines.append(f"  (not measured further: {results['sink_freshness_error']})")
    return lines


def _or_dash(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def write(results: dict[str, Any], out: Path) -> None:
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
