"""The verdict: what the analysts' tables must hold, recomputed from what was ingested.

Why not compare with a second, fault-free run: the simulators follow a wall clock, so two
runs never ingest the same documents. The reference is instead this run's own raw
topics, read back to the end after the sources stopped and replayed through the
worker's pure code (``StreamCore``, normalize + lifecycle, with the worker's settings,
in one process that never crashes). That code is deterministic whatever the batching
(tests/stream), so the replay is exactly the fault-free run over the same input, and:

- ``job_events``, ``job_transitions``, ``dead_letters``: the same ids, none missing
  (``lost``), none twice (``duplicated``), none that the replay did not make (``extra``);
- ``job_runs``: every run once, at the replay's last version (an older one is ``stale``);
- ``alerts``: the rules that depend on one transition only (failed, stale) fired exactly
  for the replay's transitions; every alert of any rule names a transition that exists.
  Rules with windows and in-memory counters (retries, dead letters per minute, slow runs)
  may fire differently after an alerter restart, as documented in alerts/service.py.

Whether the ingestors lost a document at the edge is judged apart (``runner``): hostile
records must each be one dead letter, webhooks must be acknowledged. Secrets are looked
for in every log, every table and every raw record.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import msgspec
from aiokafka import TopicPartition

from pipeline import catalog
from pipeline.alerts import logic
from pipeline.alerts.records import decode_transition
from pipeline.alerts.rules import Rule
from pipeline.kafka import clients
from pipeline.kafka.reading import read_to_end
from pipeline.settings import Settings
from pipeline.stream.core import StreamCore
from pipeline.stream.records import Message

TABLE_IDS = {"job_events": "event_id", "job_transitions": "transition_id", "dead_letters": "dead_letter_id"}


@dataclass(slots=True)
class Expected:
    """What a fault-free run over the same raw records ends with."""

    ids: dict[str, set[str]] = field(default_factory=lambda: {table: set() for table in TABLE_IDS})
    runs: dict[str, int] = field(default_factory=dict)  # run_key -> last version
    alerts: set[str] = field(default_factory=set)  # ids of the single-transition rules
    transitions: dict[str, tuple] = field(default_factory=dict)  # id -> (run_key, from, to, cause, at)
    alert_rules: frozenset[str] = frozenset()

    def counts(self) -> dict[str, int]:
        return {**{t: len(ids) for t, ids in self.ids.items()}, "job_runs": len(self.runs), "alerts": len(self.alerts)}


@dataclass(slots=True)
class Verdict:
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)  # one line each; any of them fails the run

    def add(self, line: str) -> None:
        self.problems.append(line)


def recompute(partitions: Mapping[tuple[str, int], list[Message]], settings: Settings, rules: Iterable[Rule]) -> Expected:
    """Replay every raw partition through the worker's code, in offset order (pure)."""
    store: dict[bytes, bytes] = {}
    core = StreamCore(settings, store.get, lambda: list(store.items()))
    single = tuple(rule for rule in rules if rule.kind in ("failed", "stale"))
    expected = Expected(alert_rules=frozenset(rule.name for rule in single))
    for key in sorted(partitions):
        messages = partitions[key]
        for start in range(0, len(messages), 1000):
            batch = core.process(messages[start:start + 1000])
            for output in batch.outputs:
                _expect(expected, output.topic, output.value, single)
            for job, (_partition, value) in batch.writes.items():
                if value is None:
                    store.pop(job, None)
                else:
                    store[job] = value
    return expected


_ids = {
    catalog.EVENTS: ("job_events", msgspec.json.Decoder(dict)),
    catalog.TRANSITIONS: ("job_transitions", msgspec.json.Decoder(dict)),
    catalog.DEADLETTER: ("dead_letters", msgspec.json.Decoder(dict)),
}


def _expect(expected: Expected, topic: str, value: bytes | None, single: tuple[Rule, ...]) -> None:
    if value is None:
        return
    if topic == catalog.RUNS:
        run = msgspec.json.decode(value)
        expected.runs[run["run_key"]] = max(run["version"], expected.runs.get(run["run_key"], -1))
        return
    table, decoder = _ids[topic]
    doc = decoder.decode(value)
    expected.ids[table].add(doc[TABLE_IDS[table]])
    if topic == catalog.TRANSITIONS:
        expected.transitions[doc["transition_id"]] = (
            doc["run_key"], doc["from_state"], doc["to_state"], doc["cause"], doc["at"])
    if topic == catalog.TRANSITIONS and single:
        _memory, firings, _wakes = logic.on_transition(single, logic.JobMemory(), decode_transition(value), None)
        expected.alerts.update(firing.alert_id for firing in firings)


