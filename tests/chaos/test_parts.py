"""The chaos suite's pure parts: the fault plan, the hostile generator, the oracle's
comparison (on a real DuckDB file) and the secret search."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipeline import catalog
from pipeline.alerts import rules
from pipeline.chaos import hostile, oracle
from pipeline.chaos.scenario import ALERTER, INGESTORS, SECOND_WORKER, SINK, WORKER, plan
from pipeline.run.demo_lake import SINKS as LAKE_SINKS
from pipeline.settings import Settings
from pipeline.sink.schema import migrate
from pipeline.stream.records import Message
from pipeline.vendors import VENDOR_NAMES
from tests.support.stream import T0, message, truenas_job


def test_the_plan_is_the_seeds_and_kills_every_role_the_issue_names():
    faults = plan(7, 75)
    assert faults == plan(7, 75) and faults != plan(8, 75)
    kills = Counter(f.role for f in faults)
    assert kills[WORKER] >= 3 and kills[SINK] >= 2 and kills[SECOND_WORKER] == 1
    assert all(kills[role] >= 1 for role in (*INGESTORS, ALERTER))
    assert all(7.5 <= f.at_s <= 75 * 0.85 for f in faults)
    assert [f.down_s for f in faults if f.role == SECOND_WORKER] == [None]


def test_a_soak_plan_kills_more_often():
    assert len(plan(1, 600)) > 2 * len(plan(1, 75))


def test_every_generated_record_is_refused_by_the_worker_and_the_seed_repeats_them():
    records = list(hostile.Generator(3).records(2000))
    assert records == list(hostile.Generator(3).records(2000))
    kinds = Counter(r.kind for r in records)
    assert set(kinds) == set(hostile.RAW_KINDS) | set(hostile.RARE_KINDS)
    assert {r.vendor for r in records} == set(VENDOR_NAMES)
    judge = hostile._Judge(Settings())
    assert all(judge.refuses(r) for r in records)


def test_the_generator_makes_the_large_and_deep_inputs_the_issue_asks_for():
    records = list(hostile.Generator(1).records(2 * hostile.RARE_EVERY))
    big = next(r for r in records if r.kind == "big_string")
    deep = next(r for r in records if r.kind == "deep_nesting")
    assert len(big.value) > hostile.BIG_STRING and deep.value.count(b"[") >= hostile.DEEP
    hooks = list(hostile.Generator(1).webhooks("a-secret", 140))
    assert max(len(h.body) for h in hooks) > hostile.WEBHOOK_BIG
    assert {h.kind for h in hooks if h.expect == (401,)} == {"unsigned", "forged", "tampered"}


def _replay() -> oracle.Expected:
    topic = catalog.raw_topic("truenas")
    messages = [
        message(0, truenas_job(1, "RUNNING"), at=T0),
        message(1, truenas_job(1, "FAILED"), at=T0),
        Message(topic, 0, 2, b"k", b"{not json", 1_700_000_000_000),
    ]
    return oracle.recompute({(topic, 0): messages}, Settings(), rules.load(extra_urls=("json://127.0.0.1/x",)).rules)


def _database(path: Path, expected: oracle.Expected) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    migrate(con)
    for table, column in oracle.TABLE_IDS.items():
        for value in sorted(expected.ids[table]):
            con.execute(f"INSERT INTO {table} ({column}) VALUES (?)", [value])
    for run_key, version in expected.runs.items():
        con.execute("INSERT INTO job_runs (run_key, version) VALUES (?, ?)", [run_key, version])
    for alert in expected.alerts:
        con.execute("INSERT INTO alerts (alert_id, rule) VALUES (?, 'run-failed')", [alert])
    return con


def test_the_replay_expects_the_events_transitions_dead_letter_and_the_failed_alert():
    expected = _replay()
    assert expected.counts() == {"job_events": 2, "job_transitions": 2, "dead_letters": 1, "job_runs": 1, "alerts": 1}
    assert expected.ids["dead_letters"] == {f"{catalog.raw_topic('truenas')}:0:2"}


def test_tables_equal_to_the_replay_pass(tmp_path):
    expected = _replay()
    con = _database(tmp_path / "t.duckdb", expected)
    verdict = oracle.compare(expected, con)
    assert (verdict.lost, verdict.duplicated, verdict.problems) == (0, 0, [])
    assert oracle.live_counts(con, "", expected.alert_rules) == expected.counts()


@pytest.mark.parametrize("damage, lost, duplicated, says", [
    ("DELETE FROM job_events WHERE event_id = (SELECT min(event_id) FROM job_events)", 1, 0, "job_events: 1 of 2"),
    ("INSERT INTO job_transitions SELECT * FROM job_transitions LIMIT 1", 0, 1, "job_transitions: 1 rows twice"),
    ("INSERT INTO dead_letters (dead_letter_id) VALUES ('raw.zuora:0:99')", 0, 0, "dead_letters: 1 rows the fault-free"),
    ("UPDATE job_runs SET version = version - 1", 0, 0, "not at their last version"),
    ("DELETE FROM alerts", 1, 0, "alerts: 1 of 1"),
    ("INSERT INTO alerts (alert_id, rule, transition_id) VALUES ('a', 'run-stale', 'nope')", 0, 0, "never made"),
])
def test_each_kind_of_damage_is_counted_and_named(tmp_path, damage, lost, duplicated, says):
    expected = _replay()
    con = _database(tmp_path / "t.duckdb", expected)
    con.execute(damage)
    verdict = oracle.compare(expected, con)
    assert (verdict.lost, verdict.duplicated) == (lost, duplicated)
    assert any(says in line for line in verdict.problems), verdict.problems


def test_a_secret_is_found_in_a_log_a_table_a_dead_letter_or_a_raw_record(tmp_path):
    expected = _replay()
    con = _database(tmp_path / "t.duckdb", expected)
    log = tmp_path / "ingestor.log"
    log.write_text("connected\n")
    needles = {b"revpro-password"}
    topic = catalog.raw_topic("zuora")
    clean = {(topic, 0): [Message(topic, 0, 0, b"k", b"{}")]}
    assert oracle.secret_leaks(needles, [log], con, clean) == []
    log.write_text("login with revpro-password failed\n")
    con.execute("INSERT INTO dead_letters (dead_letter_id, value_b64) VALUES ('x', to_base64('pw=revpro-password'::BLOB))")
    con.execute("INSERT INTO job_events (event_id, error_message) VALUES ('e', 'bad password revpro-password')")
    dirty = {(topic, 0): [Message(topic, 0, 0, b"k", b'{"password": "revpro-password"}')]}
    found = oracle.secret_leaks(needles, [log], con, dirty)
    assert found == ["log ingestor.log holds a secret", "table job_events holds a secret",
                     "a dead letter's value holds a secret", f"{topic} partition 0 holds a secret"]


def test_a_pushed_document_in_no_raw_record_is_named_as_not_ingested():
    topic = catalog.raw_topic("qlik_cloud")
    raw = [Message(topic, 0, 0, None, b'{"data": {"reloadId": "r-1"}}'), Message(topic, 1, 0, b"k", None),
           Message(topic, 1, 1, None, b'{"data": {"id": "r-3"}}')]
    assert oracle.not_ingested({"r-1", "r-2", "r-3"}, raw) == {"r-2"}


def test_the_replay_runs_the_lifecycle_with_the_settings_pipeline_worker_builds(monkeypatch):
    """The first chaos runs failed on Zuora runs that the replay made STALE after 240 s
    while the worker waited Zuora's own 600 s: the replay must build settings as the CLI."""
    from pipeline.cli import load_settings
    from pipeline.chaos.runner import worker_settings
    from pipeline.run.supervisor import Role

    env = {"JOBSTREAM_MAX_CLOCK_SKEW_S": "12600"}
    for name in [k for k in os.environ if k.startswith("JOBSTREAM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    replay, worker = worker_settings(Role("worker", [], env=env)), load_settings()
    assert {v: replay.stale_after(v) for v in VENDOR_NAMES} == {v: worker.stale_after(v) for v in VENDOR_NAMES}
    assert replay.max_clock_skew == worker.max_clock_skew
    assert replay.stale_after("zuora").total_seconds() == 600


def test_a_lake_plan_kills_the_two_lake_sinks_in_turn_and_never_the_file_sink():
    faults = plan(7, 75, lake_sinks=LAKE_SINKS)
    assert faults == plan(7, 75, lake_sinks=LAKE_SINKS)
    kills = Counter(f.role for f in faults)
    assert kills[SINK] == 0 and kills[LAKE_SINKS[0]] >= 2 and kills[LAKE_SINKS[1]] >= 2
    sinks = [f.role for f in faults if f.role in LAKE_SINKS]
    assert all(a != b for a, b in zip(sinks, sinks[1:]))  # in turn: the other one goes on
    assert all(f.down_s is not None for f in faults if f.role in LAKE_SINKS)
    assert kills[WORKER] >= 3 and kills[SECOND_WORKER] == 1  # the other roles' faults stay
    assert plan(7, 75) == plan(7, 75, lake_sinks=())
