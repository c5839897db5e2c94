"""`pipeline ingest` and `pipeline zuora cancel` at the command line: one clear line
for every mistake a user can make, and secrets never echoed."""

from __future__ import annotations

from tests.support.processes import pipeline




def test_a_secret_written_in_the_config_file_is_refused_without_echoing_it(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[zuora]\nbase_url = "https://t"\npassword = "hunter2-secret"\n')
    result = pipeline("ingest", "zuora", "--config", str(config))
    assert result.returncode == 2
    assert "[zuora] password: secrets are not read from the config file" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_missing_settings_and_files_are_one_line_each(tmp_path):
    result = pipeline("ingest", "informatica", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "cannot read config file" in result.stderr
    config = tmp_path / "c.toml"
    config.write_text('[qlik_qrs]\nbase_url = "https://qlik:4242"\n')
    result = pipeline("ingest", "qlik-qrs", "--config", str(config))
    assert result.returncode == 2 and "source is required" in result.stderr
    result = pipeline("zuora", "cancel", "tok-1", "--config", str(config))
    assert result.returncode == 2 and "[zuora] base_url" in result.stderr


def test_help_names_the_commands():
    result = pipeline("ingest", "--help")
    assert result.returncode == 0
    for name in ("qlik-qrs", "zuora", "informatica"):
        assert name in result.stdout
    assert "--start-task" in pipeline("ingest", "qlik-qrs", "--help").stdout
