"""Span records become ledger entries: watcher's spans as recorded, other instrumentations' priced here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import anthropic
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import watcher
from watcher.daemon import MAX_REASONS, SpanRecord, decode_request, normalize
from watcher.ledger import MAX_TOKENS, Entry
from watcher.pricing import TokenUsage, default_price_table
from watcher.testing import FakeAnthropic, FakeReply, SpanCapture

PRICES = default_price_table()
END_NS = 1_795_608_000_123_456_789  # 2026-11-25T12:00:00.123456Z
END = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
RESOURCE: dict[str, object] = {"service.name": "app", "deployment.environment.name": "prod"}
HI = [{"role": "user", "content": "hi"}]


def record(attributes: dict[str, object], *, name: str = "chat", resource: dict[str, object] = RESOURCE) -> SpanRecord:
    """A decoded span with fixed ids and end time."""
    return SpanRecord("ab" * 16, "cd" * 8, name, END_NS, attributes, resource)


def watcher_span(**extra: object) -> dict[str, object]:
    """The attributes of a watcher cost span (docs/spans.md), with `extra` on top."""
    return {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.id": "msg_w",
        "gen_ai.usage.input_tokens": 1300,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 200,
        "anthropic.usage.uncached_input_tokens": 100,
        "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 150,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 50,
        "anthropic.usage.server_tool_use.web_search_requests": 2,
        "gen_ai.usage.cost.amount": 0.02,
        "watcher.cost.input_usd": 0.0003,
        "watcher.cost.output_usd": 0.00075,
        "watcher.cost.cache_read_usd": 0.0003,
        "watcher.cost.cache_write_usd": 0.0008625,
        "watcher.cost.tools_usd": 0.02,
        "watcher.cost.estimated": False,
        "watcher.pricing.version": "2026-11-01",
        "watcher.request_type": "summarize",
        "watcher.platform": "aws.bedrock",
        **extra,
    }


def only(spans: list[SpanRecord]) -> Entry:
    result = normalize(spans, PRICES)
    assert (result.rejected, result.ignored, result.rejected_reasons) == (0, 0, [])
    [entry] = result.entries
    return entry


def test_entry_fields_are_in_the_order_normalize_passes_them() -> None:
    """normalize builds Entry by position for speed, so its field order is pinned here."""
    assert list(Entry._fields) == [
        "key", "time_us", "response_id", "service", "environment", "request_type", "model", "platform",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
        "web_search_requests", "cost_nanos", "input_nanos", "output_nanos", "cache_read_nanos", "cache_write_nanos",
        "tools_nanos", "estimated", "batch", "rank", "cache_read_savings_nanos", "cache_write_premium_nanos",
        "batch_savings_nanos",
    ]  # fmt: skip


def test_watcher_span_keeps_its_recorded_cost_tokens_and_request_type() -> None:
    """watcher's own span becomes a rank-2 entry with the Decimal of each float it carried."""
    entry = only([record(watcher_span())])
    assert entry == Entry.of(
        key="msg_w",
        time=END,
        service="app",
        environment="prod",
        request_type="summarize",
        model="claude-sonnet-4-5-20250929",
        platform="aws.bedrock",
        response_id="msg_w",
        input_tokens=100,
        output_tokens=50,
        cache_read_tokens=1000,
        cache_write_5m_tokens=150,
        cache_write_1h_tokens=50,
        web_search_requests=2,
        cost_usd=Decimal("0.02"),
        input_usd=Decimal("0.0003"),
        output_usd=Decimal("0.00075"),
        cache_read_usd=Decimal("0.0003"),
        cache_write_usd=Decimal("0.0008625"),
        tools_usd=Decimal("0.02"),
        rank=2,
    )


def test_watcher_span_flags_batch_and_estimate() -> None:
    """`watcher.batch.id` or the batch tier marks a batch entry; `watcher.cost.estimated` is copied."""
    assert only([record(watcher_span(**{"watcher.batch.id": "msgbatch_1"}))]).batch
    tiered = only([record(watcher_span(**{"anthropic.response.service_tier": "batch"}))])
    assert tiered.batch
    assert not tiered.estimated
    assert only([record(watcher_span(**{"watcher.cost.estimated": True}))]).estimated


