"""The worker's garbage-collector settings: set for the process, and undone when asked."""

from __future__ import annotations

import gc

from pipeline.stream import collector


def test_tune_collects_the_young_generation_less_often_and_restore_puts_the_old_settings_back():
    before = gc.get_threshold()
    thresholds = collector.tune()
    try:
        assert thresholds == before
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, *collector.OLDER_THRESHOLDS)
        assert gc.get_freeze_count() > 0  # what existed at start-up is no longer walked
    finally:
        collector.restore(thresholds)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

