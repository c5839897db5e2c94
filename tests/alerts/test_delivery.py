"""Apprise delivery to real receivers: the alert id travels with the message, failures
are retried a bounded number of times, and secrets never show in a reason."""

from __future__ import annotations

from pipeline.alerts import delivery
from tests.support.receivers import SmtpReceiver, WebhookReceiver


async def test_webhook_gets_the_alert_id_as_header_and_field(webhook: WebhookReceiver) -> None:
    channel = delivery.open_channel(webhook.url, "test")
    reason = await delivery.send(channel, "title", "body text", "alert-123", attempts=1, retry_base_s=0)
    assert reason is None
    [got] = webhook.wait_for(1)
    assert got.headers[delivery.ALERT_ID_HEADER] == "alert-123"
    assert got.body["alert_id"] == "alert-123"
    assert got.body["title"] == "title" and got.body["message"] == "body text"


async def test_a_receiver_that_fails_then_recovers_gets_the_alert(webhook: WebhookReceiver) -> None:
    webhook.fail_next = 2
    channel = delivery.open_channel(webhook.url, "test")
    reason = await delivery.send(channel, "t", "b", "alert-9", attempts=3, retry_base_s=0.01)
    assert reason is None
    assert webhook.refused == 2 and len(webhook.received()) == 1


async def test_giving_up_says_why_without_the_secret(webhook: WebhookReceiver) -> None:
    webhook.fail_next = 10
    secret_url = f"json://hookuser:t0ps3cretpw@127.0.0.1:{webhook.port}/hook"
    channel = delivery.open_channel(secret_url, "test")
    reason = await delivery.send(channel, "t", "b", "alert-10", attempts=2, retry_base_s=0.01)
    assert reason is not None and reason.startswith("json: gave up after 2 attempts")
    assert "500" in reason or "Internal Server Error" in reason
    assert "t0ps3cretpw" not in reason
    assert webhook.refused == 2


async def test_email_carries_the_alert_id_header(smtp: SmtpReceiver) -> None:
    channel = delivery.open_channel(smtp.url, "test")
    reason = await delivery.send(channel, "[jobstream] run FAILED", "What: run FAILED", "alert-mail", attempts=1, retry_base_s=0)
    assert reason is None
    [mail] = smtp.wait_for(1)
    assert mail[delivery.ALERT_ID_HEADER] == "alert-mail"
    assert mail["Subject"] == "[jobstream] run FAILED"


def test_an_unusable_url_is_named_by_scheme_only() -> None:
    import pytest

    with pytest.raises(delivery.DeliveryError) as caught:
        delivery.open_channel("nosuchscheme://user:hunter2@host/x", "rule r")
    assert "nosuchscheme://" in str(caught.value) and "hunter2" not in str(caught.value)


async def test_the_local_receiver_counts_a_repeat_once(webhook: WebhookReceiver) -> None:
    channel = delivery.open_channel(webhook.url, "test")
    for alert in ("a1", "a2", "a1"):
        assert await delivery.send(channel, "t", "b", alert, attempts=1, retry_base_s=0) is None
    assert len(webhook.received()) == 3
    assert webhook.alert_ids() == ["a1", "a2"]