async def read_raw(bootstrap: str, *, timeout_s: float = 120.0) -> dict[tuple[str, int], list[Message]]:
    """Every record of every raw topic, up to its end, by partition."""
    consumer = clients.consumer(bootstrap, max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in catalog.raw_topics() for p in range(catalog.topic(t).partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[tuple[str, int], list[Message]] = {(tp.topic, tp.partition): [] for tp in tps}
        async for record in read_to_end(consumer, tps, timeout_s=timeout_s):
            found[(record.topic, record.partition)].append(
                Message(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp))
        return found
    finally:
        await consumer.stop()


def not_ingested(sent_ids: Iterable[str], messages: Iterable[Message]) -> set[str]:
    """The vendor ids (here: Qlik Cloud reload ids the simulator pushed) that appear in
    no raw record: each is a document lost at the edge, unless the sender gave it up."""
    missing = {i.encode() for i in sent_ids}
    for message in messages:
        if message.value is not None:
            missing = {i for i in missing if i not in message.value}
            if not missing:
                break
    return {i.decode() for i in missing}


def save_raw(raw: Mapping[tuple[str, int], list[Message]], path: Path) -> None:
    """The raw records as read (msgpack), for replaying a failed verdict with ``load_raw``."""
    path.write_bytes(msgspec.msgpack.encode([tuple(m) for messages in raw.values() for m in messages]))


def load_raw(path: Path) -> dict[tuple[str, int], list[Message]]:
    found: dict[tuple[str, int], list[Message]] = {}
    for fields in msgspec.msgpack.decode(path.read_bytes()):
        message = Message(*fields)
        found.setdefault((message.topic, message.partition), []).append(message)
    return found


def live_counts(con: duckdb.DuckDBPyConnection, prefix: str, alert_rules: Iterable[str]) -> dict[str, int]:
    """Distinct ids per table (as ``Expected.counts``): how far the sink has come."""
    counts = {table: con.execute(f"SELECT count(DISTINCT {column}) FROM {prefix}{table}").fetchone()[0]
              for table, column in TABLE_IDS.items()}
    counts["job_runs"] = con.execute(f"SELECT count(DISTINCT run_key) FROM {prefix}job_runs").fetchone()[0]
    names = sorted(alert_rules)
    counts["alerts"] = con.execute(
        f"SELECT count(DISTINCT alert_id) FROM {prefix}alerts WHERE list_contains($1, rule)", [names]
    ).fetchone()[0] if names else 0
    return counts


def compare(expected: Expected, con: duckdb.DuckDBPyConnection) -> Verdict:
    """The tables in ``con`` against the replay: exact, id by id."""
    verdict = Verdict()
    for table, column in TABLE_IDS.items():
        _compare_ids(verdict, table, expected.ids[table], con.execute(f"SELECT {column} FROM {table}").fetchall())
    _explain_transitions(verdict, expected, con)
    runs = con.execute("SELECT run_key, version FROM job_runs").fetchall()
    _compare_ids(verdict, "job_runs", set(expected.runs), [(key,) for key, _version in runs])
    behind = [key for key, version in runs if key in expected.runs and version != expected.runs[key]]
    if behind:
        verdict.add(f"job_runs: {len(behind)} runs not at their last version (e.g. {behind[0]})")
    alerts = con.execute("SELECT alert_id, rule, transition_id FROM alerts").fetchall()
    single = [(a,) for a, rule, _t in alerts if rule in expected.alert_rules]
    _compare_ids(verdict, "alerts", expected.alerts, single)
    unknown = [a for a, _rule, t in alerts if t is not None and t not in expected.ids["job_transitions"]]
    if unknown:
        verdict.add(f"alerts: {len(unknown)} alerts name a transition the replay never made (e.g. {unknown[0]})")
    return verdict


def _explain_transitions(verdict: Verdict, expected: Expected, con: duckdb.DuckDBPyConnection) -> None:
    """For the first run whose transitions differ: both histories, side by side."""
    actual = {row[0]: tuple(row[1:]) for row in con.execute(
        "SELECT transition_id, run_key, from_state, to_state, cause, strftime(\"at\", '%Y-%m-%dT%H:%M:%S.%fZ') "
        "FROM job_transitions").fetchall()}
    differ = sorted({expected.transitions[i][0] for i in expected.transitions.keys() - actual.keys()}
                    | {actual[i][0] for i in actual.keys() - expected.transitions.keys()})
    if not differ:
        return
    run = differ[0]

    def history(rows: dict[str, tuple]) -> str:
        return "; ".join(f"{f or '-'}->{t} ({c}, {at})" for _r, f, t, c, at in sorted(
            (v for v in rows.values() if v[0] == run), key=lambda v: v[4]))

    verdict.add(f"job_transitions: {len(differ)} runs differ; {run}: replay [{history(expected.transitions)}], "
                f"table [{history(actual)}]")


def _compare_ids(verdict: Verdict, table: str, expected: set[str], rows: list[tuple]) -> None:
    seen = Counter(row[0] for row in rows)
    lost = expected - seen.keys()
    extra = seen.keys() - expected
    twice = sum(count - 1 for count in seen.values() if count > 1)
    verdict.lost += len(lost)
    verdict.duplicated += twice
    if lost:
        verdict.add(f"{table}: {len(lost)} of {len(expected)} expected rows missing (e.g. {sorted(lost)[0]})")
    if twice:
        verdict.add(f"{table}: {twice} rows twice")
    if extra:
        verdict.add(f"{table}: {len(extra)} rows the fault-free replay does not have (e.g. {sorted(extra)[0]})")


def secret_leaks(needles: set[bytes], logs: Iterable[Path], con: duckdb.DuckDBPyConnection,
                 raw: Mapping[tuple[str, int], list[Message]]) -> list[str]:
    """Where any of ``needles`` (the secrets, their Basic auth forms) shows: one line each."""
    found: list[str] = []
    for path in logs:
        data = path.read_bytes()
        found += [f"log {path.name} holds a secret" for needle in needles if needle in data][:1]
    tables = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
    for table in tables:
        for row in con.execute(f'SELECT CAST(t AS VARCHAR) FROM "{table}" AS t').fetchall():
            text = row[0].encode()
            if any(needle in text for needle in needles):
                found.append(f"table {table} holds a secret")
                break
    for (value_b64,) in con.execute("SELECT value_b64 FROM dead_letters WHERE value_b64 IS NOT NULL").fetchall():
        if any(needle in base64.b64decode(value_b64) for needle in needles):
            found.append("a dead letter's value holds a secret")
            break
    for (topic, partition), messages in raw.items():
        if any(needle in (m.value or b"") or needle in (m.key or b"") for m in messages for needle in needles):
            found.append(f"{topic} partition {partition} holds a secret")
    return found
