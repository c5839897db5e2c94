"""Per-role settings (pipeline/config/roles.py): every role reads only its own fields, and
every field of the compatibility view belongs to some role."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from pipeline.config.roles import OWN_METHODS, ROLES, fields_of, for_role
from pipeline.settings import Settings

PIPELINE = Path(__file__).parent.parent / "pipeline"
ROLE_MODULES = {
    "worker": ["stream/*.py"],
    "sink": ["sink/*.py"],
    "alerter": ["alerts/*.py"],
    "qlik_cloud": ["vendors/qlik_cloud/*.py"],
    "truenas": ["vendors/truenas/*.py"],
    "pull_ingestor": ["ops/*.py", "ingest_cli.py"],
}


def settings_read(patterns: list[str]) -> set[str]:
    """Attributes read from a name ``settings``/``operations`` or an attribute ``.settings``."""
    read = set()
    for pattern in patterns:
        for path in PIPELINE.glob(pattern):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute):
                    owner = node.value
                    if (isinstance(owner, ast.Name) and owner.id in ("settings", "operations")) or (
                            isinstance(owner, ast.Attribute) and owner.attr in ("settings", "_settings")):
                        read.add(node.attr)
    return read


@pytest.mark.parametrize("role", sorted(ROLE_MODULES))
def test_each_roles_modules_read_only_the_fields_of_its_settings_object(role):
    allowed = {*fields_of(role), *OWN_METHODS.get(role, ()), "where", "kafka_security"}
    # The sink's "cancel" and the ingestors' "redactor" are other objects named settings/operations.
    unexpected = settings_read(ROLE_MODULES[role]) - allowed - {"cancel", "redactor"}
    assert not unexpected, f"the {role} reads {sorted(unexpected)}, which its settings object does not have"


def test_every_setting_belongs_to_a_role_and_no_role_sees_them_all():
    every = {f.name for f in dataclasses.fields(Settings)} - {"origins"}
    assert every == {name for role in ROLES for name in fields_of(role)}
    assert all(len(fields_of(role)) < 0.6 * len(every) for role in ROLES), {role: len(fields_of(role)) for role in ROLES}


def test_a_roles_object_keeps_the_values_their_origins_and_the_methods_it_needs():
    settings = Settings.from_env({"JOBSTREAM_QUACK_PORT": "9000", "JOBSTREAM_STALE_AFTER_ZUORA": "60"})
    sink = for_role(settings, "sink")
    assert sink.quack_port == 9000 and sink.where("quack_port", 9000) == "JOBSTREAM_QUACK_PORT=9000"
    assert not hasattr(sink, "batch_max") and not hasattr(sink, "alert_group")
    worker = for_role(settings, "worker")
    assert worker.stale_after("zuora").total_seconds() == 60 and worker.kafka_security().describe() == "PLAINTEXT"
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.batch_max = 1  # type: ignore[misc]
