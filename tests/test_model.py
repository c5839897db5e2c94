"""The canonical JobEvent: what it accepts, what it refuses, and that it survives JSON."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.model import (
    MAX_ATTRS_BYTES,
    MAX_TEXT_LENGTHS,
    TERMINAL_STATES,
    UTC,
    InvalidEvent,
    JobEvent,
    RawEnvelope,
    RawRef,
    State,
    decode_envelope,
    decode_event,
    encode_envelope,
    encode_event,
    iso_time,
    make_event_id,
    utc,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event(**changes: object) -> JobEvent:
    fields: dict[str, object] = {
        "event_id": make_event_id("test", "run-1", "RUNNING"),
        "vendor": "test",
        "source": "src",
        "job_key": "test:src:job-1",
        "run_key": "test:src:run-1",
        "native_state": "Started",
        "state": State.RUNNING,
        "occurred_at": T0,
    }
    fields.update(changes)
    return JobEvent(**fields)


# --- UTC ------------------------------------------------------------------------------------


def test_utc_keeps_utc_values_and_converts_other_zones():
    assert utc(T0) is T0
    tokyo = datetime(2026, 1, 1, 21, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert utc(tokyo) == T0 and utc(tokyo).tzinfo is UTC
    zero_offset = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(0), "GMT"))
    assert utc(zero_offset) == T0 and utc(zero_offset).tzinfo is UTC


def test_utc_refuses_naive_times():
    with pytest.raises(InvalidEvent, match="naive"):
        utc(datetime(2026, 1, 1, 12, 0))


def test_every_time_field_is_normalized_to_utc():
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 1, 1, 14, 0, tzinfo=plus_two)
    built = event(occurred_at=local, received_at=local, started_at=local, finished_at=local)
    for name in ("occurred_at", "received_at", "started_at", "finished_at"):
        value = getattr(built, name)
        assert value == T0 and value.tzinfo is UTC, name
    assert event().occurred_at is T0  # already UTC: kept as is


@pytest.mark.parametrize("name", ["occurred_at", "received_at", "started_at", "finished_at"])
def test_naive_or_non_datetime_times_are_refused(name: str):
    with pytest.raises(InvalidEvent, match="naive"):
        event(**{name: datetime(2026, 1, 1, 12, 0)})
    with pytest.raises(InvalidEvent, match=f"{name} must be a datetime"):
        event(**{name: "2026-01-01T12:00:00Z"})


def test_occurred_at_is_required():
    with pytest.raises(InvalidEvent, match="occurred_at is required"):
        event(occurred_at=None)


# --- strings and states ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["event_id", "vendor", "source", "job_key", "run_key"])
@pytest.mark.parametrize("bad", ["", None, 7])
def test_identifying_strings_must_be_non_empty(name: str, bad: object):
    with pytest.raises(InvalidEvent, match=name):
        event(**{name: bad})


def test_state_names_become_states_and_unknown_ones_are_refused():
    assert event(state="SUCCEEDED").state is State.SUCCEEDED
    with pytest.raises(InvalidEvent, match="canonical state"):
        event(state="DONE")


def test_native_state_must_be_a_string():
    assert event(native_state="").native_state == ""
    with pytest.raises(InvalidEvent, match="native_state"):
        event(native_state=7)


def test_terminal_states_are_the_four_outcomes():
    assert {s for s in State if s.terminal} == TERMINAL_STATES
    assert TERMINAL_STATES == {State.SUCCEEDED, State.FAILED, State.CANCELED, State.SKIPPED}


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "1"])
def test_attempt_must_be_an_integer_from_one(bad: object):
    with pytest.raises(InvalidEvent, match="attempt"):
        event(attempt=bad)


def test_attempt_may_be_absent_or_positive():
    assert event().attempt is None and event(attempt=3).attempt == 3


@pytest.mark.parametrize("bad", [-0.1, 100.5, math.nan, math.inf, True, "50"])
def test_progress_must_be_a_number_in_0_to_100(bad: object):
    with pytest.raises(InvalidEvent, match="progress"):
        event(progress=bad)


@pytest.mark.parametrize("good", [0, 100, 42.5, None])
def test_progress_accepts_the_whole_range(good: object):
    assert event(progress=good).progress == good


@pytest.mark.parametrize("bad", [-1, True, 1.0])
def test_rows_must_be_a_non_negative_integer(bad: object):
    with pytest.raises(InvalidEvent, match="rows"):
        event(rows=bad)
    assert event(rows=0).rows == 0


@pytest.mark.parametrize("bad", [-1, True, 2.0, None])
def test_counts_must_be_non_negative_integers(bad: object):
    with pytest.raises(InvalidEvent, match=r"counts\['inserted'\]"):
        event(counts={"ok": 1, "inserted": bad})
    assert event(counts={"inserted": 0}).counts == {"inserted": 0}


@pytest.mark.parametrize("field", ["attempt", "rows", "counts"])
@pytest.mark.parametrize("huge", [2**63, 10**308])
def test_integers_beyond_a_bigint_are_refused(field: str, huge: int):
    """Before: accepted, then the worker's state encoder (orjson, 64-bit) raised OverflowError."""
    with pytest.raises(InvalidEvent, match=field):
        event(**({"counts": {"inserted": huge}} if field == "counts" else {field: huge}))
    biggest = 2**63 - 1
    assert event(**({"counts": {"inserted": biggest}} if field == "counts" else {field: biggest})) is not None


