"""`FakeAnthropic`: a local stand-in for the Anthropic HTTP API, served from a daemon thread."""

from __future__ import annotations

import threading
from types import TracebackType

from watcher._fake._batches import BatchStore
from watcher._fake._http import FakeHTTPServer
from watcher._fake._reply import FakeReply, RecordedRequest, ReplyQueue
from watcher._fake._routes import Routes

__all__ = ["FakeAnthropic"]

# How long the serving loop may take to notice `stop()`; also its idle wake-up period.
_POLL_INTERVAL_S = 0.02


class FakeAnthropic:
    """A fake Anthropic API on a local port that the real SDK can call over HTTP.

    Serves the Messages API (plain, beta, streamed), count_tokens, Message Batches and the
    Vertex `rawPredict` / `streamRawPredict` routes. Message-creating requests consume the
    replies queued with `reply()` / `fail()` in order, then fall back to `default`. Every request
    is appended to `requests` before it is answered. All methods are thread-safe; `start()` and
    `stop()` are idempotent, and `stop()` blocks until open connections are closed.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default: FakeReply | None = None) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._replies = ReplyQueue(default or FakeReply())
        self._batches = BatchStore(self._replies)
        self._routes = Routes(self._replies, self._batches)
        self._lock = threading.Lock()
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def default(self) -> FakeReply:
        """The reply used when the queue is empty."""
        return self._replies.default

    @default.setter
    def default(self, reply: FakeReply) -> None:
        self._replies.default = reply

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. `http://127.0.0.1:54321`; raises RuntimeError before `start()`."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not running: call start() or use `with FakeAnthropic():`.")
        return self._routes.base_url

    def start(self) -> FakeAnthropic:
        """Bind the port and serve from a daemon thread; return self. Raises OSError if the port is taken."""
        if self._server is not None:
            return self
        server = FakeHTTPServer((self.host, self.port), self._routes, self._record)
        bound_host, bound_port = server.server_address[:2]
        self._routes.base_url = f"http://{_url_host(str(bound_host))}:{bound_port}"
        self._thread = threading.Thread(
            target=server.serve_forever, args=(_POLL_INTERVAL_S,), name="FakeAnthropic", daemon=True
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the port, and join the serving thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.close()
        thread.join()
        self._server = self._thread = None

    def reply(self, *replies: FakeReply) -> None:
        """Queue `replies`, consumed in order by message-creating requests (one per batch request)."""
        self._replies.extend(replies)

    def fail(self, status: int, times: int = 1) -> None:
        """Queue `times` error replies with HTTP `status`, e.g. `fail(429)` or `fail(529, times=3)`."""
        self._replies.extend(tuple(FakeReply(status=status) for _ in range(times)))

    def clear(self) -> None:
        """Forget recorded requests, queued replies and batches; `default` stays."""
        with self._lock:
            self.requests.clear()
        self._replies.clear()
        self._batches.clear()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
