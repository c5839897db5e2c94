"""The one base of the HTTP pollers (Qlik QRS, Zuora, Informatica, Airflow).

``pipeline.sources`` holds the loop every poller runs in (``run_poller``: poll, send,
heartbeat, store the cursor; back off with jitter, never sooner than the vendor's
Retry-After; a ``TerminalError`` such as 401/403 ends the ingestor) and the HTTP pieces
(``http_call``, paging, ``Watermark``: the overlap window with its memory of (id, updated)
pairs, ``CallBudget``). What is left to each vendor is its API calls and the plan of one
poll; this base is the rest a poller was writing again:

- the source name and cursor key (``<vendor>:<source>``), the redactor from its settings;
- a body that is not the API's shape (``BadAnswer``) is sent unkeyed, to be dead-lettered
  with its reason, and the same cursor is polled again soon (at most 5 s);
- ``run``: one HTTP session and ``run_source`` with the shared backoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import aiohttp

from pipeline.config.resolver import named
from pipeline.sources import Backoff, BadAnswer, Poll, Record, run_source
from pipeline.vendors._common import receive_now

RETRY_BAD_ANSWER_S = 5.0
"""Longest wait before a poll whose answer was not the API's shape is made again."""
BACKOFF = Backoff(maximum_s=60.0)
"""Every poller's backoff after transient failures (1 s doubling to 60 s, jittered)."""


def url_problems(settings: Any, section: str, example: str) -> list[str]:
    """The one rule for a poller's ``base_url``: an http(s) URL."""
    if settings.base_url.startswith(("http://", "https://")):
        return []
    return [f"{named(settings, 'base_url', f'[{section}]')} must be an http(s) URL, e.g. {example}"]


class HttpPoller:
    """A ``PollingSource`` over one vendor API: subclasses set ``vendor`` and implement
    ``initial_cursor`` and ``poll_once`` (``poll`` wraps it)."""

    vendor: ClassVar[str]
    repeat: ClassVar[str] = "the window is read again"
    """What happens after a bad answer, for the warning line."""

    def __init__(self, settings: Any, http: aiohttp.ClientSession | None) -> None:
        self.settings = settings
        self.source: str = settings.source
        self.http = http
        self.redact = settings.redactor()
        self.log = logging.getLogger(f"pipeline.ingest.{self.vendor}")

    @property
    def cursor_key(self) -> str:
        return f"{self.vendor}:{self.source}"

    def initial_cursor(self) -> Any:
        raise NotImplementedError

    async def poll_once(self, cursor: Any) -> Poll:
        raise NotImplementedError

    async def poll(self, cursor: Any) -> Poll:
        """One poll; a bad answer is dead-lettered and the same cursor polled again."""
        try:
            return await self.poll_once(cursor)
        except BadAnswer as exc:
            return self.read_again(exc, cursor)

    def read_again(self, exc: BadAnswer, cursor: Any) -> Poll:
        self.log.warning("%s: %s; the body goes to the dead letters and %s", self.cursor_key, exc, self.repeat)
        body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
        return Poll(records=[Record(key=None, payload=body, received_at=receive_now())], cursor=cursor,
                    next_in_s=min(self.settings.poll_interval_s, RETRY_BAD_ANSWER_S))

    @classmethod
    async def run(cls, settings: Any, bootstrap: str, *, stop: asyncio.Event) -> None:
        """``pipeline ingest <vendor>``: poll until ``stop``."""
        async with aiohttp.ClientSession() as http:
            source = cls(settings, http)
            await run_source(source, bootstrap, stop=stop, redact=source.redact, backoff=BACKOFF)
