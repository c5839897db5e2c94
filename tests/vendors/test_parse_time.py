"""``parse_time`` keeps text times it parsed: the kept answer must be the parse's own."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline.vendors import _common
from pipeline.vendors._common import Rejected, parse_time

UTC = timezone.utc


def test_a_naive_text_time_is_read_in_each_callers_zone_also_when_parsed_before():
    text = "2026-03-29 01:30:00"
    assert parse_time(text, tz=UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert parse_time(text, tz=ZoneInfo("Europe/Berlin")) == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert parse_time(text, tz=UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_refused_text_is_refused_again_with_the_field_that_carried_it():
    for field in ("started", "stopped"):
        with pytest.raises(Rejected, match=f"{field} is not a time"):
            parse_time("not a time", field=field)


def test_the_kept_times_stay_bounded(monkeypatch):
    monkeypatch.setattr(_common, "_MAX_PARSED_TIMES", 4)
    monkeypatch.setattr(_common, "_PARSED_TIMES", {})
    for second in range(10):
        assert parse_time(f"2026-01-01T00:00:{second:02d}Z") == datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    assert len(_common._PARSED_TIMES) <= 4
