"""Hostile input (issue 22 point 5): a seeded generator of bad records and bad webhooks,
and the two edges that deliver them.

Raw records go straight into every ``raw.<vendor>`` topic, as a broken or malicious
producer would write them: truncated and invalid JSON, invalid UTF-8, envelopes with
wrong types or missing fields, vendor documents with wrong types, missing fields or
unknown enums, another vendor's documents, strings near Kafka's 1 MB record limit
(a 10 MB one cannot be produced at all; it goes to the webhook receiver instead),
10,000-deep nesting, empty values and random bytes.

"Bad" means the pure worker code (``StreamCore``) refuses it: every candidate is run
through it first, and a mutation the vendor module still accepts (tolerant parsers keep
unknown fields) is not sent, only counted. So each record sent must end as exactly one
dead letter with its own ``<topic>:<partition>:<offset>`` id, which the oracle checks.

Webhooks go to the Qlik Cloud receiver over HTTP: unsigned, forged and tampered
signatures (401), 10 MB bodies (413), and correctly signed garbage (accepted and
dead-lettered, or 400). A 5xx or a dropped connection there is a failure.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from pipeline import catalog
from pipeline.kafka import clients
from pipeline.model import UTC, RawEnvelope, encode_envelope
from pipeline.settings import Settings
from pipeline.stream.core import StreamCore
from pipeline.stream.records import Message
from pipeline.vendors import VENDOR_NAMES, registry

DEEP = 10_000
BIG_STRING = 600_000  # bytes: fits a default 1 MB produce request with its envelope
WEBHOOK_BIG = 10 * 1024 * 1024
RAW_KINDS = (
    "truncated_json", "invalid_utf8", "envelope_wrong_types", "envelope_missing_field", "payload_wrong_type",
    "payload_missing_field", "unknown_enum", "other_vendor_document", "other_vendor_envelope", "not_an_object",
    "random_bytes", "empty_value", "payload_not_json",
)
RARE_KINDS = ("big_string", "deep_nesting")  # one in RARE_EVERY records: they are slow to send and read
RARE_EVERY = 1000


@dataclass(frozen=True, slots=True)
class BadRecord:
    vendor: str
    kind: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class BadWebhook:
    kind: str
    body: bytes
    headers: dict[str, str]
    expect: tuple[int, ...]  # acceptable statuses


@dataclass(slots=True)
class Sent:
    """What reached the pipeline: each raw record's dead-letter id, webhook answers."""

    dead_letter_ids: dict[str, str] = field(default_factory=dict)  # id -> kind
    kinds: dict[str, int] = field(default_factory=dict)
    tolerated: int = 0  # candidates the vendor modules accepted (not sent)
    webhooks: int = 0
    webhook_problems: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.dead_letter_ids) + self.webhooks


def sample_documents() -> dict[str, list[Any]]:
    """Valid documents per vendor (the package's samples): the seeds of every mutation."""
    docs: dict[str, list[Any]] = {}
    for vendor in VENDOR_NAMES:
        found: list[Any] = []
        for item in sorted(registry.by_name(vendor).sample_folder().iterdir(), key=lambda p: p.name):
            text = item.read_text()
            if item.name.endswith(".jsonl"):
                found += [orjson.loads(line) for line in text.splitlines() if line.strip()]
            elif item.name.endswith(".json"):
                found.append(orjson.loads(text))
        docs[vendor] = found
    return docs


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside ``doc`` (dict keys and list indexes)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _set(doc: Any, path: tuple, value: Any, *, delete: bool = False) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


WRONG_VALUES: tuple[Any, ...] = ("yesterday", -1, 1e308, True, None, [], {}, [1, "two"], {"$date": "soon"}, "", "\u0000")
ENUM_WORDS = ("status", "state", "msg", "type", "eventstatus", "eventtype", "method", "collection", "specversion")


