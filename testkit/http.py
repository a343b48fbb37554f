"""The part every stand-in server shares: a threaded HTTP server on 127.0.0.1, served from a daemon thread.

    with MyServer(...) as server:   # a LocalServer subclass: started, then stopped and closed
        client.get(server.url)

Handlers log nothing, and a client that hangs up (a timeout, a killed job) is normal here, not a traceback.
Run by hand, each stand-in takes ``--port`` and ``--latency`` (:func:`stand_in_parser`) and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vichat.checks import arg


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request is normal for a stand-in, not an error to print."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, headers and body in one write (no Nagle / delayed-ACK stall), no access log."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by default
        return

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """One whole answer; nothing when the client has already gone (it gave up waiting)."""
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


class LocalServer:
    """``handler`` served on ``host:port`` (0: a free port); ``url`` is the address plus ``url_path``."""

    url_path = ""
    thread_name = "stand-in"

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _QuietServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.url_path}"

    def start(self):
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def serve_until_ctrl_c(self, announce: str) -> int:
        """A stand-in's command line: print ``announce`` (``{url}`` filled in), serve until Ctrl-C, exit 0."""
        print(announce.format(url=self.url))
        with contextlib.suppress(KeyboardInterrupt):
            self.serve_forever()
        return 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stand_in_parser(module: str, doc: str, port: int) -> argparse.ArgumentParser:
    """The command line of ``python -m MODULE``: ``--port`` (default ``port``; 0 picks a free one) and
    ``--latency`` (seconds each answer waits)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    parser.add_argument("--port", type=arg("--port", minimum=0, maximum=65535, integer=True), default=port)
    parser.add_argument(
        "--latency", type=arg("--latency", minimum=0, maximum=3600), default=0.0, help="seconds per request"
    )
    return parser
