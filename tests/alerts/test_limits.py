"""Rate limits per rule, job and channel; digests when one rule fires for many jobs."""

from __future__ import annotations

import msgspec

from pipeline.alerts import limits, logic
from pipeline.alerts.delivery import scheme_of
from pipeline.alerts.records import decode_transition
from pipeline.alerts.rules import parse
from tests.support.alerts import T0, transition

RULES = parse(
    """
    [defaults]
    digest_after = 3
    [[rules]]
    name = "failed"
    kind = "failed"
    urls = ["json://127.0.0.1:9/hook", "mailto://127.0.0.1:25?to=ops@example.com"]
    """,
    source="test",
)


def failures(*jobs: str, run: str = "r1") -> list[logic.Firing]:
    firings = []
    for job in jobs:
        record = decode_transition(msgspec.json.encode(transition(job, run, "RUNNING", "FAILED", T0)))
        firings.extend(logic.on_transition(RULES.rules, logic.JobMemory(), record, None)[1])
    return firings


def test_one_alert_per_rule_job_and_window_on_each_channel() -> None:
    limiter = limits.RateLimiter()
    first = limits.plan(RULES, failures("zuora:a:j1"), limiter, now=1000.0, scheme_of=scheme_of)
    assert len(first.sends) == 2 and not first.suppressed
    second = failures("zuora:a:j1", run="r2")
    after_400s = limits.plan(RULES, second, limiter, now=1400.0, scheme_of=scheme_of)
    # the webhook window (300 s) has passed, the email one (600 s) has not
    assert [scheme_of(s.channel) for s in after_400s.sends] == ["json"]
    assert after_400s.suppressed[second[0].alert_id] == [
        "mailto: rate limit, one alert per 600 s for rule failed and this job"
    ]
    other_job = limits.plan(RULES, failures("zuora:a:j2"), limiter, now=1400.0, scheme_of=scheme_of)
    assert len(other_job.sends) == 2


def test_many_jobs_at_once_make_one_digest_per_channel() -> None:
    firings = failures(*(f"zuora:a:job{n}" for n in range(8)))
    plan = limits.plan(RULES, firings, limits.RateLimiter(), now=0.0, scheme_of=scheme_of)
    assert len(plan.sends) == 2
    assert all(send.digest and len(send.firings) == 8 for send in plan.sends)


def test_a_few_jobs_stay_separate_and_repeats_count_once() -> None:
    firings = failures("zuora:a:j1", "zuora:a:j2", "zuora:a:j3")
    plan = limits.plan(RULES, firings + firings, limits.RateLimiter(), now=0.0, scheme_of=scheme_of)
    assert len(plan.sends) == 6 and not any(send.digest for send in plan.sends)

