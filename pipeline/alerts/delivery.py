"""Delivery through Apprise (Slack, Teams, email, JSON webhooks and ~100 more).

Each URL becomes one channel. The alert id goes with every message: in the text, as
the header ``X-Jobstream-Alert-Id`` where the channel has headers (webhooks, email),
and as the field ``alert_id`` in a JSON webhook's body, so a receiver can drop a
repeat. URLs hold secrets: only their scheme ever leaves this module, and reasons
taken from Apprise's log are scrubbed of every secret part of the URL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote

import apprise
from apprise.plugins.base import NotifyBase

ALERT_ID_HEADER = "X-Jobstream-Alert-Id"
_PIECES = re.compile(r"[/:@?&=#+,;]+")


class DeliveryError(ValueError):
    """A URL Apprise cannot use (named by scheme only: the URL may hold secrets)."""


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "unknown"


@dataclass(slots=True)
class Channel:
    """One Apprise URL, ready to send; ``secrets`` are the URL parts to scrub."""

    scheme: str
    plugin: NotifyBase
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


_asset = apprise.AppriseAsset(storage_mode="memory")


def carries_secrets(url: str) -> bool:
    """Whether ``url`` has parts Apprise hides in its privacy view (tokens, passwords)."""
    try:
        channel = open_channel(url, "url")
    except DeliveryError:
        return False
    return any(secret != url for secret in channel.secrets)


def open_channel(url: str, where: str) -> Channel:
    plugin = apprise.Apprise.instantiate(url, asset=_asset)
    if plugin is None:
        raise DeliveryError(f"{where}: Apprise cannot use the {scheme_of(url)}:// URL (unknown scheme or bad format)")
    public = set(_PIECES.split(plugin.url(privacy=True)))
    secret_parts = {piece for piece in _PIECES.split(url) if len(piece) >= 3 and piece not in public}
    secrets = {url, *secret_parts, *(unquote(piece) for piece in secret_parts)}
    return Channel(scheme_of(url), plugin, tuple(sorted(secrets, key=len, reverse=True)))


def _send_once(channel: Channel, title: str, body: str, alert_id: str) -> str | None:
    """Blocking (Apprise uses requests / smtplib): run in a thread. None, or why not."""
    plugin = channel.plugin
    headers = getattr(plugin, "headers", None)
    if isinstance(headers, dict):
        headers[ALERT_ID_HEADER] = alert_id
    extras = getattr(plugin, "payload_extras", None)
    if isinstance(extras, dict):
        extras["alert_id"] = alert_id
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        try:
            ok = plugin.notify(body=body, title=title, notify_type=apprise.NotifyType.FAILURE,
                               body_format=apprise.NotifyFormat.TEXT)
        except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed delivery, not a crash
            ok = False
            logging.getLogger("apprise").warning("%s: %s", type(exc).__name__, exc)
        log = captured.getvalue()
    if ok:
        return None
    last = [line for line in log.splitlines() if line.strip()]
    return channel.scrub(" ".join(last[-1].split())[:300]) if last else "Apprise reported a failure"


async def send(
    channel: Channel, title: str, body: str, alert_id: str, *, attempts: int, retry_base_s: float,
) -> str | None:
    """Deliver with bounded retries (delays retry_base_s, x2, x4...). None when delivered,
    else the last reason, prefixed with the scheme and the number of attempts."""
    reason = None
    for attempt in range(1, attempts + 1):
        reason = await asyncio.to_thread(_send_once, channel, title, body, alert_id)
        if reason is None:
            return None
        if attempt < attempts:
            await asyncio.sleep(retry_base_s * 2 ** (attempt - 1))
    return f"{channel.scheme}: gave up after {attempts} attempts: {reason}"
