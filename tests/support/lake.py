"""What the lake's tests share (tests/lake/): the consumer group's session timeout,
short so a killed sink's partitions move within seconds."""

from __future__ import annotations

SESSION_TIMEOUT_S = 3
