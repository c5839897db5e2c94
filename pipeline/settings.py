"""All configuration in one typed object, read from ``JOBSTREAM_*`` environment variables
and overridden by command-line flags (flags win).

Every value is checked in one place, ``Settings.__post_init__``, whichever way it came
in (environment, flag, or code): finite, in range, a store scheme the worker knows. A bad
value is a ``SettingsError`` naming the variable, never a process that starts and then
misbehaves (a NaN batch window, a zero session timeout that loops forever).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.config.resolver import ENV_PREFIX, ConfigurationError, Layers, Origin, convert, resolve, specs_of
from pipeline.config.secret import Secret, as_secrets, given_secret, reveal
from pipeline.kafka.security import MECHANISMS, PROTOCOLS, KafkaSecurity
from pipeline.vendors import VENDOR_NAMES

DEFAULT_KAFKA_PORT = 9092
STORE_SCHEMES = ("rocksdb://", "memory://")
_YEAR_S = 365 * 86400.0
SECRET_FIELDS = ("alert_urls", "qlik_webhook_secret", "truenas_api_key", "sasl_password")
"""Settings only the environment (or a ``*_file``) may give: never a config file, never a repr."""


SettingsError = ConfigurationError
"""Settings the pipeline cannot use: the one configuration error of ``pipeline.config``."""


FLAG_NAMES = {
    "stale_after_s": "--stale-after", "send_timeout_s": "--send-timeout", "run_state_file": "--state-file",
    "qlik_webhook_secret_file": "--secret-file", "webhook_max_body_bytes": "--max-body", "webhook_tls_cert": "--tls-cert",
    "webhook_tls_key": "--tls-key", "truenas_username": "--username", "truenas_api_key_file": "--api-key-file",
    "truenas_ca_file": "--ca-file", "db_path": "--db", "alert_group": "--group",
}
"""Flags whose name is not ``--`` + the setting's name with dashes."""
_NOT_FLAGS = ("origins", "stale_after_defaults", "vendor_tz", "stale_after_by_vendor")
_PER_VENDOR = ("stale_after_by_vendor", "vendor_tz")


@dataclass(frozen=True, slots=True)
class _Range:
    """Allowed values of a number setting: finite, ``low`` (excluded when ``open_low``)
    up to ``high``."""

    low: float
    high: float
    open_low: bool = False

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if value < self.low or (self.open_low and value == self.low):
            return f"must be {'greater than' if self.open_low else 'at least'} {self.low:g}"
        if value > self.high:
            return f"must be at most {self.high:g}"
        return None


