"""Real receivers for alert deliveries: the package's aiohttp webhook endpoint and an
aiosmtpd SMTP server, each on a 127.0.0.1 port it binds itself, in its own thread (so a test, the
alerter in a task or the alerter in a subprocess can all reach them)."""

from __future__ import annotations

import email
import errno
import threading
import time
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pipeline.alerts.receiver import Delivery, LocalReceiver
from pipeline.ops import ports

WebhookReceiver = LocalReceiver
__all__ = ["Delivery", "SmtpReceiver", "WebhookReceiver"]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


class SmtpReceiver:
    """An SMTP server that requires a login (user ``alerts``, password ``password``)."""

    user = "alerts"
    password = "s3cret-smtp-pass"

    def __init__(self) -> None:
        self.mailbox = _Mailbox()
        self.port = 0
        self.controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok)

    @property
    def url(self) -> str:
        return (
            f"mailto://{self.user}:{self.password}@127.0.0.1:{self.port}"
            "?from=jobstream@example.com&to=ops@example.com&mode=insecure"
        )

    def start(self) -> "SmtpReceiver":
        """Listen on a candidate port; aiosmtpd cannot bind port 0 (it connects to its own
        port to check it is up), so a port taken meanwhile means the next candidate."""
        ports.first_free(self._start_on)
        return self

    def _start_on(self, port: int) -> None:
        controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=port, authenticator=self._authenticate, auth_require_tls=False,
        )
        try:
            controller.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ports.PortTaken(str(exc)) from None
            raise
        self.controller, self.port = controller, port

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def messages(self) -> list[Message]:
        with self.mailbox.lock:
            return list(self.mailbox.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages()) < count:
            time.sleep(0.05)
        return self.messages()
