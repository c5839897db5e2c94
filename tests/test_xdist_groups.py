"""The README's test command runs on two processes with ``--dist loadgroup``: the tests
that share a session's demo run, or a module's wheel build, go to one process
(``tests/conftest.py``, ``xdist_group`` marks), or each process pays for its own.

pytest 9.2 stopped reading the group pytest-xdist 3.8 writes into each test's id
(pytest-dev/pytest-xdist#1386): the groups were silently ignored and CI built the compiled
wheel twice, side by side. This test fails when that happens again."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("groups-check")
def test_a_grouped_test_runs_in_its_group(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a pytest-xdist run with --dist loadgroup (the README's test command is one)")
    assert request.node.nodeid.endswith("@groups-check"), (
        f"pytest-xdist did not put {request.node.nodeid} in its group: this pytest and pytest-xdist "
        "do not group tests (pytest-dev/pytest-xdist#1386); see the pytest pin in pyproject.toml"
    )