class Generator:
    """Seeded: the same seed gives the same bad records, in the same order."""

    def __init__(self, seed: int, settings: Settings | None = None) -> None:
        self.rng = random.Random(seed)
        self.docs = sample_documents()
        self.at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        self._judge = _Judge(settings or Settings())
        self.tolerated = 0  # candidates the vendor modules accepted: not bad, not sent

    def records(self, count: int) -> Iterator[BadRecord]:
        """``count`` records the worker must refuse, spread over every raw topic."""
        made = 0
        while made < count:
            vendor = VENDOR_NAMES[made % len(VENDOR_NAMES)]
            if made % RARE_EVERY == RARE_EVERY - 1:
                kind = RARE_KINDS[(made // RARE_EVERY) % len(RARE_KINDS)]
            else:
                kind = self.rng.choice(RAW_KINDS)
            record = self._record(vendor, kind)
            if self._judge.refuses(record):
                made += 1
                yield record
            else:
                self.tolerated += 1

    def _envelope(self, vendor: str, payload: Any, changes: dict[str, Any] | None = None) -> bytes:
        value = encode_envelope(RawEnvelope(vendor=vendor, source="chaos-hostile", received_at=self.at, payload=payload))
        if not changes:
            return value
        doc = orjson.loads(value)
        doc.update(changes)
        return orjson.dumps(doc)

    def _key(self, vendor: str) -> bytes | None:
        roll = self.rng.random()
        if roll < 0.3:
            return None
        if roll < 0.4:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 40)))
        return f"{vendor}:chaos-hostile:{self.rng.randrange(10_000)}".encode()

    def _record(self, vendor: str, kind: str) -> BadRecord:
        rng = self.rng
        doc = rng.choice(self.docs[vendor])
        good = self._envelope(vendor, doc)
        key = self._key(vendor)
        value: bytes | None
        if kind == "truncated_json":
            value = good[: rng.randrange(1, len(good) - 1)]
        elif kind == "invalid_utf8":
            at = rng.randrange(1, len(good) - 1)
            value = good[:at] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80")) + good[at:]
        elif kind == "envelope_wrong_types":
            name = rng.choice(("vendor", "source", "received_at", "heartbeat"))
            value = self._envelope(vendor, doc, {name: rng.choice((42, [], {"x": 1}, "not-a-time", None))})
        elif kind == "envelope_missing_field":
            envelope = orjson.loads(good)
            del envelope[rng.choice(("vendor", "received_at", "source"))]
            value = orjson.dumps(envelope)
        elif kind == "payload_wrong_type":
            path = rng.choice(list(_paths(doc)) or [()])
            value = self._envelope(vendor, _set(doc, path, rng.choice(WRONG_VALUES)) if path else rng.choice(WRONG_VALUES))
        elif kind == "payload_missing_field":
            paths = [p for p in _paths(doc) if isinstance(p[-1], str)]
            value = self._envelope(vendor, _set(doc, rng.choice(paths), None, delete=True) if paths else {})
        elif kind == "unknown_enum":
            paths = [p for p in _paths(doc) if isinstance(p[-1], str) and p[-1].lower() in ENUM_WORDS]
            word = f"NOT_A_{rng.randrange(10**6)}"
            value = self._envelope(vendor, _set(doc, rng.choice(paths), word) if paths else word)
        elif kind == "other_vendor_document":
            other = rng.choice([v for v in VENDOR_NAMES if v != vendor])
            value = self._envelope(vendor, rng.choice(self.docs[other]))
        elif kind == "other_vendor_envelope":
            other = rng.choice([v for v in VENDOR_NAMES if v != vendor])
            value = self._envelope(other, rng.choice(self.docs[other]))
        elif kind == "not_an_object":
            value = rng.choice((b"42", b"null", b"[]", b'"a string"', b"true", b"{}", b"", b"   "))
        elif kind == "random_bytes":
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        elif kind == "empty_value":  # a tombstone: Kafka needs a key then
            value = None
            key = key or f"{vendor}:chaos-hostile:tombstone".encode()
        elif kind == "payload_not_json":
            value = self._envelope(vendor, rng.choice(("{ not json", "<html>502 Bad Gateway</html>", "\ufffd" * 10)))
        elif kind == "big_string":
            paths = [p for p in _paths(doc) if isinstance(p[-1], str)]
            value = self._envelope(vendor, _set(doc, rng.choice(paths), "x" * BIG_STRING) if paths else "x" * BIG_STRING)
            if self._judge.accepts_value(vendor, value):  # a long string in a free-text field is fine
                value = self._envelope(vendor, {"status": "x" * BIG_STRING})
        elif kind == "deep_nesting":
            nested = b'"payload":' + b"[" * DEEP + b"]" * DEEP
            value = self._envelope(vendor, None).replace(b'"payload":null', nested)
        else:  # pragma: no cover - RAW_KINDS and RARE_KINDS list every kind handled above
            raise ValueError(kind)
        return BadRecord(vendor, kind, key, value)

    def webhooks(self, secret: str, count: int) -> Iterator[BadWebhook]:
        """Bad requests for the Qlik Cloud webhook receiver (``secret``: its real one)."""
        docs = self.docs["qlik_cloud"]
        kinds = ("unsigned", "forged", "tampered", "signed_garbage", "signed_deep", "signed_invalid_utf8", "oversized")
        for n in range(count):
            kind = kinds[n % len(kinds)]
            body = orjson.dumps(self.rng.choice(docs))
            if kind == "unsigned":
                yield BadWebhook(kind, body, {"Content-Type": "application/json"}, (401,))
            elif kind == "forged":
                forged = hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
                yield BadWebhook(kind, body, {"Content-Type": "application/json", "Qlik-Signature": forged}, (401,))
            elif kind == "tampered":
                signed = _sign(secret, body)
                tampered = body.replace(b'"', b"'", 1)
                yield BadWebhook(kind, tampered, {"Content-Type": "application/json", "Qlik-Signature": signed}, (401,))
            elif kind == "oversized":
                if n % (len(kinds) * 20) != len(kinds) - 1:  # a 10 MB body now and then is enough
                    big = body[:-1] + b',"pad":"' + b"x" * 300_000 + b'"}'
                else:
                    big = body[:-1] + b',"pad":"' + b"x" * WEBHOOK_BIG + b'"}'
                yield BadWebhook(kind, big, {"Content-Type": "application/json", "Qlik-Signature": _sign(secret, big)}, (413,))
            else:
                if kind == "signed_garbage":
                    bad = body[: self.rng.randrange(1, len(body) - 1)]
                elif kind == "signed_deep":
                    bad = b"[" * DEEP + b"]" * DEEP
                else:
                    bad = body[:10] + b"\xff\xfe" + body[10:]
                yield BadWebhook(kind, bad, {"Content-Type": "application/json", "Qlik-Signature": _sign(secret, bad)},
                                 (200, 202, 204, 400))


