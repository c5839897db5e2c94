"""Faults the worker's tests inject through the environment (never set in production).

``JOBSTREAM_WORKER_FAULT`` holds one fault:
- ``exit-at:<step>``: the process ends at once (exit 137, as a kill) when the commit
  protocol reaches the named step (``app.py``), to test its failure table;
- ``hide:<topic>:<partition>:<offset>``: the record at that offset is taken out of the
  first batch that holds it, as Faust's prefetch after a rebalance does (faust#221).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "JOBSTREAM_WORKER_FAULT"
EXIT_KILLED = 137


@dataclass(frozen=True, slots=True)
class Faults:
    exit_at: str | None = None
    hide: tuple[str, int, int] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Faults":
        value = (os.environ if env is None else env).get(ENV, "")
        kind, _, rest = value.partition(":")
        if kind == "exit-at" and rest:
            return cls(exit_at=rest)
        if kind == "hide" and rest.count(":") >= 2:
            topic, partition, offset = rest.rsplit(":", 2)
            return cls(hide=(topic, int(partition), int(offset)))
        return cls()


class Injector:
    """Applies ``Faults`` in the running worker (a no-op when none is set)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._hidden = False

    def step(self, name: str) -> None:
        if self.faults.exit_at == name:
            os._exit(EXIT_KILLED)

    def hide(self, events: list) -> list:
        if self.faults.hide is None or self._hidden:
            return events
        topic, partition, offset = self.faults.hide
        kept = [e for e in events if (e.message.topic, e.message.partition, e.message.offset) != (topic, partition, offset)]
        self._hidden = len(kept) < len(events)
        return kept
