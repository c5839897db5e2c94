"""Informatica CIH event normalizer: the seed's example, shapes, state rules, ids, rejections."""

from __future__ import annotations

import copy
import hashlib
import pathlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import vendors
from pipeline.model import JobEvent, State, encode_event
from pipeline.vendors.informatica import normalize as informatica
from pipeline.vendors._common import Context, Rejected

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "informatica"
SEED = "seed_publication_with_child.json"
# sha256 of the example in /work/shared/seeds/004_*.txt, copied byte for byte (plus "\n").
SEED_SHA256 = "4ee97cb0b266b0b367df8e28b9fcf5aa662f631ac9cf15b33f7fd56015ca692f"
RECEIVED = datetime(2024, 7, 1, 12, 0, tzinfo=timezone.utc)
CTX = Context(source="org-emea", received_at=RECEIVED)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event(**overrides: object) -> dict:
    """A minimal subscription event that normalizes; tests override what they probe."""
    doc: dict = {
        "eventId": 900,
        "eventType": "SUBSCRIPTION",
        "applicationName": "App",
        "topicName": "Topic",
        "pubSubName": "Sub",
        "createTime": "2024-01-01T00:00:00.000Z",
        "eventStatus": "Processing",
    }
    doc.update(overrides)
    return {key: value for key, value in doc.items() if value is not ...}


def history(*entries: tuple[str, str, str]) -> list[dict]:
    return [
        {"eventId": 900, "timeStamp": time, "eventStatusName": status, "comments": comments}
        for status, time, comments in entries
    ]


def by_run(events: list[JobEvent]) -> dict[str, list[JobEvent]]:
    runs: dict[str, list[JobEvent]] = {}
    for item in events:
        runs.setdefault(item.run_key, []).append(item)
    return runs


# --- the seed's example, every field ------------------------------------------------------


def test_seed_fixture_is_the_seed_example_byte_for_byte():
    assert hashlib.sha256(load(SEED).rstrip(b"\n")).hexdigest() == SEED_SHA256


def test_seed_publication_every_field():
    events = informatica.normalize(load(SEED), CTX)
    assert len(events) == 4
    processing, complete = events[:2]
    for item in (processing, complete):
        assert (item.vendor, item.source) == ("informatica", "org-emea")
        assert item.job_key == "informatica:org-emea:DI_App/DSS_Pub"
        assert item.run_key == "informatica:org-emea:32010"
        assert item.parent_run_key is None
        assert item.started_at == at("2023-04-20T02:45:58.094Z")
        assert item.received_at == RECEIVED
        assert item.attempt is None and item.progress is None and item.error_code is None
    assert (processing.native_state, processing.state) == ("Processing", State.RUNNING)
    assert processing.occurred_at == at("2023-04-20T02:45:58.095Z")
    assert processing.finished_at is None and processing.error_message is None
    assert processing.counts == {} and processing.rows is None
    assert processing.attrs == {
        "native_event_id": "32010",
        "job_name": "DSS_Pub",  # issue 33 case 11: the publication's name
        "event_type": "PUBLICATION",
        "topic": "DI_Topic",
        "run_id": "28",
    }
    assert (complete.native_state, complete.state) == ("Complete", State.SUCCEEDED)
    assert complete.occurred_at == complete.finished_at == at("2023-04-20T02:46:40.130Z")
    assert complete.error_message is None
    assert complete.counts == {"source_success": 1, "source_failed": 0, "target_success": 1, "target_failed": 0}
    assert complete.rows == 1
    assert complete.attrs == {
        "native_event_id": "32010",
        "job_name": "DSS_Pub",
        "event_type": "PUBLICATION",
        "topic": "DI_Topic",
        "run_id": "28",
        "comment": "Publishing to topic completed successfully",
        "descendant_state": "ERROR",
    }


