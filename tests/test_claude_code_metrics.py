"""Claude Code's `claude_code.cost.usage` metric, the fallback source of its spend, becomes ledger entries.

Over OTLP/HTTP (`/v1/metrics`, protobuf and JSON) and OTLP/gRPC, delta or cumulative, counted
only when the daemon's `claude_code_source` is `metrics` (docs/claude-code.md).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from _support import http
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from test_claude_code_logs import current_event, protobuf_export

import watcher
from watcher.daemon import Running, build
from watcher.daemon._claude_metrics import CUMULATIVE, DELTA, CostSeries, Point

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
"""The daemon's clock, and so its start: cumulative series that start at or after it are counted from zero."""
RESOURCE: dict[str, object] = {"service.name": "claude-code", "service.version": "2.1.0"}
ATTRIBUTES: dict[str, object] = {"model": "claude-sonnet-4-5", "session.id": "s-1", "user.id": "anon-1"}
PROTOBUF = "application/x-protobuf"
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


@dataclass(frozen=True)
class P:
    """A point to send: its value in USD, its interval, its attributes."""

    value: float | int
    start: datetime
    end: datetime
    attributes: Mapping[str, object] | None = None


def _any(value: object) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=str(value))


def _pairs(attributes: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attributes.items()]


def protobuf_metrics(
    points: Sequence[P], temporality: int = DELTA, name: str = "claude_code.cost.usage", unit: str = "USD"
) -> bytes:
    """An ExportMetricsServiceRequest as Claude Code's meter sends it: one monotonic sum."""
    data = [
        NumberDataPoint(
            attributes=_pairs(p.attributes or ATTRIBUTES),
            start_time_unix_nano=ns(p.start),
            time_unix_nano=ns(p.end),
            **({"as_int": p.value} if isinstance(p.value, int) else {"as_double": p.value}),
        )
        for p in points
    ]
    metric = Metric(name=name, unit=unit, sum=Sum(data_points=data, aggregation_temporality=temporality))
    metric.sum.is_monotonic = True
    scope = ScopeMetrics(metrics=[metric])
    scope.scope.name = "com.anthropic.claude_code"
    resource = ResourceMetrics(resource=Resource(attributes=_pairs(RESOURCE)), scope_metrics=[scope])
    return ExportMetricsServiceRequest(resource_metrics=[resource]).SerializeToString()  # type: ignore[no-any-return]


