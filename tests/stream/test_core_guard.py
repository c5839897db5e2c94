"""The core calls each vendor's normalize function itself (not through
``vendors.normalize``), so it must guard it the same way: a failure inside a vendor
module is one dead letter with the reason ``vendors.normalize`` would give."""

from __future__ import annotations

import pytest

from pipeline import catalog
from pipeline.vendors import Rejected
from pipeline.vendors.truenas import normalize as truenas
from tests.support.stream import T0, Harness, message, truenas_job


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ZeroDivisionError("division by zero"), "unexpected ZeroDivisionError: division by zero"),
        (RecursionError("maximum recursion depth exceeded"), "document nested too deeply"),
        (Rejected("bad document"), "bad document"),
    ],
)
def test_a_failure_inside_a_vendor_module_is_a_normalize_dead_letter_and_the_stream_goes_on(monkeypatch, error, reason):
    def explode(doc, ctx):
        raise error

    monkeypatch.setattr(truenas, "normalize", explode)
    harness = Harness()
    outputs = harness.feed([message(0, truenas_job(1, "RUNNING"), at=T0)])
    letters = [value for topic, _key, value in outputs if topic == catalog.DEADLETTER]
    assert [(letter["stage"], letter["reason"]) for letter in letters] == [("normalize", reason)]
    monkeypatch.undo()
    harness.restart()  # the core binds the vendor functions when it is made
    outputs = harness.feed([message(1, truenas_job(1, "RUNNING"), at=T0)])
    assert [topic for topic, _key, _value in outputs if topic == catalog.EVENTS] == [catalog.EVENTS]
