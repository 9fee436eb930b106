"""Claude Code's `api_request` log events, sent over OTLP/HTTP to `/v1/logs`, become ledger entries.

The payloads follow Claude Code's published event schema (docs/claude-code.md): the current one
(integer counts, `cost_usd_micros`, the 5m/1h cache-write split) and what older versions send
(counts as strings, only `cost_usd`, one cache-write total).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from _support import http
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STAMP = "2026-11-25T11:59:30.250Z"
BUDGET = """
[[budgets]]
name = "claude-code-daily"
limit_usd = 1.0
kill_at = 1.0
period = "day"
scope = { service = "claude-code" }
"""
RESOURCE: dict[str, object] = {"service.name": "claude-code", "service.version": "2.1.0", "team.id": "platform"}


def current_event(request_id: str = "req_011Ccurrent", **overrides: object) -> dict[str, object]:
    """The attributes of an `api_request` from a current Claude Code: integer counts, exact micro-dollars."""
    event: dict[str, object] = {
        "event.name": "api_request",
        "event.timestamp": STAMP,
        "event.sequence": 7,
        "session.id": "5c1b7a52-session",
        "user.id": "anon-installation-id",
        "user.email": "dev@example.com",
        "organization.id": "org-1",
        "terminal.type": "vscode",
        "app.version": "2.1.0",
        "model": "claude-sonnet-4-5",
        "input_tokens": 1200,
        "output_tokens": 340,
        "cache_read_tokens": 50_000,
        "cache_creation_tokens": 3000,
        "cache_creation_5m_tokens": 1000,
        "cache_creation_1h_tokens": 2000,
        "cost_usd": 0.041237,
        "cost_usd_micros": 41_237,
        "duration_ms": 5400,
        "request_id": request_id,
        "speed": "normal",
        "query_source": "main",
        "prompt.id": "p-1",
    }
    event.update(overrides)
    return event


def old_event(request_id: str = "req_011Cold") -> dict[str, object]:
    """An `api_request` as older versions send it: counts as strings, only `cost_usd`, no 5m/1h split."""
    return {
        "event.name": "api_request",
        "event.timestamp": STAMP,
        "session.id": "old-session",
        "model": "claude-haiku-4-5",
        "input_tokens": "1000",
        "output_tokens": "100",
        "cache_read_tokens": "0",
        "cache_creation_tokens": "400",
        "cost_usd": 0.0025,
        "duration_ms": "900",
        "request_id": request_id,
    }


def _any(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _pairs(attributes: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any(value)) for key, value in attributes.items()]


def protobuf_export(*events: Mapping[str, object], resource: Mapping[str, object] | None = None) -> bytes:
    """An ExportLogsServiceRequest as Claude Code sends it: one record per event, its body the event's full name."""
    records = [
        LogRecord(
            time_unix_nano=int(NOW.timestamp() * 1e9),
            body=AnyValue(string_value=f"claude_code.{event['event.name']}"),
            attributes=_pairs(event),
        )
        for event in events
    ]
    scope = ScopeLogs(log_records=records)
    scope.scope.name = "com.anthropic.claude_code.events"
    logs = ResourceLogs(resource=Resource(attributes=_pairs(resource or RESOURCE)), scope_logs=[scope])
    return ExportLogsServiceRequest(resource_logs=[logs]).SerializeToString()  # type: ignore[no-any-return]


def _json_any(value: object) -> dict[str, object]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"intValue": str(value)}  # int64 as a string, as protobuf's JSON mapping writes it
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def json_export(*events: Mapping[str, object]) -> bytes:
    """The same export in OTLP/JSON."""
    pairs = [{"key": k, "value": _json_any(v)} for k, v in RESOURCE.items()]
    records = [
        {
            "timeUnixNano": str(int(NOW.timestamp() * 1e9)),
            "body": {"stringValue": f"claude_code.{event['event.name']}"},
            "attributes": [{"key": k, "value": _json_any(v)} for k, v in event.items()],
        }
        for event in events
    ]
    scope = {"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": records}
    return json.dumps({"resourceLogs": [{"resource": {"attributes": pairs}, "scopeLogs": [scope]}]}).encode()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    running = _start(tmp_path)
    yield running
    running.stop()


def _start(tmp_path: Path, **settings: Any) -> Running:
    config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", state_dir=tmp_path, **settings)
    return build(config, budgets=parse_budgets(BUDGET), clock=lambda: NOW).start(tick_s=3600)


def post_logs(
    daemon: Running, body: bytes, content_type: str = "application/x-protobuf", token: str | None = None
) -> tuple[int, bytes]:
    return http(daemon.address + "/v1/logs", body, token=token, **{"content-type": content_type})


def rows(tmp_path: Path) -> dict[str, sqlite3.Row]:
    """The ledger's entries by key."""
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.row_factory = sqlite3.Row
        return {row["key"]: row for row in db.execute("SELECT * FROM entries")}


