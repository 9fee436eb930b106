"""The daemon's HTTP port: OTLP/HTTP trace and log ingestion, the kill-switch and budgets API, health."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status

from ._auth import bearer_ok
from ._body import BodyError, body_length, read_body
from ._core import Daemon, IngestResult
from ._exposition import Scrape
from ._ingest import LOGS, METRICS, TRACES, Ingestor, Verdict, export_response, logs_response, metrics_response
from ._lending import LoanRequest

__all__ = ["MAX_WAIT_S", "DaemonServer"]

log = logging.getLogger("watcher.daemon")

_STATUS = {  # HTTP status, and the gRPC code the OTLP Status body carries
    Verdict.INVALID: (400, 3),
    Verdict.TOO_LARGE: (413, 8),
    Verdict.UNSUPPORTED: (415, 3),
    Verdict.BUSY: (503, 14),
    Verdict.UNAVAILABLE: (503, 14),
}
MAX_WAIT_S = 30.0
"""The longest a kill-switch long poll is held (`GET /v1/killswitch?wait=S`); a longer `wait` is cut to it."""
_RESPONSES: dict[str, Callable[[IngestResult], Message]] = {
    TRACES: export_response,
    LOGS: logs_response,
    METRICS: metrics_response,
}
_EXPORTS = {"/v1/traces": TRACES, "/v1/logs": LOGS, "/v1/metrics": METRICS}  # OTLP/HTTP path -> its signal
_LINGER_S = 2.0  # how long an unread body is discarded after the answer, so the client reads it


class DaemonServer(ThreadingHTTPServer):
    """One port for everything; a thread per connection (exporters keep a few connections alive).

    `token`, when set, is required as `Authorization: Bearer ...` on every route but /healthz,
    and is checked before a byte of the body is read. Exports go through `ingestor`, which
    bounds how many are read and stored at once. The listen backlog is `backlog` (capped by the
    kernel's `somaxconn`), so a burst of connections waits in the queue, not on SYN retries.
    A kill-switch long poll holds its connection's thread while it waits (at most `MAX_WAIT_S`):
    one thread per instrumented process, each mostly asleep on the books' revision.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        daemon: Daemon,
        ingestor: Ingestor,
        *,
        clock: Callable[[], datetime],
        token: str | None = None,
        metrics: Callable[[str, str], Scrape] | None = None,
        backlog: int = 1024,
    ) -> None:
        self.core, self.ingestor, self.clock, self.token = daemon, ingestor, clock, token
        self.metrics = metrics
        self.request_queue_size = backlog
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away before its answer (a hook process that exited during its long poll) is
        routine, logged at DEBUG; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, BrokenPipeError | ConnectionResetError):
            log.debug("%s left before its answer (%s)", client_address, type(error).__name__)
            return
        log.exception("error while answering %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: DaemonServer
    protocol_version = "HTTP/1.1"
    timeout = 60
    _unread = False  # a body was left unread: discard it after the answer (see finish)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._health()
        elif not self._authorized():
            return
        elif path == "/v1/killswitch":
            self._killswitch()
        elif path == "/v1/budgets":
            self._json(200, self.server.core.budgets(self.server.clock()))
        elif path == "/v1/report":
            query = dict(parse_qsl(urlsplit(self.path).query))
            try:
                self._json(200, self.server.core.report(self.server.clock(), query))
            except ValueError as error:
                self._json(400, {"error": str(error)})
        elif path == "/metrics" and self.server.metrics is not None:
            scrape = self.server.metrics(self.headers.get("accept", ""), self.headers.get("accept-encoding", ""))
            self._send(200, scrape.payload, scrape.content_type, scrape.headers)
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            return
        try:
            length = body_length(self.headers, self.server.ingestor.max_request_bytes)
        except BodyError as error:
            self._unread = self.close_connection = True
            self._refuse(path, error.status, str(error))
            return
        if path in _EXPORTS:
            self._export(length, _EXPORTS[path])
        elif path == "/v1/allowances":
            self._admin(length, self._allowances)
        elif path.startswith("/v1/killswitch/") and path.endswith(("/engage", "/release")):
            self._admin(length, lambda body: self._switch(path, body))
        else:
            self._admin(length, lambda _: self._json(404, {"error": f"no route POST {path}"}))

    def _health(self) -> None:
        """200 `ok`, or 503 `degraded` with the reason while the ledger cannot commit (docs/api.md)."""
        failure = self.server.ingestor.health()
        if failure is None:
            self._json(200, {"status": "ok"})
        else:
            self._json(503, {"status": "degraded", "reason": failure})

    def _killswitch(self) -> None:
        """The kill-switch document; with `wait`, a long poll: held while `revision` is still current (docs/api.md)."""
        query = dict(parse_qsl(urlsplit(self.path).query))
        if "wait" in query:
            try:
                wait_s = min(float(query["wait"]), MAX_WAIT_S)
            except ValueError:
                wait_s = -1.0
            if not wait_s >= 0:  # also NaN
                self._json(400, {"error": f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}"})
                return
            self.server.core.await_switches(query.get("revision"), wait_s)
        self._json(200, self.server.core.killswitch(self.server.clock()))

    def _authorized(self) -> bool:
        """True when the request carries the token; else answers 401 and closes, the body unread."""
        if bearer_ok(self.headers.get("authorization", ""), self.server.token):
            return True
        self.close_connection = True
        self._unread = "transfer-encoding" in self.headers or self.headers.get("content-length", "0").strip() != "0"
        self._json(401, {"error": "missing or wrong bearer token; set WATCHER_TOKEN to the daemon's token"})
        return False

    def _refuse(self, path: str, status: int, message: str) -> None:
        if path in _EXPORTS:
            self._status(status, _grpc_code(status), message, self.headers.get("content-type", ""))
        else:
            self._json(status, {"error": message})

    def _admin(self, length: int | None, answer: Callable[[bytes], None]) -> None:
        """Reads the body of an admin request (small; the request limit applies) and hands it to `answer`."""
        try:
            body = read_body(self.rfile, length, self.server.ingestor.max_request_bytes)
        except BodyError as error:
            self._unread = self.close_connection = True
            self._json(error.status, {"error": str(error)})
            return
        answer(body)

    def _export(self, length: int | None, signal: str) -> None:
        """An OTLP/HTTP export of `signal` (traces, logs or metrics): 200 with its export response only once stored."""
        content_type = self.headers.get("content-type", "")
        body = _Body(self, length)
        outcome = self.server.ingestor.export(
            body.read,
            content_type,
            encoding=self.headers.get("content-encoding", ""),
            dropped=self.headers.get("x-watcher-dropped-spans") if signal == TRACES else None,
            signal=signal,
        )
        if not body.whole:  # unread, or read only in part: the connection is out of step
            self._unread = self.close_connection = True
        if outcome.verdict is Verdict.STORED and outcome.result is not None:
            respond = _RESPONSES[signal]
            self._export_response(respond(outcome.result), content_type)
            return
        status, code = _STATUS[outcome.verdict]
        self._status(status, code, outcome.message, content_type, outcome.retry_after_s)

    def _export_response(self, response: Message, content_type: str) -> None:
        if _is_json(content_type):
            self._send(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._send(200, response.SerializeToString(), "application/x-protobuf")

    def _allowances(self, body: bytes) -> None:
        """Lends budget headroom to a hook process (docs/api.md); 404 from a daemon without a lender."""
        lender = self.server.core.lender
        if lender is None:
            self._json(404, {"error": "this daemon lends no allowances"})
            return
        try:
            answer = lender.lend(LoanRequest.parse(body))
        except KeyError as error:
            self._json(404, {"error": str(error.args[0])})
            return
        except ValueError as error:
            self._json(400, {"error": str(error)})
            return
        self._json(200, answer)

    def _switch(self, path: str, body: bytes) -> None:
        name, action = path.removeprefix("/v1/killswitch/").rsplit("/", 1)
        try:
            until = _until(body) if action == "release" else None
            answer = self.server.core.set_switch(name, "engaged" if action == "engage" else "released", until)
        except KeyError as error:
            self._json(404, {"error": str(error.args[0])})
            return
        except ValueError as error:
            self._json(400, {"error": str(error)})
            return
        self._json(200, answer)

    def _status(self, status: int, code: int, message: str, content_type: str, retry_after: int | None = None) -> None:
        """An OTLP error answer: a google.rpc.Status in the request's format, Retry-After when given."""
        headers = {"retry-after": str(retry_after)} if retry_after else {}
        rpc = Status(code=code, message=message)
        if _is_json(content_type):
            self._send(status, json_format.MessageToJson(rpc).encode(), "application/json", headers)
        else:
            self._send(status, rpc.SerializeToString(), "application/x-protobuf", headers)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def finish(self) -> None:
        """After an answer that left a body unread: a lingering close, as web servers do.

        The answer is already sent; half-closing and discarding what the client still sends (at
        most the size limit, for at most `_LINGER_S`, never kept) lets it read the answer instead
        of losing it to the reset that closing on unread data causes.
        """
        super().finish()
        if self._unread:
            _discard(self.connection, self.server.ingestor.max_request_bytes, time.monotonic() + _LINGER_S)


class _Body:
    """An export's body, read on demand by the ingestor; `whole` once it was read to its end."""

    def __init__(self, handler: _Handler, length: int | None) -> None:
        self._handler, self._length = handler, length
        self.whole = length == 0

    def read(self) -> bytes:
        handler = self._handler
        body = read_body(handler.rfile, self._length, handler.server.ingestor.max_request_bytes)
        self.whole = True
        return body


def _discard(connection: socket.socket, budget: int, deadline: float) -> None:
    try:
        connection.shutdown(socket.SHUT_WR)
        while budget > 0 and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            received = connection.recv(min(budget, 1 << 16))
            if not received:
                return
            budget -= len(received)
    except OSError:
        return


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


_UNTIL_FORM = 'a release body is empty or {"until": TIME}, TIME in RFC 3339 with an offset, e.g. 2026-11-25T18:00:00Z'


def _until(body: bytes) -> datetime | None:
    """The `until` of a release body, None for an empty body; ValueError saying the expected form."""
    if not body.strip():
        return None
    try:
        document = json.loads(body)
        text = document.pop("until", None)
        until = None if text is None else datetime.fromisoformat(text)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(_UNTIL_FORM) from None
    if document or (until is not None and until.utcoffset() is None):
        raise ValueError(_UNTIL_FORM)
    return until


def _grpc_code(status: int) -> int:
    return {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}.get(status, 2)
