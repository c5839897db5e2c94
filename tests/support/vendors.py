"""The one check every vendor fuzz test makes: a normalizer gives events or Rejected."""

from __future__ import annotations

from typing import Any

from pipeline import vendors
from pipeline.model import JobEvent, decode_event, encode_event
from pipeline.vendors._common import Context, Rejected


def assert_allowed_outcome(vendor: str, doc: Any, ctx: Context) -> list[JobEvent] | Rejected:
    """``normalize`` returns JobEvents of this vendor that encode and decode, or raises
    Rejected with a one-line reason; anything else (another exception) fails the test."""
    module = vendors.get(vendor)
    try:
        events = module.normalize(doc, ctx)
    except Rejected as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip() and "\n" not in exc.reason
        return exc
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, JobEvent)
        assert event.vendor == vendor
        assert event.job_key.startswith(f"{vendor}:")
        assert event.run_key.startswith(f"{vendor}:")
        assert decode_event(encode_event(event)).event_id == event.event_id
    return events
