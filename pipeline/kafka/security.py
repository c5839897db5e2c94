"""How Jobstream proves who it is to Kafka and checks who Kafka is: the security protocol
(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the CA that signed the brokers' certificates,
a client certificate and key (mTLS), and SASL PLAIN or SCRAM-SHA-256/512 with a username
and a password that only the environment or a file gives (``Secret``: never in a repr,
a log line or an error).

One ``KafkaSecurity`` is built from the settings and turned into client options here,
for aiokafka (``client_options``) and for Faust (``faust_options``) alike, so every role
connects the same way. A file that cannot be read or a certificate that does not load is
a ``KafkaSecurityError`` of one line, before any client starts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDACTED = "***"


class KafkaSecurityError(ConfigError):
    """The Kafka security settings cannot be used (one line, naming the setting)."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must not be printed: its repr and str are redacted; ``reveal``
    hands it to the one call that needs it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """What a client needs beyond the bootstrap address; the default is PLAINTEXT."""

    protocol: str = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    mechanism: str = "PLAIN"
    username: str | None = None
    password: Secret | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def problems(self) -> list[str]:
        """What is inconsistent, one line each (no file is read here)."""
        lines = []
        if self.protocol not in PROTOCOLS:
            lines.append(f"security_protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
            return lines
        if self.mechanism not in MECHANISMS:
            lines.append(f"sasl_mechanism {self.mechanism!r}: use one of {', '.join(MECHANISMS)}")
        if self.sasl and not self.username:
            lines.append(f"security_protocol {self.protocol} needs sasl_username")
        if self.sasl and self.password is None:
            lines.append(f"security_protocol {self.protocol} needs a password: JOBSTREAM_SASL_PASSWORD or sasl_password_file")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            lines.append(f"ssl_ca_file, ssl_cert_file and ssl_key_file need security_protocol SSL or SASL_SSL, not {self.protocol}")
        if (self.cert_file is None) != (self.key_file is None):
            lines.append("ssl_cert_file and ssl_key_file go together (the client certificate and its key)")
        return lines

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (None for PLAINTEXT and SASL_PLAINTEXT): the brokers' names
        are checked against their certificates, signed by ``ca_file`` (else the system's
        CAs); the client certificate is presented when given."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(f"ssl_ca_file {str(self.ca_file)!r} cannot be used as a CA file ({_reason(exc)})") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise KafkaSecurityError(
                    f"ssl_cert_file {str(self.cert_file)!r} with ssl_key_file {str(self.key_file)!r} cannot be loaded "
                    f"({_reason(exc)})"
                ) from None
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for this security (one new SSL context each)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password.reveal() if self.password else None)
        return options

    def faust_options(self) -> dict[str, Any]:
        """faust.App's keyword arguments for this security: ``broker_credentials``
        (Faust hands them to each of its aiokafka clients)."""
        import faust

        if self.sasl:
            return {"broker_credentials": faust.SASLCredentials(
                username=self.username, password=self.password.reveal() if self.password else None,
                ssl_context=self.ssl_context(), mechanism=self.mechanism,
            )}
        if self.tls:
            return {"broker_credentials": faust.SSLCredentials(self.ssl_context())}
        return {}

    def describe(self) -> str:
        """For messages: the protocol, mechanism and user, never the password."""
        if self.sasl:
            return f"{self.protocol} {self.mechanism} as {self.username}"
        return self.protocol


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
