"""The worker's output under a supervisor (stdout a log file): no Faust spinner, whose
cursor escape codes (\\x1b[?25l) ended up in `pipeline run`'s worker log."""

from __future__ import annotations

import io

from pipeline.settings import Settings
from pipeline.stream.app import _Worker, create_app


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_spinner_when_stdout_is_not_a_terminal(tmp_path):
    app = create_app(Settings(store="memory://", datadir=tmp_path / "w", app_id="spinner-test"))
    assert _Worker(app, loglevel="warning", quiet=True, stdout=io.StringIO()).spinner is None
    assert _Worker(app, loglevel="warning", quiet=True, stdout=_Terminal()).spinner is not None
