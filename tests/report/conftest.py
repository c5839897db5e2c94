"""A database written by the whole pipeline in a short demo, shared by the report's and
explain's tests on real demo data (one demo per session: about 60 s here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    db = folder / "demo.duckdb"
    demo = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--duration", "30", "--db", str(db), "--run-dir", str(folder / "run")],
        capture_output=True, text=True, timeout=400,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    return db
