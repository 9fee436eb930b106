"""The stdlib HTTP/1.1 transport of the fake: one keep-alive thread per connection, one write per reply."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any
from urllib.parse import urlsplit

from watcher._fake._reply import RecordedRequest
from watcher._fake._routes import Response, Routes, error_response
from watcher._fake._wire import reason_phrase

__all__ = ["FakeHTTPServer"]

_MALFORMED = object()
_MAX_HEADERS = 200
_MAX_LINE = 65536
_Request = socket.socket | tuple[bytes, socket.socket]


class FakeHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound at construction; `close()` also ends live keep-alive connections.

    `routes` answers every request and `record` is called with each request before it is answered.
    """

    daemon_threads = True
    # socketserver's default listen backlog is 5: fifty clients connecting at once overflow it, and the
    # kernel drops or resets the surplus (the SDK sees ReadError), an error the real API does not make.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], routes: Routes, record: Callable[[RecordedRequest], None]) -> None:
        super().__init__(address, _Handler)
        self.routes = routes
        self.record = record
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: _Request, client_address: Any) -> None:
        """Track the accepted connection, so `close()` can end it, then serve it on a new thread."""
        if isinstance(request, socket.socket):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        """Ignore a client that went away mid-reply; report anything else as the stdlib does."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        """Forget and close a connection whose handler has returned."""
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close(self) -> None:
        """Stop serving, end open connections, join their threads and close the listening socket.

        Blocks until the serving loop has stopped; call it from a thread other than the server's.
        """
        self.stopping.set()
        self.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _shutdown_quietly(connection)
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer
    header_map: dict[str, str]
    raw_requestline: bytes  # set by the stdlib before parse_request(), undeclared in its stubs

    def parse_request(self) -> bool:
        """Parse the request line and headers into `command`, `path` and `header_map`.

        A lean stand-in for the stdlib's email-based parser, which costs more than the rest of a
        reply. Answers 400 and returns False on a malformed request line.
        """
        self.command, self.request_version = "", "HTTP/1.1"
        words = self.raw_requestline.decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.close_connection = True
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        self.header_map = _read_headers(self.rfile)
        connection = self.header_map.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def log_message(self, format: str, *args: object) -> None:
        """Stay silent: a test run must not print a line per request."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _dispatch(self) -> None:
        try:
            body = self._decoded_body()
        except ValueError:  # an unreadable content-length leaves the connection unusable
            self.close_connection = True
            self._send(error_response(400, "The content-length header is not a number."))
            return
        recorded_body = None if body is _MALFORMED else body
        self.server.record(RecordedRequest(self.command, self.path, self.header_map, recorded_body))
        if body is _MALFORMED:
            self._send(error_response(400, "The request body is not valid JSON."))
            return
        try:
            response = self.server.routes.answer(self.command, urlsplit(self.path).path, body)
        except Exception as error:  # a bug in the fake must not kill the connection's thread
            response = error_response(500, f"The fake API failed: {error!r}")
            response.headers = [("x-should-retry", "false")]
        self._send(response)

    def _decoded_body(self) -> object:
        length = int(self.header_map.get("content-length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # includes a body that is not UTF-8
            return _MALFORMED

    def _send(self, response: Response) -> None:
        if response.delay_s > 0 and self.server.stopping.wait(response.delay_s):
            return  # the server is stopping: drop the reply rather than hold up stop()
        if response.frames is None:
            head = self._head(response, [("content-length", str(len(response.body)))])
            self.wfile.write(head + response.body)
            return
        frames = response.frames
        if response.cut_after is not None:
            frames = frames[: response.cut_after]
            self.close_connection = True
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(frame), frame) for frame in frames)
        ending = b"" if response.cut_after is not None else b"0\r\n\r\n"
        self.wfile.write(self._head(response, [("transfer-encoding", "chunked")]) + chunks + ending)

    def _head(self, response: Response, framing: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {response.status} {reason_phrase(response.status)}"]
        fields = [("content-type", response.content_type), ("request-id", response.request_id)]
        fields += framing + response.headers
        if self.close_connection:
            fields.append(("connection", "close"))
        lines += [f"{name}: {value}" for name, value in fields]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_headers(rfile: BufferedIOBase) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = rfile.readline(_MAX_LINE)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _shutdown_quietly(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its handler
        connection.shutdown(socket.SHUT_RDWR)
