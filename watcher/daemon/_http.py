"""The daemon's HTTP port: OTLP/HTTP trace ingestion, the kill-switch and budgets API, health."""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ._body import BodyError, inflate
from ._core import Daemon, IngestResult
from ._decode import DecodeError, decode_request

__all__ = ["DaemonServer"]

log = logging.getLogger("watcher.daemon")
_PROTOBUF = ("application/x-protobuf", "application/protobuf")


class DaemonServer(ThreadingHTTPServer):
    """One port for everything; a thread per connection (exporters keep a few connections alive).

    `token`, when set, is required as `Authorization: Bearer ...` on every route but /healthz.
    At most `max_ingests` exports are decoded and stored at once; one that waits longer than
    `shed_after_s` for its turn is answered 503 with Retry-After, so exporters back off.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        daemon: Daemon,
        *,
        clock: Callable[[], datetime],
        token: str | None = None,
        max_request_bytes: int = 16 * 1024 * 1024,
        max_ingests: int = 4,
        shed_after_s: float = 10.0,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.core, self.clock, self.token = daemon, clock, token
        self.max_request_bytes = max_request_bytes
        self.ingest_slots = threading.BoundedSemaphore(max_ingests)
        self.shed_after_s = shed_after_s
        self.metrics = metrics
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: DaemonServer
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif not self._authorized():
            return
        elif path == "/v1/killswitch":
            self._json(200, self.server.core.killswitch(self.server.clock()))
        elif path == "/v1/budgets":
            self._json(200, self.server.core.budgets(self.server.clock()))
        elif path == "/v1/report":
            query = dict(parse_qsl(urlsplit(self.path).query))
            try:
                self._json(200, self.server.core.report(self.server.clock(), query))
            except ValueError as error:
                self._json(400, {"error": str(error)})
        elif path == "/metrics" and self.server.metrics is not None:
            self._send(200, self.server.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if not self._authorized():
                return
            if path == "/v1/traces":
                self._traces()
            elif path.startswith("/v1/killswitch/") and path.endswith(("/engage", "/release")):
                self._switch(path)
            else:
                self._read_body()
                self._json(404, {"error": f"no route POST {path}"})
        except BodyError as error:
            self._json(error.status, {"error": str(error)})

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._read_body()
        self._json(401, {"error": "missing or wrong bearer token; set WATCHER_TOKEN to the daemon's token"})
        return False

    def _traces(self) -> None:
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = inflate(self._read_body(), self.headers.get("content-encoding", ""), self.server.max_request_bytes)
            if content_type not in (*_PROTOBUF, "application/json"):
                raise BodyError(415, f"unsupported Content-Type {content_type!r}; use application/x-protobuf or json")
            spans = decode_request(body, content_type, default_request_type=self.server.core.default_request_type)
        except BodyError as error:
            self._status(error.status, str(error), content_type)
            return
        except DecodeError as error:
            self._status(400, f"not a valid OTLP trace export: {error}", content_type)
            return
        if not self.server.ingest_slots.acquire(timeout=self.server.shed_after_s):
            self._status(503, "the daemon is busy; retry later", content_type, retry_after=1)
            return
        try:
            result = self.server.core.ingest(spans)
        except (sqlite3.Error, OSError) as error:
            log.error("could not store a batch (%s); answering 503 so the exporter retries", type(error).__name__)
            self._status(503, "the ledger is unavailable; retry later", content_type, retry_after=5)
            return
        finally:
            self.server.ingest_slots.release()
        self._export_response(result, content_type)

    def _export_response(self, result: IngestResult, content_type: str) -> None:
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=result.message)
            )
        if content_type == "application/json":
            self._send(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._send(200, response.SerializeToString(), "application/x-protobuf")

    def _switch(self, path: str) -> None:
        self._read_body()
        name, action = path.removeprefix("/v1/killswitch/").rsplit("/", 1)
        try:
            view = self.server.core.books.set_switch(name, "engaged" if action == "engage" else "released")
        except KeyError as error:
            self._json(404, {"error": str(error.args[0])})
            return
        self._json(200, {"budget": name, "engaged": view.engaged})

    def _read_body(self) -> bytes:
        """The request body, refusing (BodyError 413) one over the limit before reading it."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        if length > self.server.max_request_bytes:
            self.close_connection = True
            raise BodyError(413, f"the body is over the {self.server.max_request_bytes}-byte limit")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            total += size
            if total > self.server.max_request_bytes:
                self.close_connection = True
                raise BodyError(413, f"the body is over the {self.server.max_request_bytes}-byte limit")
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def _status(self, status: int, message: str, content_type: str, retry_after: int | None = None) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after else {}
        rpc = Status(code=_grpc_code(status), message=message)
        if content_type == "application/json":
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


def _grpc_code(status: int) -> int:
    return {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}.get(status, 2)
