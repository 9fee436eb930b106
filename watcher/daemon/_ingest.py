"""One export, whichever port it came in on: a turn, the body, decoding, the commit, and what to answer."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from watcher.ledger import Entry, to_micros

from ._body import BodyError, inflate
from ._claude_metrics import CostSeries, Point, decode_metrics
from ._core import Daemon, IngestResult
from ._decode import DecodeError, SpanRecord, decode_request
from ._logs import decode_logs
from ._normalize import Normalized

__all__ = [
    "LOGS",
    "MAX_DROPPED_REPORT",
    "METRICS",
    "SOURCES",
    "TRACES",
    "Ingestor",
    "Outcome",
    "Verdict",
    "export_response",
    "logs_response",
    "metrics_response",
]

log = logging.getLogger("watcher.daemon")

MAX_DROPPED_REPORT = 1_000_000_000
"""The most spans one export's `X-Watcher-Dropped-Spans` may add; a larger number counts as this."""

TRACES, LOGS, METRICS = "traces", "logs", "metrics"
"""The OTLP signals an export may carry: spans, log records (Claude Code's events, docs/claude-code.md),
or metric points (Claude Code's cost metric, its fallback)."""

SOURCES = (LOGS, METRICS)
"""Where Claude Code's spend may come from (`claude_code_source`): one only, since the two cannot be matched."""

_MEDIA = frozenset({"application/x-protobuf", "application/protobuf", "application/json"})


class Verdict(enum.Enum):
    """What became of an export, for each port to put in its own status codes."""

    STORED = "stored"  # committed (some spans may be rejected: partial success)
    INVALID = "invalid"  # the body is not an OTLP export of its signal, or is not whole
    TOO_LARGE = "too_large"  # over the size limit, before or after decompression
    UNSUPPORTED = "unsupported"  # a content type or encoding the daemon does not read
    BUSY = "busy"  # no turn came within the wait: retry after `retry_after_s`
    UNAVAILABLE = "unavailable"  # the commit failed, nothing was stored: retry after `retry_after_s`


@dataclass(frozen=True, slots=True)
class Outcome:
    """An export's verdict, a message for the client, and for STORED what was stored."""

    verdict: Verdict
    message: str = ""
    result: IngestResult | None = None
    retry_after_s: int | None = None


_SIGNAL_NAMES = {TRACES: "trace", LOGS: "log", METRICS: "metric"}
_BODY_VERDICTS = {400: Verdict.INVALID, 413: Verdict.TOO_LARGE, 415: Verdict.UNSUPPORTED}
_BUSY = Outcome(Verdict.BUSY, "the daemon is busy; retry later", retry_after_s=1)
_UNAVAILABLE = Outcome(Verdict.UNAVAILABLE, "the ledger is unavailable; retry later", retry_after_s=5)


