"""The one configuration resolver (pipeline/config/): flags over environment over file over
default, each value knowing where it came from, every problem in one error, and secrets
only from the environment or a file, never printed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from pipeline import errors
from pipeline.config import ConfigurationError, Layers, Origin, Redactor, Secret, resolve, specs_of
from pipeline.config.resolver import build
from pipeline.ops.logs import setup_logging
from pipeline.settings import Settings, SettingsError
from pipeline.sources import load_config
from pipeline.vendors.airflow.ingest import AirflowSettings
from pipeline.vendors.zuora.ingest import ZuoraSettings


@dataclass(frozen=True, slots=True)
class Probe:
    """A role's settings as the resolver builds them."""

    port: int = 1
    ratio: float = 0.5
    name: str = "probe"
    token: Secret | None = None
    token_file: Path | None = None


SPECS = specs_of(Probe, env_prefix="PROBE_", flags={"port": "--listen-port"}, secrets=("token",))


def layers(flags=None, env=None, table=None) -> Layers:
    return Layers(flags=flags or {}, env=env or {}, table=table or {}, section="[probe]", file="probe.toml")


@given(flag=st.none() | st.integers(0, 9), env=st.none() | st.integers(10, 19), file=st.none() | st.integers(20, 29))
def test_flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_the_default(flag, env, file):
    resolved = resolve(SPECS, layers({"port": flag}, {} if env is None else {"PROBE_PORT": str(env)},
                                     {} if file is None else {"port": file}))
    expected = next((value for value in (flag, env, file) if value is not None), None)
    assert resolved.values.get("port") == expected
    kind = next((k for k, v in (("flag", flag), ("env", env), ("file", file)) if v is not None), "default")
    assert resolved.where("port", expected).startswith({"flag": "--listen-port", "env": "PROBE_PORT=",
                                                         "file": "[probe] port = ", "default": "port = "}[kind])
    assert build(Probe, SPECS, layers({"port": flag}, {} if env is None else {"PROBE_PORT": str(env)},
                                      {} if file is None else {"port": file})).port == (1 if expected is None else expected)


def test_every_value_keeps_its_origin_as_its_source_wrote_it():
    resolved = resolve(SPECS, layers({"port": 7}, {"PROBE_RATIO": "0.25"}, {"name": "from-file"}))
    assert resolved.origins["port"] == Origin("flag", "--listen-port")
    assert resolved.where("port", 7) == "--listen-port 7"
    assert resolved.where("ratio", 0.25) == "PROBE_RATIO=0.25"
    assert resolved.where("name", "from-file") == "[probe] name = 'from-file' in probe.toml"
    assert resolved.where("token_file", None) == "token_file = None (default)"


def test_an_empty_variable_counts_as_unset():
    assert resolve(SPECS, layers(env={"PROBE_PORT": ""}, table={"port": 3})).values["port"] == 3


def test_every_problem_of_every_layer_is_one_line_of_one_configuration_error():
    with pytest.raises(ConfigurationError) as caught:
        resolve(SPECS, layers(flags={"token": "on-the-command-line"}, env={"PROBE_PORT": "many"},
                              table={"ratio": "half", "colour": "blue", "token": "in-the-file", "name": ["a"]}))
    assert isinstance(caught.value, errors.ConfigError) and caught.value.exit_code == errors.EXIT_CONFIG
    assert sorted(caught.value.lines) == sorted([
        "[probe] colour: unknown setting",
        "[probe] token: secrets are not read from the config file; set PROBE_TOKEN or token_file",
        "--token: secrets are not read from a command-line flag; set PROBE_TOKEN or token_file",
        "PROBE_PORT='many' is not a valid int",
        "[probe] ratio = 'half' in probe.toml: not a valid float",
        "[probe] name: must be a single value",
    ])
    assert "on-the-command-line" not in str(caught.value) and "in-the-file" not in str(caught.value)


