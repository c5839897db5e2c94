"""The settings each role reads, and nothing else.

``pipeline.settings.Settings`` is resolved whole (flags over environment over file, one
error listing every problem) and stays as the compatibility view the command line builds;
each role's object is its projection: only the Kafka connection, the operations fields
and the role's own fields, with the methods that read them and the origins of its values.
A role handed its own object cannot read another role's setting (an AttributeError in its
tests), and ``tests/test_config_roles.py`` checks every module of a role reads only its fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cache
from typing import Any

from pipeline.settings import Settings

CONNECTION = (
    "bootstrap", "security_protocol", "ssl_ca_file", "ssl_cert_file", "ssl_key_file", "sasl_mechanism",
    "sasl_username", "sasl_password", "sasl_password_file", "kafka_idempotence",
)
"""How every role reaches Kafka (``kafka_security`` reads them)."""
OPERATIONS = ("metrics_host", "metrics_port", "stall_after_s", "broker_lost_exit_s")
"""What every long-running role serves and watches (``pipeline.ops``)."""
_STALE = ("stale_after_s", "stale_after_by_vendor", "stale_after_defaults")

OWN_FIELDS: Mapping[str, tuple[str, ...]] = {
    "worker": (
        "app_id", "store", "datadir", "partitions", *_STALE, "run_retention_s", "stale_retention_s", "vendor_tz",
        "tansu", "session_timeout_s", "standby_replicas", "batch_max", "batch_within_s", "fetch_wait_ms",
        "entry_cache_bytes", "send_timeout_s", "max_clock_skew_s", "max_finished_runs", "max_runs_per_job", "evicted_memory",
        "forget_after_s", "max_entry_bytes", "max_record_bytes", "replication_factor", "min_insync_replicas",
    ),
    "sink": (
        "db_path", "quack_host", "quack_port", "quack_token_file", "pg_host", "pg_port", "pg_password_file",
        "pg_tls_cert", "pg_tls_key", "live_query_timeout_s", "sink_batch_max", "sink_fetch_wait_ms",
        "sink_commit_interval_ms", "sink_threads", "session_timeout_s",
    ),
    "alerter": (
        "alert_group", "alert_urls", "alert_urls_file", "alert_delivery_attempts", "alert_retry_base_s",
        "alert_context_wait_s", "alert_digest_window_s", "alert_max_age_s", "session_timeout_s", *_STALE,
    ),
    "qlik_cloud": (
        "qlik_webhook_secret", "qlik_webhook_secret_file", "webhook_max_body_bytes", "webhook_tls_cert",
        "webhook_tls_key", "heartbeat_every_s", "kafka_ack_timeout_s",
    ),
    "truenas": (
        "truenas_username", "truenas_api_key", "truenas_api_key_file", "truenas_ca_file", "heartbeat_every_s",
        "kafka_ack_timeout_s",
    ),
    "pull_ingestor": (),  # its vendor's own settings class, from [<vendor>] (pipeline.sources.load_config)
    "supervisor": ("run_state_file",),
}
"""Each role's own fields, beside ``CONNECTION`` and ``OPERATIONS``."""

OWN_METHODS: Mapping[str, tuple[str, ...]] = {
    "worker": ("stale_after", "tz", "run_retention", "stale_retention", "max_clock_skew", "forget_after"),
    "alerter": ("stale_after", "alert_url_text"),
    "qlik_cloud": ("qlik_secret",),
    "truenas": ("truenas_key",),
}
_SHARED_METHODS = ("where", "kafka_security")
ROLES = tuple(OWN_FIELDS)


def fields_of(role: str) -> tuple[str, ...]:
    """Every field the role's settings object has."""
    own = OWN_FIELDS[role]
    return tuple(dict.fromkeys((*CONNECTION, *OPERATIONS, *own)))


@cache
def role_class(role: str) -> type:
    """The frozen settings class of ``role`` (``WorkerSettings``, ``SinkSettings`` ...)."""
    declared = {f.name: f for f in dataclasses.fields(Settings)}
    specs: list[Any] = []
    for name in fields_of(role):
        f = declared[name]
        default = ({"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING
                   else {"default": f.default})
        specs.append((name, f.type, dataclasses.field(repr=f.repr, **default)))
    specs.append(("origins", "Mapping[str, str]", dataclasses.field(default_factory=dict, repr=False, compare=False)))
    namespace = {name: Settings.__dict__[name] for name in (*_SHARED_METHODS, *OWN_METHODS.get(role, ()))}
    namespace["__doc__"] = f"The settings the {role.replace('_', ' ')} reads (pipeline.config.roles)."
    title = "".join(part.title() for part in role.split("_")) + "Settings"
    return dataclasses.make_dataclass(title, specs, namespace=namespace, frozen=True, slots=True)


def for_role(settings: Settings, role: str) -> Any:
    """``settings`` seen as ``role`` sees them: its fields only, their origins kept."""
    names = fields_of(role)
    return role_class(role)(**{name: getattr(settings, name) for name in names},
                            origins={k: v for k, v in settings.origins.items() if k in names or k.startswith("stale_after_")})