def test_a_current_api_request_is_stored_with_its_exact_reported_cost(daemon: Running, tmp_path: Path) -> None:
    """cost_usd_micros is taken exactly (micros x 1000 nanos), with tokens, model, service and request id."""
    status, answer = post_logs(daemon, protobuf_export(current_event()))
    assert status == 200
    assert not ExportLogsServiceResponse.FromString(answer).HasField("partial_success")
    [(key, row)] = rows(tmp_path).items()
    assert key == "req_011Ccurrent"
    assert row["cost_nanos"] == 41_237_000
    assert (row["model"], row["service"]) == ("claude-sonnet-4-5", "claude-code")
    assert row["request_type"] == "claude-code:main"
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1200, 340, 50_000)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (1000, 2000)
    assert (row["platform"], row["estimated"], row["rank"]) == ("anthropic", 0, 2)
    assert row["time_us"] == int(datetime(2026, 11, 25, 11, 59, 30, 250_000, tzinfo=UTC).timestamp() * 10**6)


def test_micros_win_over_the_rounded_dollar_cost(daemon: Running, tmp_path: Path) -> None:
    """When both are sent, the integer micro-dollars decide, not the double."""
    post_logs(daemon, protobuf_export(current_event(cost_usd=0.04, cost_usd_micros=41_237)))
    assert rows(tmp_path)["req_011Ccurrent"]["cost_nanos"] == 41_237_000


def test_an_old_version_event_in_json_is_accepted(daemon: Running, tmp_path: Path) -> None:
    """String counts, only cost_usd and one cache-write total: stored, the writes as 5-minute writes."""
    status, answer = post_logs(daemon, json_export(old_event()), content_type="application/json")
    assert status == 200, answer
    assert json.loads(answer) == {}
    row = rows(tmp_path)["req_011Cold"]
    assert row["cost_nanos"] == 2_500_000
    assert (row["input_tokens"], row["output_tokens"]) == (1000, 100)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (400, 0)
    assert (row["model"], row["service"], row["request_type"]) == ("claude-haiku-4-5", "claude-code", "claude-code")


def test_an_event_without_any_cost_is_priced_here_as_rank_1(daemon: Running, tmp_path: Path) -> None:
    """No cost_usd_micros and no cost_usd: priced from the tokens (1000 in, 100 out of haiku 4.5 is $0.0015)."""
    event = {k: v for k, v in old_event().items() if k != "cost_usd"}
    assert post_logs(daemon, protobuf_export(event))[0] == 200
    row = rows(tmp_path)["req_011Cold"]
    assert row["rank"] == 1
    assert row["cost_nanos"] == 1_500_000 + 400 * 1250  # plus 400 5-minute writes at $1.25/M


def test_a_retried_request_is_counted_once(daemon: Running, tmp_path: Path) -> None:
    """The same request_id sent again (an exporter retry) adds nothing."""
    body = protobuf_export(current_event())
    assert post_logs(daemon, body)[0] == 200
    assert post_logs(daemon, json_export(current_event()), content_type="application/json")[0] == 200
    assert len(rows(tmp_path)) == 1
    assert daemon.daemon.counters.duplicates == 1
    assert daemon.daemon.counters.stored == 1


def test_other_events_are_ignored(daemon: Running, tmp_path: Path) -> None:
    """A user_prompt or tool_result event stores nothing and is counted as ignored, not rejected."""
    prompt = {"event.name": "user_prompt", "event.timestamp": STAMP, "session.id": "s", "prompt_length": 42}
    tool = {"event.name": "tool_result", "event.timestamp": STAMP, "tool_name": "Bash", "success": "true"}
    status, answer = post_logs(daemon, protobuf_export(prompt, tool, current_event()))
    assert status == 200
    assert not ExportLogsServiceResponse.FromString(answer).HasField("partial_success")
    assert list(rows(tmp_path)) == ["req_011Ccurrent"]
    assert (daemon.daemon.counters.ignored, daemon.daemon.counters.rejected) == (2, 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": -5},
        {"output_tokens": "lots"},
        {"cost_usd_micros": -1},
        {"cache_creation_tokens": 10},  # the 5m/1h split does not add up to it
        {"event.timestamp": "yesterday"},
    ],
    ids=["negative", "garbage-count", "negative-cost", "split-mismatch", "bad-time"],
)
def test_a_malformed_record_is_rejected_alone(daemon: Running, tmp_path: Path, bad: dict[str, object]) -> None:
    """The bad record is reported as a partial success; the good one in the same export is stored."""
    body = protobuf_export(current_event("req_bad", **bad), current_event("req_good"))
    status, answer = post_logs(daemon, body)
    assert status == 200
    partial = ExportLogsServiceResponse.FromString(answer).partial_success
    assert partial.rejected_log_records == 1
    assert "req_bad" in partial.error_message
    assert list(rows(tmp_path)) == ["req_good"]
    assert daemon.daemon.counters.rejected == 1