def _json_pairs(attributes: Mapping[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": {"stringValue": str(v)}} for k, v in attributes.items()]


def json_metrics(points: Sequence[P], temporality: str = "AGGREGATION_TEMPORALITY_CUMULATIVE") -> bytes:
    """The same in OTLP/JSON: temporality by its enum name, times as strings (protobuf's JSON mapping)."""
    data = [
        {
            "attributes": _json_pairs(p.attributes or ATTRIBUTES),
            "startTimeUnixNano": str(ns(p.start)),
            "timeUnixNano": str(ns(p.end)),
            "asDouble": p.value,
        }
        for p in points
    ]
    metric = {
        "name": "claude_code.cost.usage",
        "unit": "USD",
        "sum": {"dataPoints": data, "aggregationTemporality": temporality, "isMonotonic": True},
    }
    resource = {"attributes": _json_pairs(RESOURCE)}
    document = {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": [metric]}]}]}
    return json.dumps(document).encode()


def _start(tmp_path: Path, **settings: Any) -> Running:
    config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", state_dir=tmp_path, **settings)
    return build(config, budgets=[], clock=lambda: NOW).start(tick_s=3600)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    """A daemon taking Claude Code's spend from its metrics."""
    running = _start(tmp_path, claude_code_source="metrics")
    yield running
    running.stop()


def post(daemon: Running, body: bytes, content_type: str = PROTOBUF, path: str = "/v1/metrics") -> bytes:
    status, answer = http(daemon.address + path, body, **{"content-type": content_type})
    assert status == 200, answer
    return answer


def rows(tmp_path: Path) -> list[sqlite3.Row]:
    """The ledger's entries in time order."""
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM entries ORDER BY time_us"))


def costs(tmp_path: Path) -> list[int]:
    return [row["cost_nanos"] for row in rows(tmp_path)]


def test_delta_points_are_stored_as_reported(daemon: Running, tmp_path: Path) -> None:
    """Each delta point is the spend of its interval: one entry each, model from the attribute, no tokens."""
    opus = {**ATTRIBUTES, "model": "claude-opus-4-5"}
    answer = post(daemon, protobuf_metrics([P(0.0125, at(0), at(1)), P(0.5, at(0), at(1), opus)]))
    assert not ExportMetricsServiceResponse.FromString(answer).HasField("partial_success")
    found = rows(tmp_path)
    assert sorted((r["model"], r["cost_nanos"]) for r in found) == [
        ("claude-opus-4-5", 500_000_000),
        ("claude-sonnet-4-5", 12_500_000),
    ]
    for row in found:
        assert row["key"].startswith("claude-code-metric:")
        assert (row["service"], row["request_type"], row["platform"], row["rank"]) == (
            "claude-code",
            "claude-code:metrics",
            "anthropic",
            2,
        )
        assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (0, 0, 0)
        assert row["time_us"] == ns(at(1)) // 1000


def test_cumulative_points_give_their_increases_and_resets_are_detected(daemon: Running, tmp_path: Path) -> None:
    """0.10, 0.25 -> 0.10 and 0.15; a new start time counts its whole value (0.40, not 0.15 more); so does a
    drop in value (0.02)."""
    post(daemon, protobuf_metrics([P(0.10, at(0), at(1))], CUMULATIVE))
    post(daemon, protobuf_metrics([P(0.25, at(0), at(2))], CUMULATIVE))
    post(daemon, protobuf_metrics([P(0.40, at(3), at(4))], CUMULATIVE))  # restarted: a new start time
    post(daemon, protobuf_metrics([P(0.02, at(3), at(5))], CUMULATIVE))  # a drop: began again from zero
    assert costs(tmp_path) == [100_000_000, 150_000_000, 400_000_000, 20_000_000]
    assert len({row["key"] for row in rows(tmp_path)}) == 4


def test_points_of_one_series_in_one_export_are_taken_in_turn(daemon: Running, tmp_path: Path) -> None:
    """Two cumulative points of the same series in one export: the second counts only its increase."""
    post(daemon, protobuf_metrics([P(0.10, at(0), at(1)), P(0.30, at(0), at(2))], CUMULATIVE))
    assert costs(tmp_path) == [100_000_000, 200_000_000]


def test_a_series_older_than_the_daemon_only_sets_the_baseline(daemon: Running, tmp_path: Path) -> None:
    """A cumulative series begun before the daemon may have been counted already: its first point counts nothing."""
    post(daemon, protobuf_metrics([P(3.0, at(-30), at(1))], CUMULATIVE))
    assert costs(tmp_path) == []
    post(daemon, protobuf_metrics([P(3.5, at(-30), at(2))], CUMULATIVE))
    assert costs(tmp_path) == [500_000_000]


def test_series_are_told_apart_by_their_attributes(daemon: Running, tmp_path: Path) -> None:
    """Two sessions' cumulative series do not difference against each other."""
    other = {**ATTRIBUTES, "session.id": "s-2"}
    post(daemon, protobuf_metrics([P(0.10, at(0), at(1)), P(0.30, at(0), at(1), other)], CUMULATIVE))
    post(daemon, protobuf_metrics([P(0.15, at(0), at(2)), P(0.35, at(0), at(2), other)], CUMULATIVE))
    assert sorted(costs(tmp_path)) == [50_000_000, 50_000_000, 100_000_000, 300_000_000]


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_a_retried_export_is_counted_once(daemon: Running, tmp_path: Path, temporality: int) -> None:
    """The same export sent again (an exporter retry after a lost answer) adds nothing: the same keys."""
    body = protobuf_metrics([P(0.10, at(0), at(1))], temporality)
    post(daemon, body)
    post(daemon, body)
    assert costs(tmp_path) == [100_000_000]
    assert (daemon.daemon.counters.stored, daemon.daemon.counters.duplicates) == (1, 1)


def test_a_failed_export_computed_again_gets_the_same_entries() -> None:
    """Until `advance` (after the commit), the state does not move: a resent export makes identical entries."""
    series = CostSeries(started_ns=ns(NOW))
    first = Point("claude_code.cost.usage", "USD", CUMULATIVE, ATTRIBUTES, RESOURCE, ns(at(0)), ns(at(1)), 0.1)
    second = Point("claude_code.cost.usage", "USD", CUMULATIVE, ATTRIBUTES, RESOURCE, ns(at(0)), ns(at(2)), 0.3)
    series.advance(series.batch([first]).updates)
    failed = series.batch([second])  # the commit failed: no advance
    again = series.batch([second])
    assert failed.entries == again.entries
    assert [entry.cost_nanos for entry in again.entries] == [200_000_000]


def test_the_kept_series_are_bounded_and_a_forgotten_one_is_never_counted_twice() -> None:
    """Beyond `max_series` the oldest is forgotten; when it comes back its point only sets the baseline."""
    series = CostSeries(started_ns=ns(NOW), max_series=2)

    def point(session: str, value: float, minute: int) -> Point:
        attributes = {**ATTRIBUTES, "session.id": session}
        times = (ns(at(0)), ns(at(minute)))
        return Point("claude_code.cost.usage", "USD", CUMULATIVE, attributes, RESOURCE, *times, value)

    for session in ("a", "b", "c"):
        batch = series.batch([point(session, 1.0, 1)])
        assert [entry.cost_nanos for entry in batch.entries] == [1_000_000_000]
        series.advance(batch.updates)
    assert len(series) == 2
    back = series.batch([point("a", 1.5, 2)])  # "a" was forgotten: 1.5 is not all new spend
    assert back.entries == []
    series.advance(back.updates)
    assert [entry.cost_nanos for entry in series.batch([point("a", 2.0, 3)]).entries] == [500_000_000]


def test_json_cumulative_points_are_taken(daemon: Running, tmp_path: Path) -> None:
    """OTLP/JSON: temporality by its enum name, times as strings; the answer is JSON."""
    answer = post(daemon, json_metrics([P(0.10, at(0), at(1))]), content_type="application/json")
    assert json.loads(answer) == {}
    post(daemon, json_metrics([P(0.25, at(0), at(2))]), content_type="application/json")
    assert costs(tmp_path) == [100_000_000, 150_000_000]


def test_other_metrics_are_ignored(daemon: Running, tmp_path: Path) -> None:
    """Token counts and session counts store nothing and are counted as ignored."""
    post(daemon, protobuf_metrics([P(1200, at(0), at(1))], name="claude_code.token.usage", unit="tokens"))
    assert costs(tmp_path) == []
    assert (daemon.daemon.counters.ignored, daemon.daemon.counters.rejected) == (1, 0)


def test_a_malformed_point_is_rejected_alone(daemon: Running, tmp_path: Path) -> None:
    """A negative value is reported as a partial success; the good point in the export is stored."""
    answer = post(daemon, protobuf_metrics([P(-0.5, at(0), at(1)), P(0.5, at(1), at(2))]))
    partial = ExportMetricsServiceResponse.FromString(answer).partial_success
    assert partial.rejected_data_points == 1
    assert "not a USD amount" in partial.error_message
    assert costs(tmp_path) == [500_000_000]


def test_garbage_is_refused(daemon: Running) -> None:
    """A body that is not an OTLP metric export is 400, as for traces."""
    status, _ = http(daemon.address + "/v1/metrics", b"\xff\xfenot protobuf", **{"content-type": PROTOBUF})
    assert status == 400


def test_with_the_default_source_metrics_are_ignored(tmp_path: Path) -> None:
    """Source `logs` (the default): cost points are accepted, counted as ignored, and store nothing."""
    running = _start(tmp_path)
    try:
        answer = post(running, protobuf_metrics([P(0.10, at(0), at(1)), P(0.20, at(1), at(2))]))
        assert not ExportMetricsServiceResponse.FromString(answer).HasField("partial_success")
        assert costs(tmp_path) == []
        assert running.daemon.counters.ignored == 2
    finally:
        running.stop()


def test_with_the_metrics_source_log_events_are_ignored(daemon: Running, tmp_path: Path) -> None:
    """Never both sources: with `metrics`, an api_request event stores nothing and is counted as ignored."""
    post(daemon, protobuf_export(current_event()), path="/v1/logs")
    assert costs(tmp_path) == []
    assert daemon.daemon.counters.ignored == 1


def _grpc(daemon: Running, body: bytes, **metadata: str) -> bytes:
    assert daemon.grpc_address is not None
    host, port = daemon.grpc_address
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        return channel.unary_unary(EXPORT)(body, metadata=tuple(metadata.items()), timeout=60)  # type: ignore[no-any-return]


def test_metrics_over_grpc_are_stored_and_need_the_token(tmp_path: Path) -> None:
    """MetricsService/Export on the gRPC port: UNAUTHENTICATED without the token, stored once with it."""
    running = _start(tmp_path, claude_code_source="metrics", token="s3cret")
    try:
        body = protobuf_metrics([P(0.10, at(0), at(1))])
        with pytest.raises(grpc.RpcError) as refused:
            _grpc(running, body)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert costs(tmp_path) == []
        answer = ExportMetricsServiceResponse.FromString(_grpc(running, body, authorization="Bearer s3cret"))
        assert not answer.HasField("partial_success")
        _grpc(running, body, authorization="Bearer s3cret")
        assert costs(tmp_path) == [100_000_000]
    finally:
        running.stop()
