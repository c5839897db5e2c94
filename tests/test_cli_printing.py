"""Issue 35 case 13 (the operator's part): the error printer prints what it was given (rich
turned "a:smile:b" into an emoji), and `pipeline alert --url` refuses a URL with a token or a
password, which a command line shows to every user of the machine."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTREAM_")} | {"COLUMNS": "300"}


def _pipeline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=60, env=ENV)


def test_an_error_naming_a_b_c_is_printed_as_given():
    result = _pipeline("run", "--config", "/nonexistent/a:smile:b.toml")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: cannot read config file /nonexistent/a:smile:b.toml: No such file or directory"


def test_alert_refuses_a_token_on_its_command_line():
    result = _pipeline("alert", "--url", "slack://T000/B000/XXXXSECRET", "--show-rules")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --url: the slack:// URL carries a token or password, which a command line shows to every user (ps); "
        "give it in JOBSTREAM_ALERT_URLS or a rules file instead"]
    assert "XXXXSECRET" not in result.stdout + result.stderr
    assert _pipeline("alert", "--url", "json://127.0.0.1:9/hook", "--show-rules").returncode == 0


def test_sql_and_sink_errors_reach_the_one_guard_and_are_printed_as_given(tmp_path):
    """`pipeline sql` and `pipeline sink` caught their errors by hand and printed them as
    rich markup: a table or a path named "[bold]..." lost its brackets."""
    import duckdb

    db = tmp_path / "f.duckdb"
    duckdb.connect(str(db)).close()
    missing = _pipeline("sql", "--db", str(db), "--quack", "quack:localhost:1", 'FROM "[bold]nosuch"')
    assert missing.returncode == 1
    assert "[bold]nosuch" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    directory = tmp_path / "[red]data.duckdb"
    directory.mkdir()
    sink = _pipeline("sink", "--db", str(directory), "--quack-port", "0", "--bootstrap", "127.0.0.1:1")
    assert sink.returncode == 1
    assert sink.stderr.strip() == f"error: {directory} is a directory, not a database file", sink.stderr
