"""A real PostgreSQL for the lake's catalog: one throwaway server per session on a unix
socket in a temporary directory (pipeline/sink/scratch_postgres.py), one database and
one data directory per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sink.lake import LakeTarget
from pipeline.sink.scratch_postgres import ScratchPostgres

_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ScratchPostgres]:
    server = ScratchPostgres.start()
    try:
        yield server
    finally:
        server.stop()


def new_lake(postgres: ScratchPostgres, directory: Path) -> LakeTarget:
    """An empty lake: its own catalog database and data directory."""
    name = f"lake{next(_numbers)}"
    postgres.create_database(name)
    data = directory / f"{name}-data"
    data.mkdir()
    return LakeTarget(postgres.conninfo(name), f"{data}/")


@pytest.fixture
def lake(postgres: ScratchPostgres, tmp_path: Path) -> LakeTarget:
    return new_lake(postgres, tmp_path)
