"""An embedded broker that clients reach over TLS only.

Tansu 0.6.0 cannot serve TLS itself: ``--cert`` with ``--key`` is refused by its argument
parser ("the argument '--cert <CERT>' cannot be used with '--key <KEY>'") and ``--cert``
alone leaves the listener in plain text. So the tests put a TLS front before it: a
throwaway CA (trustme) signs a certificate for 127.0.0.1, the front terminates TLS
(asking for a client certificate when ``mutual``) and relays the bytes to Tansu, which
advertises the front's address, so every connection a client opens is TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.front import FrontedBroker, pipe


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA clients trust, and a client certificate and key it signed."""

    ca: Path
    client_cert: Path
    client_key: Path


class TlsFrontedBroker(FrontedBroker):
    """Tansu behind a TLS front on a port the front bound itself (port 0)."""

    def __init__(self, folder: Path, *, mutual: bool = False) -> None:
        self.folder = folder
        self.mutual = mutual
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("jobstream-client@example.com")
        self.files = TlsFiles(folder / "ca.pem", folder / "client.pem", folder / "client.key")
        ca.cert_pem.write_to_path(str(self.files.ca))
        client.cert_chain_pems[0].write_to_path(str(self.files.client_cert))
        client.private_key_pem.write_to_path(str(self.files.client_key))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(self._context)
        if mutual:
            ca.configure_trust(self._context)
            self._context.verify_mode = ssl.CERT_REQUIRED
        super().__init__(folder, tls=self._context)

    def env(self, protocol: str = "SSL") -> dict[str, str]:
        """The settings a role needs to reach this broker (client certificate when mutual)."""
        env = {"JOBSTREAM_SECURITY_PROTOCOL": protocol, "JOBSTREAM_SSL_CA_FILE": str(self.files.ca)}
        if self.mutual:
            env |= {"JOBSTREAM_SSL_CERT_FILE": str(self.files.client_cert), "JOBSTREAM_SSL_KEY_FILE": str(self.files.client_key)}
        return env

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._upstream(writer)
        if upstream is not None:
            await asyncio.gather(pipe(reader, upstream[1]), pipe(upstream[0], writer))
