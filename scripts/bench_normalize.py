"""Normalize throughput per vendor, orjson parse included.

    python scripts/bench_normalize.py [--rounds 5] [--calls 2000]

Feeds each vendor's test fixtures (tests/vendors/fixtures/<vendor>/, raw bytes, as
they arrive in RawEnvelopes) to ``vendors.<vendor>.normalize`` and reports the best
round's events/s and documents/s over all its fixtures that normalize to events.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import vendors
from pipeline.model import UTC
from pipeline.vendors import Context, Rejected

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "vendors" / "fixtures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="normalize calls per round")
    args = parser.parse_args()
    from datetime import datetime

    ctx = Context(source="bench", received_at=datetime(2026, 1, 1, tzinfo=UTC))
    for name in vendors.VENDOR_NAMES:
        module = vendors.get(name)
        docs = []
        for path in sorted((FIXTURES / name).glob("*")):
            data = path.read_bytes()
            try:
                if module.normalize(data, ctx):
                    docs.append(data)
            except Rejected:
                continue
        best = (0.0, 0.0)
        for _ in range(args.rounds):
            events = 0
            started = time.perf_counter()
            for n in range(args.calls):
                events += len(module.normalize(docs[n % len(docs)], ctx))
            seconds = time.perf_counter() - started
            best = max(best, (events / seconds, args.calls / seconds))
        print(f"{name:12} {best[0]:>9,.0f} events/s  {best[1]:>8,.0f} documents/s  ({len(docs)} fixture documents)")


if __name__ == "__main__":
    main()
