from __future__ import annotations

import pytest

from tests.support.receivers import SmtpReceiver, WebhookReceiver


@pytest.fixture
def webhook() -> WebhookReceiver:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> SmtpReceiver:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()
