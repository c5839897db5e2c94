"""``pipeline normalize``: exit status 0 / 1 / 2, events on stdout, reasons on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.normalize_cli import documents

FIXTURES = Path(__file__).parent / "vendors" / "fixtures"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "normalize", *args],
        input=stdin, capture_output=True, timeout=60,
    )


def test_a_whole_document_gives_events_and_exit_0():
    result = run("--vendor", "zuora", "--source", "acme", str(FIXTURES / "zuora" / "seed_malformed.txt"))
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [e["state"] for e in events] == ["RUNNING", "SUCCEEDED"]
    assert all(e["source"] == "acme" and e["vendor"] == "zuora" for e in events)


def test_json_lines_from_stdin_report_each_rejected_line_and_exit_1():
    good = orjson.dumps({"id": 5, "method": "pool.scrub", "state": "RUNNING"})
    stdin = good + b"\n" + b'{"id": "x", "state": 3}\n' + b"\n" + good + b"\n{truncated\n"
    result = run("--vendor", "truenas", "-", stdin=stdin)
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2
    errors = result.stderr.decode().splitlines()
    assert [line.split(":")[0] for line in errors] == ["rejected line 2", "rejected line 5"]
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vendor", "nobody", "-"], b"unknown vendor 'nobody'"),
        (["--vendor", "truenas", "/no/such/file.json"], b"cannot read /no/such/file.json"),
        (["--vendor", "zuora", "--tz", "Mars/Base", "-"], b"not a time zone"),
        ([], b"Missing option"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args, message):
    result = run(*args, stdin=b"")
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


def test_invalid_utf8_is_a_rejection_not_a_crash():
    result = run("--vendor", "informatica", "-", stdin=b"\xff\xfe{\"eventId\": 1}")
    assert result.returncode == 1
    assert result.stderr.startswith(b"rejected document 1:")


def test_documents_splits_json_lines_but_keeps_a_pretty_document_whole():
    pretty = b'{\n  "a": 1\n}\n'
    assert list(documents(pretty)) == [("document 1", {"a": 1})]
    assert list(documents(b'{"a":1}\n{"b":2}\n')) == [("line 1", {"a": 1}), ("line 2", {"b": 2})]
    assert list(documents(b"")) == []
    assert list(documents(b'"a": [1\n')) == [("document 1", b'"a": [1\n')]