def _sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Judge:
    """The worker's own code, in memory: does it dead-letter this record, and only that?"""

    def __init__(self, settings: Settings) -> None:
        self._core = StreamCore(settings, lambda _key: None)
        self._offset = 0

    def refuses(self, record: BadRecord) -> bool:
        self._offset += 1
        message = Message(catalog.raw_topic(record.vendor), 0, self._offset, record.key, record.value, 1_800_000_000_000)
        batch = self._core.process([message])
        return not batch.writes and [o.topic for o in batch.outputs] == [catalog.DEADLETTER]

    def accepts_value(self, vendor: str, value: bytes) -> bool:
        return not self.refuses(BadRecord(vendor, "probe", None, value))


async def send_records(bootstrap: str, records: Iterator[BadRecord], sent: Sent) -> None:
    """Produce every record (acks=all) and note the dead-letter id each must become."""
    producer = clients.producer(bootstrap, max_request_size=2 * 1024 * 1024, linger_ms=20, client_id="jobstream-chaos-hostile")
    await producer.start()
    try:
        pending = []
        for record in records:
            topic = catalog.raw_topic(record.vendor)
            future = await producer.send(topic, record.value, key=record.key)
            pending.append((record.kind, future))
            if len(pending) >= 500:
                await _settle(pending, sent)
        await _settle(pending, sent)
    finally:
        await producer.stop()


async def _settle(pending: list, sent: Sent) -> None:
    for kind, future in pending:
        meta = await future
        sent.dead_letter_ids[f"{meta.topic}:{meta.partition}:{meta.offset}"] = kind
        sent.kinds[kind] = sent.kinds.get(kind, 0) + 1
    pending.clear()


async def send_webhooks(url: str, hooks: Iterator[BadWebhook], sent: Sent, *, deadline_s: float = 120.0) -> None:
    """POST each bad webhook; a connection refused (the receiver being restarted by a
    fault) is retried like Qlik would, a 5xx or an unexpected status is a problem."""
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for hook in hooks:
            give_up = loop.time() + deadline_s
            while True:
                try:
                    async with session.post(url, data=hook.body, headers=hook.headers) as answer:
                        await answer.read()
                        status = answer.status
                    break
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                    if loop.time() > give_up:
                        sent.webhook_problems.append(f"{hook.kind}: no answer within {deadline_s:.0f} s ({exc!r})")
                        status = None
                        break
                    await asyncio.sleep(0.5)
            sent.webhooks += 1
            sent.kinds[f"webhook_{hook.kind}"] = sent.kinds.get(f"webhook_{hook.kind}", 0) + 1
            if status is not None and status not in hook.expect:
                sent.webhook_problems.append(f"{hook.kind}: answered {status}, expected {'/'.join(map(str, hook.expect))}")
