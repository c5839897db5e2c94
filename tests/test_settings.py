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


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JOBSTREAM_PARTITIONS": "many"}, "JOBSTREAM_PARTITIONS='many' is not a valid"),
        ({"JOBSTREAM_STALE_AFTER_S": "-1"}, "must not be negative"),
        ({"JOBSTREAM_TANSU": "maybe"}, "JOBSTREAM_TANSU"),
        ({"JOBSTREAM_TZ_ZUORA": "Mars/Olympus"}, "not a time zone"),
        ({"JOBSTREAM_STALE_AFTER_TRUENAS": "soon"}, "STALE_AFTER_TRUENAS"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
