"""A value that must never be printed, and the redactor that keeps it out of every log line.

A ``Secret`` comes only from an environment variable or a file a ``*_file`` setting names
(``pipeline.config.resolver`` refuses one written in a config file or given as a flag). Its
repr and str are ``***``; ``reveal`` hands the value to the one call that needs it. Every
secret the resolver reads (``given_secret``) registers its value with this process's
redactor, so a log line that quotes it anyway (an URL in an exception, a vendor echoing a
header) shows ``***``: ``Redactor`` replaces the secrets it was given and every registered
one. A ``Secret`` made in code (a test's fixture) is not registered: only configuration is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

REDACTED = "***"
MIN_REDACTABLE = 4
"""Shorter secrets are not replaced (they would mangle every message) and are refused by the
settings that read them."""

_lock = threading.Lock()
_registered: list[str] = []


def register(value: str) -> None:
    """Redact ``value`` from every log line of this process from now on."""
    if len(value) < MIN_REDACTABLE:
        return
    with _lock:
        if value not in _registered:
            _registered.append(value)
            _registered.sort(key=len, reverse=True)


def registered() -> tuple[str, ...]:
    with _lock:
        return tuple(_registered)


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must not be printed: its repr and str are redacted; ``reveal``
    hands it to the one call that needs it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED


def given_secret(value: str) -> Secret:
    """A secret the configuration gave this process: redacted from every log line from now on."""
    register(value)
    return Secret(value)


def reveal(value: "Secret | str | None") -> str | None:
    """The plain text of a secret (a plain string passes through)."""
    return value.reveal() if isinstance(value, Secret) else value


class Redactor:
    """Replaces every known secret in a text by ``***`` (those it was given and every
    registered ``Secret``); also a logging filter."""

    def __init__(self, secrets: Iterable["str | Secret | None"] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: "str | Secret | None") -> None:
        for secret in secrets:
            text = reveal(secret)
            if text and len(text) >= MIN_REDACTABLE and text not in self._secrets:
                self._secrets.append(text)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in sorted({*self._secrets, *registered()}, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self(record.getMessage())
        record.args = None
        return True


def as_secrets(settings: object, *names: str) -> None:
    """In a frozen settings object's ``__post_init__``: a secret given as plain text (by
    code: the resolver already makes ``Secret``s) becomes a ``Secret``."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, str):
            object.__setattr__(settings, name, Secret(value))