def test_sdk_span_is_priced_like_watchers_span_of_the_same_response(fake_api: FakeAnthropic) -> None:
    """The anthropic SDK's own span, priced by the daemon, costs what watcher's span for that call says."""
    usage = {
        "input_tokens": 120,
        "output_tokens": 40,
        "cache_read_input_tokens": 3000,
        "cache_creation_input_tokens": 700,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 200},
        "service_tier": "standard",
    }
    fake_api.reply(FakeReply(model="claude-haiku-4-5-20251001", usage=usage, id="msg_same"))
    spans = SpanCapture()
    watcher.instrument(tracer_provider=spans.provider)
    try:
        options: anthropic.OpenTelemetryOptions = {"tracer_provider": spans.provider, "traces": True}
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k", open_telemetry=options) as client:
            client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)  # type: ignore[arg-type]
        finished = spans.spans()
    finally:
        watcher.uninstrument()
    records = decode_request(encode_spans(finished).SerializeToString(), "application/x-protobuf")
    result = normalize(records, PRICES)
    by_rank = {entry.rank: entry for entry in result.entries}
    assert set(by_rank) == {1, 2}, [span.name for span in finished]
    sdk, own = by_rank[1], by_rank[2]
    assert sdk.key == own.key == "msg_same"
    assert sdk.cost_usd == own.cost_usd > 0
    assert (sdk.input_tokens, sdk.cache_read_tokens, sdk.cache_write_5m_tokens, sdk.cache_write_1h_tokens) == (
        120,
        3000,
        500,
        200,
    )
    same_call = {"rank": 2, "time_us": own.time_us, "request_type": own.request_type}  # the SDK span ends apart
    assert sdk._replace(**same_call) == own


def test_sdk_span_reporting_less_input_than_its_cached_part_is_rejected() -> None:
    """The SDK's input count includes cached tokens, so less input than cache reads is malformed."""
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 500,
    }
    result = normalize([record(attributes, name="anthropic.messages.create")], PRICES)
    assert (result.entries, result.rejected) == ([], 1)
    assert "fewer than the cached" in result.rejected_reasons[0]


def test_openllmetry_span_with_old_names_counts_cache_tokens_out_of_its_input() -> None:
    """OpenLLMetry's Anthropic spans (gen_ai.system, prompt_tokens, *_input_tokens) report input with cache included."""
    attributes = {
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.prompt_tokens": 1310,
        "gen_ai.usage.completion_tokens": 20,
        "gen_ai.usage.cache_read_input_tokens": 1000,
        "gen_ai.usage.cache_creation_input_tokens": 300,
    }
    entry = only([record(attributes)])
    assert (entry.input_tokens, entry.output_tokens, entry.cache_read_tokens) == (10, 20, 1000)
    assert (entry.cache_write_5m_tokens, entry.cache_write_1h_tokens) == (300, 0)
    expected = PRICES.cost("claude-haiku-4-5", TokenUsage(10, 20, 1000, 300), at=END)
    assert (entry.cost_usd, entry.rank, entry.model, entry.platform) == (
        expected.total_usd,
        1,
        "claude-haiku-4-5",
        "anthropic",
    )
    assert (entry.key, entry.request_type, entry.response_id) == (f"trace:{'ab' * 16}:{'cd' * 8}", "unlabeled", None)


def test_generic_span_with_cached_input_included_gets_its_uncached_part() -> None:
    """A current-convention span's input_tokens includes cache reads and writes; the rest is uncached."""
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-opus-4-1",
        "gen_ai.response.id": "msg_g",
        "gen_ai.usage.input_tokens": 2500,
        "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 400,
        "watcher.request_type": "triage",
    }
    entry = only([record(attributes)])
    assert (entry.input_tokens, entry.cache_read_tokens, entry.cache_write_5m_tokens) == (100, 2000, 400)
    assert (entry.key, entry.response_id, entry.request_type) == ("msg_g", "msg_g", "triage")
    assert entry.cost_usd == PRICES.cost("claude-opus-4-1", TokenUsage(100, 100, 2000, 400), at=END).total_usd


def test_input_below_the_cached_part_from_other_instrumentations_is_taken_as_uncached() -> None:
    """An input count smaller than the cache counts cannot include them (Bedrock-style), so it is the uncached part."""
    attributes = {
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_creation.input_tokens": 18131,
    }
    entry = only([record(attributes)])
    assert (entry.input_tokens, entry.cache_write_5m_tokens, entry.platform) == (4, 18131, "aws.bedrock")


