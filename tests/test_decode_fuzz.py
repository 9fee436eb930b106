"""Whatever arrives, decode_request returns records or raises DecodeError, and normalize never raises."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher.daemon import RESOURCE_KEYS, SPAN_KEYS, DecodeError, SpanRecord, decode_request, normalize
from watcher.pricing import default_price_table

PRICES = default_price_table()
TYPES = ("application/x-protobuf", "application/json")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(st.text(max_size=12), st.booleans(), int64, st.floats(), st.sampled_from([0, 0.0, -0.0, "", 1]))
values = st.one_of(
    scalars, st.lists(st.text(max_size=4), max_size=3), st.lists(int64, max_size=3), st.lists(st.floats(), max_size=2)
)
keys = st.one_of(st.sampled_from(sorted(SPAN_KEYS)), st.text(min_size=1, max_size=10))
attribute_sets = st.dictionaries(keys, values, max_size=12)
resources = st.dictionaries(st.one_of(st.sampled_from(sorted(RESOURCE_KEYS)), st.text(max_size=5)), scalars, max_size=3)


def make_spans(specs: list[tuple[str, dict[str, Any], int]], resource: dict[str, Any]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("fuzz")
    for name, attributes, end in specs:
        tracer.start_span(name, attributes=attributes, start_time=0).end(end_time=end)
    provider.shutdown()
    return list(exporter.get_finished_spans())


span_specs = st.lists(st.tuples(st.text(max_size=8), attribute_sets, st.integers(0, 2**64 - 1)), max_size=4)


def reference_records(body: bytes) -> list[SpanRecord]:
    """What decode_request must return, by the official protobuf classes: every span, wanted keys only."""

    def plain(value: AnyValue) -> object:
        kind = value.WhichOneof("value")
        if kind == "array_value":
            return [plain(item) for item in value.array_value.values]
        return None if kind in (None, "bytes_value", "kvlist_value") else getattr(value, kind)

    def wanted(pairs: Any, keys: frozenset[str]) -> dict[str, object]:
        return {pair.key: plain(pair.value) for pair in pairs if pair.key in keys}

    request = ExportTraceServiceRequest.FromString(body)
    records = []
    for resource_spans in request.resource_spans:
        resource = wanted(resource_spans.resource.attributes, RESOURCE_KEYS)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                ids = span.trace_id.hex(), span.span_id.hex()
                attributes = wanted(span.attributes, SPAN_KEYS)
                records.append(SpanRecord(*ids, span.name, span.end_time_unix_nano, attributes, resource))
    return records


def to_json(body: bytes) -> bytes:
    document = MessageToDict(ExportTraceServiceRequest.FromString(body))
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(document).encode()


def without_nan(records: list[SpanRecord]) -> list[SpanRecord]:
    """`records` with NaN (never equal to itself) replaced by a marker, so that equal records compare equal."""

    def plain(value: object) -> object:
        if isinstance(value, list):
            return [plain(item) for item in value]
        return "NaN" if value != value else value

    for record in records:
        record.attributes = {key: plain(value) for key, value in record.attributes.items()}
        record.resource = {key: plain(value) for key, value in record.resource.items()}
    return records


def decode_or_error(body: bytes, content_type: str) -> list[SpanRecord]:
    """decode_request's records, or [] when it raised DecodeError; any other exception fails the test."""
    try:
        return decode_request(body, content_type)
    except DecodeError:
        return []


def assert_normalizes(records: list[SpanRecord]) -> None:
    result = normalize(records, PRICES)
    assert len(result.entries) + result.rejected + result.ignored == len(records)


@FUZZ
@given(span_specs, resources)
def test_trimmed_protobuf_decoding_matches_the_official_classes(specs: Any, resource: dict[str, Any]) -> None:
    """The trimmed schema reads exactly what the official OTLP classes read, for any span."""
    body = encode_spans(make_spans(specs, resource)).SerializeToString()
    records = decode_request(body, "application/x-protobuf")
    assert_normalizes(records)
    assert without_nan(records) == without_nan(reference_records(body))


@FUZZ
@given(span_specs, resources)
def test_json_decoding_matches_protobuf_decoding(specs: Any, resource: dict[str, Any]) -> None:
    """The OTLP/JSON form of any export decodes to the records of its protobuf form (NaN aside)."""
    body = encode_spans(make_spans(specs, resource)).SerializeToString()
    from_json = decode_request(to_json(body), "application/json")
    assert without_nan(from_json) == without_nan(decode_request(body, "application/x-protobuf"))


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(TYPES))
def test_arbitrary_bytes_decode_or_raise_decode_error(body: bytes, content_type: str) -> None:
    """Random bytes never raise anything but DecodeError, and what decodes normalizes."""
    assert_normalizes(decode_or_error(body, content_type))


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` with a few bytes flipped, dropped or inserted."""
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "insert" or not data:
            data[at:at] = bytes([draw(st.integers(0, 255))])
        elif action == "drop":
            del data[at]
        else:
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


VALID_PROTOBUF = encode_spans(
    make_spans(
        [
            ("chat", {"gen_ai.system": "anthropic", "gen_ai.usage.input_tokens": 5, "watcher.cost.flags": ["a"]}, 9),
            ("chat", {"gen_ai.usage.cost.amount": 0.5, "watcher.pricing.version": "v", "gen_ai.response.id": "m"}, 9),
        ],
        {"service.name": "fuzz"},
    )
).SerializeToString()
VALID_JSON = to_json(VALID_PROTOBUF)


@FUZZ
@given(st.data())
def test_mutated_protobuf_bodies_decode_or_raise_decode_error(data: st.DataObject) -> None:
    """A valid protobuf export with a few bytes damaged decodes or raises DecodeError."""
    assert_normalizes(decode_or_error(data.draw(mutated(VALID_PROTOBUF)), "application/x-protobuf"))


@FUZZ
@given(st.data())
def test_mutated_json_bodies_decode_or_raise_decode_error(data: st.DataObject) -> None:
    """A valid OTLP/JSON export with a few bytes damaged decodes or raises DecodeError."""
    assert_normalizes(decode_or_error(data.draw(mutated(VALID_JSON)), "application/json"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
json_fields = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "attributes", "value", "intValue", "arrayValue", "traceId", "key"]
)


@FUZZ
@given(st.data())
def test_json_with_values_of_the_wrong_shape_decodes_or_raises_decode_error(data: st.DataObject) -> None:
    """Any JSON value placed anywhere in a valid OTLP/JSON document decodes or raises DecodeError."""
    document = json.loads(VALID_JSON)
    node: Any = document
    for _ in range(data.draw(st.integers(0, 6))):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        containers = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
        if not containers:
            break
        _, node = data.draw(st.sampled_from(containers))
    if isinstance(node, dict):
        node[data.draw(json_fields | st.text(max_size=6))] = data.draw(json_values)
    else:
        node[data.draw(st.integers(0, len(node) - 1))] = data.draw(json_values)
    assert_normalizes(decode_or_error(json.dumps(document).encode(), "application/json"))


@FUZZ
@given(st.lists(st.tuples(attribute_sets, resources, st.text(max_size=30)), max_size=5))
def test_normalize_never_raises_on_any_record(specs: list[tuple[dict[str, Any], dict[str, Any], str]]) -> None:
    """Records with any attribute values (wrong types, negatives, NaN) are entries, rejections or ignored."""
    records = [SpanRecord("ab", "cd", name, 10**18, attributes, resource) for attributes, resource, name in specs]
    assert_normalizes(records)
