"""``pipeline normalize``: vendor documents in, canonical events out, no Kafka.

Input is one JSON document (pretty-printed or not) or JSON lines. Text that is not JSON
at all (the Zuora seed's example is not) is handed to the vendor module as text, which
parses it tolerantly where its vendor needs that, or rejects it with a reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any, BinaryIO

import orjson
from rich.console import Console

from pipeline import vendors
from pipeline.model import UTC, encode_event


def documents(data: bytes) -> Iterator[tuple[str, Any]]:
    """``(position, document)`` pairs: the whole input, or one per JSON line."""
    try:
        yield "document 1", orjson.loads(data)
        return
    except orjson.JSONDecodeError:
        pass
    lines = data.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        return
    first = numbered[0][1]
    try:
        orjson.loads(first)
        looks_like_lines = len(numbered) > 1
    except orjson.JSONDecodeError:
        looks_like_lines = False
    if not looks_like_lines:
        yield "document 1", data
        return
    for number, line in numbered:
        try:
            yield f"line {number}", orjson.loads(line)
        except orjson.JSONDecodeError:
            yield f"line {number}", line


def run_normalize(
    vendor: str, data: bytes, *, source: str | None, tz: tzinfo, out: BinaryIO, err: Console,
    received_at: datetime | None = None,
) -> int:
    """Write one JSON line per event to ``out``; return how many documents were rejected."""
    ctx = vendors.Context(source=source, received_at=received_at or datetime.now(UTC), tz=tz)
    rejected = 0
    for position, doc in documents(data):
        try:
            events = vendors.normalize(vendor, doc, ctx)
        except vendors.Rejected as exc:
            rejected += 1
            err.print(f"rejected {position}: {exc.reason}", markup=False)
            continue
        for event in events:
            out.write(encode_event(event) + b"\n")
    out.flush()
    return rejected