def test_sdk_breakdown_sets_the_cache_write_ttls_and_batch_prices_apply() -> None:
    """The 5m/1h breakdown and the batch tier shape the daemon's price."""
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 600,
        "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 100,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 500,
        "anthropic.response.service_tier": "batch",
    }
    entry = only([record(attributes, name="anthropic.messages.create")])
    usage = TokenUsage(400, 0, 0, 100, 500, service_tier="batch")
    assert (entry.cache_write_5m_tokens, entry.cache_write_1h_tokens, entry.batch) == (100, 500, True)
    assert entry.cost_usd == PRICES.cost("claude-sonnet-4-5", usage, at=END).total_usd


@pytest.mark.parametrize(
    "attributes",
    [
        {"gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-5", "gen_ai.usage.input_tokens": 5},
        {
            "gen_ai.system": "aws.bedrock",
            "gen_ai.request.model": "amazon.nova-pro-v1:0",
            "gen_ai.usage.input_tokens": 5,
        },
        {
            "gen_ai.provider.name": "gcp.vertex_ai",
            "gen_ai.request.model": "gemini-2.5-pro",
            "gen_ai.usage.output_tokens": 5,
        },
        {"gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 5},  # no provider named
        {"http.method": "GET"},
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5",
        },  # no usage: count_tokens, errors
    ],
)
def test_spans_without_claude_usage_are_ignored(attributes: dict[str, object]) -> None:
    """Other providers' spans, spans naming no provider, and spans without usage are ignored, not priced."""
    result = normalize([record(attributes)], PRICES)
    assert (result.entries, result.ignored, result.rejected) == ([], 1, 0)


def test_claude_on_vertex_from_another_instrumentation_is_priced() -> None:
    """A Vertex span with a Claude model is Claude usage on the gcp.vertex_ai platform."""
    attributes = {
        "gen_ai.system": "vertex_ai",
        "gen_ai.request.model": "claude-haiku-4-5@20251001",
        "gen_ai.usage.input_tokens": 5,
    }
    entry = only([record(attributes)])
    assert (entry.platform, entry.input_tokens, entry.cost_usd > 0) == ("gcp.vertex_ai", 5, True)


