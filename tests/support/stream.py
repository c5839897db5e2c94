"""The worker's logic in an in-memory harness: a dict is the table, lists are topics.
Used by the stream, chaos and contract tests."""

from __future__ import annotations

from datetime import datetime

import msgspec

from pipeline import catalog, lifecycle
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.settings import Settings
from pipeline.stream.core import StreamCore
from pipeline.stream.records import Message
from pipeline.stream.state import Entry, decode_entry

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOPIC = catalog.raw_topic("truenas")


class Harness:
    """A StreamCore over a dict store; ``restart()`` keeps the store, drops the rest."""

    def __init__(self, **settings: object) -> None:
        self.settings = Settings(**settings)
        self.store: dict[bytes, bytes] = {}
        self.restart()

    def restart(self) -> None:
        self.core = StreamCore(self.settings, self.store.get, lambda: list(self.store.items()))

    def feed(self, messages: list[Message]) -> list[tuple[str, bytes | None, dict]]:
        batch = self.core.process(messages)
        for key, (_partition, value) in batch.writes.items():
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value
                self.check_due(key, decode_entry(value))
        return [(o.topic, o.key, msgspec.json.decode(o.value)) for o in batch.outputs]


    def check_due(self, key: bytes, entry: Entry) -> None:
        """Every stored entry carries its job's next due under these settings (a restart
        indexes it from there without decoding the job): recomputed here, as the oracle."""
        vendor, settings = entry.job.vendor, self.settings
        expected = lifecycle.next_due(
            entry.job, stale_after=settings.stale_after(vendor), retention=settings.run_retention,
            stale_retention=settings.stale_retention, forget_after=settings.forget_after,
        )
        assert entry.due == expected and entry.due_rules != 0, (key, entry.due, expected, entry.due_rules)


def truenas_job(job_id: int, state: str, *, method: str = "pool.scrub", finished: datetime | None = None,
                percent: float | None = None) -> dict:
    job = {"id": job_id, "method": method, "state": state,
           "time_started": {"$date": int(T0.timestamp() * 1000)},
           "progress": {"percent": percent, "description": None, "extra": None}}
    if finished is not None:
        job["time_finished"] = {"$date": int(finished.timestamp() * 1000)}
    return job


def message(offset: int, payload: object, *, at: datetime, key: bytes | None = None, partition: int = 0,
            topic: str = TOPIC) -> Message:
    value = encode_envelope(RawEnvelope(vendor="truenas", source="nas1", received_at=at, payload=payload))
    return Message(topic, partition, offset, key if key is not None else b"truenas:nas1:pool.scrub", value)


def transitions(outputs: list) -> list[tuple[str, str | None, str, str]]:
    return [
        (t["run_key"].rsplit(":", 1)[-1], t["from_state"], t["to_state"], t["cause"])
        for topic, _key, t in outputs if topic == catalog.TRANSITIONS
    ]