def test_attrs_with_an_integer_json_cannot_carry_are_refused():
    with pytest.raises(InvalidEvent, match="attrs"):
        event(attrs={"n": 2**64})


# --- ids --------------------------------------------------------------------------------------


@given(st.text(min_size=1), st.lists(st.one_of(st.text(), st.integers(), st.none())))
def test_event_ids_are_deterministic_128_bit_hex(vendor: str, parts: list[object]):
    first = make_event_id(vendor, *parts)
    assert first == make_event_id(vendor, *parts)
    assert len(first) == 32 and int(first, 16) >= 0


def test_event_ids_differ_when_any_part_differs():
    base = make_event_id("zuora", "token-1", "active", T0)
    assert make_event_id("zuora", "token-1", "stale", T0) != base
    assert make_event_id("zuora", "token-2", "active", T0) != base
    assert make_event_id("truenas", "token-1", "active", T0) != base
    assert make_event_id("zuora", "token-1", "active", T0 + timedelta(microseconds=1)) != base
    assert make_event_id("zuora", "token-1active", T0) != base  # the separator keeps parts apart


def test_event_ids_read_none_as_an_empty_part():
    # Documented behaviour the vendor modules rely on: a missing part hashes like "".
    assert make_event_id("v", None, "x") == make_event_id("v", "", "x")


def test_event_ids_survive_unpaired_surrogates():
    assert make_event_id("v", "\ud800") == make_event_id("v", "\ud800")


@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes(timezones=st.sampled_from([timezone(timedelta(hours=2))])))
def test_iso_time_is_isoformat(value: datetime):
    assert iso_time(value) == value.isoformat()


@pytest.mark.parametrize("value", [
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(999, 1, 2, 3, 4, 5, 60, tzinfo=UTC), datetime(2026, 1, 1, fold=1, tzinfo=UTC),
    datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("Europe/Paris")), datetime(2026, 1, 1),
])
def test_iso_time_is_isoformat_at_the_edges(value: datetime):
    assert iso_time(value) == value.isoformat()


# --- JSON -------------------------------------------------------------------------------------


def test_a_full_event_round_trips_through_json():
    full = event(
        attempt=2,
        received_at=T0 + timedelta(seconds=1),
        started_at=T0 - timedelta(minutes=5),
        finished_at=T0,
        state=State.FAILED,
        progress=99.5,
        rows=10,
        counts={"inserted": 7, "rejected": 3},
        error_code="E42",
        error_message="disk full ✗",
        parent_run_key="test:src:parent",
        raw_ref=RawRef("raw.test", 3, 1234),
        attrs={"node": "n1", "retries": [1, 2], "nested": {"a": None}},
    )
    data = encode_event(full)
    back = decode_event(data)
    assert back == full
    assert back.state is State.FAILED and back.occurred_at.tzinfo is not None
    assert msgspec.json.decode(data)["raw_ref"] == {"topic": "raw.test", "partition": 3, "offset": 1234}


def test_decoding_applies_the_same_rules():
    good = msgspec.json.decode(encode_event(event()))
    for field, value in (("occurred_at", "2026-01-01T12:00:00"), ("state", "DONE"), ("attempt", 0), ("run_key", "")):
        with pytest.raises(msgspec.ValidationError):
            decode_event(msgspec.json.encode({**good, field: value}))


