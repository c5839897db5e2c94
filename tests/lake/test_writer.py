"""The lake writer against a real PostgreSQL catalog: the same tables as the file, two
writers' commits serialized through ``kafka_offsets``, a fenced zombie, and ``job_runs``
keeping the highest version whoever wrote it (pipeline/sink/lake.py)."""

from __future__ import annotations

import threading

import orjson
import pytest

from pipeline import catalog
from pipeline.sink import schema
from pipeline.sink import lake as lake_module
from pipeline.sink.lake import CommitLock, Fenced, LakeWriter, for_lake
from pipeline.sink.records import KafkaRecord, decode_batch
from tests.support.lake import committing_back_to_back
from tests.support.records import Story


def batch_of(story: Story, topic: str, partition: int, first_offset: int, records: list[dict]):
    return decode_batch([
        KafkaRecord(topic, partition, first_offset + n, 0, None, orjson.dumps(r)) for n, r in enumerate(records)
    ])


LONG_BATCH = 3000
"""Dead letters in one batch: a transaction several times longer than a one-row commit."""


class PausedBeforeCommit(LakeWriter):
    """A writer that lets ``meanwhile`` run between its inserts and its COMMIT, once:
    another sink committing inside this one's transaction."""

    def __init__(self, target, meanwhile) -> None:
        super().__init__(target)
        self.meanwhile = meanwhile

    def _commit(self, con) -> None:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        super()._commit(con)


def test_the_lake_gets_every_migration_without_primary_keys_and_a_second_open_changes_nothing(lake):
    first = LakeWriter(lake).open()
    try:
        assert schema.version_of(first.connection) == schema.LATEST
        views = {v for (v,) in first.connection.execute("SELECT view_name FROM duckdb_views() WHERE database_name = 'lake'").fetchall()}
        assert set(schema.VIEWS) <= views
    finally:
        first.close()
    second = LakeWriter(lake).open()
    try:
        assert second.connection.execute("SELECT count(*) FROM jobstream_schema").fetchone()[0] == schema.LATEST
    finally:
        second.close()
    assert for_lake('CREATE TABLE k (a INT NOT NULL, PRIMARY KEY (a));\nCREATE TABLE v (version INTEGER PRIMARY KEY)') == \
        "CREATE TABLE k (a INT NOT NULL);\nCREATE TABLE v (version INTEGER)"


def test_a_zombie_that_commits_after_the_new_owner_is_fenced_and_writes_nothing(lake):
    story = Story()
    zombie, owner = LakeWriter(lake).open(), LakeWriter(lake).open()
    try:
        events = [story.event("a", "r", n, "RUNNING") for n in range(1, 4)]
        zombie.claim([(catalog.EVENTS, 0)])
        owner.claim([(catalog.EVENTS, 0)])  # the group moved the partition; the zombie does not know yet
        owner.write(batch_of(story, catalog.EVENTS, 0, 0, events))
        with pytest.raises(Fenced, match=f"{catalog.EVENTS}:0 \\(expected None, found 3\\)"):
            zombie.write(batch_of(story, catalog.EVENTS, 0, 0, events + [story.event("a", "r", 9, "FAILED")]))
        con = owner.connection
        assert con.execute("SELECT count(*) FROM job_events WHERE source = ?", [story.source]).fetchone()[0] == 3
        assert con.execute("SELECT next_offset FROM kafka_offsets WHERE topic = ? AND \"partition\" = 0", [catalog.EVENTS]).fetchone()[0] == 3
    finally:
        zombie.close()
        owner.close()


def test_a_zombie_whose_transaction_overlaps_the_owners_commit_conflicts_then_is_fenced(lake):
    """The zombie read the offsets before the owner committed: its COMMIT conflicts, the
    repeat sees the owner's offsets and drops the batch."""
    story = Story()
    owner = LakeWriter(lake).open()
    events = [story.event("a", "r", n, "RUNNING") for n in range(1, 4)]
    zombie = PausedBeforeCommit(lake, lambda: owner.write(batch_of(story, catalog.EVENTS, 1, 0, events))).open()
    try:
        zombie.claim([(catalog.EVENTS, 1)])
        owner.claim([(catalog.EVENTS, 1)])
        with pytest.raises(Fenced):
            zombie.write(batch_of(story, catalog.EVENTS, 1, 0, events))
        assert zombie.conflicts == 1
        assert owner.connection.execute("SELECT count(*) FROM job_events WHERE source = ?", [story.source]).fetchone()[0] == 3
    finally:
        zombie.close()
        owner.close()