def test_a_secret_comes_from_its_variable_or_from_the_file_a_file_setting_names(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-the-file\n")
    assert resolve(SPECS, layers(env={"PROBE_TOKEN": "from-the-env"})).values["token"] == Secret("from-the-env")
    for given_file in ({"table": {"token_file": str(secret_file)}}, {"env": {"PROBE_TOKEN_FILE": str(secret_file)}},
                       {"flags": {"token_file": secret_file}}):
        resolved = resolve(SPECS, layers(**given_file))
        assert resolved.values["token"].reveal() == "from-the-file", given_file
    with pytest.raises(ConfigurationError, match=r"^PROBE_TOKEN_FILE='/no/such/token': cannot be read"):
        resolve(SPECS, layers(env={"PROBE_TOKEN_FILE": "/no/such/token"}))


@given(st.text(min_size=4).filter(lambda text: "*" not in text))
def test_a_secret_is_hidden_in_repr_and_str(value):
    secret = Secret(value)
    assert repr(secret) == "Secret('***')" and str(secret) == "***" and f"{secret}" == "***"
    assert repr(Probe(token=secret)) == repr(Probe(token=Secret("another value")))
    assert Redactor([secret])(f"said {value} once") == "said *** once"


def test_every_secret_the_configuration_gave_is_redacted_from_every_log_line(capsys):
    resolve(SPECS, layers(env={"PROBE_TOKEN": "s3cret-logged-by-mistake"}))
    logger = setup_logging(logger="pipeline.test_config", fmt="%(message)s")
    logger.warning("the vendor answered: bad token s3cret-logged-by-mistake")
    assert capsys.readouterr().err.strip().endswith("the vendor answered: bad token ***")


def test_the_pipeline_settings_refuse_a_secret_flag_and_keep_secrets_out_of_their_repr():
    settings = Settings.from_env({"JOBSTREAM_TRUENAS_API_KEY": "1-truenas-api-key", "JOBSTREAM_SASL_PASSWORD": "sasl-pw-1"})
    assert isinstance(settings.truenas_api_key, Secret) and settings.truenas_key() == "1-truenas-api-key"
    assert "1-truenas-api-key" not in repr(settings) and "sasl-pw-1" not in repr(settings)
    with pytest.raises(SettingsError, match=r"^--truenas-api-key: secrets are not read from a command-line flag"):
        settings.with_overrides(truenas_api_key="typed-at-a-prompt")
    assert settings.with_overrides(quack_port=9000).where("quack_port", 9000) == "--quack-port 9000"


def test_a_pull_ingestors_settings_come_from_the_same_resolver(tmp_path):
    config = tmp_path / "z.toml"
    config.write_text('[zuora]\nbase_url = "https://t.revpro.cloud"\nuser = "u"\nrole = "r"\nclientname = "c"\n'
                      'poll_interval_s = "often"\ntoken_ttl_s = 60\n')
    with pytest.raises(ConfigurationError) as caught:
        load_config(ZuoraSettings, config, "zuora", env={"JOBSTREAM_ZUORA_TIMEOUT_S": "never"},
                    flags={"password": "typed"})
    assert sorted(caught.value.lines) == sorted([
        f"[zuora] poll_interval_s = 'often' in {config}: not a valid float",
        "JOBSTREAM_ZUORA_TIMEOUT_S='never' is not a valid float",
        "--password: secrets are not read from a command-line flag; set JOBSTREAM_ZUORA_PASSWORD or password_file",
    ])
    settings = load_config(ZuoraSettings, None, "zuora", env={
        "JOBSTREAM_ZUORA_BASE_URL": "https://t.revpro.cloud", "JOBSTREAM_ZUORA_USER": "u", "JOBSTREAM_ZUORA_ROLE": "r",
        "JOBSTREAM_ZUORA_CLIENTNAME": "c", "JOBSTREAM_ZUORA_PASSWORD": "revpro-password"})
    assert settings.password == Secret("revpro-password") and "revpro-password" not in repr(settings)


def test_a_pull_ingestors_checks_name_each_value_as_its_source_wrote_it(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('[airflow]\nbase_url = "ftp://airflow"\nuser = "u"\nsource = "s"\npage_size = 5000\n')
    with pytest.raises(ConfigurationError) as caught:
        load_config(AirflowSettings, config, "airflow", env={"JOBSTREAM_AIRFLOW_PASSWORD": "airflow-pw"})
    assert caught.value.lines == [
        "[airflow] base_url must be an http(s) URL, e.g. https://airflow.example.com",
        "[airflow] page_size must be 1..1000 (Airflow caps limit at maximum_page_limit, 100 by default)",
    ]
    with pytest.raises(ConfigurationError) as caught:
        load_config(AirflowSettings, config, "airflow", env={"JOBSTREAM_AIRFLOW_PASSWORD": "airflow-pw",
                                                             "JOBSTREAM_AIRFLOW_BASE_URL": "airflow.example.com"},
                    flags={"page_size": 2000})
    assert caught.value.lines == [
        "JOBSTREAM_AIRFLOW_BASE_URL='airflow.example.com' must be an http(s) URL, e.g. https://airflow.example.com",
        "--page-size 2000 must be 1..1000 (Airflow caps limit at maximum_page_limit, 100 by default)",
    ]
