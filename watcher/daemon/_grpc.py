"""OTLP/gRPC trace ingestion on its own port, for OpenTelemetry Collectors whose load balancer speaks only gRPC."""

from __future__ import annotations

import hmac
import logging
import sqlite3
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ._core import Daemon
from ._decode import DecodeError, decode_request

__all__ = ["start_grpc"]

log = logging.getLogger("watcher.daemon")


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """Export answers OK only after the spans are committed, like the HTTP port; storage trouble is
    UNAVAILABLE (the exporter retries), a bad request INVALID_ARGUMENT, a missing token UNAUTHENTICATED."""

    def __init__(self, daemon: Daemon, token: str | None) -> None:
        self._daemon, self._token = daemon, token

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        if self._token is not None:
            given = dict(context.invocation_metadata()).get("authorization", "")
            if not hmac.compare_digest(str(given).encode(), f"Bearer {self._token}".encode()):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            body, default = request.SerializeToString(), self._daemon.default_request_type
            spans = decode_request(body, "application/x-protobuf", default_request_type=default)
            result = self._daemon.ingest(spans)
        except DecodeError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid OTLP trace export: {error}")
        except (sqlite3.Error, OSError) as error:
            log.error("could not store a gRPC batch (%s); answering UNAVAILABLE", type(error).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger is unavailable; retry later")
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=result.message)
            )
        return response


def start_grpc(address: str, daemon: Daemon, *, token: str | None, max_request_bytes: int) -> tuple[Any, int]:
    """Starts a gRPC server on `address` (HOST:PORT, port 0 for any); returns it and its bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="watcher-grpc"),
        options=[("grpc.max_receive_message_length", max_request_bytes)],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(daemon, token), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server, port
