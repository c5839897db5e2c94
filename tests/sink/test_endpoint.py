"""The endpoint file beside the database: written and withdrawn by its owner, a stale one
(its pid gone) ignored, anything unreadable ignored."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.sink import endpoint


def test_a_published_endpoint_is_discovered_and_withdrawn(tmp_path):
    db = tmp_path / "x.duckdb"
    mine = endpoint.Endpoint(os.getpid(), "quack:localhost:41234", "postgresql://localhost:41235/jobs")
    path = endpoint.publish(db, mine)
    assert path == tmp_path / "x.duckdb.endpoint.json"
    assert endpoint.discover(db) == mine
    endpoint.withdraw(db, os.getpid() + 1)  # not the owner: left alone
    assert endpoint.discover(db) == mine
    endpoint.withdraw(db, os.getpid())
    assert not path.exists() and endpoint.discover(db) is None


def test_an_endpoint_left_by_a_dead_process_is_stale(tmp_path):
    db = tmp_path / "x.duckdb"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    endpoint.publish(db, endpoint.Endpoint(int(gone), "quack:localhost:41234"))
    assert endpoint.discover(db) is None


def test_a_file_that_is_not_an_endpoint_is_ignored(tmp_path):
    db = tmp_path / "x.duckdb"
    endpoint.endpoint_file_for(db).write_text("not json")
    assert endpoint.discover(db) is None
    assert endpoint.decode(b'{"quack": "quack:localhost:1"}') is None


def test_a_server_on_any_address_is_dialled_on_localhost():
    assert endpoint.client_host("0.0.0.0") == "localhost"
    assert endpoint.client_host("10.0.0.5") == "10.0.0.5"
