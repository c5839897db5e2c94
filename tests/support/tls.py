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
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

from pipeline.broker import EmbeddedBroker


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA clients trust, and a client certificate and key it signed."""

    ca: Path
    client_cert: Path
    client_key: Path


class TlsFrontedBroker:
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
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.broker: EmbeddedBroker | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, protocol: str = "SSL") -> dict[str, str]:
        """The settings a role needs to reach this broker (client certificate when mutual)."""
        env = {"JOBSTREAM_SECURITY_PROTOCOL": protocol, "JOBSTREAM_SSL_CA_FILE": str(self.files.ca)}
        if self.mutual:
            env |= {"JOBSTREAM_SSL_CERT_FILE": str(self.files.client_cert), "JOBSTREAM_SSL_KEY_FILE": str(self.files.client_key)}
        return env

    def __enter__(self) -> "TlsFrontedBroker":
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.broker = EmbeddedBroker(log=self.folder / "tansu.log", advertised=self.bootstrap).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.broker is not None:
            self.broker.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._context))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.broker is not None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                target.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
