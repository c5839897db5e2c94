"""The file backfill: reading (no Kafka), and `pipeline ingest file` / `pipeline replay
--bootstrap` through the real command against the session broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from pipeline import backfill, catalog
from pipeline.model import UTC, decode_envelope, heartbeat_key
from tests.support.kafka import collect
from tests.support.processes import pipeline

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def qrs_result(number: int, *, start: str = "2026-11-20T09:00:00Z", status: int = 7) -> dict:
    """One QRS execution result of the same task (same job), its own execution."""
    return {
        "id": f"a0000000-0000-4000-8000-00000000000{number}", "taskID": "9a8b7c6d-5e4f-4321-8fed-cba987654321",
        "executionID": f"f0e1d2c3-b4a5-4968-8776-65544332211{number}", "appID": "2d4f6a8c-1b3d-4e5f-9a7b-6c8d0e2f4a6b",
        "executingNodeName": "qlik-sched-01", "status": status, "startTime": start,
        "stopTime": "2026-11-20T09:00:40Z", "modifiedDate": "2026-11-20T09:00:40Z", "details": [],
    }


def records(vendor: str, path: Path) -> list[backfill.RawRecord | backfill.Rejection]:
    found: list[backfill.RawRecord | backfill.Rejection] = []
    for document in backfill.read_documents(path):
        found.extend(backfill.records_of(vendor, document, where=path.name, source="t", received_at=T0))
    return found


def test_json_lines_a_bad_line_is_reported_with_its_number_and_the_rest_goes_on(tmp_path):
    path = tmp_path / "qrs.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(qrs_result(1)), b"{not json", b"", orjson.dumps(qrs_result(2))]) + b"\n")
    found = records("qlik_qrs", path)
    assert [type(item).__name__ for item in found] == ["RawRecord", "Rejection", "RawRecord"]
    assert found[1].where == "qrs.jsonl line 2"


def test_a_first_line_that_is_bad_does_not_make_the_file_one_document(tmp_path):
    path = tmp_path / "qrs.jsonl"
    path.write_bytes(b"garbage\n" + orjson.dumps(qrs_result(1)) + b"\n" + orjson.dumps(qrs_result(2)) + b"\n")
    found = records("qlik_qrs", path)
    assert [getattr(item, "where", "record") for item in found] == ["qrs.jsonl line 1", "record", "record"]


def test_one_pretty_printed_document_and_the_zuora_status_text(tmp_path):
    path = tmp_path / "qrs.json"
    path.write_bytes(orjson.dumps([qrs_result(1), qrs_result(2)], option=orjson.OPT_INDENT_2))
    assert [d.position for d in backfill.read_documents(path)] == ["document 1"]
    zuora = SAMPLES / "zuora" / "seed-status.txt"
    (document,) = backfill.read_documents(zuora)
    assert isinstance(document.doc, bytes)  # not JSON: the vendor module parses the text
    assert all(isinstance(item, backfill.RawRecord) for item in records("zuora", zuora))


def test_one_bad_item_of_an_array_keeps_the_good_ones(tmp_path):
    """Issue 27.3: a QRS array of three results, one with startTime "yesterday"."""
    path = tmp_path / "qrs.json"
    path.write_bytes(orjson.dumps([qrs_result(1), qrs_result(2, start="yesterday"), qrs_result(3)]))
    found = records("qlik_qrs", path)
    rejected = [item for item in found if isinstance(item, backfill.Rejection)]
    sent = [item for item in found if isinstance(item, backfill.RawRecord)]
    assert [r.where for r in rejected] == ["qrs.json line 1 item 2"]
    assert "yesterday" in rejected[0].reason
    payloads = [decode_envelope(r.value).payload for r in sent]
    ids = [p["id"] for payload in payloads for p in (payload if isinstance(payload, list) else [payload])]
    assert ids == [qrs_result(1)["id"], qrs_result(3)["id"]]


def test_a_document_too_large_for_a_kafka_record_is_reported_with_its_line(tmp_path):
    """Issue 23.3: the producer reports it and goes on."""
    big = qrs_result(2)
    big["details"] = [{"message": "x" * 1000} for _ in range(1100)]
    path = tmp_path / "qrs.jsonl"
    path.write_bytes(orjson.dumps(qrs_result(1)) + b"\n" + orjson.dumps(big) + b"\n" + orjson.dumps(qrs_result(3)) + b"\n")
    found = records("qlik_qrs", path)
    assert [type(item).__name__ for item in found] == ["RawRecord", "Rejection", "RawRecord"]
    assert found[1].where == "qrs.jsonl line 2"
    assert f"over the {backfill.MAX_RECORD_BYTES} a Kafka record may hold" in found[1].reason


def test_folders_are_read_recursively_in_order_without_hidden_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.jsonl").write_text("{}")
    (tmp_path / "1.jsonl").write_text("{}")
    (tmp_path / ".hidden.jsonl").write_text("{}")
    assert backfill.expand([tmp_path]) == [tmp_path / "1.jsonl", tmp_path / "b" / "2.jsonl"]


def test_the_envelope_clock_steps_from_a_fixed_start():
    clock = backfill.EnvelopeClock(T0, timedelta(seconds=10))
    assert [clock.next(), clock.next()] == [T0, T0 + timedelta(seconds=10)]
    assert clock.current == T0 + timedelta(seconds=10)




async def raw_records_of(bootstrap: str, vendor: str, source: str, *, count: int) -> list[tuple[bytes, dict]]:
    """Records of ``source`` on raw.<vendor> (heartbeats included), in log order per partition."""
    found = await collect(
        bootstrap, catalog.raw_topic(vendor),
        lambda key, value: key is not None and (key == heartbeat_key(source) or key.startswith(f"{vendor}:{source}:".encode())),
        count=count, timeout=30,
    )
    return [(key, orjson.loads(value)) for key, value in found]


@pytest.mark.integration
def test_ingest_file_sends_the_good_documents_reports_the_bad_and_writes_heartbeats(broker, tmp_path):
    source = f"backfill-{uuid.uuid4().hex[:8]}"
    big = qrs_result(5)
    big["details"] = [{"message": "x" * 1000} for _ in range(1100)]
    path = tmp_path / "qrs.jsonl"
    path.write_bytes(b"\n".join([
        orjson.dumps(qrs_result(1)),
        b"{not json",
        orjson.dumps([qrs_result(2), qrs_result(3, start="yesterday"), qrs_result(4)]),
        orjson.dumps(big),
    ]) + b"\n")
    # An old envelope time: the heartbeats move no partition's event time for the other
    # tests sharing the session worker.
    result = pipeline(
        "ingest", "file", "--vendor", "qlik_qrs", str(path), "-b", broker.bootstrap, "--source", source,
        "--received-at", "2001-01-01T00:00:00Z",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    rejected = [line for line in result.stderr.splitlines() if line.startswith("rejected")]
    assert [line.split(":")[0] for line in rejected] == [
        f"rejected {path} line 2", f"rejected {path} line 3 item 2", f"rejected {path} line 4",
    ]
    assert result.stderr.splitlines()[-1] == "error: 3 documents or items were rejected (listed above); the rest was sent"
    assert "Traceback" not in result.stderr
    partitions = catalog.topic(catalog.raw_topic("qlik_qrs")).partitions
    assert f"sent 2 records (3 job events) from 4 documents in 1 files to {broker.bootstrap}, {2 * partitions} heartbeats" in result.stdout

    found = asyncio.run(raw_records_of(broker.bootstrap, "qlik_qrs", source, count=2 + 2 * partitions))
    beats = [value for key, value in found if key == heartbeat_key(source)]
    jobs = [value for key, value in found if key != heartbeat_key(source)]
    assert len(beats) == 2 * partitions and len(jobs) == 2
    assert {(b["heartbeat"], b["payload"], b["source"], b["received_at"]) for b in beats} == {
        (True, None, source, "2001-01-01T00:00:00Z")
    }
    payload_ids = sorted(
        p["id"] for job in jobs for p in (job["payload"] if isinstance(job["payload"], list) else [job["payload"]])
    )
    assert payload_ids == sorted([qrs_result(1)["id"], qrs_result(2)["id"], qrs_result(4)["id"]])


@pytest.mark.integration
def test_replay_sends_to_the_configured_kafka_and_fails_on_a_rejected_item(broker, tmp_path):
    """Issue 27.3 (one bad item: the good ones sent, the bad one named, exit 1) and 27.4
    (JOBSTREAM_BOOTSTRAP is honoured: no embedded run)."""
    source = f"replay-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "qlik_qrs-results.json"
    path.write_bytes(orjson.dumps([qrs_result(1), qrs_result(2, start="yesterday"), qrs_result(3)]))
    result = pipeline("replay", str(path), "--source", source, env={"JOBSTREAM_BOOTSTRAP": broker.bootstrap})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "embedded" not in result.stdout
    assert result.stderr.splitlines()[0].startswith(f"rejected {path} line 1 item 2: ")
    assert f"sent 1 records (2 job events) from 1 documents in 1 files to {broker.bootstrap}" in result.stdout
    found = asyncio.run(raw_records_of(broker.bootstrap, "qlik_qrs", source, count=1))
    (payload,) = [value["payload"] for key, value in found if key != heartbeat_key(source)]
    assert [p["id"] for p in payload] == [qrs_result(1)["id"], qrs_result(3)["id"]]


def test_replay_to_an_unreachable_kafka_is_one_line_without_warnings(tmp_path):
    """Issue 27.10: an unclosed-producer warning followed the error."""
    from pipeline.broker import free_port

    port = free_port()
    result = pipeline("replay", "-b", f"127.0.0.1:{port}", str(SAMPLES / "truenas" / "job-updates.jsonl"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach Kafka at 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ingest_file_usage_errors_exit_2(tmp_path):
    assert pipeline("ingest", "file", str(tmp_path / "missing.jsonl"), "--vendor", "zuora").returncode == 2
    for rate in ("fast", "0/s", "-5", "inf"):
        bad_rate = pipeline("ingest", "file", str(SAMPLES / "zuora"), "--rate", rate)
        assert bad_rate.returncode == 2 and f"--rate {rate!r}" in bad_rate.stderr


@pytest.mark.integration
def test_ingest_file_at_a_rate_sends_everything(broker):
    source = f"rate-{uuid.uuid4().hex[:8]}"
    result = pipeline(
        "ingest", "file", str(SAMPLES / "zuora" / "status-polls.jsonl"), "-b", broker.bootstrap, "--rate", "1000/s",
        "--source", source, "--received-at", "2001-01-01T00:00:00Z", "--no-heartbeats",
    )
    assert result.returncode == 0, result.stderr
    assert ", 0 heartbeats, 0 rejected, in " in result.stdout


@pytest.mark.integration
async def test_heartbeats_at_the_start_while_running_and_at_the_end_with_the_envelope_time(broker, tmp_path):
    source = f"beats-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "qrs.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(qrs_result(n)) for n in (1, 2, 3)) + b"\n")
    start = datetime(2001, 1, 1, tzinfo=UTC)
    report = await backfill.run(
        broker.bootstrap, [("qlik_qrs", path)], source=source,
        clock=backfill.EnvelopeClock(start, timedelta(seconds=10)), heartbeat_every_s=0,
    )
    partitions = catalog.topic(catalog.raw_topic("qlik_qrs")).partitions
    # every_s=0: one round after each document, besides the first and the last
    assert (report.records, report.heartbeats) == (3, partitions * (1 + 3 + 1))
    found = await raw_records_of(broker.bootstrap, "qlik_qrs", source, count=3 + report.heartbeats)
    times = [value["received_at"] for key, value in found if key == heartbeat_key(source)]
    assert sorted(set(times)) == ["2001-01-01T00:00:00Z", "2001-01-01T00:00:10Z", "2001-01-01T00:00:20Z"]


def truenas_lines(path: Path, megabytes: float) -> None:
    """Finished TrueNAS jobs, one JSON line each, until the file holds ``megabytes``."""
    with open(path, "wb") as out:
        job = 0
        while out.tell() < megabytes * 1_000_000:
            job += 1
            fields = {"id": job, "method": "pool.scrub.scrub", "state": "SUCCESS", "description": "x" * 200,
                      "time_started": {"$date": 1_700_000_000_000}, "time_finished": {"$date": 1_700_000_060_000},
                      "progress": {"percent": 100, "description": "done", "extra": None}}
            out.write(orjson.dumps({"msg": "changed", "collection": "core.get_jobs", "id": job, "fields": fields}) + b"\n")


def peak_rss_kb(args: list[str]) -> tuple[int, int]:
    """Run ``pipeline ARGS``; return its exit status and peak resident memory (KB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss


@pytest.fixture(scope="module")
def load_broker():
    """A broker without a worker: the memory test's 40,000 records stay off the session
    worker that the scenario tests share."""
    from pipeline.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        asyncio.run(catalog.apply(embedded.bootstrap))
        yield embedded


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs wait4 for a child's peak memory")
def test_backfill_memory_does_not_grow_with_the_input(load_broker, tmp_path):
    """Issue 27.9: RSS was about 4.5 times the file size. Now a 20 MB file costs
    (far) less than 20 MB more than a tiny one."""
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    truenas_lines(small, 0.01)
    truenas_lines(large, 20)
    common = ["ingest", "file", "--vendor", "truenas", "-b", load_broker.bootstrap, "--no-heartbeats"]
    code_small, rss_small = peak_rss_kb([*common, str(small)])
    code_large, rss_large = peak_rss_kb([*common, str(large)])
    assert (code_small, code_large) == (0, 0)
    assert rss_large - rss_small < 20_000, f"peak RSS {rss_small} KB for 10 kB of input, {rss_large} KB for 20 MB"


def test_a_backfill_counts_each_piece_as_received_at_its_own_vendor_time():
    """Issue 25.3: a file replayed without a receive time follows the vendor's times,
    capped at the wall clock (a TrueNAS update without a receive time is dated by its
    job's time_started)."""
    from pipeline.backfill import Document, RawRecord, records_of

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def received(vendor: str, doc: object) -> datetime:
        [record] = [r for r in records_of(vendor, Document("line 1", doc, 0), where="f", source="s", received_at=now,
                                          own_time=True) if isinstance(r, RawRecord)]
        return decode_envelope(record.value).received_at

    reload = {"id": "ce-1", "specversion": "1.0", "type": "com.qlik.v1.reload.finished", "source": "com.qlik/reloads",
              "time": "2026-01-01T00:01:00Z", "tenantid": "t",
              "data": {"id": "r-1", "appId": "a", "userId": "u", "succeeded": True, "status": "SUCCEEDED", "startTime": "2026-01-01T00:00:00Z"}}
    assert received("qlik_cloud", reload) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    future = {**reload, "time": "2100-01-01T00:00:00Z"}
    assert received("qlik_cloud", future) == now  # never later than the wall clock
    update = {"msg": "changed", "collection": "core.get_jobs", "id": 1,
              "fields": {"id": 1, "method": "pool.scrub", "state": "RUNNING", "time_started": {"$date": 1_767_225_600_000}}}
    assert received("truenas", update) == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_backfill_of_history_beats_with_the_time_the_history_reached_never_the_wall_clock():
    """Issue 32.1: a backfill of history sent its first heartbeat at "now", which moved
    event time past every run of the history before it arrived (each then went STALE)."""
    history = backfill.EnvelopeClock()
    assert history.wall
    assert backfill.heartbeat_time(history, None) is None  # nothing sent: no heartbeat yet
    assert backfill.heartbeat_time(history, T0) == T0
    fixed = backfill.EnvelopeClock(T0, timedelta(seconds=10))
    fixed.next()
    assert backfill.heartbeat_time(fixed, None) == T0 == backfill.heartbeat_time(fixed, T0 - timedelta(days=1))
