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


def test_a_faust_whose_consumer_renamed_the_committed_offsets_is_refused_not_read_as_none():
    """Issue 32.9: ``committed_offset`` read a missing ``_committed_offset`` as "nothing
    committed", which switched the worker's gap check off without a word."""

    class Renamed:  # Faust's consumer with ``_committed_offset`` renamed
        _committed_offsets: dict
        _gap: dict
        _unacked_messages: set

        async def seek(self, partition, offset): ...

    with pytest.raises(faust_compat.UnsupportedFaust, match="0.15.9: its consumer has no _committed_offset"):
        faust_compat.check_consumer("0.15.9", Renamed)
    faust_compat.check_consumer("0.15.3")


def test_committed_offset_refuses_a_consumer_without_the_attribute():
    class App:
        consumer = object()

    with pytest.raises(faust_compat.UnsupportedFaust, match="_committed_offset"):
        faust_compat.committed_offset(App(), ("raw.truenas", 0))


def test_committed_offset_reads_an_offset_and_none_for_faust_s_zero():
    class Consumer:
        _committed_offset = {"a": 7, "b": None}

    class App:
        consumer = Consumer()

    assert faust_compat.committed_offset(App(), "a") == 7
    assert faust_compat.committed_offset(App(), "b") is None  # 0 or nothing: gaps.Continuity checks from the log start
