"""An embedded broker behind a front the tests serve themselves (TLS or SASL, which Tansu
0.6.0 cannot serve): the front binds port 0 on its own event loop in a thread, Tansu
advertises the front's address, and each subclass says how a connection is handled."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

from pipeline.broker import EmbeddedBroker


class FrontedBroker:
    """Tansu behind a front on a port the front bound itself (port 0)."""

    def __init__(self, folder: Path, *, tls: ssl.SSLContext | None = None) -> None:
        self.folder = folder
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self.broker: EmbeddedBroker | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "FrontedBroker":
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
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self._tls))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _upstream(self, writer: asyncio.StreamWriter) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to Tansu for one client, or None (the client's closed) when Tansu is gone."""
        assert self.broker is not None
        try:
            return await asyncio.open_connection(self.broker.host, self.broker.port)
        except OSError:
            writer.close()
            return None


async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    """Copy bytes one way until either side closes (ssl.SSLError is an OSError)."""
    try:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
    except OSError:
        pass
    finally:
        target.close()
