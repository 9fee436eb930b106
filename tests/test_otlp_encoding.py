"""watcher's fast OTLP encoder produces exactly what the official encoder does, for any span."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from watcher._instrument._otlp import FastOTLPSpanExporter, encode_spans
from watcher.testing import OTLPReceiver

keys = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=False)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(st.text(max_size=20), st.booleans(), int64, floats)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(int64, max_size=3),
    st.lists(floats, max_size=3),
    st.lists(st.booleans(), max_size=3),
)
attributes = st.dictionaries(keys, values, max_size=8)
ids = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def span_specs(draw: st.DrawFn) -> dict[str, object]:
    return {
        "name": draw(st.text(max_size=20)),
        "kind": draw(st.sampled_from(list(SpanKind))),
        "attributes": draw(attributes),
        "events": draw(st.lists(st.tuples(st.text(max_size=8), attributes), max_size=2)),
        "links": draw(st.lists(st.tuples(ids, ids, st.booleans(), attributes), max_size=2)),
        "parent": draw(st.none() | st.tuples(ids, ids, st.booleans())),
        "status": draw(st.sampled_from([None, StatusCode.OK, StatusCode.ERROR])),
        "description": draw(st.text(max_size=10)),
        "start": draw(st.integers(min_value=0, max_value=2**62)),
        "duration": draw(st.integers(min_value=0, max_value=2**40)),
    }


def make_spans(specs: list[dict[str, object]], resource: dict[str, object]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scope", "1.2.3")
    for spec in specs:
        context = None
        if spec["parent"]:
            trace_id, span_id, remote = spec["parent"]  # type: ignore[misc]
            parent = SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1))
            context = set_span_in_context(NonRecordingSpan(parent))
        links = [
            Link(SpanContext(t, s, is_remote=r, trace_flags=TraceFlags(1)), a)  # type: ignore[arg-type]
            for t, s, r, a in spec["links"]  # type: ignore[attr-defined]
        ]
        span = tracer.start_span(
            spec["name"],  # type: ignore[arg-type]
            context=context,
            kind=spec["kind"],  # type: ignore[arg-type]
            attributes=spec["attributes"],  # type: ignore[arg-type]
            links=links,
            start_time=spec["start"],  # type: ignore[arg-type]
        )
        for name, event_attributes in spec["events"]:  # type: ignore[attr-defined]
            span.add_event(name, event_attributes, timestamp=spec["start"])  # type: ignore[arg-type]
        if spec["status"] is not None:
            span.set_status(Status(spec["status"], spec["description"]))  # type: ignore[arg-type]
        span.end(end_time=spec["start"] + spec["duration"])  # type: ignore[operator]
    return list(exporter.get_finished_spans())


def plain_spec(name: str, attributes: dict[str, object]) -> dict[str, object]:
    """A CLIENT span with only a name and attributes: no events, links, parent or status."""
    return {
        "name": name,
        "kind": SpanKind.CLIENT,
        "attributes": attributes,
        "events": [],
        "links": [],
        "parent": None,
        "status": None,
        "description": "",
        "start": 1,
        "duration": 1,
    }


def decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(span_specs(), min_size=1, max_size=4), st.dictionaries(keys, scalars, max_size=4))
def test_fast_encoding_decodes_to_the_same_request_as_the_official_encoder(
    specs: list[dict[str, object]], resource: dict[str, object]
) -> None:
    """For any spans (attributes of every type, events, links, parents, statuses), the bytes decode identically."""
    spans = make_spans(specs, resource)
    ours, theirs = decoded(encode_spans(spans)), decoded(official_encode(spans).SerializePartialToString())
    assert ours == theirs


def test_float_attributes_keep_every_bit() -> None:
    """Costs are doubles: encoding must not round them."""
    spans = make_spans([plain_spec("c", {"cost": 0.1 + 0.2, "tiny": 5e-324})], {})
    attributes = decoded(encode_spans(spans)).resource_spans[0].scope_spans[0].spans[0].attributes
    got = {kv.key: kv.value.double_value for kv in attributes}
    assert got["cost"] == 0.1 + 0.2 and got["tiny"] == 5e-324 and not math.isnan(got["cost"])


def test_the_fast_exporter_delivers_over_real_otlp_http() -> None:
    """The exporter sends through the standard OTLP/HTTP client, and a receiver decodes the spans."""
    spans = make_spans([plain_spec("chat m", {"gen_ai.usage.cost.amount": 0.5})], {"service.name": "svc"})
    with OTLPReceiver() as receiver:
        exporter = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert exporter._send is not None, "the fast path must be in use with this exporter version"
        assert exporter.export(spans).name == "SUCCESS"
        [span] = receiver.wait_for(1)
        exporter.shutdown()
    assert span.name == "chat m" and span.attributes["gen_ai.usage.cost.amount"] == 0.5
    assert span.resource["service.name"] == "svc"
