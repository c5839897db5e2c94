"""One root error with an exit code; every kind of wrong configuration is a ConfigError; the
CLI turns any JobstreamError a command raises into one line per problem and its exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline import errors
from pipeline.alerts.rules import RulesError
from pipeline.backfill import BackfillError
from pipeline.broker import BrokerError
from pipeline.catalog import CatalogError
from pipeline.cli import app
from pipeline.cli.common import Commands
from pipeline.ingest_cli import CommandError
from pipeline.replay import ReplayError
from pipeline.run.production import RunConfigError
from pipeline.settings import SettingsError
from pipeline.sources import ConfigError as SourceConfigError, SourceError, TerminalError
from pipeline.vendors._simulator import FaultSpecError


@pytest.mark.parametrize("kind", [SettingsError, SourceConfigError, RunConfigError, RulesError, CatalogError, FaultSpecError])
def test_every_configuration_error_is_one_config_error_exiting_2(kind):
    assert issubclass(kind, errors.ConfigError) and issubclass(kind, ValueError)
    assert kind.exit_code == errors.EXIT_CONFIG == 2


@pytest.mark.parametrize("kind", [SourceError, TerminalError, BrokerError, BackfillError, ReplayError, CommandError])
def test_the_other_errors_derive_from_the_root(kind):
    assert issubclass(kind, errors.JobstreamError)


def test_exit_codes_are_named_once():
    assert (errors.EXIT_FAILED, errors.EXIT_CONFIG, errors.EXIT_DATA, errors.EXIT_UNAVAILABLE,
            errors.EXIT_INTERNAL, errors.EXIT_SIGTERM) == (1, 2, 65, 69, 70, 143)


def test_run_config_error_keeps_one_line_per_problem():
    assert RunConfigError(["[run] a: unknown", "[zuora] b: unknown"]).lines == ["[run] a: unknown", "[zuora] b: unknown"]


def test_the_guard_prints_each_line_and_exits_with_the_errors_code():
    probe = Commands()

    @probe.command()
    def broken(code: int = 2) -> None:
        """Raise a two-line error."""
        error = errors.ConfigError("[section] first problem\nsecond problem")
        error.exit_code = code
        raise error

    result = CliRunner().invoke(probe, ["--code", "69"])
    assert result.exit_code == 69
    assert result.output.splitlines() == ["error: [section] first problem", "error: second problem"]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_usage_error_in_a_command_is_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["normalize", "--vendor", "sap", "-"], input="")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown vendor 'sap'")
    assert "Traceback" not in result.output


def test_run_config_problems_exit_2_with_brackets_kept(tmp_path):
    config = tmp_path / "j.toml"
    config.write_text('[run]\nroles = ["worker"]\nbogus = 1\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "error: [run] bogus: unknown setting" in result.output
