"""What the bench prints for the stages of issue 39: the worker's own work and the peer."""

from __future__ import annotations

import re

from pipeline.bench.run import table

MEASURED = {"bare_aiokafka_eps": 100_000.0, "bare_faust_eps": 8_000.0, "worker_eps": 4_000.0, "core_eps": 9_000.0}


def test_the_peer_is_shown_against_bare_aiokafka_and_the_worker_against_the_peer():
    lines = table({**MEASURED, "quix_peer_eps": 5_000.0})
    assert any(line.startswith("worker's own work (no Kafka, CPU)") and "9,000" in line for line in lines)
    assert any(line.startswith("quix-streams peer") and "0.05x of bare aiokafka" in line for line in lines)
    assert any(line.startswith("worker / quix-streams peer: 0.80x") for line in lines)


def test_a_peer_that_could_not_run_says_why():
    lines = table({**MEASURED, "quix_peer_error": "quixstreams is not installed (pip install 'jobstream[bench]')"})
    assert "quix-streams peer: not measured: quixstreams is not installed (pip install 'jobstream[bench]')" in lines
    assert not any(line.startswith("quix-streams peer (") for line in lines)


def test_the_peer_keeps_the_jobs_own_bytes_and_quixs_json_apart():
    from pipeline.bench.quix_peer import _dumps, _loads

    job = b"{\x92\xa4job"  # msgpack that could pass for the start of JSON
    assert _loads(_dumps(job)) == job
    assert _loads(_dumps({"offset": 3})) == {"offset": 3}


def test_the_lake_stages_are_shown_against_the_sink_on_a_file_or_say_why_not():
    lines = table({**MEASURED, "sink_rows_per_s": 20_000.0, "lake_1_sink_rows_per_s": 5_000.0, "lake_2_sink_rows_per_s": 6_000.0})
    assert any(line.startswith("sink on a lake, 1 sink") and "0.25x of the sink on a file" in line for line in lines)
    assert any(line.startswith("sink on a lake, 2 sinks (group)") and "0.30x of the sink on a file" in line for line in lines)
    missing = table({**MEASURED, "lake_error": "no PostgreSQL server found (initdb, pg_ctl): apt-get install postgresql"})
    assert "sink on a lake: not measured: no PostgreSQL server found (initdb, pg_ctl): apt-get install postgresql" in missing


def test_the_three_sink_stages_show_rows_per_second_beside_their_freshness_or_say_why_not():
    fresh = {f"{stage}_freshness_{q}_s": value for stage, p50, p99 in (("sink", 0.1, 0.3), ("lake_1_sink", 0.5, 1.25),
                                                                       ("lake_2_sink", 0.75, 2.5))
             for q, value in (("p50", p50), ("p99", p99))}
    lines = table({**MEASURED, "sink_rows_per_s": 20_000.0, "lake_1_sink_rows_per_s": 5_000.0,
                   "lake_2_sink_rows_per_s": 6_000.0, "sink_freshness_rate": 2000, **fresh})
    assert "sink stages, freshness at 2,000 jobs.events records/s (acknowledged -> visible in SQL):" in lines
    assert any(line.split() == ["one", "sink", "on", "a", "file", "20,000", "0.10", "0.30"] for line in lines)
    assert any(line.split() == ["two", "sinks", "on", "a", "lake", "(group)", "6,000", "0.75", "2.50"] for line in lines)
    failed = table({**MEASURED, "sink_freshness_error": "sink freshness: only 3 of 4 rows became visible"})
    assert "sink freshness: not measured: sink freshness: only 3 of 4 rows became visible" in failed


def test_freshness_at_a_sites_rate_is_shown_beside_the_2000_per_second_one_or_says_why_not():
    measured = {**MEASURED, "freshness_rate": 2000, "freshness_p50_s": 1.5, "freshness_p99_s": 3.25,
                "freshness_worker_p50_s": 1.0, "freshness_worker_p99_s": 2.5}
    lines = table({**measured, "site_freshness_rate": 200, "site_freshness_p50_s": 0.4, "site_freshness_p99_s": 0.9,
                   "site_freshness_worker_p99_s": 0.3})
    assert "freshness at 200 raw records/s (a large site's rate): p50 0.40 s, p99 0.90 s; of it the worker's p99 0.30 s" in lines
    assert any(line.startswith("freshness at 2,000 raw records/s") and "p99 3.25 s" in line for line in lines)
    failed = table({**measured, "site_freshness_rate": 200, "site_freshness_error": "only 3 of 4 events became visible"})
    assert "freshness at 200 raw records/s: not measured: only 3 of 4 events became visible" in failed


def test_the_table_says_whether_the_hot_modules_ran_compiled():
    """The worker's rows move ~1.4x with it (pure Python on an editable install)."""
    lines = table({**MEASURED, "hot_modules": "hot modules compiled (Cython): 12 of 12"})
    assert lines[0] == "hot modules compiled (Cython): 12 of 12"
    assert table(MEASURED)[0].startswith("stage")



def test_every_rate_ends_in_the_header_s_column_however_long_a_stage_name():
    lines = table({**MEASURED, "quix_peer_eps": 5_000.0, "normalize_eps_by_vendor": {"airflow": 40_000.0}})
    header = next(line for line in lines if line.startswith("stage"))
    column_end = header.index("events/s") + len("events/s")
    rows = lines[lines.index(header) + 1:lines.index(header) + 7]
    assert [row.split("  ")[0].strip() for row in rows][-1] == "quix-streams peer (normalize+lifecycle)"
    assert [re.search(r"\d[\d,]*(?=  |$)", row).end() for row in rows] == [column_end] * len(rows)
