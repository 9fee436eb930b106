"""The decoder's fast path for watcher's own cost spans gives exactly the general path's entries, or none."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher.daemon import _otlp as names
from watcher.daemon import decode_request, normalize
from watcher.ledger import MAX_TOKENS, Entry
from watcher.pricing import default_price_table

PRICES = default_price_table()
PROTOBUF = "application/x-protobuf"
COST_SPAN: dict[str, Any] = {  # as watcher's hook sends it (docs/spans.md)
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-haiku-4-5",
    "gen_ai.response.model": "claude-haiku-4-5-20251001",
    "gen_ai.response.id": "msg_01",
    "gen_ai.usage.input_tokens": 1500,
    "gen_ai.usage.output_tokens": 50,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.cache_write.input_tokens": 200,
    "anthropic.usage.uncached_input_tokens": 300,
    "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 150,
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 50,
    "anthropic.usage.server_tool_use.web_search_requests": 0,
    "gen_ai.usage.cost.amount": 0.0008625,
    "watcher.cost.input_usd": 0.0003,
    "watcher.cost.output_usd": 0.00025,
    "watcher.cost.cache_read_usd": 0.0001,
    "watcher.cost.cache_write_usd": 0.0002125,
    "watcher.cost.tools_usd": 0.0,
    "watcher.cost.estimated": False,
    "watcher.cache.read_savings_usd": 0.0009,
    "watcher.cache.write_premium_usd": 0.0000625,
    "watcher.pricing.version": "2026-11-25",
    "watcher.request_type": "summarize",
    "watcher.platform": "anthropic",
}
KEYS = sorted({*COST_SPAN, *names.SPAN_KEYS})  # every key either path reads, alternatives included
VALUES = st.one_of(
    st.none(),  # drop the key
    st.integers(-5, 10**6),
    st.integers(MAX_TOKENS - 10**6, MAX_TOKENS + 10),  # around the plausibility bound, alone or summed
    st.sampled_from([2**62, 2**63 - 1]),
    st.sampled_from([0, 0.0, -0.0, 1.0, 2.5, -1.0, float("nan"), float("inf"), 1e-12, 0.1 + 0.2, 7e20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "batch", "claude-sonnet-4-5", "x"]),
    st.lists(st.integers(0, 3), max_size=2),
)
END_NS = 1_795_608_000_000_001_234
END_TIMES = st.one_of(st.just(END_NS), st.integers(0, 2**64 - 1), st.integers(END_NS - 10**15, END_NS + 10**15))
WINDOWS = st.one_of(st.none(), st.just((END_NS // 1000 - 10**12, END_NS // 1000 + 10**9)))


def body_of(attributes: dict[str, Any], end_ns: int, resource: dict[str, Any]) -> bytes:
    """One span with `attributes` (None values left out), encoded by the official OTLP encoder."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    present = {key: value for key, value in attributes.items() if value is not None}
    provider.get_tracer("t").start_span("chat", attributes=present, start_time=0).end(end_time=end_ns)
    provider.shutdown()
    body: bytes = encode_spans(exporter.get_finished_spans()).SerializeToString()
    return body


def both_paths(body: bytes, window: tuple[int, int] | None = None) -> tuple[list[object], Any, Any]:
    """(what the fast decode made, normalised fast result, normalised general result), within `window` if given."""
    fast = decode_request(body, PROTOBUF, default_request_type="dflt")
    general = decode_request(body, PROTOBUF, default_request_type="dflt", fast=False)
    normal: dict[str, Any] = {"default_request_type": "dflt", **({"window": window} if window else {})}
    return list(fast), normalize(fast, PRICES, **normal), normalize(general, PRICES, **normal)


def test_a_hook_cost_span_takes_the_fast_path_and_matches_the_general_one() -> None:
    """The plain shape the hook sends becomes an Entry in the decoder, equal to the general path's."""
    made, fast, general = both_paths(body_of(COST_SPAN, 1_795_608_000_000_001_234, {"service.name": "app"}))
    assert [type(item) for item in made] == [Entry]
    assert fast.entries == general.entries
    [entry] = fast.entries
    amounts = (entry.cost_nanos, entry.cache_read_savings_nanos, entry.cache_write_premium_nanos)
    assert amounts == (862_500, 900_000, 62_500)
    assert (entry.service, entry.request_type, entry.rank) == ("app", "summarize", 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"watcher.cost.estimated": True},
        {"anthropic.response.service_tier": "batch"},
        {"watcher.batch.id": "msgbatch_1", "watcher.batch.savings_usd": 0.0004},
        {"gen_ai.response.id": None},  # keyed by trace and span id
        {"watcher.request_type": None},  # the default request type
        {"gen_ai.response.model": None},  # the request model
        {"watcher.platform": "aws.bedrock", "anthropic.usage.server_tool_use.web_search_requests": 3},
        {"gen_ai.usage.cost.amount": 0.0, "watcher.cost.input_usd": 0.0},
    ],
    ids=[
        "estimated",
        "batch-tier",
        "batch-id",
        "no-response-id",
        "no-request-type",
        "request-model",
        "bedrock",
        "free",
    ],
)
def test_each_field_of_a_plain_cost_span_is_read_by_the_fast_path_as_the_general_one_reads_it(
    changes: dict[str, Any],
) -> None:
    """Variations the hook really sends still take the fast path, and give the general path's entry."""
    body = body_of({**COST_SPAN, **changes}, 1_795_608_000_000_001_234, {"service.name": "app"})
    made, fast, general = both_paths(body)
    assert [type(item) for item in made] == [Entry]
    assert fast.entries == general.entries


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4),
    end_ns=END_TIMES,
    environment=st.sampled_from([None, "prod", ""]),
    window=WINDOWS,
)
def test_any_variation_gives_the_general_paths_entries_and_rejections(
    changes: dict[str, Any], end_ns: int, environment: str | None, window: tuple[int, int] | None
) -> None:
    """Dropped keys, other types, negative, fractional or implausibly big counts, odd floats and odd end times,
    with or without a window: the fast path gives the same entries and rejections (and their reasons) as the
    general path, whichever of them takes the span."""
    resource = {"service.name": "app", **({"deployment.environment.name": environment} if environment else {})}
    _, fast, general = both_paths(body_of({**COST_SPAN, **changes}, end_ns, resource), window)
    assert fast.entries == general.entries
    assert (fast.rejected, fast.ignored, fast.rejected_by) == (general.rejected, general.ignored, general.rejected_by)


@pytest.mark.parametrize(
    "changes",
    [
        {"gen_ai.usage.output_tokens": 2**63 - 1},
        {"gen_ai.usage.output_tokens": MAX_TOKENS},  # with the span's other 1,350 tokens
        {"anthropic.usage.server_tool_use.web_search_requests": MAX_TOKENS + 1},
    ],
    ids=["int64-max", "sum-over", "searches"],
)
def test_an_implausibly_big_cost_span_leaves_the_fast_path_and_is_rejected_for_it(changes: dict[str, Any]) -> None:
    """A cost span of otherwise plain shape claiming more than MAX_TOKENS is not made an Entry by the fast path;
    both paths reject it as implausible."""
    made, fast, general = both_paths(body_of({**COST_SPAN, **changes}, END_NS, {"service.name": "app"}))
    assert [type(item) for item in made] != [Entry]
    assert fast.rejected_by == general.rejected_by == {"implausible_tokens": 1}