MALFORMED = [
    {"gen_ai.usage.output_tokens": -1},
    {"gen_ai.usage.output_tokens": "12"},
    {"gen_ai.usage.output_tokens": True},
    {"gen_ai.usage.output_tokens": 1.5},
    {"gen_ai.usage.output_tokens": float("nan")},
    {"gen_ai.usage.cache_read.input_tokens": [1]},
    {"anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 5, "gen_ai.usage.cache_write.input_tokens": 6},
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_usage_is_rejected_and_the_rest_of_the_batch_kept(bad: dict[str, object]) -> None:
    """A span claiming malformed usage is counted as rejected, with a reason; its neighbours still become entries."""
    base = {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5"}
    spans = [record(watcher_span()), record({**base, **bad}), record(watcher_span(**bad))]
    result = normalize(spans, PRICES)
    assert (len(result.entries), result.rejected, result.ignored) == (1, 2, 0)
    assert len(result.rejected_reasons) == 2
    assert all(reason.startswith(f"span {'ab' * 16}/{'cd' * 8}: ") for reason in result.rejected_reasons)


@pytest.mark.parametrize("cost", [-0.01, float("nan"), float("inf"), "0.02", True])
def test_watcher_span_with_an_impossible_cost_is_rejected(cost: object) -> None:
    """A recorded cost must be a finite, non-negative number."""
    result = normalize([record(watcher_span(**{"gen_ai.usage.cost.amount": cost}))], PRICES)
    assert (result.entries, result.rejected) == ([], 1)


def test_rejection_reasons_are_bounded_but_all_rejections_counted() -> None:
    """Only the first MAX_REASONS reasons are kept for the log."""
    spans = [record(watcher_span(**{"gen_ai.usage.output_tokens": -1}))] * (MAX_REASONS + 5)
    result = normalize(spans, PRICES)
    assert (result.rejected, len(result.rejected_reasons)) == (MAX_REASONS + 5, MAX_REASONS)


def test_resource_defaults_and_the_older_environment_name() -> None:
    """service.name defaults to unknown_service; deployment.environment is read when .name is absent."""
    bare = only([record(watcher_span(), resource={})])
    assert (bare.service, bare.environment) == ("unknown_service", "default")
    old = only([record(watcher_span(), resource={"deployment.environment": "staging"})])
    assert old.environment == "staging"


def test_a_billed_but_empty_call_is_still_an_entry() -> None:
    """Zero tokens everywhere is kept: the call happened."""
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 0,
    }
    entry = only([record(attributes, name="anthropic.messages.create")])
    assert (entry.input_tokens, entry.output_tokens, entry.cost_usd) == (0, 0, Decimal(0))


def test_default_request_type_applies_to_other_instrumentations_only() -> None:
    """Spans without watcher.request_type get the daemon's default; watcher's carry their own."""
    generic = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 1,
    }
    result = normalize([record(generic), record(watcher_span())], PRICES, default_request_type="batch-jobs")
    assert [entry.request_type for entry in result.entries] == ["batch-jobs", "summarize"]


def test_records_that_break_expectations_cost_one_span_not_the_batch() -> None:
    """Even a record no decoder produces is rejected alone, never raised."""
    broken = SpanRecord("ab", "cd", "chat", 2**80, watcher_span(), RESOURCE)  # a time past year 9999
    result = normalize([broken, record(watcher_span())], PRICES)
    assert (len(result.entries), result.rejected) == (1, 1)


SDK_SPAN = {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5"}


@pytest.mark.parametrize(
    "counts",
    [
        {"gen_ai.usage.output_tokens": 2**63 - 1},
        {"gen_ai.usage.output_tokens": MAX_TOKENS - 49},  # with the span's 50 other tokens: one too many
        {"anthropic.usage.server_tool_use.web_search_requests": MAX_TOKENS + 1},
        {"gen_ai.usage.input_tokens": 2 * MAX_TOKENS, "anthropic.usage.uncached_input_tokens": None},
    ],
    ids=["int64-max", "just-over", "searches", "input-total"],
)
def test_a_span_claiming_more_tokens_than_a_request_can_hold_is_rejected_as_implausible(
    counts: dict[str, object],
) -> None:
    """Over MAX_TOKENS tokens (all kinds together) or web searches in one span is rejected with its own reason."""
    huge = {"gen_ai.usage.input_tokens": 2**62, "gen_ai.usage.output_tokens": 2**62}
    spans = [record(watcher_span(**counts)), record({**SDK_SPAN, **huge}), record(watcher_span())]
    result = normalize(spans, PRICES)
    assert (len(result.entries), result.rejected, result.rejected_by) == (1, 2, {"implausible_tokens": 2})
    assert "more than one request can hold" in result.rejected_reasons[0]


def test_a_span_of_exactly_max_tokens_is_accepted() -> None:
    """The bound is inclusive: MAX_TOKENS tokens in one request is still an entry."""
    entry = only([record(watcher_span(**{"gen_ai.usage.output_tokens": MAX_TOKENS - 1300}))])
    assert entry.input_tokens + entry.output_tokens + entry.cache_read_tokens + 200 == MAX_TOKENS


def test_spans_ending_outside_the_window_are_rejected_whichever_path_made_them() -> None:
    """A record or a fast-path Entry ending outside the window is rejected as out of window; the edges are in."""
    end_us = END_NS // 1000
    entry = only([record(watcher_span())])
    spans: list[SpanRecord | Entry] = [
        record(watcher_span()),  # ends exactly at the window's end
        SpanRecord("ab" * 16, "ef" * 8, "chat", 0, watcher_span(), RESOURCE),  # 1970
        record({**SDK_SPAN, "gen_ai.usage.input_tokens": 5}),
        entry._replace(time_us=end_us + 1),  # the fast path's entry, a microsecond late
        entry._replace(time_us=end_us - 10**6),  # the window's start
    ]
    result = normalize(spans, PRICES, window=(end_us - 10**6, end_us))
    assert (len(result.entries), result.rejected_by) == (3, {"time_out_of_window": 2})
    assert "ended at 1970-01-01T00:00:00+00:00, outside the accepted" in result.rejected_reasons[0]
    assert result.rejected_reasons[1].startswith("entry msg_w: ended at")
