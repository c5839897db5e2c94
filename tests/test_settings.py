from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.settings import Settings, SettingsError


def test_defaults_and_environment():
    settings = Settings.from_env({
        "JOBSTREAM_BOOTSTRAP": "kafka:9092", "JOBSTREAM_STALE_AFTER_ZUORA": "30",
        "JOBSTREAM_TANSU": "yes", "JOBSTREAM_PARTITIONS": "2", "JOBSTREAM_DATADIR": "/tmp/x",
        "JOBSTREAM_TZ_ZUORA": "America/Los_Angeles",
    })
    assert settings.bootstrap == "kafka:9092"
    assert settings.tansu is True and settings.partitions == 2
    assert settings.datadir == Path("/tmp/x")
    assert settings.stale_after("zuora") == timedelta(seconds=30)
    assert settings.stale_after("truenas") == timedelta(seconds=240)
    assert str(settings.tz("zuora")) == "America/Los_Angeles"
    assert str(settings.tz("truenas")) == "UTC"


def test_flags_override_the_environment_and_none_means_not_given():
    settings = Settings.from_env({"JOBSTREAM_BOOTSTRAP": "a:1"}).with_overrides(bootstrap="b:2", store=None)
    assert settings.bootstrap == "b:2" and settings.store == "rocksdb://"


def test_stale_after_vendor_variable_then_global_then_vendor_default():
    defaults = {"zuora": 300.0, "truenas": 60.0}
    plain = Settings(stale_after_defaults=defaults)
    assert plain.stale_after("zuora") == timedelta(seconds=300)
    assert plain.stale_after("informatica") == timedelta(seconds=240)
    overall = Settings(stale_after_s=90, stale_after_defaults=defaults)
    assert overall.stale_after("zuora") == timedelta(seconds=90)
    own = Settings(stale_after_s=90, stale_after_by_vendor={"zuora": 10}, stale_after_defaults=defaults)
    assert own.stale_after("zuora") == timedelta(seconds=10)


@pytest.mark.parametrize(
    "value, address",
    [("localhost", "localhost:9092"), ("a:1, b", "a:1,b:9092"), ("[::1]", "[::1]:9092"), ("kafka://k:9093", "k:9093")],
)
def test_bootstrap_without_a_port_means_9092(value, address):
    assert Settings.from_env({"JOBSTREAM_BOOTSTRAP": value}).bootstrap == address
    assert Settings().with_overrides(bootstrap=value).bootstrap == address


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JOBSTREAM_PARTITIONS": "many"}, "JOBSTREAM_PARTITIONS='many' is not a valid"),
        ({"JOBSTREAM_STALE_AFTER_S": "-1"}, "must be greater than 0"),
        ({"JOBSTREAM_TANSU": "maybe"}, "JOBSTREAM_TANSU"),
        ({"JOBSTREAM_TZ_ZUORA": "Mars/Olympus"}, "not a time zone"),
        ({"JOBSTREAM_STALE_AFTER_TRUENAS": "soon"}, "STALE_AFTER_TRUENAS"),
        ({"JOBSTREAM_STALE_AFTER_TRUENAS": "0"}, "STALE_AFTER_TRUENAS=0.0: .*greater than 0"),
        ({"JOBSTREAM_BATCH_WITHIN_S": "nan"}, "JOBSTREAM_BATCH_WITHIN_S=nan: .*finite"),
        ({"JOBSTREAM_STALE_AFTER_S": "nan"}, "JOBSTREAM_STALE_AFTER_S=nan: .*finite"),
        ({"JOBSTREAM_RUN_RETENTION_S": "1e300"}, "JOBSTREAM_RUN_RETENTION_S=1e\\+300: .*at most"),
        ({"JOBSTREAM_SESSION_TIMEOUT_S": "inf"}, "JOBSTREAM_SESSION_TIMEOUT_S=inf: .*finite"),
        ({"JOBSTREAM_SESSION_TIMEOUT_S": "0"}, "JOBSTREAM_SESSION_TIMEOUT_S=0.0: .*at least 1"),
        ({"JOBSTREAM_STORE": "bogus://"}, "JOBSTREAM_STORE='bogus://': unknown table store"),
        ({"JOBSTREAM_BOOTSTRAP": "host:port"}, "is not HOST"),
        ({"JOBSTREAM_SEND_TIMEOUT_S": "0"}, "JOBSTREAM_SEND_TIMEOUT_S"),
        ({"JOBSTREAM_FETCH_WAIT_MS": "0"}, "JOBSTREAM_FETCH_WAIT_MS=0: .*at least 1"),
        ({"JOBSTREAM_SINK_FETCH_WAIT_MS": "0"}, "JOBSTREAM_SINK_FETCH_WAIT_MS=0: .*at least 1"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "name, value",
    [("stale_after_s", 0.0), ("batch_within_s", float("nan")), ("store", "bogus://"), ("session_timeout_s", 0.0)],
)
def test_flags_follow_the_same_rules_as_the_environment(name, value):
    env = {f"JOBSTREAM_{name.upper()}": str(value)}
    with pytest.raises(SettingsError) as from_env:
        Settings.from_env(env)
    with pytest.raises(SettingsError) as from_flag:
        Settings().with_overrides(**{name: value})
    flag = {"stale_after_s": "--stale-after"}.get(name, "--" + name.replace("_", "-"))
    assert str(from_flag.value) == str(from_env.value).replace(f"JOBSTREAM_{name.upper()}=", flag + " "), "the flag is named"


