"""What the sinks' crash children share (tests/sink/crash_child.py on a file,
tests/lake/crash_child.py on the lake): a real SIGKILL, no ``finally`` runs, at a point of
the commit protocol both targets have."""

from __future__ import annotations

import os
import signal


def die() -> None:
    print("dying", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class CrashesAt:
    """A writer mixin that dies at ``point``: ``before_write`` (a batch fetched and decoded,
    nothing written), ``before_commit`` (rows and offsets inserted, COMMIT not run) or
    ``after_commit`` (the first batch committed). ``after_assign`` is each child's own."""

    point: str

    def write(self, batch) -> None:
        if self.point == "before_write":
            die()
        super().write(batch)

    def _commit(self, con) -> None:
        if self.point == "before_commit":
            die()
        super()._commit(con)
        if self.point == "after_commit":
            die()
