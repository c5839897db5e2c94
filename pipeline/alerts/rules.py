"""Alert rules: what to watch and where to send it, read from a TOML file.

A rule has a name, a match (vendors, a job key pattern, states), a ``kind`` (the
condition) with its few parameters, and the Apprise URLs it delivers to. The defaults
ship in ``default_rules.toml`` beside this module; ``pipeline alert --rules FILE``
replaces them. ``${NAME}`` in a URL is read from the environment, so tokens and
passwords can stay out of the file.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pipeline.config.resolver import ConfigurationError
from pipeline.model import State
from pipeline.vendors import VENDOR_NAMES

KINDS = ("failed", "stale", "reactivated", "retries", "slow", "dead_letters")
DEFAULT_STATES = {"failed": (State.FAILED,), "stale": (State.STALE,), "reactivated": (State.RUNNING,)}
EMAIL_SCHEMES = frozenset({"mailto", "mailtos"})
CHAT_RATE_LIMIT_S = 300.0  # Butler's default for Slack, Teams and outgoing webhooks
EMAIL_RATE_LIMIT_S = 600.0  # Butler's default for email
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


RulesError = ConfigurationError
"""The rules file cannot be used; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. Parameters that do not apply to its kind keep their defaults."""

    name: str
    kind: str
    urls: tuple[str, ...] = ()
    vendors: frozenset[str] = frozenset()  # empty: every vendor
    jobs: str = "*"  # fnmatch pattern over job_key
    states: frozenset[State] = frozenset()  # empty: every state
    rate_limit_s: float | None = None  # None: 300 s for chat/webhooks, 600 s for email
    stale_minutes: float = 10.0  # reactivated: stale at least this long
    retries: int = 3  # retries: fire when more than this many ...
    window_s: float = 3600.0  # ... within this window (scope "job")
    scope: str = "run"  # retries: "run" (one run's attempts) or "job" (all runs in the window)
    factor: float = 3.0  # slow: longer than factor x the job's usual duration
    min_runs: int = 5  # slow: finished runs needed before "usual" means anything
    per_minute: int = 10  # dead_letters: more than this many in one minute

    def matches(self, vendor: str | None, job_key: str | None, state: State | None) -> bool:
        if self.vendors and vendor not in self.vendors:
            return False
        if self.jobs != "*" and (job_key is None or not fnmatch.fnmatchcase(job_key, self.jobs)):
            return False
        return not self.states or state in self.states


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    digest_after: int = 5  # more alerts than this for one rule at once: one digest message
    source: str = "default rules"

    def by_name(self, name: str) -> Rule:
        return next(rule for rule in self.rules if rule.name == name)


def rate_limit_for(rule: Rule, scheme: str) -> float:
    """Seconds between two deliveries of one rule for one job on one channel."""
    if rule.rate_limit_s is not None:
        return rule.rate_limit_s
    return EMAIL_RATE_LIMIT_S if scheme in EMAIL_SCHEMES else CHAT_RATE_LIMIT_S


def default_rules_text() -> str:
    return resources.files("pipeline.alerts").joinpath("default_rules.toml").read_text(encoding="utf-8")


def load(path: Path | None = None, *, extra_urls: tuple[str, ...] = (), env: dict[str, str] | None = None) -> RuleSet:
    """The rules of ``path`` (or the shipped defaults). ``extra_urls`` (from
    ``JOBSTREAM_ALERT_URLS`` or ``--url``) serve every rule that names no URL."""
    if path is None:
        return parse(default_rules_text(), source="default rules", extra_urls=extra_urls, env=env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    return parse(text, source=str(path), extra_urls=extra_urls, env=env)


def parse(text: str, *, source: str, extra_urls: tuple[str, ...] = (), env: dict[str, str] | None = None) -> RuleSet:
    env = dict(os.environ) if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: {exc}") from None
    unknown = set(data) - {"defaults", "rules"}
    if unknown:
        raise RulesError(f"{source}: unknown tables {sorted(unknown)} (expected [defaults] and [[rules]])")
    defaults = data.get("defaults", {})
    unknown = set(defaults) - {"urls", "digest_after"}
    if unknown:
        raise RulesError(f"{source}: [defaults] has unknown keys {sorted(unknown)}")
    default_urls = tuple(_urls(defaults.get("urls", []), f"{source}: [defaults] urls", env)) + tuple(extra_urls)
    digest_after = defaults.get("digest_after", 5)
    if type(digest_after) is not int or digest_after < 1:
        raise RulesError(f"{source}: [defaults] digest_after must be a positive integer")
    rules = []
    for index, raw in enumerate(data.get("rules", [])):
        rules.append(_rule(raw, f"{source}: rule {raw.get('name') or index + 1}", default_urls, env))
    if not rules:
        raise RulesError(f"{source}: no [[rules]]")
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RulesError(f"{source}: rule names must be unique; repeated: {', '.join(duplicates)}")
    return RuleSet(tuple(rules), digest_after=digest_after, source=source)


_PARAMS = {
    "stale_minutes": float, "retries": int, "window_s": float, "scope": str,
    "factor": float, "min_runs": int, "per_minute": int, "rate_limit_s": float,
}


def _rule(raw: dict, where: str, default_urls: tuple[str, ...], env: dict[str, str]) -> Rule:
    known = {"name", "kind", "urls", "vendors", "jobs", "states", *_PARAMS}
    unknown = set(raw) - known
    if unknown:
        raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
    name, kind = raw.get("name"), raw.get("kind")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RulesError(f"{where}: 'name' must be letters, digits, '-', '_' or '.' (up to 64)")
    if kind not in KINDS:
        raise RulesError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    vendors = raw.get("vendors", [])
    if not isinstance(vendors, list) or any(v not in VENDOR_NAMES for v in vendors):
        raise RulesError(f"{where}: 'vendors' must be a list of {', '.join(VENDOR_NAMES)}")
    states_raw = raw.get("states")
    try:
        states = frozenset(State(s) for s in states_raw) if states_raw is not None else frozenset(DEFAULT_STATES.get(kind, ()))
    except (ValueError, TypeError):
        raise RulesError(f"{where}: 'states' must be a list of {', '.join(State)}") from None
    jobs = raw.get("jobs", "*")
    if not isinstance(jobs, str) or not jobs:
        raise RulesError(f"{where}: 'jobs' must be a job key pattern such as 'zuora:*'")
    params = {}
    for key, kind_of in _PARAMS.items():
        if key not in raw:
            continue
        value = raw[key]
        if kind_of is float and type(value) is int:
            value = float(value)
        if type(value) is not kind_of or (kind_of is not str and value <= 0):
            raise RulesError(f"{where}: '{key}' must be a positive {kind_of.__name__}")
        params[key] = value
    if params.get("scope", "run") not in ("run", "job"):
        raise RulesError(f"{where}: 'scope' must be 'run' or 'job'")
    urls = tuple(_urls(raw.get("urls", []), f"{where}: urls", env)) or default_urls
    if not urls:
        raise RulesError(
            f"{where}: no Apprise URL to deliver to; give the rule 'urls', give 'urls' under "
            "defaults in the file, or set JOBSTREAM_ALERT_URLS (or pass --url)"
        )
    return Rule(name=name, kind=kind, urls=urls, vendors=frozenset(vendors), jobs=jobs, states=states, **params)


def _urls(value: object, where: str, env: dict[str, str]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(u, str) and u.strip() for u in value):
        raise RulesError(f"{where} must be a list of Apprise URLs")

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise RulesError(f"{where}: environment variable {match.group(1)} is not set")
        return env[match.group(1)]

    return [_ENV.sub(expand, u.strip()) for u in value]


def split_urls(text: str | None) -> tuple[str, ...]:
    """``JOBSTREAM_ALERT_URLS``: Apprise URLs separated by commas or whitespace."""
    return tuple(part for part in re.split(r"[\s,]+", text or "") if part)


def describe(rule_set: RuleSet) -> list[str]:
    """One line per rule for ``--show-rules``: name, kind, match, and URL schemes only."""
    lines = []
    for rule in rule_set.rules:
        match = " ".join(filter(None, (
            ",".join(sorted(rule.vendors)), rule.jobs if rule.jobs != "*" else "",
            ",".join(sorted(rule.states)),
        ))) or "all runs"
        schemes = ", ".join(sorted({u.split("://", 1)[0] for u in rule.urls}))
        lines.append(f"{rule.name:<20} {rule.kind:<13} {match:<30} -> {schemes}")
    return lines
