"""A run's or a dead letter's story as text (oldest first) or as one JSON document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import orjson

from pipeline.explain import DeadLetterStory, RunStory
from pipeline.explain.refold import COMPARED_FIELDS, Step
from pipeline.explain.story import RawRecord, renormalize

PAYLOAD_CHARS = 600
"""How much of a vendor payload the text shows (JSON shows it whole)."""


def _time(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else ("" if value is None else str(value))


def _plain(value: Any) -> Any:
    """A value as JSON can carry it."""
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, msgspec.Struct):
        return _plain(msgspec.structs.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return value.value
    return value


def _transition_line(t: Any) -> str:
    flags = [flag for flag in ("late", "duplicate", "illegal") if getattr(t, flag)]
    frm = t.from_state.value if t.from_state is not None else "(none)"
    return f"{frm} -> {t.to_state.value} ({t.cause.value}{', ' + ', '.join(flags) if flags else ''}) id {t.transition_id[:12]}"


def _state_line(step: Step) -> str:
    r = step.after
    return (f"state {r.state.value}, attempt {r.attempt}, retries {r.retries}, stale episodes {r.stale_episodes}, "
            f"reactivations {r.reactivations}, events {r.events}, version {r.version}")


def _raw_dict(record: RawRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    data: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if record.missing:
        data["missing"] = record.missing
        return data
    data.update(timestamp=_time(record.timestamp), key=record.key, envelope=record.envelope)
    events, why = renormalize(record)
    data["normalizer_today"] = [e.event_id for e in events] if events is not None else why
    return data


def _step_dict(step: Step) -> dict[str, Any]:
    return {
        "rule": step.rule, "action": step.action, "at": _time(step.at),
        "event": _plain({f: getattr(step.event, f) for f in step.event.__struct_fields__}) if step.event else None,
        "transitions": [_plain({f: getattr(t, f) for f in t.__struct_fields__}) for t in step.transitions],
        "state_after": _plain({f: getattr(step.after, f) for f in (*COMPARED_FIELDS, "deadline")}),
    }


def run_json(story: RunStory) -> str:
    """The whole story as one JSON document, for tools."""
    refs = [s.event.raw_ref for s in story.refold.steps if s.event is not None and s.event.raw_ref is not None]
    document = {
        "run_key": story.stored.run_key,
        "database": story.stored.source,
        "stale_after_s": story.stale_after.total_seconds(),
        "raw_note": story.raw_note,
        "raw_records": [_raw_dict(story.raw.get(ref)) or {"topic": ref.topic, "partition": ref.partition, "offset": ref.offset}
                        for ref in dict.fromkeys(refs)],
        "steps": [_step_dict(s) for s in story.refold.steps],
        "stored_transitions": _plain([dict(t) for t in story.stored.transitions]),
        "alerts": _plain([dict(a) for a in story.stored.alerts]),
        "stored_run": _plain(dict(story.stored.run)) if story.stored.run else None,
        "agrees": story.refold.agrees,
        "differences": [{"field": d.field, "stored": _plain(d.stored), "refolded": _plain(d.refolded)} for d in story.refold.differences],
        "missing_transitions": list(story.refold.missing_transitions),
        "extra_transitions": list(story.refold.extra_transitions),
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"


def run_text(story: RunStory) -> str:
    """The story oldest first: per raw record, its events and what the lifecycle did."""
    lines = [f"run {story.stored.run_key}  (from {story.stored.source}; stale_after {story.stale_after.total_seconds():g} s)"]
    if story.raw_note:
        lines.append(f"  note: {story.raw_note}")
    shown: set[Any] = set()
    for step in story.refold.steps:
        lines.append("")
        event = step.event
        if event is None:
            lines.append(f"{_time(step.at)}  no event: the watermark passed the run's deadline")
        else:
            ref = event.raw_ref
            if ref is not None and ref not in shown:
                shown.add(ref)
                lines.extend(_raw_lines(story.raw.get(ref), ref))
            where = f" (raw {ref.topic}[{ref.partition}]@{ref.offset})" if ref is not None else ""
            lines.append(f"  event {event.event_id[:12]}{where}: {event.native_state or '(no native state)'} -> "
                         f"{event.state.value}, attempt {event.attempt if event.attempt is not None else '(inferred)'}, "
                         f"occurred {_time(event.occurred_at)}, received {_time(event.received_at)}")
            if event.error_code or event.error_message:
                lines.append(f"    error {event.error_code or ''}: {event.error_message or ''}")
        lines.append(f"    {step.rule} {step.action}")
        for t in step.transitions:
            lines.append(f"    transition {_transition_line(t)}")
        lines.append(f"    after: {_state_line(step)}")
    evicted = [t for t in story.stored.transitions if t["cause"] == "evicted"]
    for t in evicted:
        lines += ["", f"{_time(t['at'])}  R21 the run left the worker's state still {t['to_state']} (stored record, cause evicted)"]
    lines += ["", "alerts:"]
    lines += [f"  {_time(a['at'])} {a['rule']} {a['status']}: {a['message'] or ''}" for a in story.stored.alerts] or ["  (none)"]
    lines += ["", "stored row (job_runs):"]
    if story.stored.run is None:
        lines.append("  (none)")
    else:
        lines += [f"  {name} = {_time(story.stored.run.get(name)) if story.stored.run.get(name) is not None else 'NULL'}"
                  for name in ("state", *COMPARED_FIELDS[1:], "deadline", "left_open") if name in story.stored.run]
    lines.append("")
    folded = story.refold
    if folded.agrees:
        lines.append(f"agrees: the refold reproduces the stored row ({len(COMPARED_FIELDS)} fields) "
                     f"and every stored transition ({sum(len(s.transitions) for s in folded.steps)})")
    else:
        lines.append("DISAGREES with the stored data:")
        lines += [f"  {d.field}: stored {_time(d.stored) or 'NULL'}, refolded {_time(d.refolded) or 'NULL'}" for d in folded.differences]
        lines += [f"  stored transition {i} not reproduced" for i in folded.missing_transitions]
        lines += [f"  refold emitted transition {i}, never stored" for i in folded.extra_transitions]
    return "\n".join(lines) + "\n"


def _raw_lines(record: RawRecord | None, ref: Any) -> list[str]:
    head = f"raw record {ref.topic}[{ref.partition}]@{ref.offset}"
    if record is None:
        return [f"{head}: not fetched"]
    if record.missing:
        return [f"{head}: {record.missing}"]
    envelope = record.envelope or {}
    lines = [f"{head}  key {record.key}  kafka time {_time(record.timestamp)}  received_at {envelope.get('received_at', '')}"
             f"  source {envelope.get('source', '')}"]
    payload = orjson.dumps(envelope.get("payload")).decode()
    lines.append(f"  payload {payload[:PAYLOAD_CHARS]}{' ...' if len(payload) > PAYLOAD_CHARS else ''}")
    events, why = renormalize(record)
    if events is None:
        lines.append(f"  normalizer today: {why}")
    else:
        lines.append(f"  normalizer today: {len(events)} event(s): {', '.join(e.event_id[:12] for e in events)}")
    return lines


def dead_letter_text(story: DeadLetterStory) -> str:
    row = story.row
    lines = [f"dead letter {row['dead_letter_id']}",
             f"  refused at stage {row.get('stage')} ({row.get('error_type')}), {_time(row.get('at'))}",
             f"  reason: {row.get('reason')}",
             f"  reason code: {row.get('reason_code')}",
             f"  record: {row.get('topic')}[{row.get('partition')}]@{row.get('offset')}, vendor {row.get('vendor')}, {row.get('value_size')} bytes"]
    if story.kept_bytes is not None:
        lines.append(f"  bytes as kept: {story.kept_bytes[:PAYLOAD_CHARS]!r}{' ...' if len(story.kept_bytes) > PAYLOAD_CHARS else ''}")
    if story.raw_note:
        lines.append(f"  note: {story.raw_note}")
    elif story.in_kafka is not None:
        if story.in_kafka.missing:
            lines.append(f"  in Kafka: {story.in_kafka.missing}")
        else:
            same = "the same bytes" if story.in_kafka.value == story.kept_bytes else "OTHER bytes than the dead letter kept"
            lines.append(f"  in Kafka: still held, {same}")
    return "\n".join(lines) + "\n"


def dead_letter_json(story: DeadLetterStory) -> str:
    document = {
        "dead_letter": _plain(story.row),
        "bytes_kept": story.kept_bytes.decode("utf-8", "replace") if story.kept_bytes is not None else None,
        "in_kafka": _raw_dict(story.in_kafka) if story.in_kafka is not None else None,
        "same_bytes_in_kafka": (story.in_kafka.value == story.kept_bytes) if story.in_kafka and not story.in_kafka.missing else None,
        "note": story.raw_note,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode() + "\n"
