"""OTLP metric export bodies (protobuf or JSON) to ledger entries: Claude Code's `claude_code.cost.usage`.

The fallback for Claude Code's spend when its log events are off (docs/claude-code.md). Each
point of the cost sum becomes one entry holding the spend it adds: a delta point's value as it
is, a cumulative point's increase over the series' previous point. A point that cannot be taken
(a negative or garbled value, an unknown temporality) is rejected on its own, for OTLP partial
success; points of other metrics are ignored. A body that is not an OTLP metric export at all
raises `DecodeError`, as for traces.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from watcher.daemon._decode import (
    DecodeError,
    _all_proto_attributes,
    _array,
    _field,
    _integer,
    _json_attributes,
    _json_document,
    _object,
)
from watcher.daemon._normalize import MALFORMED, Normalized, resource_place
from watcher.ledger import MAX_MICROS, MAX_USD, Entry, float_to_nanos

__all__ = ["COST_METRIC", "METRICS_REQUEST_TYPE", "CostSeries", "MetricBatch", "Point", "decode_metrics"]

COST_METRIC = "claude_code.cost.usage"
"""The metric whose points become entries: Claude Code's spend in USD, a monotonic sum."""

METRICS_REQUEST_TYPE = "claude-code:metrics"
"""The request type of entries made from metrics (which do not say what kind of call spent)."""

MAX_SERIES = 100_000
"""The most cumulative series whose last point is kept; the least recently updated is forgotten beyond it."""

DELTA, CUMULATIVE = 1, 2
"""OTLP's AggregationTemporality values."""

