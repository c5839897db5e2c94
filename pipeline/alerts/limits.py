"""Rate limits and digests: which fired alerts go out, on which channel, alone or together.

Butler's rule, per rule and job: at most one message per window on each channel (300 s
for chat and webhooks, 600 s for email). Alerts that pass, when one rule has more than
``digest_after`` of them at once, go out as one digest per channel instead of a flood.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.alerts.logic import Firing
from pipeline.alerts.rules import RuleSet, rate_limit_for


class RateLimiter:
    """Last delivery time per (rule, job, channel). In memory, like Butler's: after a
    restart each key may deliver once more (the alert id still lets a receiver drop
    a repeat of the same alert)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], float] = {}

    def allow(self, key: tuple[str, str, str], now: float, window_s: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < window_s:
            return False
        self._last[key] = now
        if len(self._last) > 100_000:
            self._forget(now)
        return True

    def _forget(self, now: float, horizon_s: float = 3600.0) -> None:
        self._last = {key: at for key, at in self._last.items() if now - at < horizon_s}


@dataclass(frozen=True, slots=True)
class Send:
    """One message to one channel: one alert, or a digest of several of one rule."""

    channel: str  # the channel's key (its URL: never logged or written anywhere)
    rule: str
    firings: tuple[Firing, ...]

    @property
    def digest(self) -> bool:
        return len(self.firings) > 1


@dataclass(frozen=True, slots=True)
class Plan:
    sends: list[Send]
    suppressed: dict[str, list[str]]  # alert_id -> why, per channel ("json: rate limit 300 s")


def plan(
    rules: RuleSet, firings: Sequence[Firing], limiter: RateLimiter, now: float,
    scheme_of: Callable[[str], str],
) -> Plan:
    """Decide the messages for a set of alerts that fired together."""
    unique: dict[str, Firing] = {}
    for firing in firings:
        unique.setdefault(firing.alert_id, firing)
    by_rule: dict[str, list[Firing]] = {}
    for firing in unique.values():
        by_rule.setdefault(firing.rule, []).append(firing)
    sends: list[Send] = []
    suppressed: dict[str, list[str]] = {}
    for rule_name, group in by_rule.items():
        rule = rules.by_name(rule_name)
        for url in rule.urls:
            scheme = scheme_of(url)
            window = rate_limit_for(rule, scheme)
            passed = []
            for firing in group:
                if limiter.allow((rule.name, firing.job_key or "", url), now, window):
                    passed.append(firing)
                else:
                    suppressed.setdefault(firing.alert_id, []).append(
                        f"{scheme}: rate limit, one alert per {window:g} s for rule {rule.name} and this job"
                    )
            if len(passed) > rules.digest_after:
                sends.append(Send(url, rule.name, tuple(passed)))
            else:
                sends.extend(Send(url, rule.name, (firing,)) for firing in passed)
    return Plan(sends, suppressed)