def test_job_runs_keep_the_highest_version_whoever_committed_last(lake):
    """Sink A's transaction holds version 3 of a run; sink B commits version 5 of it inside
    A's transaction (another partition: a re-keyed or moved run). A's commit conflicts, is
    repeated on the newer snapshot, and version 5 stays; A's other rows go in."""
    story = Story()
    b = LakeWriter(lake).open()
    newer = [story.run("a", "r", 5, "SUCCEEDED")]
    a = PausedBeforeCommit(lake, lambda: b.write(batch_of(story, catalog.RUNS, 2, 0, newer))).open()
    try:
        a.claim([(catalog.RUNS, 3)])
        b.claim([(catalog.RUNS, 2)])
        a.write(batch_of(story, catalog.RUNS, 3, 0, [story.run("a", "r", 3, "RUNNING"), story.run("b", "r", 1, "PENDING")]))
        assert a.conflicts == 1
        rows = a.connection.execute("SELECT run_key, version FROM job_runs WHERE source = ? ORDER BY run_key", [story.source]).fetchall()
        assert rows == [(story.run_key("a", "r"), 5), (story.run_key("b", "r"), 1)]
        offsets = dict(((t, p), o) for t, p, o in a.connection.execute('SELECT topic, "partition", next_offset FROM kafka_offsets').fetchall())
        assert offsets == {(catalog.RUNS, 2): 1, (catalog.RUNS, 3): 2}
    finally:
        a.close()
        b.close()


def test_append_rows_another_sink_committed_during_the_transaction_are_not_written_twice(lake):
    story = Story()
    b = LakeWriter(lake).open()
    events = [story.event("a", "r", n, "RUNNING") for n in range(1, 5)]
    a = PausedBeforeCommit(lake, lambda: b.write(batch_of(story, catalog.EVENTS, 2, 0, events[:2]))).open()
    try:
        a.claim([(catalog.EVENTS, 3)])
        b.claim([(catalog.EVENTS, 2)])
        a.write(batch_of(story, catalog.EVENTS, 3, 0, events))  # a re-send of the same ids on another partition
        ids = a.connection.execute("SELECT event_id FROM job_events WHERE source = ? ORDER BY event_id", [story.source]).fetchall()
        assert [i for (i,) in ids] == sorted(e["event_id"] for e in events)
    finally:
        a.close()
        b.close()


def test_sinks_opening_a_new_lake_at_once_all_open_it(lake):
    """Both create the catalog's tables; the loser of PostgreSQL's race attaches again."""
    opened: list[LakeWriter | BaseException] = []
    together = threading.Barrier(4)

    def open_one() -> None:
        together.wait()
        try:
            opened.append(LakeWriter(lake).open())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            opened.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failed = [o for o in opened if isinstance(o, BaseException)]
    for writer in opened:
        if isinstance(writer, LakeWriter):
            writer.close()
    assert len(opened) == 4 and not failed, [str(f) for f in failed]


def test_a_sink_with_long_commits_gets_its_turn_while_another_commits_back_to_back(lake):
    """Found in the full suite (thousands of dead letters in ``jobs.deadletter``): while one
    sink committed small batches back to back, every transaction of the other overlapped one
    of its commits, conflicted, and it gave up after COMMIT_ATTEMPTS repeats, however long
    it paused between them. Its repeat now waits for the others' commits and goes alone."""
    story = Story()
    busy, slow = LakeWriter(lake, threads=1).open(), LakeWriter(lake, threads=1).open()
    busy.claim([(catalog.EVENTS, 0)])
    slow.claim([(catalog.DEADLETTER, 0)])

    def one_event(offset: int) -> None:
        busy.write(batch_of(story, catalog.EVENTS, 0, offset, [story.event("busy", "r", offset, "RUNNING")]))

    try:
        with committing_back_to_back(one_event) as failed:
            slow.write(batch_of(story, catalog.DEADLETTER, 0, 0, [story.dead_letter(n) for n in range(LONG_BATCH)]))
    finally:
        busy.close()
    try:
        assert not failed, [str(f) for f in failed]
        assert slow.conflicts > 0  # the situation arose: its first transaction overlapped a commit
        count = slow.connection.execute("SELECT count(*) FROM dead_letters WHERE dead_letter_id LIKE ?", [f"%{story.source}%"])
        assert count.fetchone()[0] == LONG_BATCH
    finally:
        slow.close()


def test_a_sink_holding_its_turn_delays_another_commit_only_until_the_lock_wait_runs_out(lake, monkeypatch):
    """A sink paused or hung inside its transaction (a zombie) keeps the commit lock; the
    others go on without their turn after COMMIT_LOCK_WAIT, as optimistic commits."""
    monkeypatch.setattr(lake_module, "COMMIT_LOCK_WAIT", "1s")
    story = Story()
    holder, other = CommitLock(lake).open(), LakeWriter(lake).open()
    try:
        other.claim([(catalog.EVENTS, 0)])
        with holder.turn(alone=True):
            other.write(batch_of(story, catalog.EVENTS, 0, 0, [story.event("a", "r", 1, "RUNNING")]))
        assert (other.turns_waited_out, other.conflicts) == (1, 0)
        assert other.connection.execute("SELECT count(*) FROM job_events WHERE source = ?", [story.source]).fetchone()[0] == 1
    finally:
        holder.close()
        other.close()