def test_seed_child_subscription_every_field():
    child_processing, child_error = informatica.normalize(load(SEED), CTX)[2:]
    for item in (child_processing, child_error):
        assert item.job_key == "informatica:org-emea:DI_App/DSS_Sub"
        assert item.run_key == "informatica:org-emea:32011"
        assert item.parent_run_key == "informatica:org-emea:32010"
        assert item.started_at == at("2023-04-20T02:46:40.157Z")
    assert (child_processing.native_state, child_processing.state) == ("Processing", State.RUNNING)
    assert child_processing.occurred_at == at("2023-04-20T02:46:40.158Z")
    assert (child_error.native_state, child_error.state) == ("Error", State.FAILED)
    assert child_error.occurred_at == child_error.finished_at == at("2023-04-20T02:47:04.801Z")
    assert child_error.error_message == "Subscription to topic failed. The job failed."
    assert child_error.counts == {"source_success": 0, "source_failed": 0, "target_success": 0, "target_failed": 0}
    assert child_error.rows == 0
    assert child_error.attrs == {
        "native_event_id": "32011",
        "job_name": "DSS_Sub",  # the subscription's name
        "event_type": "SUBSCRIPTION",
        "topic": "DI_Topic",
        "run_id": "9",
        "parent_event_id": "32010",
        "descendant_state": "NONE",
    }


def test_default_source_and_every_input_type():
    doc = load(SEED)
    from_bytes = informatica.normalize(doc)
    assert {item.source for item in from_bytes} == {"default"}
    assert from_bytes[0].job_key == "informatica:default:DI_App/DSS_Pub"
    for variant in (doc.decode(), bytearray(doc), memoryview(doc), orjson.loads(doc)):
        assert informatica.normalize(variant) == from_bytes


# --- other shapes ------------------------------------------------------------------------------


def test_list_with_string_ids_history_object_naive_times_and_runID():
    runs = by_run(informatica.normalize(load("events_list_mixed_shapes.json"), CTX))
    assert list(runs) == [f"informatica:org-emea:{n}" for n in (41000, 41001, 41002)]

    [publication] = runs["informatica:org-emea:41000"]  # history object equals the current status
    assert (publication.native_state, publication.state) == ("Processing", State.RUNNING)
    assert publication.occurred_at == at("2024-03-01T10:00:01+00:00")
    assert publication.started_at == at("2024-03-01T10:00:00+00:00")
    assert publication.attrs["run_id"] == "7712"
    assert publication.attrs["comment"] == "Publication started"
    assert publication.attrs["descendant_state"] == "PROCESSING"
    assert publication.counts == {} and publication.rows is None

    [delayed] = runs["informatica:org-emea:41001"]  # no history: the current status at createTime
    assert (delayed.native_state, delayed.state) == ("Delayed", State.PENDING)
    assert delayed.occurred_at == delayed.started_at == at("2024-03-01T10:05:00.250Z")
    assert delayed.parent_run_key == "informatica:org-emea:41000"
    assert delayed.job_key == "informatica:org-emea:Billing/Orders_Sub"

    first, last = runs["informatica:org-emea:41002"]  # history sorted, "DISCARDED" = "Discarded"
    assert (first.native_state, first.state) == ("Delayed", State.PENDING)
    assert (last.native_state, last.state) == ("Discarded", State.SKIPPED)
    assert last.occurred_at == last.finished_at == at("2024-03-01T10:06:00Z")
    assert last.attrs["comment"] == "Simultaneous task runs are disabled"
    assert last.error_message is None


def test_wrapped_list_with_grandchildren_links_each_run_to_its_parent():
    events = informatica.normalize(load("events_wrapped_nested.json"), CTX)
    runs = by_run(events)
    assert list(runs) == [f"informatica:org-emea:{n}" for n in (50100, 50101, 50102)]
    parents = {run: items[0].parent_run_key for run, items in runs.items()}
    assert parents == {
        "informatica:org-emea:50100": None,
        "informatica:org-emea:50101": "informatica:org-emea:50100",
        "informatica:org-emea:50102": "informatica:org-emea:50101",
    }
    [pending] = runs["informatica:org-emea:50102"]
    assert (pending.native_state, pending.state) == ("Pending", State.PENDING)
    assert pending.occurred_at == at("2024-06-10T08:01:32Z")
    assert runs["informatica:org-emea:50100"][-1].rows == 3


@pytest.mark.parametrize("key", informatica.WRAPPER_KEYS)
def test_every_wrapper_key_holds_a_list_or_one_event(key):
    inner = event()
    assert informatica.normalize({key: [inner]}, CTX) == informatica.normalize(inner, CTX)
    assert informatica.normalize({key: inner}, CTX) == informatica.normalize(inner, CTX)


def test_empty_answers_give_no_events():
    assert informatica.normalize([], CTX) == []
    assert informatica.normalize({"events": []}, CTX) == []
    assert informatica.split(b"[]") == []


