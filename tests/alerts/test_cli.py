"""``pipeline alert``: help that explains, one-line errors for what a user can fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pipeline.broker import free_port
from pipeline.cli import app

runner = CliRunner()


def test_help_explains_the_command() -> None:
    result = runner.invoke(app, ["alert", "--help"])
    assert result.exit_code == 0
    for part in ("--rules", "--bootstrap", "--url", "Apprise", "300 s", "600 s"):
        assert part in result.output


def test_show_rules_names_schemes_never_urls() -> None:
    result = runner.invoke(app, ["alert", "--show-rules"], env={"JOBSTREAM_ALERT_URLS": "json://user:Sup3rS3cret@hooks.example.com/x"})
    assert result.exit_code == 0, result.output
    assert "run-failed" in result.output and "json" in result.output
    assert "Sup3rS3cret" not in result.output


def test_without_any_url_it_says_where_to_put_one() -> None:
    result = runner.invoke(app, ["alert"], env={"JOBSTREAM_ALERT_URLS": ""})
    assert result.exit_code == 2
    assert "no Apprise URL" in result.output and "JOBSTREAM_ALERT_URLS" in result.output


def test_a_bad_rules_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "x"\nkind = "explode"\nurls = ["json://h/x"]\n')
    result = runner.invoke(app, ["alert", "--rules", str(path)])
    assert result.exit_code == 2
    assert "'kind' must be one of" in result.output


def test_an_unknown_apprise_scheme_is_one_line_without_the_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "alert", "--url", "nosuch://u:Hunter2Secret@x/y",
         "--bootstrap", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuch://" in lines[0] and "Hunter2Secret" not in result.stderr


def test_an_unreachable_kafka_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "alert", "--url", "json://127.0.0.1:9/hook",
         "--bootstrap", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Kafka at 127.0.0.1:" in errors[0]


def test_a_broker_without_the_topics_says_to_apply_them() -> None:
    from pipeline.broker import EmbeddedBroker

    empty = EmbeddedBroker().start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "alert", "--url", "json://127.0.0.1:9/hook", "--bootstrap", empty.bootstrap],
            capture_output=True, text=True, timeout=90,
        )
    finally:
        empty.stop()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pipeline topics apply" in errors[0], result.stderr
