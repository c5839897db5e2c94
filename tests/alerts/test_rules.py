"""The rules file: shipped defaults, clear errors for what a user can fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerts import rules
from pipeline.model import State


def test_the_shipped_defaults_cover_every_kind() -> None:
    rule_set = rules.load(None, extra_urls=("json://127.0.0.1:9/hook",), env={})
    assert sorted(rule.kind for rule in rule_set.rules) == sorted(rules.KINDS)
    failed = rule_set.by_name("run-failed")
    assert failed.states == frozenset({State.FAILED}) and failed.urls == ("json://127.0.0.1:9/hook",)


def test_rate_limits_default_to_butlers() -> None:
    rule = rules.Rule(name="r", kind="failed")
    assert rules.rate_limit_for(rule, "slack") == 300
    assert rules.rate_limit_for(rule, "json") == 300
    assert rules.rate_limit_for(rule, "mailtos") == 600
    assert rules.rate_limit_for(rules.Rule(name="r", kind="failed", rate_limit_s=5), "mailto") == 5


def test_urls_read_secrets_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "f"\nkind = "failed"\nurls = ["slack://${SLACK_TOKEN}/#ops"]\n')
    rule_set = rules.load(path, env={"SLACK_TOKEN": "T1/B2/C3"})
    assert rule_set.rules[0].urls == ("slack://T1/B2/C3/#ops",)
    with pytest.raises(rules.RulesError, match="SLACK_TOKEN is not set"):
        rules.load(path, env={})


def test_match_by_vendor_job_pattern_and_state() -> None:
    rule = rules.Rule(name="r", kind="failed", vendors=frozenset({"zuora"}), jobs="zuora:acme:*", states=frozenset({State.FAILED}))
    assert rule.matches("zuora", "zuora:acme:orders", State.FAILED)
    assert not rule.matches("truenas", "zuora:acme:orders", State.FAILED)
    assert not rule.matches("zuora", "zuora:other:orders", State.FAILED)
    assert not rule.matches("zuora", "zuora:acme:orders", State.STALE)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[rules]]\nname = 'x'\nkind = 'nope'\nurls=['json://h/x']", "'kind' must be one of"),
        ("[[rules]]\nname = 'x'\nkind = 'failed'", "no Apprise URL"),
        ("[[rules]]\nname = 'x'\nkind = 'failed'\nurls=['json://h/x']\nfactr = 2", "unknown keys"),
        ("[[rules]]\nname = 'x'\nkind = 'failed'\nurls=['json://h/x']\nvendors = ['sap']", "'vendors' must be"),
        ("[[rules]]\nname = 'x'\nkind = 'failed'\nurls=['json://h/x']\nstates = ['BROKEN']", "'states' must be"),
        ("[[rules]]\nname = 'x'\nkind = 'slow'\nurls=['json://h/x']\nfactor = -1", "'factor' must be a positive"),
        ("[[rules]]\nname = 'x'\nkind = 'failed'\nurls=['json://h/x']\n[[rules]]\nname = 'x'\nkind = 'stale'\nurls=['json://h/x']", "unique"),
        ("[[rules]\nname = 'x'", "rules.toml"),
        ("", "no \\[\\[rules\\]\\]"),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(rules.RulesError, match=error) as caught:
        rules.load(path, env={})
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(rules.RulesError, match="cannot read rules file"):
        rules.load(tmp_path / "absent.toml")