def test_event_status_api_answer():
    [failed] = informatica.normalize(load("event_status_api.json"), CTX)
    assert failed.job_key == "informatica:org-emea:CRM/Customers_Daily_Sub"
    assert (failed.native_state, failed.state) == ("Error", State.FAILED)
    start = datetime.fromtimestamp(1714640376560 / 1000, timezone.utc)
    end = datetime.fromtimestamp(1714640976809 / 1000, timezone.utc)
    assert failed.started_at == start
    assert failed.occurred_at == failed.finished_at == end
    assert failed.error_message is None
    assert failed.attrs["referenced_event_ids"] == ["2430", "2431"]
    assert failed.attrs["event_type"] == "AGGREGATED_SUBSCRIPTION"


def test_publication_name_alias():
    doc = event(pubSubName=..., publicationName="Pub_A")
    [item] = informatica.normalize(doc, CTX)
    assert item.job_key == "informatica:org-emea:App/Pub_A"


# --- states --------------------------------------------------------------------------------------


EXPECTED_STATES = {
    "Pending": State.PENDING,
    "Delayed": State.PENDING,
    "Processing": State.RUNNING,
    "Completed": State.SUCCEEDED,
    "Complete": State.SUCCEEDED,
    "Error": State.FAILED,
    "Discarded": State.SKIPPED,
}


def test_state_table_is_exactly_the_documented_statuses():
    assert informatica.STATES == EXPECTED_STATES
    assert all(isinstance(state, State) for state in informatica.STATES.values())


@pytest.mark.parametrize("native", sorted(EXPECTED_STATES))
@pytest.mark.parametrize("spelling", [str, str.upper, str.lower])
def test_every_status_in_every_case_as_current_and_in_history(native, spelling):
    written = spelling(native)
    expected = EXPECTED_STATES[native]
    completion = "2024-01-01T00:05:00Z" if expected.terminal else ...
    [current] = informatica.normalize(event(eventStatus=written, completionTime=completion), CTX)
    assert (current.native_state, current.state) == (written, expected)
    assert (current.finished_at is not None) == expected.terminal
    doc = event(eventStatus=..., eventHistory=history((written, "2024-01-01T00:01:00Z", "")))
    [from_history] = informatica.normalize(doc, CTX)
    assert (from_history.native_state, from_history.state) == (written, expected)


def test_unknown_current_status_is_running_until_completed_then_failed():
    [running] = informatica.normalize(event(eventStatus="Reticulating"), CTX)
    assert (running.native_state, running.state) == ("Reticulating", State.RUNNING)
    [failed] = informatica.normalize(event(eventStatus="Reticulating", completionTime="2024-01-01T00:09:00Z"), CTX)
    assert failed.state is State.FAILED
    assert failed.occurred_at == failed.finished_at == at("2024-01-01T00:09:00Z")


def test_unknown_status_in_history_is_a_running_step():
    doc = event(
        eventStatus="Completed",
        completionTime="2024-01-01T00:09:00Z",
        eventHistory=history(("Pre-processing", "2024-01-01T00:01:00Z", ""), ("Completed", "2024-01-01T00:09:00Z", "")),
    )
    step, done = informatica.normalize(doc, CTX)
    assert (step.native_state, step.state, step.finished_at) == ("Pre-processing", State.RUNNING, None)
    assert done.state is State.SUCCEEDED


def test_missing_status_falls_back_to_history_then_to_the_unknown_rule():
    doc = event(eventStatus=..., eventHistory=history(("Error", "2024-01-01T00:02:00Z", "boom")))
    [failed] = informatica.normalize(doc, CTX)
    assert (failed.native_state, failed.state, failed.error_message) == ("Error", State.FAILED, "boom")
    [nothing] = informatica.normalize(event(eventStatus=...), CTX)
    assert (nothing.native_state, nothing.state) == ("", State.RUNNING)


def test_canonical_state_rule_directly():
    assert informatica.canonical_state("cOmPlEtEd", False) is State.SUCCEEDED
    assert informatica.canonical_state(None, True) is State.FAILED
    assert informatica.canonical_state("odd", True, current=False) is State.RUNNING


# --- history and current status ------------------------------------------------------------------


