"""OTLP/gRPC ingestion on its own port: traces (for OpenTelemetry Collectors whose load balancer speaks
only gRPC), logs and metrics (Claude Code's events and cost, docs/claude-code.md), with the same token,
limits and answers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from ._auth import bearer_ok
from ._core import IngestResult
from ._ingest import LOGS, METRICS, TRACES, Ingestor, Verdict, export_response, logs_response, metrics_response

__all__ = ["start_grpc"]

_SERVICES: dict[str, tuple[str, Callable[[IngestResult], Message]]] = {
    "opentelemetry.proto.collector.trace.v1.TraceService": (TRACES, export_response),
    "opentelemetry.proto.collector.logs.v1.LogsService": (LOGS, logs_response),
    "opentelemetry.proto.collector.metrics.v1.MetricsService": (METRICS, metrics_response),
}
"""Each OTLP service the port serves: the signal its requests carry, and how a stored export is answered."""
_CODES = {
    Verdict.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Verdict.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Verdict.UNSUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    Verdict.BUSY: grpc.StatusCode.UNAVAILABLE,
    Verdict.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def _export_handler(
    ingestor: Ingestor, token: str | None, signal: str, respond: Callable[[IngestResult], Message]
) -> Callable[[bytes, Any], bytes]:
    """Export of `signal`, taking the request's raw bytes: the ingestor decodes them once, as for HTTP.

    OK, with `respond`'s answer, only after the entries are committed. A bad request is
    INVALID_ARGUMENT, a missing token UNAUTHENTICATED; a busy daemon and storage trouble are
    UNAVAILABLE, which every OTLP exporter retries, with a RetryInfo detail giving the delay
    (as Retry-After does over HTTP).
    """

    def export(request: bytes, context: Any) -> bytes:
        metadata = dict(context.invocation_metadata())
        if not bearer_ok(str(metadata.get("authorization", "")), token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        dropped = metadata.get("x-watcher-dropped-spans") if signal == TRACES else None
        outcome = ingestor.export(
            lambda: request,
            "application/x-protobuf",
            dropped=dropped if isinstance(dropped, str) else None,
            signal=signal,
        )
        if outcome.verdict is Verdict.STORED and outcome.result is not None:
            return respond(outcome.result).SerializeToString()  # type: ignore[no-any-return]
        code = _CODES[outcome.verdict]
        if outcome.retry_after_s:
            details = _retry_details(code, outcome.message, outcome.retry_after_s)
            context.set_trailing_metadata([("grpc-status-details-bin", details)])
        context.abort(code, outcome.message)
        raise AssertionError("unreachable: abort raises")

    return export


def _retry_details(code: grpc.StatusCode, message: str, retry_after_s: int) -> bytes:
    """A google.rpc.Status carrying a RetryInfo, as gRPC's rich error model puts it in trailers."""
    status = Status(code=code.value[0], message=message)
    status.details.add().Pack(RetryInfo(retry_delay=Duration(seconds=retry_after_s)))
    return status.SerializeToString()  # type: ignore[no-any-return]


def start_grpc(address: str, ingestor: Ingestor, *, token: str | None) -> tuple[Any, int]:
    """Starts a gRPC server on `address` (HOST:PORT, port 0 for any); returns it and its bound port.

    Four worker threads, so at most four requests are received at once (gRPC reads a message
    only when a worker takes its call); each then waits for the ingestor's turn like HTTP.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="watcher-grpc"),
        options=[("grpc.max_receive_message_length", ingestor.max_request_bytes)],
    )
    handlers = []
    for service, (signal, respond) in _SERVICES.items():
        export = _export_handler(ingestor, token, signal, respond)
        method = grpc.unary_unary_rpc_method_handler(export)  # no (de)serializers: bytes
        handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server, port