class Ingestor:
    """Takes exports for both ports. Thread-safe.

    At most `max_concurrent` exports are read, decoded and stored at once, so memory stays
    bounded however many arrive together: an export waits up to `busy_wait_s` for its turn,
    then is answered BUSY, its body unread. Storage trouble of any kind is UNAVAILABLE (nothing
    was stored, so a retry is safe) and makes `health()` report it until a commit succeeds.

    Claude Code's spend is taken from one source only, `claude_code_source`: its log events
    (`logs`) or its cost metric (`metrics`). The two carry no shared key, so the same call sent
    both ways could not be recognised as one; exports of the other source are decoded (a bad
    one is still refused) and their records counted as ignored.
    """

    def __init__(
        self,
        daemon: Daemon,
        *,
        max_request_bytes: int,
        max_concurrent: int = 4,
        busy_wait_s: float = 5.0,
        claude_code_source: str = LOGS,
    ) -> None:
        if claude_code_source not in SOURCES:
            raise ValueError(f"claude_code_source must be one of {SOURCES}, not {claude_code_source!r}")
        self._daemon, self.max_request_bytes = daemon, max_request_bytes
        self._turns = threading.BoundedSemaphore(max_concurrent)
        self._busy_wait_s = busy_wait_s
        self._failure: str | None = None  # why the last commit failed; None once one succeeds
        self._source = claude_code_source
        self.cost_series = CostSeries(started_ns=to_micros(daemon.books.now()) * 1000)

    def export(
        self,
        read: Callable[[], bytes],
        content_type: str,
        *,
        encoding: str = "",
        dropped: str | None = None,
        signal: str = TRACES,
    ) -> Outcome:
        """The outcome of the export whose body `read()` returns (raising BodyError if it cannot).

        `read` is called only once the export has its turn, and never for an unsupported
        content type or a busy daemon. `dropped` is the export's `X-Watcher-Dropped-Spans`
        value: counted only when the export is stored, so one resent after a failure counts once.
        `signal` is TRACES, LOGS or METRICS: which OTLP export the body is; all share the turns,
        the limits and the commit, so a log or metric export is as durable as a trace export.
        """
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in _MEDIA:
            hint = "use application/x-protobuf or application/json"
            return Outcome(Verdict.UNSUPPORTED, f"unsupported Content-Type {media!r}; {hint}")
        if not self._turns.acquire(timeout=self._busy_wait_s):
            return _BUSY
        try:
            return self._store(read, media, encoding, dropped, signal)
        finally:
            self._turns.release()

    def health(self) -> str | None:
        """None while the ledger takes commits; else why the last commit failed."""
        return self._failure

    def _store(self, read: Callable[[], bytes], media: str, encoding: str, dropped: str | None, signal: str) -> Outcome:
        holders: dict[str, str] = {}
        skipped = None
        spans: list[SpanRecord | Entry] = []
        points: list[Point] = []
        try:
            body = inflate(read(), encoding, self.max_request_bytes)
            if signal == METRICS:
                points = decode_metrics(body, media)
            elif signal == LOGS:
                batch = decode_logs(body, media, self._daemon.prices)
                spans = list(batch.entries)
                skipped = batch.skipped
                if self._source != LOGS:  # spend comes from the metrics: the events are not counted
                    skipped.ignored += len(spans)
                    spans = []
            else:
                default = self._daemon.default_request_type
                spans = decode_request(body, media, default_request_type=default, holders=holders)
        except BodyError as error:
            return Outcome(_BODY_VERDICTS.get(error.status, Verdict.INVALID), str(error))
        except DecodeError as error:
            return Outcome(Verdict.INVALID, f"not a valid OTLP {_SIGNAL_NAMES[signal]} export: {error}")
        del body
        try:
            if signal == METRICS:
                result = self._ingest_points(points)
            else:
                result = self._daemon.ingest(spans, holders, skipped=skipped)
        except Exception as error:  # a retry is safe whatever failed: a resent batch is deduplicated
            self._failure = f"the last ledger commit failed: {_describe(error)}"
            log.error("could not store a batch (%s); answering retry-later", _describe(error))
            return _UNAVAILABLE
        self._failure = None
        self._count_dropped(dropped)
        return Outcome(Verdict.STORED, result.message, result)

    def _ingest_points(self, points: list[Point]) -> IngestResult:
        """Stores the entries of metric points; the cumulative series' state moves on only once they are committed.

        With the `logs` source every point is ignored and no state is kept.
        """
        if self._source != METRICS:
            ignored = Normalized()
            ignored.ignored = len(points)
            return self._daemon.ingest([], skipped=ignored)
        with self.cost_series.lock:  # one metric export at a time: each is computed against the last stored
            batch = self.cost_series.batch(points)
            result = self._daemon.ingest(batch.entries, skipped=batch.skipped)
            self.cost_series.advance(batch.updates)
        return result

    def _count_dropped(self, dropped: str | None) -> None:
        """Adds a hook's report of spans its spool dropped; anything but a plain non-negative integer is ignored."""
        text = (dropped or "").strip()
        if not (text.isascii() and text.isdigit()):
            if text:
                log.debug("ignoring an X-Watcher-Dropped-Spans value that is not a count")
            return
        digits = text.lstrip("0") or "0"  # a huge string is capped unread: int() of it is slow
        count = min(int(digits), MAX_DROPPED_REPORT) if len(digits) <= 12 else MAX_DROPPED_REPORT
        counters = self._daemon.counters
        with counters.lock:
            counters.hook_dropped += count


def export_response(result: IngestResult) -> ExportTraceServiceResponse:
    """The OTLP answer to a stored export: empty, or a partial success naming the rejected spans."""
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=result.message)
        )
    return response


def logs_response(result: IngestResult) -> ExportLogsServiceResponse:
    """The OTLP answer to a stored log export: empty, or a partial success naming the rejected records."""
    response = ExportLogsServiceResponse()
    if result.rejected:
        response.partial_success.CopyFrom(
            ExportLogsPartialSuccess(rejected_log_records=result.rejected, error_message=result.message)
        )
    return response


def metrics_response(result: IngestResult) -> ExportMetricsServiceResponse:
    """The OTLP answer to a stored metric export: empty, or a partial success naming the rejected points."""
    response = ExportMetricsServiceResponse()
    if result.rejected:
        response.partial_success.CopyFrom(
            ExportMetricsPartialSuccess(rejected_data_points=result.rejected, error_message=result.message)
        )
    return response


def _describe(error: Exception) -> str:
    """The error's type and message (an OSError's without the file name, which /healthz must not show)."""
    detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"{type(error).__name__}: {detail[:200]}"
