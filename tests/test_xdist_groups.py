"""The README's test command runs on two processes with ``--dist loadgroup``: the tests
that share a session's demo run, or a module's wheel build, go to one process
(``tests/conftest.py``, ``xdist_group`` marks), or each process pays for its own.

pytest 9.2 stopped reading the group pytest-xdist 3.8 writes into each test's id
(pytest-dev/pytest-xdist#1386): the groups were silently ignored and CI built the compiled
wheel twice, side by side. This test fails when that happens again."""

from __future__ import annotations

import pytest


def _grouped_run(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a pytest-xdist run with --dist loadgroup (the README's test command is one)")


@pytest.mark.xdist_group("groups-check")
def test_a_grouped_test_runs_in_its_group(request: pytest.FixtureRequest) -> None:
    _grouped_run(request)
    assert request.node.nodeid.endswith("@groups-check"), (
        f"pytest-xdist did not put {request.node.nodeid} in its group: this pytest and pytest-xdist "
        "do not group tests (pytest-dev/pytest-xdist#1386); see the pytest pin in pyproject.toml"
    )


def test_a_reader_of_the_shared_demo_runs_in_the_demo_s_group(request: pytest.FixtureRequest, demo_run) -> None:
    """The group ``tests/conftest.py`` gives by fixture: its hook must run before pytest-xdist
    reads the groups (it ran after, and each process ran its own demo: two in CI)."""
    _grouped_run(request)
    assert request.node.nodeid.endswith("@demo"), f"{request.node.nodeid} is not in the demo's group"
