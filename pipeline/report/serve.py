"""``pipeline report --serve``: the same page over local HTTP, made again per request."""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_server(host: str, port: int, page: Callable[[], str]) -> ThreadingHTTPServer:
    """An HTTP server whose ``/`` answers ``page()`` (a failure is a 503 with its reason)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
            if self.path not in ("/", "/index.html"):
                self._answer(404, b"not found: the report is at /", "text/plain; charset=utf-8")
                return
            try:
                body, status, kind = page().encode("utf-8"), 200, "text/html; charset=utf-8"
            except Exception as exc:  # a query refused or the database gone: say it, keep serving
                body, status, kind = f"the report could not be made: {exc}".encode(), 503, "text/plain; charset=utf-8"
            self._answer(status, body, kind)

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)


def serve_forever(host: str, port: int, page: Callable[[], str], announce: Callable[[str], None]) -> None:
    server = make_server(host, port, page)
    bound_host, bound_port = server.server_address[:2]
    announce(f"http://{bound_host}:{bound_port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
