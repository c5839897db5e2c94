"""Every vendor normalizer, fed garbage: the only allowed outcomes are JobEvents or Rejected.

Calls ``vendors.get(name).normalize`` directly, not the guard in ``vendors.normalize``,
so an exception other than ``Rejected`` escaping a module fails here instead of being
hidden. Inputs: random JSON values (keys borrowed from the vendor's fixtures so the
documents get past the first checks), truncated fixture text, fixtures with one field
replaced by a wrong type, and invalid UTF-8. Fixtures are found at run time
(``fixtures/<vendor>/*.json``), so vendors added later are covered without edits here.
"""

from __future__ import annotations

import copy
import pathlib
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import vendors
from pipeline.vendors._common import DEFAULT_CONTEXT, Context, Rejected
from tests.support.vendors import assert_allowed_outcome

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CONTEXTS = [DEFAULT_CONTEXT, Context(source="fuzz-src", received_at=datetime(2024, 1, 1, tzinfo=timezone.utc))]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixture_files(vendor: str) -> list[pathlib.Path]:
    return sorted((FIXTURES / vendor).glob("*.json"))


def fixture_docs(vendor: str) -> list[tuple[str, Any]]:
    """(file name, parsed JSON) of every fixture that is valid JSON."""
    docs = []
    for path in fixture_files(vendor):
        try:
            docs.append((path.name, orjson.loads(path.read_bytes())))
        except orjson.JSONDecodeError:
            continue
    return docs


