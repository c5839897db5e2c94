"""Dead letters carry a stable ``reason_code`` (issue 33 case 6): the cause without the
variable parts of its reason, the same from every writer (worker, alerter, sink)."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import orjson
import pytest

from pipeline import catalog
from pipeline.alerts import records as alert_records
from pipeline.reason_codes import derive
from pipeline.sink.records import KafkaRecord, decode_batch
from pipeline.stream import records as stream_records

JSON_AT_56 = "not valid JSON: unexpected end of data: line 1 column 57 (char 56)"
JSON_AT_11 = "not valid JSON: unexpected end of data: line 1 column 12 (char 11)"


@pytest.mark.parametrize(("first", "second"), [
    (JSON_AT_56, JSON_AT_11),
    ("job truenas:nas@3:pool.scrub arrived on partition 2 but its state lives in partition 0",
     "job zuora:acme:export/7 arrived on partition 1 but its state lives in partition 4"),
    ("envelope field 'received_at' is 2026-12-05T10:00:01Z, expected a time with a zone",
     "envelope field 'received_at' is 1999-01-01, expected a time with a zone"),
    ("unknown job id 'a3f9c1d2-5e6b-4c7d-8e9f-001122334455'", "unknown job id '7c0e11aa-0000-4c7d-8e9f-99'"),
])
def test_one_cause_with_different_variable_parts_has_one_code(first, second):
    assert derive("Rejected", first) == derive("Rejected", second)


@pytest.mark.parametrize(("first", "second"), [
    ("missing required field 'status'", "missing required field 'id'"),
    (JSON_AT_56, "JSON nested deeper than 512 levels"),
])
def test_different_causes_have_different_codes(first, second):
    assert derive("Rejected", first) != derive("Rejected", second)


def test_a_code_names_the_error_type_and_the_stable_words():
    assert derive("Rejected", JSON_AT_56) == "rejected.not_valid_json_unexpected_end_of_data_line"
    assert derive("UnknownSchemaVersion", "schema_version 7 is not 1") == "unknown_schema_version.schema_version_is_not"
    assert derive("JSONDecodeError", "") == "json_decode_error.unspecified"


def test_the_workers_dead_letter_record_carries_the_code():
    message = stream_records.Message("raw.zuora", 0, 5, b"k", b"{", 0)
    output = stream_records.dead_letter(message, "normalize", "Rejected", JSON_AT_56, "zuora")
    assert orjson.loads(output.value)["reason_code"] == "rejected.not_valid_json_unexpected_end_of_data_line"
    given = stream_records.dead_letter(message, "normalize", "Rejected", JSON_AT_56, "zuora", reason_code="zuora.truncated")
    assert orjson.loads(given.value)["reason_code"] == "zuora.truncated"


def test_the_alerters_dead_letter_record_carries_the_code():
    letter = alert_records.dead_letter(
        topic="jobs.transitions", partition=0, offset=1, timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
        key=None, value=b"x", error_type="RecordError", reason="not a jobs.transitions record: JSON is malformed (byte 0)",
    )
    assert msgspec.json.decode(alert_records.encode(letter))["reason_code"] == "record_error.not_a_jobs_transitions_record_json_is_malformed"


def test_the_sink_codes_its_own_dead_letters_and_those_of_older_writers(tmp_path):
    from pipeline.sink.writer import DuckDBWriter

    older = {
        "schema_version": 1, "dead_letter_id": "raw.zuora:0:1", "at": "2026-01-01T00:00:00Z", "stage": "normalize",
        "error_type": "Rejected", "reason": JSON_AT_11, "topic": "raw.zuora", "partition": 0, "offset": 1, "vendor": "zuora",
    }
    writer = DuckDBWriter(tmp_path / "codes.duckdb").open()
    try:
        writer.write(decode_batch([
            KafkaRecord(catalog.DEADLETTER, 0, 0, 0, b"k", orjson.dumps(older)),
            KafkaRecord(catalog.RUNS, 0, 0, 0, b"k", b'{"schema_version": 1, "run_key": '),
        ]))
        assert writer.connection.execute("SELECT stage, reason_code FROM dead_letters ORDER BY stage").fetchall() == [
            ("normalize", "rejected.not_valid_json_unexpected_end_of_data_line"),
            ("sink", "decode_error.input_data_was_truncated"),
        ]
    finally:
        writer.close()


def test_a_quoted_value_received_is_not_part_of_the_code():
    """Seen in the demo: a TrueNAS id 'xxxx...' (40 letters, no digit) became part of the code."""
    assert derive("Rejected", "id must be an integer, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'") == derive(
        "Rejected", "id must be an integer, got 'abc'") == "rejected.id_must_be_an_integer_got"
