"""Span catchers for tests: in memory, and a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["OTLPReceiver", "ReceivedSpan", "SpanCapture"]

COST = "gen_ai.usage.cost.amount"


class SpanCapture:
    """A TracerProvider that keeps finished spans in memory; pass `.provider` to `watcher.instrument`."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, oldest first, after recording the spans watcher still has queued."""
        from .._instrument._hook import flush

        flush()
        return list(self.exporter.get_finished_spans())

    def cost_spans(self) -> list[ReadableSpan]:
        """The finished spans that carry a cost: one per billed response."""
        return [span for span in self.spans() if span.attributes and COST in span.attributes]

    def clear(self) -> None:
        self.exporter.clear()


@dataclass
class ReceivedSpan:
    """One span as it arrived over OTLP, with attributes decoded to Python values."""

    name: str
    trace_id: str
    span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)


def _value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def _decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        kind=span.kind,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        resource=resource,
                    )
                )
    return found


class OTLPReceiver:
    """An OTLP/HTTP (protobuf) trace receiver on loopback, for tests that use the real exporter.

    `endpoint` is the base URL to give `WATCHER_ENDPOINT`; spans posted to `/v1/traces` land in
    `spans`, and each request's headers (names in lower case) in `headers`. `wait_for(n)`
    blocks until n spans arrived or the timeout passed (a condition variable, not a sleep loop).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []
        self._arrived = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        address = self._server.server_address
        self.endpoint = f"http://{address[0]!s}:{address[1]}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.split("?")[0] != "/v1/traces":
                    self._reply(404, b"")
                    return
                receiver._add(_decode(body), {name.lower(): value for name, value in self.headers.items()})
                self._reply(200, ExportTraceServiceResponse().SerializeToString())

            def _reply(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def _add(self, spans: list[ReceivedSpan], headers: dict[str, str]) -> None:
        with self._arrived:
            self.spans.extend(spans)
            self.headers.append(headers)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received once there are at least `count`; raises TimeoutError otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.spans) >= count, timeout):
                raise TimeoutError(f"{len(self.spans)} spans arrived in {timeout}s, expected {count}")
            return list(self.spans)

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
