"""The garbage collector's settings for the worker process.

Per raw record the worker allocates a few dozen container objects (the decoded
document's dicts and lists, events, runs), nearly all freed within the batch by
reference counting. With CPython's default generation-0 threshold (700 allocations)
the collector runs every few records and walks the young objects for nothing; the
long-lived ones (modules, Faust's app, the decoded table entries) are walked again at
every older collection. Measured on the core stage (``pipeline/bench/core_stage.py``,
20,000 documents, 4 alternations): median 8,921 -> 9,353 raw records per CPU second.
Cycles are still collected, only less often; memory held by young garbage stays
bounded by the threshold (tens of thousands of small objects).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)


def tune() -> tuple[int, int, int]:
    """Freeze what exists now (it lives as long as the process) and collect the
    young generation every ``YOUNG_THRESHOLD`` allocations; returns the thresholds
    that were in place, for ``restore``."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    return before


def restore(thresholds: tuple[int, int, int]) -> None:
    """Undo ``tune`` (for a process that measures both ways, such as the bench)."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)
