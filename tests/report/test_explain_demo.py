"""``pipeline explain`` on every run of a demo database (issue 38 case 3): the refold of
each run's stored events gives its stored row and transitions, whatever the vendor."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import timedelta

import orjson
import pytest

from pipeline.analytics import Database
from pipeline.explain import explain_run
from pipeline.settings import Settings
from pipeline import vendors

pytestmark = pytest.mark.integration


def test_every_run_of_a_demo_refolds_to_its_stored_row_and_transitions(demo_db):
    db = Database.of(demo_db)
    settings = Settings().with_overrides(stale_after_defaults=vendors.stale_after_defaults())
    keys = [row[0] for row in db.query("SELECT run_key FROM job_runs ORDER BY run_key").rows]
    disagreeing, rules = [], Counter()
    for key in keys:
        story = explain_run(db, key, bootstrap=None, stale_after_for=settings.stale_after, max_clock_skew=timedelta(minutes=5))
        rules.update(step.rule for step in story.refold.steps)
        if not story.refold.agrees:
            disagreeing.append((key, story.refold.differences, story.refold.missing_transitions, story.refold.extra_transitions))
    assert len(keys) > 50 and disagreeing == []
    assert {"R1", "R6"} <= set(rules)
    print(f"{len(keys)} runs agree; rules applied: {dict(rules)}")


def test_a_run_with_alerts_lists_them_in_its_story(demo_db):
    db = Database.of(demo_db)
    [(key, count)] = db.query("SELECT run_key, count(*) FROM alerts WHERE run_key IS NOT NULL GROUP BY run_key ORDER BY 2 DESC, 1 LIMIT 1").rows
    result = subprocess.run([sys.executable, "-m", "pipeline", "explain", key, "--db", str(demo_db), "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    story = orjson.loads(result.stdout)
    assert len(story["alerts"]) == count and story["agrees"] is True