def test_current_status_adds_an_event_when_history_lags_behind():
    doc = event(
        eventStatus="Error",
        completionTime="2024-01-01T00:09:00Z",
        eventHistory=history(
            ("Processing", "2024-01-01T00:01:00Z", ""),
            ("Error", "2024-01-01T00:02:00Z", "first failure"),
            ("Processing", "2024-01-01T00:03:00Z", "retry"),
        ),
    )
    events = informatica.normalize(doc, CTX)
    assert [item.native_state for item in events] == ["Processing", "Error", "Processing", "Error"]
    retry, final = events[2:]
    assert retry.attrs["comment"] == "retry"
    assert final.occurred_at == final.finished_at == at("2024-01-01T00:09:00Z")
    assert final.error_message == "first failure"  # the last Error comment explains the end
    assert events[1].error_message == "first failure"
    assert events[1].finished_at == at("2024-01-01T00:09:00Z")


def test_non_terminal_current_status_takes_the_latest_time_in_the_document():
    doc = event(eventStatus="Processing", eventHistory=history(("Delayed", "2024-01-01T00:04:00Z", "")))
    delayed, processing = informatica.normalize(doc, CTX)
    assert processing.occurred_at == at("2024-01-01T00:04:00Z")
    assert processing.event_id != delayed.event_id


def test_complete_and_completed_are_one_status_no_duplicate():
    doc = event(
        eventStatus="Completed",
        completionTime="2024-01-01T00:05:00Z",
        eventHistory=history(("Complete", "2024-01-01T00:05:00Z", "")),
    )
    [only] = informatica.normalize(doc, CTX)
    assert only.native_state == "Complete"


def test_repeated_history_entries_give_one_event():
    entry = ("Processing", "2024-01-01T00:01:00Z", "")
    [only] = informatica.normalize(event(eventHistory=history(entry, entry)), CTX)
    assert only.state is State.RUNNING


def test_history_entries_without_time_are_skipped_and_counted():
    entries = history(("Processing", "2024-01-01T00:01:00Z", ""))
    entries.append({"eventId": 900, "eventStatusName": "Processing", "comments": "no time"})
    [only] = informatica.normalize(event(eventHistory=entries), CTX)
    assert only.attrs["history_skipped"] == 1


def test_counts_and_rows_ride_on_the_latest_event_only():
    doc = event(
        eventStatus="Completed",
        completionTime="2024-01-01T00:05:00Z",
        targetSuccessCount="12",
        sourceSuccessCount=12.0,
        eventHistory=history(("Processing", "2024-01-01T00:01:00Z", "")),
    )
    first, last = informatica.normalize(doc, CTX)
    assert (first.counts, first.rows) == ({}, None)
    assert (last.counts, last.rows) == ({"source_success": 12, "target_success": 12}, 12)


def test_times_in_every_documented_form():
    forms = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00", "2024-01-01T01:00:00+01:00",
             1704067200000]
    for form in forms:
        [item] = informatica.normalize(event(createTime=form), CTX)
        assert item.started_at == item.occurred_at == datetime(2024, 1, 1, tzinfo=timezone.utc), form


def test_naive_times_are_read_in_the_context_zone():
    tokyo = timezone(timedelta(hours=9))
    [item] = informatica.normalize(event(createTime="2024-01-01T09:00:00"), Context(tz=tokyo))
    assert item.started_at == datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_no_time_at_all_uses_received_at_else_rejects():
    [item] = informatica.normalize(event(createTime=...), CTX)
    assert item.occurred_at == RECEIVED and item.started_at is None
    with pytest.raises(Rejected, match="no time"):
        informatica.normalize(event(createTime=...), Context())


# --- rejections ------------------------------------------------------------------------------------