def test_a_config_file_table_is_typed_and_the_environment_wins():
    table = {"store": "memory://", "tansu": True, "metrics_port": 9100, "broker_lost_exit_s": 30,
             "stale_after_by_vendor": {"zuora": 600}, "datadir": "/var/lib/w"}
    settings = Settings.from_file_and_env(table, {"JOBSTREAM_METRICS_PORT": "9200", "JOBSTREAM_STALE_AFTER_ZUORA": "60"})
    assert settings.store == "memory://" and settings.tansu is True and settings.datadir == Path("/var/lib/w")
    assert settings.metrics_port == 9200 and settings.broker_lost_exit_s == 30.0
    assert settings.stale_after("zuora").total_seconds() == 60


@pytest.mark.parametrize(
    "table, message",
    [
        ({"alert_urls": "slack://token"}, r"\[pipeline\] alert_urls: secrets are not read from the config file; set JOBSTREAM_ALERT_URLS or alert_urls_file$"),
        ({"truenas_api_key": "1-key"}, "or truenas_api_key_file"),
        ({"metrics_port": "nine"}, r"metrics_port = 'nine': not a valid int"),
        ({"metrics_port": 70000}, r"\[pipeline\] metrics_port = 70000: must be at most 65535"),
        ({"broker_lost_exit_s": -1}, r"\[pipeline\] broker_lost_exit_s = -1.0: must be at least 0"),
        ({"colour": "blue"}, r"\[pipeline\] colour: unknown setting"),
        ({"vendor_tz": {"acme": "UTC"}}, "vendor_tz: must be a table of vendor"),
    ],
)
def test_config_file_problems_name_the_setting(table, message):
    with pytest.raises(SettingsError, match=message) as error:
        Settings.from_file_and_env(table, {})
    assert "slack://token" not in str(error.value) and "1-key" not in str(error.value)


def test_every_problem_of_a_config_table_is_its_own_line():
    with pytest.raises(SettingsError) as error:
        Settings.from_file_and_env({"qlik_webhook_secret": "abcdef", "colour": 1, "partitions": "x"}, {})
    assert len(str(error.value).splitlines()) == 3


def test_every_problem_is_reported_at_once_and_names_where_the_value_came_from():
    """Five bad values were reported two, then one, ...; and a file's value was named as
    its environment variable."""
    table = {"quack_port": 99999, "partitions": 0, "batch_max": 0, "store": "s3://", "sink_threads": 0}
    env = {"JOBSTREAM_SESSION_TIMEOUT_S": "0", "JOBSTREAM_STALE_AFTER_S": "soon"}
    with pytest.raises(SettingsError) as error:
        Settings.from_file_and_env(table, env, file="my.toml")
    lines = str(error.value).splitlines()
    assert "[pipeline] quack_port = 99999 in my.toml: must be at most 65535" in lines
    assert "[pipeline] store = 's3://' in my.toml: unknown table store; use one of rocksdb://, memory://" in lines
    assert "JOBSTREAM_SESSION_TIMEOUT_S=0.0: must be at least 1" in lines
    assert "JOBSTREAM_STALE_AFTER_S='soon' is not a valid float | None" in lines
    assert len(lines) == 7, lines
    with pytest.raises(SettingsError, match=r"^--quack-port 99999: must be at most 65535$"):
        Settings().with_overrides(quack_port=99999)
