"""The one adapter over faust-streaming's private API refuses versions it does not know."""

from __future__ import annotations

import pytest

from pipeline.stream import faust_compat


def test_the_installed_faust_is_accepted():
    faust_compat.check_version()


@pytest.mark.parametrize("version", ["0.16.0", "1.0.0", "0.14.9"])
def test_an_unknown_faust_version_is_refused_with_one_clear_line(version):
    with pytest.raises(faust_compat.UnsupportedFaust) as refused:
        faust_compat.check_version(version)
    message = str(refused.value)
    assert "\n" not in message and version in message and "faust-streaming>=0.15.3,<0.16" in message


def test_current_event_is_set_inside_and_restored_after():
    from faust.streams import current_event

    class Event:
        pass

    event = Event()
    assert current_event() is None
    with faust_compat.current_event(event):
        assert current_event() is event
    assert current_event() is None