REJECTIONS = [
    (b'{"eventId": 1,', "not valid JSON"),
    (b'{"eventId": "\xff"}', "not valid JSON"),
    (42, "must be a JSON object or list"),
    ([event(), 7], "item 1 of the event list must be an object"),
    ({"foo": 1}, "no eventId and no events list"),
    ({"responseCode": "TOO_MANY_REQUESTS", "message": "Rate limit"}, "API answer: Rate limit"),
    ({"events": "none"}, "wrapper field 'events' holds no events"),
    (event(eventId=True), "eventId must be an id"),
    (event(eventId=[1]), "eventId must be an id"),
    (event(eventId=None), "event has no eventId"),
    (event(pubSubName=...), "has no pubSubName"),
    (event(applicationName=""), "has no applicationName"),
    (event(eventStatus=3), "eventStatus must be a string"),
    (event(eventHistory="done"), "eventHistory must be a list or an object"),
    (event(eventHistory=[1]), r"eventHistory\[0\] must be an object"),
    (event(eventHistory=[{"eventId": 901, "timeStamp": "2024-01-01T00:00:00Z"}]), "belongs to event 901"),
    (event(eventHistory=[{"timeStamp": "yesterday"}]), "is not a time"),
    (event(createTime="0001-01-01T00:00:00+01:00"), "out of range"),
    (event(childEvents={"eventId": 2}), "childEvents must be a list"),
    (event(childEvents=[None]), "child 0 must be an object"),
    (event(targetSuccessCount=-1), "must not be negative"),
    (event(sourceFailedCount="many"), "must be an integer"),
    (event(parentEventId={"id": 1}), "parentEventId must be an id"),
    (event(eventId="12\n34"), "eventId must be an id"),
    (event(targetSuccessCount="²"), "must be an integer"),
    ({"message": "Too many\nrequests"}, "API answer: Too many requests"),
]


@pytest.mark.parametrize(("doc", "reason"), REJECTIONS, ids=[reason for _, reason in REJECTIONS])
def test_rejections_name_the_problem(doc, reason):
    with pytest.raises(Rejected, match=reason) as caught:
        informatica.normalize(doc, CTX)
    assert "\n" not in caught.value.reason


def test_nesting_deeper_than_the_limit_is_rejected_without_recursion():
    doc = event(eventId=0)
    node = doc
    for level in range(1, informatica.MAX_DEPTH + 2):
        child = event(eventId=level)
        node["childEvents"] = [child]
        node = child
    with pytest.raises(Rejected, match="nested deeper"):
        informatica.normalize(doc, CTX)
    node.pop("childEvents", None)
    doc_ok = copy.deepcopy(doc)
    parent = doc_ok
    for _ in range(informatica.MAX_DEPTH):
        parent = parent["childEvents"][0]
    parent.pop("childEvents")
    assert len(informatica.normalize(doc_ok, CTX)) == informatica.MAX_DEPTH + 1


# --- event ids --------------------------------------------------------------------------------------


def test_event_ids_are_deterministic_and_distinct():
    first = informatica.normalize(load(SEED), CTX)
    again = informatica.normalize(load(SEED), CTX)
    assert [item.event_id for item in first] == [item.event_id for item in again]
    assert len({item.event_id for item in first}) == len(first)
    elsewhere = informatica.normalize(load(SEED), Context(source="org-us", received_at=RECEIVED))
    assert not {item.event_id for item in first} & {item.event_id for item in elsewhere}


def test_event_ids_ignore_how_ids_times_and_status_spelling_are_written():
    doc = orjson.loads(load(SEED))
    rewritten = copy.deepcopy(doc)
    rewritten["eventId"] = "32010"
    rewritten["eventStatus"] = "COMPLETED"
    for entry in rewritten["eventHistory"]:
        entry["eventId"] = "32010"
        entry["timeStamp"] = entry["timeStamp"].replace("Z", "+00:00")
    rewritten["eventHistory"][1]["eventStatusName"] = "Completed"
    original = [item.event_id for item in informatica.normalize(doc, CTX)]
    assert [item.event_id for item in informatica.normalize(rewritten, CTX)] == original
    later = Context(source="org-emea", received_at=RECEIVED + timedelta(hours=1))
    assert [item.event_id for item in informatica.normalize(doc, later)] == original


# --- split and keys ---------------------------------------------------------------------------------


def test_split_cuts_the_publication_from_its_children():
    pieces = informatica.split(load(SEED))
    assert [piece["eventId"] for piece in pieces] == [32010, 32011]
    assert "childEvents" not in pieces[0]
    assert pieces[1]["parentEventId"] == 32010
    whole = informatica.normalize(load(SEED), CTX)
    assert [item for piece in pieces for item in informatica.normalize(piece, CTX)] == whole


def test_split_gives_nested_children_their_parent_id():
    doc = orjson.loads(load("events_wrapped_nested.json"))
    del doc["events"][0]["childEvents"][0]["parentEventId"]
    pieces = informatica.split(doc)
    assert [piece.get("parentEventId") for piece in pieces] == [None, 50100, 50101]
    whole = informatica.normalize(doc, CTX)
    assert [item for piece in pieces for item in informatica.normalize(piece, CTX)] == whole


