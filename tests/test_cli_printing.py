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
