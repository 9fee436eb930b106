"""OTLP protobuf and OTLP/JSON export bodies decode to the same light span records."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from watcher.daemon import DecodeError, SpanRecord, decode_request

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
COST_SPAN = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-haiku-4-5",
    "gen_ai.response.model": "claude-haiku-4-5-20251001",
    "gen_ai.response.id": "msg_01",
    "gen_ai.request.stream": True,
    "gen_ai.usage.input_tokens": 1300,
    "gen_ai.usage.output_tokens": 50,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.cache_write.input_tokens": 200,
    "anthropic.usage.uncached_input_tokens": 100,
    "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 200,
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 0,
    "gen_ai.usage.cost.amount": 0.00060,
    "watcher.cost.tools_usd": 0.0,
    "watcher.cost.estimated": False,
    "watcher.cost.flags": ["long_context"],
    "watcher.pricing.version": "2026-11-01",
    "watcher.request_type": "summarize",
    "gen_ai.input.messages": "never read",
}
RESOURCE_NAMED = (
    b'{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": %s}}]}}]}'
)
RESOURCE = {"service.name": "app", "deployment.environment.name": "prod", "host.name": "box"}


def make_spans(*attributes: Mapping[str, Any], resource: Mapping[str, Any] = RESOURCE) -> list[ReadableSpan]:
    """Finished SDK spans, one per attribute dict, ended at 2026-11-25T12:00:00.000001234Z."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for index, attrs in enumerate(attributes):
        span = tracer.start_span(f"chat {index}", kind=SpanKind.CLIENT, attributes=dict(attrs), start_time=1)
        span.end(end_time=1_795_608_000_000_001_234)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf_body(spans: list[ReadableSpan]) -> bytes:
    """The bytes the official OTLP/HTTP exporter would send."""
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def json_body(spans: list[ReadableSpan], *, int64_as_numbers: bool = False) -> bytes:
    """The same request in OTLP/JSON: hex ids, int enums, int64 as strings (or numbers)."""
    document = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex().upper()
                if int64_as_numbers:
                    span["endTimeUnixNano"] = int(span["endTimeUnixNano"])
    return json.dumps(document).encode()


def test_protobuf_and_json_bodies_decode_to_equal_records() -> None:
    """One export sent as protobuf and as OTLP/JSON gives the same records."""
    spans = make_spans(COST_SPAN, {"http.method": "GET"})
    from_protobuf = decode_request(protobuf_body(spans), PROTOBUF, fast=False)
    assert from_protobuf == decode_request(json_body(spans), JSON)
    assert from_protobuf == decode_request(json_body(spans, int64_as_numbers=True), JSON)
    assert len(from_protobuf) == 2


def test_records_hold_hex_ids_end_time_and_only_the_wanted_keys() -> None:
    """Ids are lower-case hex, the end time is in ns, and unread attributes are dropped."""
    span = make_spans(COST_SPAN)[0]
    [record] = decode_request(protobuf_body([span]), PROTOBUF, fast=False)
    assert record.trace_id == f"{span.context.trace_id:032x}"
    assert record.span_id == f"{span.context.span_id:016x}"
    assert record.name == "chat 0"
    assert record.end_time_ns == 1_795_608_000_000_001_234
    expected = {key: value for key, value in COST_SPAN.items() if key not in ("gen_ai.operation.name",)}
    for unread in ("gen_ai.request.stream", "watcher.cost.flags", "gen_ai.input.messages"):
        del expected[unread]
    assert record.attributes == expected
    assert record.resource == {"service.name": "app", "deployment.environment.name": "prod"}


def test_values_of_an_unexpected_type_are_kept_as_sent() -> None:
    """A token count sent as a string or double, or a zero, decodes as that value, for normalize to judge."""
    attributes = {
        "gen_ai.usage.input_tokens": "12",
        "gen_ai.usage.output_tokens": 3.0,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "watcher.cost.estimated": False,
        "gen_ai.usage.cost.amount": 0.0,
        "gen_ai.response.id": "",
        "gen_ai.request.model": ["a", "b"],
    }
    spans = make_spans(attributes)
    [record] = decode_request(protobuf_body(spans), PROTOBUF)
    assert record.attributes == attributes
    assert decode_request(json_body(spans), JSON) == [record]