def test_garbage_bodies_get_400(daemon: Running, tmp_path: Path) -> None:
    """A body that is not an OTLP log export is refused whole, as for traces."""
    assert post_logs(daemon, b"\xff\xfenot protobuf")[0] == 400
    assert post_logs(daemon, b'{"resourceLogs": 3}', content_type="application/json")[0] == 400
    assert post_logs(daemon, b"{}", content_type="text/plain")[0] == 415
    assert rows(tmp_path) == {}


def test_an_event_without_request_id_gets_a_stable_key(daemon: Running, tmp_path: Path) -> None:
    """Without request_id the key is a hash of the session and sequence: the same event resent is one entry."""
    event = {k: v for k, v in current_event().items() if k != "request_id"}
    post_logs(daemon, protobuf_export(event))
    post_logs(daemon, protobuf_export(event))
    post_logs(daemon, protobuf_export({**event, "event.sequence": 8}))
    keys = list(rows(tmp_path))
    assert len(keys) == 2
    assert all(key.startswith("claude-code:") for key in keys)


def test_logs_need_the_token(tmp_path: Path) -> None:
    """Without the daemon's bearer token: 401, nothing stored; with it: stored."""
    daemon = _start(tmp_path, token="s3cret")
    try:
        assert post_logs(daemon, protobuf_export(current_event()))[0] == 401
        assert post_logs(daemon, protobuf_export(current_event()), token="wrong")[0] == 401
        assert rows(tmp_path) == {}
        assert post_logs(daemon, protobuf_export(current_event()), token="s3cret")[0] == 200
        assert list(rows(tmp_path)) == ["req_011Ccurrent"]
    finally:
        daemon.stop()


def test_a_budget_scoped_to_claude_code_sees_its_spend(daemon: Running) -> None:
    """A budget on service "claude-code" counts the reported costs exactly; over its limit, its kill switch
    is engaged in `/v1/killswitch`, for a proxy or a script to act on."""
    post_logs(daemon, protobuf_export(current_event("req_1"), current_event("req_2", cost_usd_micros=1_000_000)))
    daemon.books.evaluate()
    [view] = daemon.books.views.values()
    assert view.state.spend_usd == Decimal("1.041237")
    status, body = http(daemon.address + "/v1/killswitch")
    assert status == 200
    assert [switch["budget"] for switch in json.loads(body)["engaged"]] == ["claude-code-daily"]


LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def grpc_logs(daemon: Running, body: bytes, **metadata: str) -> bytes:
    """The raw answer of a LogsService Export over the daemon's gRPC port; grpc.RpcError otherwise."""
    assert daemon.grpc_address is not None
    host, port = daemon.grpc_address
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        return channel.unary_unary(LOGS_EXPORT)(body, metadata=tuple(metadata.items()), timeout=60)  # type: ignore[no-any-return]


def test_an_api_request_over_grpc_is_stored_once(daemon: Running, tmp_path: Path) -> None:
    """OTLP/gRPC logs reach the same ledger: stored with its reported cost, a retried export adds nothing."""
    body = protobuf_export(current_event())
    answer = ExportLogsServiceResponse.FromString(grpc_logs(daemon, body))
    assert not answer.HasField("partial_success")
    assert grpc_logs(daemon, body) == b""
    [(key, row)] = rows(tmp_path).items()
    assert (key, row["cost_nanos"], row["request_type"]) == ("req_011Ccurrent", 41_237_000, "claude-code:main")
    assert (daemon.daemon.counters.stored, daemon.daemon.counters.duplicates) == (1, 1)


def test_a_malformed_record_over_grpc_is_a_partial_success(daemon: Running, tmp_path: Path) -> None:
    """The gRPC answer is an ExportLogsServiceResponse naming the rejected records, not a trace response."""
    body = protobuf_export(current_event("req_bad", input_tokens=-5), current_event("req_good"))
    partial = ExportLogsServiceResponse.FromString(grpc_logs(daemon, body)).partial_success
    assert partial.rejected_log_records == 1
    assert list(rows(tmp_path)) == ["req_good"]


def test_grpc_logs_need_the_token(tmp_path: Path) -> None:
    """Without the daemon's token a gRPC log export is UNAUTHENTICATED and stores nothing; with it, stored."""
    running = _start(tmp_path, token="s3cret")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            grpc_logs(running, protobuf_export(current_event()))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert rows(tmp_path) == {}
        grpc_logs(running, protobuf_export(current_event()), authorization="Bearer s3cret")
        assert list(rows(tmp_path)) == ["req_011Ccurrent"]
    finally:
        running.stop()


def test_garbage_over_grpc_logs_is_invalid_argument(daemon: Running) -> None:
    """A body that is not a log export is INVALID_ARGUMENT, as for traces."""
    with pytest.raises(grpc.RpcError) as caught:
        grpc_logs(daemon, b"\xff\xfenot protobuf")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