def test_keyed_documents_key_each_piece_by_its_job():
    keyed = vendors.keyed_documents("informatica", load("events_list_mixed_shapes.json"), CTX)
    assert [key for key, _ in keyed] == [
        "informatica:org-emea:ERP/Orders_Pub",
        "informatica:org-emea:Billing/Orders_Sub",
        "informatica:org-emea:Billing/Orders_Sub_Parallel",
    ]


# --- property: generated documents ------------------------------------------------------------------


STATUS = st.sampled_from([*EXPECTED_STATES, "COMPLETE", "error", "Reprocessed", ""])
TIME = st.builds(
    lambda moment, style: style(moment),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    st.sampled_from([
        lambda d: d.isoformat(timespec="milliseconds") + "Z",
        lambda d: d.isoformat(timespec="seconds"),
        lambda d: d.isoformat(timespec="microseconds") + "+00:00",
        lambda d: int(d.replace(tzinfo=timezone.utc).timestamp() * 1000),
    ]),
)
IDS = st.integers(min_value=1, max_value=2**53)


@st.composite
def cih_events(draw: st.DrawFn, depth: int = 0) -> dict:
    event_id = draw(IDS)
    doc: dict = {
        "eventId": draw(st.sampled_from([event_id, str(event_id)])),
        "eventType": draw(st.sampled_from(["PUBLICATION", "SUBSCRIPTION", "COMPOUND_SUBSCRIPTION"])),
        "applicationName": draw(st.sampled_from(["A", "B"])),
        "pubSubName": draw(st.sampled_from(["P", "S", "ÜnïcødeSub"])),
        "eventStatus": draw(STATUS),
    }
    if draw(st.booleans()):
        doc["createTime"] = draw(TIME)
    if draw(st.booleans()):
        doc["completionTime"] = draw(TIME)
    entries = [
        {
            "eventId": event_id,
            "timeStamp": draw(TIME),
            "eventStatusName": draw(STATUS),
            "comments": draw(st.text(max_size=5)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    if len(entries) == 1 and draw(st.booleans()):
        doc["eventHistory"] = entries[0]
    elif entries:
        doc["eventHistory"] = entries
    for field in informatica.COUNT_FIELDS:
        if draw(st.booleans()):
            doc[field] = draw(st.integers(0, 10**9))
    if depth < 2 and draw(st.booleans()):
        doc["childEvents"] = draw(st.lists(cih_events(depth + 1), max_size=2))
    return doc


def _renumber(docs: list[dict]) -> list[str]:
    """Give every generated event a distinct id (kept as number or string); return them in order."""
    ids: list[str] = []
    stack = list(reversed(docs))
    while stack:
        doc = stack.pop()
        number = 1000 + len(ids)
        doc["eventId"] = number if isinstance(doc["eventId"], int) else str(number)
        history = doc.get("eventHistory", [])
        for entry in [history] if isinstance(history, dict) else history:
            entry["eventId"] = number
        ids.append(str(number))
        stack.extend(reversed(doc.get("childEvents", [])))
    return ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(cih_events(), min_size=1, max_size=3))
def test_generated_documents_normalize_consistently(docs):
    native_ids = _renumber(docs)
    events = informatica.normalize(orjson.dumps(docs), CTX)
    runs = by_run(events)
    assert list(runs) == [f"informatica:org-emea:{native}" for native in native_ids]
    assert all(item.job_key.startswith("informatica:org-emea:") for item in events)
    for items in runs.values():
        assert len({item.event_id for item in items}) == len(items)
        assert all(not item.counts and item.rows is None for item in items[:-1])
        assert len({(item.job_key, item.parent_run_key, item.started_at) for item in items}) == 1
    assert informatica.normalize(docs, CTX) == events
    pieces = informatica.split(docs)
    assert len(pieces) == len(native_ids)
    assert [item for piece in pieces for item in informatica.normalize(piece, CTX)] == events
    assert all(encode_event(item) for item in events)


@settings(max_examples=150, deadline=None)
@given(doc=cih_events(), field=st.sampled_from(["eventId", "eventStatus", "eventHistory", "childEvents",
                                                "createTime", "pubSubName", "targetSuccessCount"]),
       value=st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.booleans()))
def test_generated_documents_with_a_wrong_field_never_crash(doc, field, value):
    doc[field] = value
    try:
        events = informatica.normalize(doc, CTX)
    except Rejected as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert all(isinstance(item, JobEvent) for item in events)
