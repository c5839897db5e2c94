"""Stable reason codes for dead letters. Pure, no I/O.

A dead letter's ``reason`` is one line for humans and carries the variable parts of its
cause (byte offsets, ids, keys, values), so grouping by it splits one cause into many
rows. ``reason_code`` is the same cause with the variable parts removed: the error type
and the first words of the reason that do not vary, e.g. ``rejected.not_valid_json_
unexpected_end_of_data_line`` for every "not valid JSON: unexpected end of data: line 1
column N (char N)". A writer that knows a better code passes it; every other dead
letter gets this one (the worker, the alerter and the sink derive it the same way).
"""

from __future__ import annotations

import re

MAX_WORDS = 8
"""Words of the reason kept in a code: enough to tell causes apart, short enough to read."""

_QUOTED = re.compile(r"(\bgot\s+)?('[^']*'|\"[^\"]*\")")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_.-]{0,23}")
_WORD = re.compile(r"[a-z]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_VARIABLE_MARKS = frozenset(":/@=\\#?&")


def derive(error_type: str, reason: str) -> str:
    """The code of a dead letter whose writer gave none: ``<error_type>.<stable words>``."""
    return f"{snake(error_type) or 'error'}.{stable_words(reason) or 'unspecified'}"


def snake(name: str) -> str:
    """``UnknownTopic`` -> ``unknown_topic``, ``JSONDecodeError`` -> ``json_decode_error``."""
    return "_".join(_WORD.findall(_CAMEL.sub("_", name).lower()))


def stable_words(reason: str) -> str:
    """The reason's words that do not vary between letters of one cause, joined by ``_``.

    Dropped: quoted values (a quoted field name, a short identifier without digits, is
    kept, unless it follows "got": then it is the value received), tokens with a digit (offsets, ids, times, sizes) and tokens that look like keys,
    paths or URLs (a ``:``, ``/``, ``@`` or ``=`` inside them)."""
    text = _QUOTED.sub(_kept_quote, reason)
    words: list[str] = []
    for token in text.split():
        core = token.strip(".,;:()[]{}<>!")
        if not core or any(ch.isdigit() for ch in core) or any(ch in _VARIABLE_MARKS for ch in core):
            continue
        words.extend(_WORD.findall(_CAMEL.sub("_", core).lower()))
        if len(words) >= MAX_WORDS:
            break
    return "_".join(words[:MAX_WORDS])


def _kept_quote(quoted: re.Match[str]) -> str:
    got, inner = quoted.group(1), quoted.group(2)[1:-1]
    if got:
        return f" {got} "
    return f" {inner} " if _IDENTIFIER.fullmatch(inner) else " "