def test_decoded_offsets_become_utc():
    good = msgspec.json.decode(encode_event(event()))
    back = decode_event(msgspec.json.encode({**good, "occurred_at": "2026-01-01T21:00:00+09:00"}))
    assert back.occurred_at == T0 and back.occurred_at.utcoffset() == timedelta(0)


def test_envelopes_round_trip_with_any_json_payload():
    for payload in ({"jobs": [{"id": 1}]}, "not json {", [1, 2], None):
        envelope = RawEnvelope(vendor="zuora", source="tenant", received_at=T0, payload=payload)
        assert decode_envelope(encode_envelope(envelope)) == envelope


# --- bounds (issue 23: what no sink can hold is refused, for every vendor) -------------------


@pytest.mark.parametrize("field", sorted(MAX_TEXT_LENGTHS))
def test_every_bounded_text_field_refuses_one_character_too_many(field):
    limit = MAX_TEXT_LENGTHS[field]
    event(**{field: "x" * limit})  # at the limit: fine
    with pytest.raises(InvalidEvent, match=f"{field} is {limit + 1} characters long"):
        event(**{field: "x" * (limit + 1)})


def test_attrs_as_a_whole_are_bounded():
    event(attrs={"note": "x" * (MAX_ATTRS_BYTES - 100)})
    with pytest.raises(InvalidEvent, match="attrs take more than"):
        event(attrs={f"k{i}": "x" * 1000 for i in range(MAX_ATTRS_BYTES // 1000 + 1)})


def _giant_leaves(value: object, size: int) -> object:
    """``value`` with every string and integer leaf replaced by a ``size``-character string."""
    if isinstance(value, dict):
        return {k: _giant_leaves(v, size) for k, v in value.items()}
    if isinstance(value, list):
        return [_giant_leaves(v, size) for v in value]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return "7" * size
    return value


def _one_giant_leaf(value: object, path: tuple, size: int) -> object:
    if not path:
        return "7" * size
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)  # type: ignore[call-overload]
    copy[head] = _one_giant_leaf(value[head], tuple(rest), size)  # type: ignore[index]
    return copy


def _leaf_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*prefix, i))]
    return [prefix]


def _fixtures() -> list[tuple[str, object]]:
    import pathlib

    import orjson

    root = pathlib.Path(__file__).parent / "vendors" / "fixtures"
    found = []
    for path in sorted(root.glob("*/*.json")):
        try:
            found.append((path.parent.name, orjson.loads(path.read_bytes())))
        except orjson.JSONDecodeError:
            continue
    return found


@given(data=st.data())
def test_no_normalizer_output_exceeds_the_bounds(data):
    """Any vendor document with one (or every) field made 300,000 characters long gives
    Rejected or events within the bounds, never a giant key (issue 23's poison pill)."""
    from pipeline import vendors
    from pipeline.vendors import Context, Rejected

    vendor, doc = data.draw(st.sampled_from(_fixtures()))
    paths = _leaf_paths(doc)
    if data.draw(st.booleans()) or not paths:
        hostile = _giant_leaves(doc, 300_000)
    else:
        hostile = _one_giant_leaf(doc, data.draw(st.sampled_from(paths)), 300_000)
    ctx = Context(source="s", received_at=T0)
    try:
        events = vendors.normalize(vendor, hostile, ctx)
    except Rejected as exc:
        assert len(exc.reason) < 1000
        return
    for produced in events:
        for field, limit in MAX_TEXT_LENGTHS.items():
            value = getattr(produced, field)
            assert value is None or len(value) <= limit, field
        assert len(encode_event(produced)) < 64 * 1024


_ANY_TEXT = st.text(st.characters(blacklist_categories=()))  # surrogates too (vendor text is surrogatepass-encoded)


@given(_ANY_TEXT, st.lists(st.one_of(_ANY_TEXT, st.integers(), st.none())))
def test_event_ids_are_blake2b_of_the_parts_joined_by_unit_separators(vendor: str, parts: list[object]):
    # The recipe ids stored downstream were made with: a faster path must give the same ids.
    import hashlib

    text = "\x1f".join([vendor, *("" if p is None else str(p) for p in parts)])
    expected = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    assert make_event_id(vendor, *parts) == expected
