"""Shared fixtures. The integration tests share one embedded broker per test process
(per session; ``-n 2`` makes two): Tansu starts in ~0.1 s, a Faust worker in ~6 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.broker import EmbeddedBroker
from tests.support.demo import DemoRun, shared_demo

pytest_plugins = ["tests.support.kafka", "tests.support.ports"]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist, the tests that read the shared demo run in one process: the demo
    (about 90 s) then runs once, not once per process."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if {"demo_run", "demo_db"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("demo"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBroker:
    """One Tansu broker for the whole session, with the catalog's topics created."""
    import asyncio

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    embedded = EmbeddedBroker(log=log).start()
    asyncio.run(catalog.apply(embedded.bootstrap))
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One ``pipeline demo`` for the session (its own embedded broker), shared by the demo's,
    the checks', the report's and explain's tests: they only read what it wrote."""
    return shared_demo(tmp_path_factory.mktemp("shared-demo"))


@pytest.fixture(scope="session")
def demo_db(demo_run: DemoRun) -> Path:
    return demo_run.db