def keys_in(value: Any) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def paths_in(value: Any, limit: int = 400) -> list[tuple[Any, ...]]:
    """Paths (dict keys / list indexes) to every nested value, breadth first, root excluded."""
    paths: list[tuple[Any, ...]] = []
    queue: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while queue and len(paths) < limit:
        path, item = queue.pop(0)
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            paths.append((*path, key))
            queue.append(((*path, key), child))
    return paths


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def nested(depth: int, kind: str) -> Any:
    """A chain ``depth`` levels deep (a chain: shared branches would be exponential to print)."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"data": value}
    return value


# Wrong-type replacements by name, built inside the test so failure reports stay readable.
REPLACEMENTS = {
    "none": lambda: None,
    "zero": lambda: 0,
    "negative int": lambda: -7,
    "huge int": lambda: 2**63 - 1,
    "float": lambda: 1.2345678901234568e29,
    "bool": lambda: True,
    "empty list": lambda: [],
    "list of ints": lambda: [1, 2, 3],
    "empty object": lambda: {},
    "empty string": lambda: "",
    "huge string": lambda: "x" * 200_000,
    "control characters": lambda: "\x00\u202e\ud7ff\n" * 10,
    "time before year 1 in UTC": lambda: "0001-01-01T00:00:00+01:00",
    "time after year 9999 in UTC": lambda: "9999-12-31T23:59:59-01:00",
    "epoch ms out of range": lambda: 10**20,
    "deep list": lambda: nested(900, "list"),
    "deep object": lambda: nested(300, "object"),
}


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30)
        | st.sampled_from(["", "0", "-1", "1753-01-01T00:00:00", "2024-02-30T25:61:00Z", "9999-12-31T23:59:59-01:00"])
    )
    names = st.sampled_from(keys) | st.text(max_size=10) if keys else st.text(max_size=10)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=8),
        max_leaves=40,
    )


FIXTURE_VENDORS = [name for name in vendors.VENDOR_NAMES if fixture_docs(name)]
FIXTURE_FILES = [path for name in FIXTURE_VENDORS for path in fixture_files(name)]


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_fixtures_themselves(path):
    """The fuzz bases: each fixture gives an allowed outcome as text and as a parsed value."""
    vendor = path.parent.name
    for ctx in CONTEXTS:
        assert_allowed_outcome(vendor, path.read_bytes(), ctx)
        assert_allowed_outcome(vendor, orjson.loads(path.read_bytes()), ctx)


@pytest.mark.parametrize("vendor", FIXTURE_VENDORS)
def test_some_fixture_gives_events(vendor):
    """Mutating fixtures only probes deep code when some fixture normalizes to events."""
    module = vendors.get(vendor)
    outcomes = []
    for path in fixture_files(vendor):
        try:
            outcomes.append(len(module.normalize(path.read_bytes(), CONTEXTS[1])))
        except Rejected:
            outcomes.append(0)
    assert max(outcomes) > 0


@pytest.mark.parametrize("vendor", vendors.VENDOR_NAMES)
def test_random_json_values(vendor):
    keys = sorted(keys_in([doc for _, doc in fixture_docs(vendor)]))

    @FUZZ
    @given(doc=json_values(keys), as_text=st.booleans(), ctx=st.sampled_from(CONTEXTS))
    def check(doc: Any, as_text: bool, ctx: Context) -> None:
        assert_allowed_outcome(vendor, orjson.dumps(doc) if as_text else doc, ctx)

    check()


@pytest.mark.parametrize("vendor", FIXTURE_VENDORS)
def test_truncated_fixture_text(vendor):
    texts = [path.read_bytes() for path in fixture_files(vendor)]

    @FUZZ
    @given(index=st.integers(0, len(texts) - 1), cut=st.floats(0, 1, exclude_max=True), as_str=st.booleans(),
           ctx=st.sampled_from(CONTEXTS))
    def check(index: int, cut: float, as_str: bool, ctx: Context) -> None:
        text = texts[index][: int(len(texts[index]) * cut)]
        assert_allowed_outcome(vendor, text.decode("utf-8", "ignore") if as_str else text, ctx)

    check()


@pytest.mark.parametrize("vendor", FIXTURE_VENDORS)
def test_wrong_types_in_fixtures(vendor):
    docs = [(name, doc, paths_in(doc)) for name, doc in fixture_docs(vendor)]
    docs = [entry for entry in docs if entry[2]]
    assert docs, f"{vendor}: no fixture with fields to replace"

    @FUZZ
    @given(data=st.data(), kind=st.sampled_from(sorted(REPLACEMENTS)), as_text=st.booleans(),
           ctx=st.sampled_from(CONTEXTS))
    def check(data: st.DataObject, kind: str, as_text: bool, ctx: Context) -> None:
        name, doc, paths = data.draw(st.sampled_from(docs), label="fixture")
        path = data.draw(st.sampled_from(paths), label="path")
        mutated = replaced(doc, path, REPLACEMENTS[kind]())
        if as_text:
            try:
                mutated = orjson.dumps(mutated)
            except orjson.JSONEncodeError:
                pass  # too deep for orjson: pass the parsed value, as a Python caller could
        assert_allowed_outcome(vendor, mutated, ctx)

    check()


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]


@pytest.mark.parametrize("vendor", vendors.VENDOR_NAMES)
def test_invalid_utf8(vendor):
    texts = [path.read_bytes() for path in fixture_files(vendor)] or [b'{"id": "x"}']

    @FUZZ
    @given(index=st.integers(0, len(texts) - 1), at=st.floats(0, 1), bad=st.sampled_from(INVALID_UTF8),
           noise=st.binary(max_size=64), ctx=st.sampled_from(CONTEXTS))
    def check(index: int, at: float, bad: bytes, noise: bytes, ctx: Context) -> None:
        text = texts[index]
        cut = int(len(text) * at)
        assert_allowed_outcome(vendor, text[:cut] + bad + text[cut:], ctx)
        assert_allowed_outcome(vendor, bad + noise, ctx)

    check()


# Values that look like numbers, times or durations to a quick check and then break a
# conversion: "²" passes str.isdigit() but not int(); a 12-digit hour count overflows
# timedelta; a 26-digit page number overflows a BIGINT.
TRICKY_VALUES = [
    "²", " ² ", "١٢", "99999999999:00:00", "999999999 days, 0:00:00",
    "SCANNING-PAGE-99999999999999999999999999", "COMMITING-PAGE-²", 10**30, -(10**30), 1e308,
    "2020/03/03 19:45", "+99999-01-01T00:00:00Z",
]


@pytest.mark.parametrize("vendor", FIXTURE_VENDORS)
def test_tricky_scalars_at_every_field_of_every_fixture(vendor):
    """Exhaustive, not sampled: each tricky value at each field of each fixture."""
    for _name, doc, paths in ((n, d, paths_in(d)) for n, d in fixture_docs(vendor)):
        for path in paths:
            for value in TRICKY_VALUES:
                assert_allowed_outcome(vendor, replaced(doc, path, value), CONTEXTS[1])


@pytest.mark.parametrize("vendor", vendors.VENDOR_NAMES)
def test_random_json_with_tricky_scalars(vendor):
    """Any JSON value, its scalars drawn from the tricky ones too, gives events or Rejected."""
    keys = sorted(keys_in([doc for _, doc in fixture_docs(vendor)]))
    scalars = json_values(keys) | st.sampled_from(TRICKY_VALUES)
    values = st.recursive(
        scalars, lambda children: st.dictionaries(st.sampled_from(keys or ["id"]), children, max_size=8), max_leaves=30
    )

    @FUZZ
    @given(doc=values, ctx=st.sampled_from(CONTEXTS))
    def check(doc: Any, ctx: Context) -> None:
        assert_allowed_outcome(vendor, doc, ctx)

    check()
