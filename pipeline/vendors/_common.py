"""What every vendor module shares: the normalize context, the typed rejection,
and tolerant parsers for the time and number formats vendors really send."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, tzinfo
from typing import Any

import msgspec
import orjson

from pipeline.model import UTC, RawRef, Rejected  # noqa: F401 - Rejected: re-exported for the vendor modules


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a normalizer knows besides the document itself.

    ``source`` names the tenant / host / instance when the document does not (TrueNAS
    jobs and Zuora queues do not name their host); ``tz`` is the zone of the vendor's
    naive timestamps (Zuora writes ``2019-05-02 10:39:36.560855``).
    """

    source: str | None = None
    received_at: datetime | None = None
    raw_ref: RawRef | None = None
    tz: tzinfo = UTC


DEFAULT_CONTEXT = Context()


def load_json(data: bytes | str) -> Any:
    """Parse JSON text, turning every failure into a one-line ``Rejected``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"not valid JSON: {exc}") from None


def require(doc: dict[str, Any], field: str, kind: type | tuple[type, ...] = str) -> Any:
    """Return ``doc[field]`` or reject with the field's name when it is missing or mistyped."""
    value = doc.get(field)
    if value is None or (kind is str and value == ""):
        raise Rejected(f"missing required field {field!r}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise Rejected(f"field {field!r} must be {expected}, got {type(value).__name__}")
    return value


def as_dict(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise Rejected(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


_FRACTION = re.compile(r"\.(\d+)")
_SLASHED = re.compile(r"^(\d{4})/(\d{2})/(\d{2})([ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$", re.ASCII)


def parse_time(value: Any, *, tz: tzinfo = UTC, field: str = "time") -> datetime | None:
    """Parse a vendor timestamp into aware UTC, or ``None`` when absent.

    Accepts ISO 8601 with ``Z`` or an offset, ``YYYY-MM-DD HH:MM:SS[.ffffff]``, any
    number of fraction digits (Qlik writes 7), Qlik-Cli's ``YYYY/MM/DD HH:MM[:SS]``,
    epoch milliseconds ints and the ``{"$date": ms}`` wrapper. Naive times are read
    in ``tz``.
    """
    if type(value) is str:  # the common case first: a text time parsed before
        cached = _PARSED_TIMES.get((value, tz))
        if cached is not None:
            return cached
    if value is None or value == "":
        return None
    if isinstance(value, dict) and "$date" in value:
        value = value["$date"]
    if isinstance(value, bool):
        raise Rejected(f"{field} is not a time: {value!r}")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected(f"{field} epoch milliseconds out of range: {value!r}") from None
    if not isinstance(value, str):
        raise Rejected(f"{field} is not a time: {type(value).__name__}")
    cached = _PARSED_TIMES.get((value, tz))
    if cached is not None:
        return cached
    parsed = _parse_text_time(value, tz, field)
    if len(_PARSED_TIMES) >= _MAX_PARSED_TIMES:
        _PARSED_TIMES.clear()
    _PARSED_TIMES[(value, tz)] = parsed
    return parsed


# Text times already parsed, by (text, zone of naive times): a run's documents repeat
# its start and activity times poll after poll, and a look-up costs a tenth of a parse.
# Only successes are kept; cleared whole when full, so memory stays bounded.
_PARSED_TIMES: dict[tuple[str, tzinfo], datetime] = {}
_MAX_PARSED_TIMES = 16_384


def _parse_text_time(value: str, tz: tzinfo, field: str) -> datetime:
    try:  # the common case: ISO 8601 as Python 3.11 reads it (Z, any fraction digits)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return _parse_other_text_time(value, tz, field)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Rejected(f"{field} is out of range in UTC: {value[:80]!r}") from None


def _parse_other_text_time(value: str, tz: tzinfo, field: str) -> datetime:
    """Text ``datetime.fromisoformat`` refuses as it is: padded, Qlik-Cli's slashes, a
    lowercase ``z``."""
    text = value.strip()
    slashed = _SLASHED.match(text)
    if slashed:  # Qlik-Cli prints "2020/03/03 19:45" (no seconds, no zone)
        year, month, day, clock = slashed.groups()
        text = f"{year}-{month}-{day}{clock}"
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(f"{field} is not a time: {value[:80]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 or 9999-12-31T23:59-01:00 leave datetime's range
        raise Rejected(f"{field} is out of range in UTC: {value[:80]!r}") from None


_DURATION = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def parse_duration(value: Any, *, field: str = "duration") -> timedelta | None:
    """Parse ``H:MM:SS[.ffffff]`` (Python's ``str(timedelta)``, as Zuora and QRS write it)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Rejected(f"{field} is not a duration: {type(value).__name__}")
    match = _DURATION.match(value.strip())
    if not match:
        raise Rejected(f"{field} is not a duration: {value[:80]!r}")
    days, hours, minutes, seconds = match.groups()
    try:
        return timedelta(
            days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds)
        )
    except OverflowError:  # "99999999999:00:00": more than timedelta's 999,999,999 days
        raise Rejected(f"{field} is out of range: {value[:80]!r}") from None


def optional_int(value: Any, *, field: str) -> int | None:
    """An integer count, or ``None``. Numeric strings are accepted, negatives rejected."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Rejected(f"{field} must be an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal() and value.isascii():
        value = int(value)  # isdigit() would let "²" through to int() and a ValueError out
    if not isinstance(value, int):
        raise Rejected(f"{field} must be an integer, got {str(value)[:40]!r}")
    if value < 0:
        raise Rejected(f"{field} must not be negative, got {value}")
    return value


def source_of(ctx: Context, *candidates: Any, default: str = "default") -> str:
    """The first non-empty candidate from the document, else the context's, else ``default``."""
    for candidate in candidates:
        if isinstance(candidate, (str, int)) and not isinstance(candidate, bool) and str(candidate):
            return str(candidate)
    return ctx.source or default


MAX_ID = 256


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced, so the event always encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def identifier(value: Any, field: str, *, numbers: bool = False) -> str:
    """A required identifier: non-empty text of at most ``MAX_ID`` characters (an
    integer too, as text, when ``numbers``), or a one-line ``Rejected``."""
    if (type(value) is str and 0 < len(value) <= MAX_ID and value.isascii() and value.isprintable()
            and value[0] != " " and value[-1] != " "):
        return value  # one clean line already (the only ASCII printable space is " "): most ids
    if value is None or value == "":
        raise Rejected(f"missing required field {field!r}")
    kinds = (str, int) if numbers else str
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise Rejected(f"{field} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise Rejected(f"missing required field {field!r}")
    if len(text) > MAX_ID:
        raise Rejected(f"{field} is {len(text)} characters long (at most {MAX_ID})")
    if clean_text(text) != text:
        raise Rejected(f"{field} is not valid Unicode text")
    return text


TIMELINE_ENV = "JOBSTREAM_VENDOR_TIMELINE"
"""``<start unix seconds>:<factor>:<span seconds>``: a demo's shared vendor timeline."""


class Timeline(msgspec.Struct, frozen=True):
    """A vendor clock that several processes agree on (the demo's simulators and the
    ingestors that poll them), so that data made ``factor`` times faster than real time
    still ends in the past.

    It starts ``(factor - 1) * span_s`` seconds before the wall time ``start`` and runs
    ``factor`` times faster than the wall clock, so it reaches the wall clock at
    ``start + span_s`` (the demo's end) and follows it from then on: it is never ahead.
    """

    start: float
    factor: float
    span_s: float

    @classmethod
    def starting_now(cls, factor: float, span_s: float) -> "Timeline":
        return cls(float(int(time.time())), factor, span_s)  # whole seconds: the text round-trips

    @classmethod
    def parse(cls, text: str) -> "Timeline":
        try:
            start, factor, span = (float(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"{TIMELINE_ENV}={text!r} is not <start unix s>:<factor>:<span s>") from None
        if factor < 1 or span < 0:
            raise ValueError(f"{TIMELINE_ENV}={text!r}: the factor must be at least 1 and the span not negative")
        return cls(start, factor, span)

    def text(self) -> str:
        return f"{self.start:.3f}:{self.factor:g}:{self.span_s:g}"

    @property
    def epoch(self) -> datetime:
        """Vendor time at wall time ``start``."""
        return datetime.fromtimestamp(self.start - (self.factor - 1) * self.span_s, UTC)

    def elapsed(self, wall: float) -> float:
        """Vendor seconds since ``epoch`` at wall time ``wall`` (unix seconds)."""
        real = wall - self.start
        if real <= self.span_s:
            return real * self.factor
        return self.span_s * self.factor + (real - self.span_s)

    def at(self, wall: float) -> datetime:
        return self.epoch + timedelta(seconds=self.elapsed(wall))


def timeline_from_env() -> Timeline | None:
    text = os.environ.get(TIMELINE_ENV)
    return Timeline.parse(text) if text else None


def receive_now() -> datetime:
    """The ingestors' receive clock: the wall clock, or the shared vendor timeline when
    ``JOBSTREAM_VENDOR_TIMELINE`` is set (the demo), so that received_at, heartbeats and
    the simulated vendors' times are one clock."""
    timeline = timeline_from_env()
    return datetime.now(UTC) if timeline is None else timeline.at(time.time())


def utc_millis(value: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC, as Informatica CIH and Qlik QRS write and read times."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utc_micros(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds and ``Z``, as Airflow's date-time filters read it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def header_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware UTC time (the vendor's clock), None when absent,
    unreadable or without a zone."""
    if not value:
        return None
    from email.utils import parsedate_to_datetime

    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def content_digest(item: Any) -> str:
    """A short digest of a JSON document's content (keys sorted): what a poller remembers of
    an object it sent, to send it again only when it changed."""
    import hashlib

    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