_RANGES: dict[str, _Range] = {
    "partitions": _Range(1, 10_000),
    "stale_after_s": _Range(0, 10 * _YEAR_S, open_low=True),
    "run_retention_s": _Range(0, 100 * _YEAR_S),
    "stale_retention_s": _Range(0, 100 * _YEAR_S),
    "session_timeout_s": _Range(1, 1800),
    "standby_replicas": _Range(0, 100),
    "batch_max": _Range(1, 1_000_000),
    "batch_within_s": _Range(0, 60, open_low=True),
    "fetch_wait_ms": _Range(1, 60_000),  # 0 would poll the broker without a pause
    "entry_cache_bytes": _Range(0, 100 * 1024**3),
    "send_timeout_s": _Range(0, 600, open_low=True),
    "alert_delivery_attempts": _Range(1, 100),
    "alert_retry_base_s": _Range(0, 600),
    "alert_context_wait_s": _Range(0, 600),
    "alert_digest_window_s": _Range(0, 600),
    "alert_max_age_s": _Range(0, 100 * _YEAR_S, open_low=True),
    "max_clock_skew_s": _Range(0, 10 * _YEAR_S),
    "max_finished_runs": _Range(0, 100_000),
    "max_runs_per_job": _Range(1, 1_000_000),
    "evicted_memory": _Range(0, 1_000_000),
    "forget_after_s": _Range(0, 100 * _YEAR_S),
    "max_entry_bytes": _Range(1024, 100_000_000),
    "max_record_bytes": _Range(1024, 100_000_000),
    "quack_port": _Range(0, 65535),
    "pg_port": _Range(0, 65535),
    "live_query_timeout_s": _Range(0, 86400, open_low=True),
    "sink_batch_max": _Range(1, 1_000_000),
    "sink_fetch_wait_ms": _Range(1, 60_000),  # as fetch_wait_ms: 0 would poll the broker without a pause
    "sink_commit_interval_ms": _Range(0, 60_000),
    "sink_threads": _Range(1, 1024),

    "webhook_max_body_bytes": _Range(1024, 100_000_000),
    "heartbeat_every_s": _Range(0, 3600, open_low=True),
    "kafka_ack_timeout_s": _Range(0, 600, open_low=True),
    "metrics_port": _Range(0, 65535),
    "broker_lost_exit_s": _Range(0, 86400),
    "stall_after_s": _Range(0, 86400, open_low=True),
    "replication_factor": _Range(1, 100),
    "min_insync_replicas": _Range(1, 100),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What every process reads. Defaults suit a local run against ``localhost:9092``.

    ``tansu`` turns on the workarounds for the embedded broker's ListOffsets bug
    (docs/design.md, "Tansu"): never needed, and never turned on, against real Kafka.
    ``stale_after_s`` None means each vendor's own default (``stale_after_defaults``,
    filled from the vendor registry by the command line), else the lifecycle's 240 s.
    """

    bootstrap: str = f"localhost:{DEFAULT_KAFKA_PORT}"
    app_id: str = "jobstream"
    store: str = "rocksdb://"
    datadir: Path = Path("data/worker")
    partitions: int | None = None
    stale_after_s: float | None = None
    stale_after_by_vendor: Mapping[str, float] = field(default_factory=dict)
    stale_after_defaults: Mapping[str, float] = field(default_factory=dict)
    run_retention_s: float = 3600.0
    stale_retention_s: float = 7 * 86400.0
    vendor_tz: Mapping[str, str] = field(default_factory=dict)
    tansu: bool = False
    session_timeout_s: float = 8.0
    standby_replicas: int = 1
    # The worker's batches: at most batch_max messages, or what came within batch_within_s.
    # Each batch costs three Kafka round trips (outputs, state, then the Tansu barrier);
    # 2,000 within 0.2 s halved them against 1,000 within 0.05 s (batches of ~250) and
    # added at most 0.2 s of latency. batch_max only counts when records wait (a backlog,
    # a restart): there 5,000 gave the worker 1.14x the raw records/s of 2,000 (median of
    # 9 interleaved pairs, 53,000 raw records each; 10,000 no better, and noisier). Below
    # 25,000 records/s a batch closes at batch_within_s first, so latency is unchanged.
    batch_max: int = 5000
    batch_within_s: float = 0.2
    # How long the worker's fetch may wait at the broker for records (Faust hard-codes
    # 1,500 ms). Tansu answers a waiting fetch after a share of its wait, not when records
    # arrive, so that wait was most of the worker's latency (docs/design.md, "Tansu").
    fetch_wait_ms: int = 100
    # The table entries the worker keeps decoded in memory, bounded by their encoded size
    # (their Python objects take 2.5 to 4 times as much: 40-67 MB of the worker's RSS for
    # the default 16 MB, filling 1,000,000 runs): a bound in entries let a table of
    # 1,000,000 runs take over 1 GB.
    entry_cache_bytes: int = 16 * 1024**2
    send_timeout_s: float = 30.0
    # The alerter (pipeline/alerts/): its consumer group, Apprise URLs for rules that
    # name none (comma or space separated; may hold secrets: never logged), delivery
    # retries (attempts, first delay doubling), how long a transition waits for its run
    # snapshot, how long a batch that fired waits for more (one digest, not a flood), and
    # the age past which an alert is recorded but not sent (a first start on a week of
    # history, a replay: no flood of old news).
    alert_group: str = "jobstream-alerts"
    alert_urls: Secret | None = None
    alert_urls_file: Path | None = None  # the URLs in a file (compose secrets), when alert_urls is empty
    alert_delivery_attempts: int = 4
    alert_retry_base_s: float = 0.5
    alert_context_wait_s: float = 2.0
    alert_digest_window_s: float = 1.0
    alert_max_age_s: float = 6 * 3600.0

    # The DuckDB sink (pipeline/sink/) and `pipeline sql`. quack_port 0 turns live SQL off;
    # the token file defaults to <db_path>.quack-token (the token itself comes from
    # JOBSTREAM_QUACK_TOKEN or is generated: it is never a setting, so never printed).
    db_path: Path = Path("data/jobstream.duckdb")
    quack_host: str = "localhost"
    quack_port: int = 9494
    quack_token_file: Path | None = None
    # The same database over the PostgreSQL wire (pipeline/sink/pgwire.py): off at port 0;
    # the password is the Quack token unless pg_password_file names one; TLS when a
    # certificate (and key) is given. Both endpoints stop a query after live_query_timeout_s.
    pg_host: str = "localhost"
    pg_port: int = 0
    pg_password_file: Path | None = None
    pg_tls_cert: Path | None = None
    pg_tls_key: Path | None = None
    live_query_timeout_s: float = 300.0
    sink_batch_max: int = 50_000
    sink_fetch_wait_ms: int = 100
    # Least time between the starts of two commits: a commit costs ~30 ms of CPU whatever
    # its size, so a trickle committed as it came cost a third of a core (scripts/bench_sink.py).
    sink_commit_interval_ms: int = 250
    sink_threads: int | None = None  # DuckDB's threads; None: one core less than the machine has

    # Push ingestors (Qlik Cloud webhooks, TrueNAS websocket). Secrets come from the
    # environment or from a file, never from a flag, and never appear in a repr.
    qlik_webhook_secret: Secret | None = None
    qlik_webhook_secret_file: Path | None = None
    webhook_max_body_bytes: int = 262_144
    webhook_tls_cert: Path | None = None
    webhook_tls_key: Path | None = None
    truenas_username: str = "root"
    truenas_api_key: Secret | None = None
    truenas_api_key_file: Path | None = None
    truenas_ca_file: Path | None = None
    heartbeat_every_s: float = 5.0
    kafka_ack_timeout_s: float = 10.0

    # Stream core bounds (issues 23 and 25): event-time trust and the size of state.
    max_clock_skew_s: float = 300.0
    max_finished_runs: int = 8
    max_runs_per_job: int = 100
    evicted_memory: int = 256
    forget_after_s: float = 7 * 86400.0
    max_entry_bytes: int = 64 * 1024
    max_record_bytes: int = 1_000_000

    # Operations (pipeline/ops/): every long-running role serves /metrics and
    # /healthz on metrics_host:metrics_port (0: not served); a partition with lag that does
    # not move for stall_after_s makes /healthz 503; a consumer role (worker, sink, alerter)
    # that cannot reach any broker for broker_lost_exit_s ends with one line and exit 69,
    # so its supervisor restarts it (0: never; Kafka clients would retry forever).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    stall_after_s: float = 60.0
    broker_lost_exit_s: float = 120.0
    # `pipeline run` writes each role's pid, metrics port and restarts here; `pipeline
    # status` reads it.
    run_state_file: Path = Path("data/run/state.json")
    # Kafka security for every client, aiokafka and Faust (pipeline/kafka/security.py);
    # the SASL password only from JOBSTREAM_SASL_PASSWORD or sasl_password_file.
    security_protocol: str = "PLAINTEXT"
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    sasl_password_file: Path | None = None
    # Every topic's replication (topics apply, the worker's changelog): None keeps the
    # catalog's replication_factor / min_insync_replicas.
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    # Idempotent producers (a retried send is not written twice): on, off, or unset:
    # where the broker serves it (pipeline/kafka/clients.py asks it once).
    kafka_idempotence: bool | None = None
    # Where each given value came from, for messages: a template with {value} such as
    # "JOBSTREAM_QUACK_PORT={value}", "--quack-port {value}" or
    # "[pipeline] quack_port = {value} in my.toml". Unnamed: the variable.
    origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        as_secrets(self, *SECRET_FIELDS)
        problems = []
        try:
            object.__setattr__(self, "bootstrap", normalize_bootstrap(self.bootstrap, self.origins.get("bootstrap")))
        except SettingsError as exc:
            problems.append(str(exc))
        if not self.app_id.strip():
            problems.append(f"{self.where('app_id', self.app_id)}: must not be empty")
        if self.store not in STORE_SCHEMES:
            problems.append(f"{self.where('store', self.store)}: unknown table store; use one of {', '.join(STORE_SCHEMES)}")
        for name, allowed in _RANGES.items():
            value = getattr(self, name)
            problem = None if value is None else allowed.problem(value)
            if problem:
                problems.append(f"{self.where(name, value)}: {problem}")
        problems += [f"{self.where(name, getattr(self, name))}: use one of {', '.join(allowed)}"
                     for name, allowed in (("security_protocol", PROTOCOLS), ("sasl_mechanism", MECHANISMS))
                     if getattr(self, name) not in allowed]
        for values in (self.stale_after_by_vendor, self.stale_after_defaults):
            for vendor, value in values.items():
                problem = _RANGES["stale_after_s"].problem(value)
                if problem:
                    problems.append(f"{self.where(f'stale_after_{vendor}', value)}: {problem}")
        if problems:
            raise SettingsError("\n".join(problems))

    def where(self, name: str, value: object) -> str:
        """The value as its source wrote it: ``JOBSTREAM_X=v``, ``--x v`` or the file's line."""
        origin = self.origins.get(name) or f"{ENV_PREFIX}{name.upper()}={{value}}"
        return origin.replace("{value}", repr(value))

    def stale_after(self, vendor: str) -> timedelta:
        """The vendor's own variable, else the global one, else the vendor's default, else
        the lifecycle's (``lifecycle.DEFAULT_STALE_AFTER``, the one definition; imported
        here, not at the top, so this module stays cheap to import)."""
        seconds = self.stale_after_by_vendor.get(vendor)
        if seconds is None:
            seconds = self.stale_after_s
        if seconds is None:
            seconds = self.stale_after_defaults.get(vendor)
        if seconds is None:
            from pipeline.lifecycle import DEFAULT_STALE_AFTER

            return DEFAULT_STALE_AFTER
        return timedelta(seconds=seconds)

    def tz(self, vendor: str) -> tzinfo:
        name = self.vendor_tz.get(vendor, "UTC")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise SettingsError(f"{ENV_PREFIX}TZ_{vendor.upper()}={name!r} is not a time zone") from None

    @property
    def run_retention(self) -> timedelta:
        """Finished runs leave the worker's table this long (event time) after their
        last event; their history lives downstream."""
        return timedelta(seconds=self.run_retention_s)

    @property
    def stale_retention(self) -> timedelta:
        """STALE runs silent this long leave too: a run that never resumes must not
        keep state forever (its last record, STALE, is already downstream)."""
        return timedelta(seconds=self.stale_retention_s)

    def alert_url_text(self) -> str:
        """JOBSTREAM_ALERT_URLS, else the contents of the file JOBSTREAM_ALERT_URLS_FILE names."""
        if self.alert_urls or self.alert_urls_file is None:
            return reveal(self.alert_urls) or ""
        try:
            return Path(self.alert_urls_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SettingsError(f"{ENV_PREFIX}ALERT_URLS_FILE={str(self.alert_urls_file)!r} cannot be read ({reason})") from None

    def qlik_secret(self) -> str | None:
        """The webhook secret (env, else file), or None when none is configured."""
        return read_secret(self.qlik_webhook_secret, self.qlik_webhook_secret_file, "QLIK_WEBHOOK_SECRET", minimum=16)

    def truenas_key(self) -> str | None:
        """The TrueNAS API key (env, else file), or None when none is configured."""
        return read_secret(self.truenas_api_key, self.truenas_api_key_file, "TRUENAS_API_KEY")

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka security every client of this process uses (the password read from
        the environment or its file now); a ``SettingsError`` listing every problem."""
        password = read_secret(self.sasl_password, self.sasl_password_file, "SASL_PASSWORD")
        security = KafkaSecurity(
            protocol=self.security_protocol, ca_file=self.ssl_ca_file, cert_file=self.ssl_cert_file,
            key_file=self.ssl_key_file, mechanism=self.sasl_mechanism, username=self.sasl_username,
            password=None if password is None else given_secret(password),
        )
        problems = security.problems()
        if problems:
            raise SettingsError("\n".join(problems))
        return security

    @property
    def max_clock_skew(self) -> timedelta:
        """How far a vendor time may run ahead of ``received_at`` (and ``received_at``
        ahead of the Kafka record timestamp) and still move event time."""
        return timedelta(seconds=self.max_clock_skew_s)

    @property
    def forget_after(self) -> timedelta:
        """A job with no runs left is deleted this long (event time) after its last
        eviction; until then it remembers its evicted runs."""
        return timedelta(seconds=self.forget_after_s)

    def with_overrides(self, **overrides: object) -> "Settings":
        """A copy with the flags that were given (``None`` means "not given"), checked
        by the same rules as the environment; messages name the flag."""
        given = {k: v for k, v in overrides.items() if v is not None}
        refused = [f"{_flag(k)}: secrets are not read from a command-line flag; set {ENV_PREFIX}{k.upper()} or {k}_file"
                   for k in given if k in SECRET_FIELDS]
        if refused:
            raise SettingsError("\n".join(refused))
        flags = {k: Origin("flag", _flag(k)).template for k in given if k not in _NOT_FLAGS}
        return replace(self, **given, origins={**self.origins, **flags})

    @classmethod
    def from_file_and_env(cls, table: Mapping[str, object], env: Mapping[str, str] | None = None,
                          where: str = "[pipeline]", file: str | Path | None = None) -> "Settings":
        """Settings from a config file's table (``where`` and ``file`` name it in messages),
        then the environment over it, by the one resolver (flags go on top with
        ``with_overrides``). Every problem of the table and of the environment is one line
        of the error; a secret written in the file is refused."""
        env = Layers(env=env).environment()  # an empty variable counts as unset
        problems: list[str] = []
        values: dict[str, object] = {}
        for name in _PER_VENDOR:
            raw = table.get(name)
            if raw is None:
                continue
            if not isinstance(raw, dict) or not set(raw) <= set(VENDOR_NAMES):
                problems.append(f"{where} {name}: must be a table of vendor = value ({', '.join(VENDOR_NAMES)})")
            else:
                values[name] = dict(raw)
        layers = Layers(env=env, table={k: v for k, v in table.items() if k not in _PER_VENDOR}, section=where,
                        file=None if file is None else str(file))
        origins: dict[str, str] = {}
        resolved = resolve(SPECS, layers, read_secret_files=False, strict=False)  # the value checks come too
        problems += resolved.problems
        values.update(resolved.values)
        origins.update({name: origin.template for name, origin in resolved.origins.items()})
        stale = dict(values.pop("stale_after_by_vendor", {}))
        zones = dict(values.pop("vendor_tz", {}))
        for vendor in VENDOR_NAMES:
            variable = f"{ENV_PREFIX}STALE_AFTER_{vendor.upper()}"
            raw = env.get(variable)
            if raw:
                try:
                    stale[vendor] = _convert(f"stale_after_{vendor}", "float", raw)
                    origins[f"stale_after_{vendor}"] = Origin("env", variable).template
                except SettingsError as exc:
                    problems.append(str(exc))
            if f"{ENV_PREFIX}TZ_{vendor.upper()}" in env:
                zones[vendor] = env[f"{ENV_PREFIX}TZ_{vendor.upper()}"]
        try:
            settings = cls(**values, stale_after_by_vendor=stale, vendor_tz=zones, origins=origins)
        except SettingsError as exc:
            raise SettingsError("\n".join([*problems, *exc.lines])) from None
        for vendor in zones:
            try:
                settings.tz(vendor)
            except SettingsError as exc:
                problems.append(str(exc))
        if problems:
            raise SettingsError("\n".join(problems))
        return settings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``JOBSTREAM_*`` variables; every problem is one line of the error."""
        return cls.from_file_and_env({}, env)


SPECS = specs_of(Settings, flags=FLAG_NAMES, secrets=SECRET_FIELDS, skip=_NOT_FLAGS)
"""Every setting of ``Settings`` for the resolver: ``JOBSTREAM_<NAME>``, its flag, its file key."""


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def read_secret(value: Secret | str | None, file: Path | None, name: str, minimum: int = 4) -> str | None:
    """A secret given directly or as a file (first line, stripped); at least ``minimum``
    characters (4: shorter ones cannot be redacted from logs; 16 for an HMAC key)."""
    value = reveal(value)
    if not value and file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SettingsError(f"{ENV_PREFIX}{name}_FILE={str(file)!r} cannot be read ({reason})") from None
    if value is None or value == "":
        return None
    if len(value) < minimum:
        raise SettingsError(f"{ENV_PREFIX}{name} is shorter than {minimum} characters")
    return given_secret(value).reveal()  # registered: redacted from this process's log lines


def given(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment sets ``name`` (a field of Settings) at all: some commands
    behave differently when nothing was configured (``replay`` runs embedded)."""
    env = os.environ if env is None else env
    return bool(env.get(ENV_PREFIX + name.upper(), "").strip())


def normalize_bootstrap(value: str, origin: str | None = None) -> str:
    """``HOST[:PORT][,...]`` with the port Kafka clients assume (9092) filled in; ``origin``
    names where it came from in the error (default: the variable)."""
    addresses = []
    for address in value.split(","):
        address = address.strip().removeprefix("kafka://")
        if address.startswith("["):  # an IPv6 literal: [::1] or [::1]:9092
            host, _, rest = address.partition("]")
            host, port, ok = host + "]", rest.removeprefix(":"), rest == "" or rest.startswith(":")
        else:
            host, _, port = address.partition(":")
            ok = address.count(":") <= 1
        port = port or str(DEFAULT_KAFKA_PORT)
        if not ok or host in ("", "]") or not port.isdigit() or not 0 < int(port) < 65536:
            where = (origin or f"{ENV_PREFIX}BOOTSTRAP={{value}}").replace("{value}", repr(value))
            raise SettingsError(f"{where}: {address!r} is not HOST[:PORT]")
        addresses.append(f"{host}:{int(port)}")
    return ",".join(addresses)


def host_port(address: str) -> tuple[str, int]:
    """One normalized bootstrap address as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _convert(name: str, kind: object, raw: str) -> object:
    try:
        return convert(str(kind), raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
