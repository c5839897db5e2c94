"""The message says what ran, where, what happened and when, the error, the duration,
and the SQL that shows the run's history."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from pipeline.alerts import logic, message
from pipeline.alerts.records import decode_run, decode_transition
from pipeline.alerts.rules import parse
from tests.support.alerts import T0, run_snapshot, transition

RULES = parse('[[rules]]\nname = "run-failed"\nkind = "failed"\nurls = ["json://h/x"]', source="test")
JOB = "zuora:acme:bi-export"


def failed_firing() -> logic.Firing:
    run = decode_run(msgspec.json.encode(run_snapshot(
        JOB, "tok-1", "FAILED", attempt=2, retries=1, started_at=T0, finished_at=T0 + timedelta(seconds=125),
        error=("E42", "Page is not cached"), native_state="FAILED",
    )))
    record = decode_transition(msgspec.json.encode(
        transition(JOB, "tok-1", "RUNNING", "FAILED", T0 + timedelta(seconds=125), attempt=2)
    ))
    return logic.on_transition(RULES.rules, logic.JobMemory(), record, run)[1][0]


def test_the_message_has_every_part() -> None:
    firing = failed_firing()
    text = message.title(firing) + "\n" + message.body(firing)
    for part in (
        "run FAILED", "vendor zuora", "source acme", f"job {JOB}", f"run {JOB}:tok-1", "attempt 2",
        "2026-11-30T09:02:05Z", "E42 Page is not cached", "Duration: 2m 05s", "retries 1",
        f"FROM job_transitions WHERE run_key = '{JOB}:tok-1'", f"FROM job_runs WHERE job_key = '{JOB}'",
        f"Alert id: {firing.alert_id}",
    ):
        assert part in text, part


def test_sql_quotes_are_escaped() -> None:
    firing = failed_firing()
    odd = logic.Firing(**{**{f: getattr(firing, f) for f in firing.__slots__}, "run_key": "zuora:o'hara:x"})
    assert "'zuora:o''hara:x'" in message.history_sql(odd)[0]


def test_a_digest_lists_each_alert_with_its_id_and_stays_short() -> None:
    firing = failed_firing()
    many = [logic.Firing(**{**{f: getattr(firing, f) for f in firing.__slots__}, "alert_id": f"id{n}", "job_key": f"zuora:acme:j{n}"}) for n in range(30)]
    text = message.digest_body("run-failed", many)
    assert "fired 30 times at once, for 30 jobs" in text
    assert "alert id0" in text and "alert id19" in text and "alert id20" not in text
    assert "| E42 Page is not cached |" in text
    assert "... and 10 more" in text