_SERVICE = "claude-code"
_PROTOBUF = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON = "application/json"
_UINT64 = (0, 2**64 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_TEMPORALITIES = {"AGGREGATION_TEMPORALITY_DELTA": DELTA, "AGGREGATION_TEMPORALITY_CUMULATIVE": CUMULATIVE}
_UNITS = frozenset({"", "USD"})


@dataclass(frozen=True, slots=True)
class Point:
    """One data point, reduced to plain values. `temporality` is 0 for a point that is not of a sum."""

    metric: str
    unit: str
    temporality: int
    attributes: Mapping[str, object]
    resource: Mapping[str, object]
    start_ns: int
    time_ns: int
    value: object


@dataclass(frozen=True, slots=True)
class _Last:
    """A cumulative series' last point: its start, its time, its total, and the entry it made (None for none)."""

    start_ns: int
    time_ns: int
    total_nanos: int
    entry: Entry | None


@dataclass(slots=True)
class MetricBatch:
    """What one metric export became: entries, the points skipped, and the series state to keep once stored."""

    entries: list[Entry] = field(default_factory=list)
    skipped: Normalized = field(default_factory=Normalized)
    updates: dict[str, _Last] = field(default_factory=dict)


class _Bad(Exception):
    """The point claims spend that cannot be taken as it is; the message says why."""


class CostSeries:
    """The last point of each cumulative cost series, in memory, at most `max_series` of them.

    Whoever turns points into entries holds `lock` from `batch` through the commit to `advance`,
    so the state moves on only once the entries are stored: an export that failed and is sent
    again is computed against the same state, and gets the same entries and keys.

    A series seen for the first time is counted from its start only when it started at or after
    `started_ns` (the daemon's start): an older one may have been counted before a restart, so
    its first point only sets the baseline. Forgetting a series moves that horizon past its
    start, so a forgotten series that comes back is a baseline too, never counted twice.
    """

    def __init__(self, started_ns: int, max_series: int = MAX_SERIES) -> None:
        self.lock = threading.Lock()
        self._horizon_ns = started_ns
        self._max = max_series
        self._last: OrderedDict[str, _Last] = OrderedDict()

    def batch(self, points: Iterable[Point]) -> MetricBatch:
        """The entries of `points` against the kept state, which it does not change (see `advance`)."""
        batch = MetricBatch()
        for point in points:
            if point.metric != COST_METRIC:
                batch.skipped.ignored += 1
                continue
            try:
                self._take(point, batch)
            except _Bad as error:
                batch.skipped.reject(MALFORMED, f"{COST_METRIC} point at {point.time_ns} ns: {error}")
            except Exception as error:  # a bug must cost one point, never the batch
                batch.skipped.reject(MALFORMED, f"{COST_METRIC} point: could not be read ({type(error).__name__})")
        return batch

    def advance(self, updates: Mapping[str, _Last]) -> None:
        """Keeps `updates` (from a stored batch) as the series' last points, forgetting the oldest beyond the bound."""
        for identity, last in updates.items():
            self._last[identity] = last
            self._last.move_to_end(identity)
        while len(self._last) > self._max:
            _, forgotten = self._last.popitem(last=False)
            self._horizon_ns = max(self._horizon_ns, forgotten.start_ns + 1)

    def __len__(self) -> int:
        return len(self._last)

    def _take(self, point: Point, batch: MetricBatch) -> None:
        if point.unit not in _UNITS:
            raise _Bad(f"unit {point.unit!r} is not USD")
        if not 0 < point.time_ns // 1000 <= MAX_MICROS:
            raise _Bad("the point has no time, or one out of range")
        nanos = _nanos(point.value)
        identity = _identity(point)
        if point.temporality == DELTA:
            if nanos:
                batch.entries.append(_entry(point, identity, nanos))
            else:
                batch.skipped.ignored += 1
        elif point.temporality == CUMULATIVE:
            self._cumulative(point, identity, nanos, batch)
        else:
            raise _Bad("not a sum with delta or cumulative temporality")

    def _cumulative(self, point: Point, identity: str, total: int, batch: MetricBatch) -> None:
        """The increase since the series' last point: a new start time or a drop in value is a reset."""
        last = batch.updates.get(identity) or self._last.get(identity)
        if last is not None and (point.start_ns, point.time_ns) == (last.start_ns, last.time_ns):
            _again(last, batch)  # the same point sent again: its entry again, a duplicate for the ledger
            return
        if last is not None and (point.start_ns, point.time_ns) < (last.start_ns, last.time_ns):
            batch.skipped.ignored += 1  # older than what is kept: its increase is already counted
            return
        if last is None:
            counted = point.start_ns >= self._horizon_ns and point.start_ns > 0
            increase = total if counted else 0  # else only the baseline (see the class docstring)
        elif point.start_ns != last.start_ns or total < last.total_nanos:
            increase = total  # reset: the series began again from zero
        else:
            increase = total - last.total_nanos
        entry = _entry(point, identity, increase) if increase else None
        if entry is None:
            batch.skipped.ignored += 1
        else:
            batch.entries.append(entry)
        batch.updates[identity] = _Last(point.start_ns, point.time_ns, total, entry)


def _again(last: _Last, batch: MetricBatch) -> None:
    if last.entry is None:
        batch.skipped.ignored += 1
    else:
        batch.entries.append(last.entry)


def _entry(point: Point, identity: str, nanos: int) -> Entry:
    """The entry for `nanos` of spend in the point's interval; its key depends only on the series and the interval."""
    service, environment = resource_place(point.resource)
    if not _text(point.resource.get("service.name")):
        service = _SERVICE
    digest = hashlib.sha256(f"{identity}\0{point.start_ns}\0{point.time_ns}".encode()).hexdigest()[:32]
    model = _text(point.attributes.get("model")) or "unknown"
    return Entry(
        f"claude-code-metric:{digest}",
        point.time_ns // 1000,
        None,
        service,
        environment,
        METRICS_REQUEST_TYPE,
        model,
        "anthropic",
        cost_nanos=nanos,
        rank=2,  # as Claude Code reported it
    )


def _identity(point: Point) -> str:
    """The series a point belongs to: its metric, its attributes and its resource's (not its start time)."""
    document = [point.metric, sorted(point.attributes.items()), sorted(point.resource.items())]
    return hashlib.sha256(json.dumps(document, default=repr).encode()).hexdigest()


def _nanos(value: object) -> int:
    """A point's USD value in nano-dollars; `_Bad` unless it is a finite amount from 0 to MAX_USD."""
    if type(value) is int:
        if not 0 <= value <= MAX_USD:
            raise _Bad(f"value {value} is not a USD amount")
        return value * 10**9
    if type(value) is float and math.isfinite(value) and 0 <= value <= MAX_USD:
        return float_to_nanos(value) if value else 0
    raise _Bad(f"value is not a USD amount: {repr(value)[:40]}")


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def decode_metrics(body: bytes, content_type: str) -> list[Point]:
    """The points of the sums and gauges of an uncompressed OTLP `ExportMetricsServiceRequest` body.

    `content_type` as for `decode_request`. Raises `DecodeError` for another type and for a body
    that does not decode as an OTLP metric export; never anything else. Histograms and
    summaries are left out (Claude Code sends only sums). Pure: safe to call from any thread.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PROTOBUF:
        return _from_protobuf(body)
    if media == _JSON:
        return _from_json(body)
    raise DecodeError(f"unsupported content type {content_type!r}: send application/x-protobuf or application/json")


# --- protobuf ---------------------------------------------------------------------------------


def _from_protobuf(body: bytes) -> list[Point]:
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # upb raises DecodeError, but any failure means the same: a bad body
        raise DecodeError(f"body is not an OTLP protobuf ExportMetricsServiceRequest: {exc}") from None
    points: list[Point] = []
    for resource_metrics in request.resource_metrics:
        resource = _all_proto_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in ("sum", "gauge"):
                    continue
                data = getattr(metric, kind)
                temporality = data.aggregation_temporality if kind == "sum" else 0
                for point in data.data_points:
                    value_kind = point.WhichOneof("value")
                    value = getattr(point, value_kind) if value_kind else None
                    attributes = _all_proto_attributes(point.attributes)
                    times = (point.start_time_unix_nano, point.time_unix_nano)
                    points.append(Point(metric.name, metric.unit, temporality, attributes, resource, *times, value))
    return points


# --- JSON -------------------------------------------------------------------------------------


def _from_json(body: bytes) -> list[Point]:
    return _json_document(body, _json_points)


def _json_points(request: dict[str, Any]) -> Iterator[Point]:
    for resource_metrics in _array(_field(request, "resourceMetrics", "resource_metrics")):
        resource_metrics = _object(resource_metrics)
        resource = _object(_field(resource_metrics, "resource", "resource") or {})
        resource_attributes = _json_attributes(_field(resource, "attributes", "attributes"))
        for scope_metrics in _array(_field(resource_metrics, "scopeMetrics", "scope_metrics")):
            for metric in _array(_field(_object(scope_metrics), "metrics", "metrics")):
                yield from _json_metric(_object(metric), resource_attributes)


def _json_metric(metric: dict[str, Any], resource: Mapping[str, object]) -> Iterator[Point]:
    name, unit = metric.get("name") or "", metric.get("unit") or ""
    if not isinstance(name, str) or not isinstance(unit, str):
        raise DecodeError("metric name and unit must be strings")
    for kind in ("sum", "gauge"):
        data = metric.get(kind)
        if data is None:
            continue
        data = _object(data)
        temporality = _temporality(_field(data, "aggregationTemporality", "aggregation_temporality"))
        for point in _array(_field(data, "dataPoints", "data_points")):
            point = _object(point)
            yield Point(
                name,
                unit,
                temporality if kind == "sum" else 0,
                _json_attributes(_field(point, "attributes", "attributes")),
                resource,
                _integer(_field(point, "startTimeUnixNano", "start_time_unix_nano") or 0, _UINT64),
                _integer(_field(point, "timeUnixNano", "time_unix_nano") or 0, _UINT64),
                _json_number(point),
            )


def _json_number(point: dict[str, Any]) -> object:
    """`asDouble` as a float, `asInt` (a number or a decimal string) as an int; None when neither is set."""
    double = _field(point, "asDouble", "as_double")
    if double is not None:  # "NaN" or "Infinity" as protobuf's JSON mapping writes them: rejected with the point
        numeric = isinstance(double, int | float) and not isinstance(double, bool)
        return float(double) if numeric else double
    whole = _field(point, "asInt", "as_int")
    return None if whole is None else _integer(whole, _INT64)


def _temporality(value: object) -> int:
    """AggregationTemporality from its number or its enum name; 0 (unspecified) for anything else."""
    if isinstance(value, str):
        return _TEMPORALITIES.get(value, 0)
    return value if type(value) is int and value in (DELTA, CUMULATIVE) else 0
