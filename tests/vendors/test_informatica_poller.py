"""The Informatica poller's cursor, as a pure function of the window it read (no HTTP)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.vendors.informatica.ingest import InformaticaSettings, InformaticaSource, cih_time, parse_cih_time as parse

END = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)


def source() -> InformaticaSource:
    return InformaticaSource(InformaticaSettings(base_url="http://cih", user="u", password="p", child_grace_s=0.0), None)


def event(event_id: int, status: str, *, age_s: int = 60) -> dict:
    created = END - timedelta(seconds=age_s)
    done = {"completionTime": cih_time(created + timedelta(seconds=1))} if status == "Complete" else {}
    return {
        "eventId": event_id, "createTime": cih_time(created), "eventStatus": status, "eventType": "PUBLICATION",
        "applicationName": "app", "pubSubName": "pub", **done,
    }


def test_an_open_event_that_did_not_change_is_not_sent_again_on_any_later_poll() -> None:
    """Before: the cursor forgot an unchanged event's hash, so every second poll sent it again."""
    poller, cursor, sent = source(), {"from": cih_time(END - timedelta(hours=1)), "seen": {}}, []
    for _ in range(4):
        poll = poller._plan([event(7, "Processing")], cursor, END)
        sent.append(len(poll.records))
        cursor = poll.cursor
    assert sent == [1, 0, 0, 0]
    assert set(cursor["seen"]) == {"7"}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 5), max_size=8), st.integers(1, 4))
def test_each_content_is_sent_once_and_every_final_state_arrives(completions: list[int], polls_between: int) -> None:
    """Five open events end in any order, polled any number of times in between (the API
    answers the events created inside the cursor's window); each (event, state) goes out
    exactly once and every final state does."""
    poller, cursor = source(), {"from": cih_time(END - timedelta(hours=1)), "seen": {}}
    state = {event_id: "Processing" for event_id in range(1, 6)}
    sent: list[tuple[str, str]] = []

    def poll() -> None:
        nonlocal cursor
        window = [event(i, s, age_s=60 * i) for i, s in state.items() if END - timedelta(seconds=60 * i) >= parse(cursor["from"])]
        result = poller._plan(window, cursor, END)
        sent.extend((str(r.payload["eventId"]), r.payload["eventStatus"]) for r in result.records)
        cursor = result.cursor

    for event_id in [*completions, *range(1, 6)]:
        for _ in range(polls_between):
            poll()
        state[event_id] = "Complete"
    poll()
    assert len(sent) == len(set(sent))
    assert {(str(i), "Complete") for i in state} <= set(sent)