def test_spans_of_one_resource_share_its_dict_and_resources_stay_apart() -> None:
    """Each ResourceSpans keeps its own resource values."""
    body = ExportTraceServiceRequest()
    body.ParseFromString(protobuf_body(make_spans({}, {})))
    other = ExportTraceServiceRequest()
    other.ParseFromString(protobuf_body(make_spans({}, resource={"service.name": "other"})))
    body.resource_spans.extend(other.resource_spans)
    records = decode_request(body.SerializeToString(), PROTOBUF)
    assert [record.resource["service.name"] for record in records] == ["app", "app", "other"]
    assert records[0].resource is records[1].resource


@pytest.mark.parametrize(
    "content_type",
    ["application/x-protobuf", "application/protobuf", "Application/X-Protobuf; charset=binary"],
)
def test_protobuf_content_types_are_accepted(content_type: str) -> None:
    """Both protobuf media types decode, parameters and case ignored."""
    assert len(decode_request(protobuf_body(make_spans({})), content_type)) == 1


def test_json_with_charset_and_an_empty_request_decode() -> None:
    """`application/json; charset=utf-8` decodes; `{}` and an empty protobuf body hold no spans."""
    assert decode_request(b"{}", "application/json; charset=utf-8") == []
    assert decode_request(b"", PROTOBUF) == []


def test_json_accepts_proto_field_names_and_typed_values() -> None:
    """snake_case field names, int64 numbers, special doubles and arrays decode as the JSON mapping says."""
    span = {
        "trace_id": "0AF7651916CD43DD8448EB211C80319C",
        "span_id": "b7ad6b7169203331",
        "name": "chat",
        "end_time_unix_nano": 5,
        "kind": 3,
        "attributes": [
            {"key": "gen_ai.usage.output_tokens", "value": {"int_value": 7}},
            {"key": "gen_ai.usage.cost.amount", "value": {"doubleValue": "Infinity"}},
            {"key": "gen_ai.request.model", "value": {"arrayValue": {"values": [{"intValue": "1"}, {}]}}},
            {"key": "gen_ai.response.id", "value": {"kvlistValue": {"values": []}}},
            {"key": "gen_ai.system"},
        ],
    }
    body = json.dumps({"resource_spans": [{"scope_spans": [{"spans": [span]}]}]}).encode()
    assert decode_request(body, JSON) == [
        SpanRecord(
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            name="chat",
            end_time_ns=5,
            attributes={
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.usage.cost.amount": float("inf"),
                "gen_ai.request.model": [1, None],
                "gen_ai.response.id": None,
                "gen_ai.system": None,
            },
            resource={},
        )
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x0a\x05abc", PROTOBUF),  # a length running past the end
        (b"\xff\xff\xff", PROTOBUF),
        (b"not json", JSON),
        (b"[]", JSON),
        (b'{"resourceSpans": {}}', JSON),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "AAECAw=="}]}]}]}', JSON),  # base64, not hex
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": "-1"}]}]}]}', JSON),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": 1.5}]}]}]}', JSON),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": 1}]}]}]}]}', JSON),
        (RESOURCE_NAMED % b"1", JSON),  # a string value that is not a string
        (RESOURCE_NAMED % b'"\\ud800"', JSON),  # a lone surrogate: not UTF-8
        (b"{}", "text/plain"),
    ],
)
def test_undecodable_bodies_raise_decode_error(body: bytes, content_type: str) -> None:
    """A body that is not an OTLP trace export in the declared format raises DecodeError, and nothing else."""
    with pytest.raises(DecodeError):
        decode_request(body, content_type)


def test_wanted_attribute_of_an_out_of_range_json_integer_is_an_error() -> None:
    """An intValue beyond int64 is not a valid OTLP/JSON body."""
    attribute = {"key": "gen_ai.usage.output_tokens", "value": {"intValue": str(2**63)}}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [attribute]}]}]}]})
    with pytest.raises(DecodeError, match="64-bit"):
        decode_request(body.encode(), JSON)
