"""Hand-priced cases, one or more per pricing rule; every expected amount is worked in a comment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from watcher.exceptions import PricingError
from watcher.pricing import Cost, TokenUsage, default_price_table

D = Decimal
AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One hand-priced call: the claim it checks, the call, and the expected total and flags."""

    claim: str
    model: str
    usage: TokenUsage
    total: str
    flags: tuple[str, ...] = ()
    at: datetime = AT


def day(y: int, m: int, d: int, hour: int = 0) -> datetime:
    """A UTC datetime, for readable cases."""
    return datetime(y, m, d, hour, tzinfo=UTC)


CASES = [
    # 1000 x 3 / 1e6 = 0.003 input; 1000 x 15 / 1e6 = 0.015 output
    Case("input_and_output_at_list_rates", "claude-sonnet-4-5", TokenUsage(1000, 1000), "0.018"),
    # 1000 x 3 x 1.25 / 1e6 = 0.00375
    Case(
        "cache_write_5m_is_1_25x_input",
        "claude-sonnet-4-5",
        TokenUsage(cache_write_5m_tokens=1000),
        "0.00375",
    ),
    # 1000 x 3 x 2 / 1e6 = 0.006 (not 1.25x = 0.00375)
    Case("cache_write_1h_is_2x_input", "claude-sonnet-4-5", TokenUsage(cache_write_1h_tokens=1000), "0.006"),
    # 1e6 x 0.25 x 1.2 / 1e6 = 0.30
    Case("claude_3_haiku_writes_5m_at_1_2x", "claude-3-haiku", TokenUsage(cache_write_5m_tokens=10**6), "0.30"),
    # 1e6 x 0.20 / 1e6 = 0.20 (0.1 x input would be 0.40)
    Case("opus_5_5_cache_read_is_0_20", "claude-opus-5-5", TokenUsage(cache_read_tokens=10**6), "0.20"),
    # 1e6 x 0.25 / 1e6 = 0.25 (0.1 x input would be 1.00)
    Case("fable_5_1_cache_read_is_0_25", "claude-fable-5-1", TokenUsage(cache_read_tokens=10**6), "0.25"),
    # 1e6 x 0.08 / 1e6 = 0.08
    Case("haiku_3_5_cache_read_is_0_08", "claude-3-5-haiku", TokenUsage(cache_read_tokens=10**6), "0.08"),
    # 1e6 x 0.20 / 1e6 = 0.20 on the last day of the old price
    Case(
        "sonnet_5_5_cache_read_0_20_day_before_change",
        "claude-sonnet-5-5",
        TokenUsage(cache_read_tokens=10**6),
        "0.20",
        at=day(2026, 10, 6, 23),
    ),
    # 1e6 x 0.10 / 1e6 = 0.10 from 00:00 UTC on the effective day
    Case(
        "sonnet_5_5_cache_read_0_10_from_change_day",
        "claude-sonnet-5-5",
        TokenUsage(cache_read_tokens=10**6),
        "0.10",
        at=day(2026, 10, 7),
    ),
    # 20:00 at UTC-5 on 10-06 is 01:00 UTC on 10-07, so the new 0.10 applies
    Case(
        "effective_date_uses_the_utc_day",
        "claude-sonnet-5-5",
        TokenUsage(cache_read_tokens=10**6),
        "0.10",
        at=datetime(2026, 10, 6, 20, tzinfo=timezone(timedelta(hours=-5))),
    ),
    # prompt 100,000 (not over): 100000 x 0.10 / 1e6 = 0.01; 1000 x 0.50 / 1e6 = 0.0005
    Case("haiku_5_5_at_100k_is_standard", "claude-haiku-5-5", TokenUsage(100_000, 1000), "0.0105"),
    # prompt 100,001: 100000 x 0.50 / 1e6 = 0.05; 1 x 0.05 / 1e6 = 0.00000005; 1000 x 2.50 / 1e6 = 0.0025
    Case(
        "haiku_5_5_over_100k_bills_whole_request_high",
        "claude-haiku-5-5",
        TokenUsage(100_000, 1000, cache_read_tokens=1),
        "0.05250005",
        ("long_context",),
    ),
    # prompt 200,000 (not over): 200000 x 3 / 1e6 = 0.6; 1000 x 15 / 1e6 = 0.015
    Case("sonnet_4_5_at_200k_is_standard", "claude-sonnet-4-5", TokenUsage(200_000, 1000), "0.615"),
    # prompt 199000 + 1000 + 1 = 200,001: 199000 x 6 / 1e6 = 1.194; 1000 x 6 x 1.25 / 1e6 = 0.0075;
    # 1 x 0.60 / 1e6 = 0.0000006; 1000 x 22.50 / 1e6 = 0.0225; sum 1.2240006
    Case(
        "sonnet_4_5_over_200k_doubles_input_and_1_5x_output",
        "claude-sonnet-4-5",
        TokenUsage(199_000, 1000, cache_read_tokens=1, cache_write_5m_tokens=1000),
        "1.2240006",
        ("long_context",),
    ),
    # 300000 x 6 / 1e6 = 1.8
    Case("sonnet_4_over_200k_doubles_input", "claude-sonnet-4", TokenUsage(300_000), "1.8", ("long_context",)),
    # before 2026-03-13: 250000 x 10 / 1e6 = 2.5; 1000 x 37.50 / 1e6 = 0.0375
    Case(
        "opus_4_6_over_200k_before_2026_03_13_is_long_context",
        "claude-opus-4-6",
        TokenUsage(250_000, 1000),
        "2.5375",
        ("long_context",),
        day(2026, 3, 12, 23),
    ),
    # from 2026-03-13: 250000 x 5 / 1e6 = 1.25; 1000 x 25 / 1e6 = 0.025
    Case(
        "opus_4_6_over_200k_from_2026_03_13_is_standard",
        "claude-opus-4-6",
        TokenUsage(250_000, 1000),
        "1.275",
        at=day(2026, 3, 13),
    ),
    # before: 250000 x 6 / 1e6 = 1.5; from the day: 250000 x 3 / 1e6 = 0.75
    Case(
        "sonnet_4_6_over_200k_before_2026_03_13_is_long_context",
        "claude-sonnet-4-6",
        TokenUsage(250_000),
        "1.5",
        ("long_context",),
        day(2026, 3, 12),
    ),
    Case("sonnet_4_6_over_200k_from_2026_03_13_is_standard", "claude-sonnet-4-6", TokenUsage(250_000), "0.75"),
    # (0.003 + 0.015) x 1.1 = 0.0198
    Case(
        "us_geo_is_1_1x_on_sonnet_4_6",
        "claude-sonnet-4-6",
        TokenUsage(1000, 1000, inference_geo="us"),
        "0.0198",
    ),
    # Sonnet 4.5 predates US-only pricing: 0.003 + 0.015 = 0.018, no multiplier
    Case(
        "us_geo_is_ignored_on_sonnet_4_5",
        "claude-sonnet-4-5",
        TokenUsage(1000, 1000, inference_geo="us"),
        "0.018",
    ),
    # input 1000 x 5 / 1e6 = 0.005; 5m 0.005 x 1.25 = 0.00625; 1h 0.005 x 2 = 0.01;
    # read 1000 x 0.50 / 1e6 = 0.0005; output 1000 x 25 / 1e6 = 0.025;
    # sum 0.04675; x 1.1 (geo) x 0.5 (batch) = 0.0257125
    Case(
        "batch_cache_and_geo_stack",
        "claude-opus-4-6",
        TokenUsage(1000, 1000, 1000, 1000, 1000, inference_geo="us", batch=True),
        "0.0257125",
    ),
    # (0.003 + 0.015) x 0.5 = 0.009
    Case(
        "service_tier_batch_halves",
        "claude-sonnet-4-5",
        TokenUsage(1000, 1000, service_tier="batch"),
        "0.009",
    ),
    # 1000 x 25 / 1e6 x 2 = 0.05
    Case("opus_4_8_fast_is_2x", "claude-opus-4-8", TokenUsage(output_tokens=1000, speed="fast"), "0.05"),
    # 1000 x 25 / 1e6 x 6 = 0.15, while Opus 4.6 still had fast mode
    Case(
        "opus_4_6_fast_is_6x",
        "claude-opus-4-6",
        TokenUsage(output_tokens=1000, speed="fast"),
        "0.15",
        (),
        day(2026, 9, 25),
    ),
    # 1000 x 40 / 1e6 x 2 = 0.08
    Case("fable_5_2_fast_is_2x", "claude-fable-5-2", TokenUsage(output_tokens=1000, speed="fast"), "0.08"),
    # fast mode removed from Opus 4.8 on 2026-11-30: 1000 x 25 / 1e6 = 0.025 at 1x, flagged
    Case(
        "opus_4_8_fast_after_removal_is_1x_and_flagged",
        "claude-opus-4-8",
        TokenUsage(output_tokens=1000, speed="fast"),
        "0.025",
        ("fast_unsupported",),
        day(2026, 11, 30),
    ),
    # no fast multiplier: 1000 x 15 / 1e6 = 0.015 at 1x, flagged
    Case(
        "fast_on_model_without_fast_is_1x_and_flagged",
        "claude-sonnet-4-5",
        TokenUsage(output_tokens=1000, speed="fast"),
        "0.015",
        ("fast_unsupported",),
    ),
    # 1000 x 25 / 1e6 x 2 (fast) x 0.5 (batch) = 0.025
    Case(
        "fast_with_batch_applies_both_and_flags",
        "claude-opus-5",
        TokenUsage(output_tokens=1000, speed="fast", batch=True),
        "0.025",
        ("fast_with_batch",),
    ),
    # 3 x 10 / 1000 = 0.03
    Case("web_search_is_10_per_1000", "claude-sonnet-4-5", TokenUsage(web_search_requests=3), "0.03"),
    # 1000 x 3 / 1e6 x 0.5 = 0.0015 tokens + 0.03 search fees (not halved) = 0.0315
    Case(
        "batch_does_not_halve_web_search",
        "claude-sonnet-4-5",
        TokenUsage(1000, web_search_requests=3, batch=True),
        "0.0315",
    ),
    # standard rates: 1000 x 3 / 1e6 = 0.003, flagged
    Case(
        "priority_tier_is_standard_rate_and_flagged",
        "claude-sonnet-4-5",
        TokenUsage(1000, service_tier="priority"),
        "0.003",
        ("priority_tier",),
    ),
    # estimated at claude-sonnet-5-5: 1000 x 2 / 1e6 = 0.002
    Case(
        "unknown_sonnet_estimated_by_family",
        "claude-sonnet-9",
        TokenUsage(1000),
        "0.002",
        ("estimated_family:sonnet",),
    ),
    # estimated at the default claude-opus-4-1: 1000 x 15 / 1e6 = 0.015
    Case("unknown_name_estimated_by_default", "gpt-5", TokenUsage(1000), "0.015", ("estimated_default",)),
    # resolves to claude-haiku-4-5: 1e6 x 1 / 1e6 = 1
    Case("dated_snapshot_resolves", "claude-haiku-4-5-20251001", TokenUsage(10**6), "1"),
    Case("bedrock_id_resolves", "us.anthropic.claude-haiku-4-5-20251001-v1:0", TokenUsage(10**6), "1"),
    Case("vertex_id_resolves", "claude-haiku-4-5@20251001", TokenUsage(10**6), "1"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.claim for case in CASES])
def test_hand_priced_case_matches_exactly(case: Case) -> None:
    """Each hand-priced call costs exactly the worked total, with exactly the expected flags."""
    cost = default_price_table().cost(case.model, case.usage, at=case.at)
    assert cost.total_usd == D(case.total)
    assert cost.flags == case.flags
    assert cost.estimated == any(flag.startswith("estimated") for flag in case.flags)


def test_cost_splits_into_categories() -> None:
    """Each category amount is priced separately and the total is their sum."""
    usage = TokenUsage(1000, 2000, 3000, 4000, 5000, web_search_requests=1)
    cost = default_price_table().cost("claude-sonnet-4-5", usage, at=AT)
    assert cost.input_usd == D("0.003")  # 1000 x 3 / 1e6
    assert cost.output_usd == D("0.030")  # 2000 x 15 / 1e6
    assert cost.cache_read_usd == D("0.0009")  # 3000 x 0.30 / 1e6
    assert cost.cache_write_usd == D("0.045")  # 4000 x 3.75 / 1e6 = 0.015; 5000 x 6 / 1e6 = 0.03
    assert cost.tools_usd == D("0.01")  # 1 x 10 / 1000
    assert cost.total_usd == D("0.0889")


def test_estimated_cost_names_the_model_it_used() -> None:
    """An estimate reports the table model whose prices it used, and is marked estimated."""
    cost = default_price_table().cost("claude-haiku-7", TokenUsage(1000), at=AT)
    assert (cost.model, cost.estimated) == ("claude-haiku-5-5", True)


def test_cost_reports_the_table_version() -> None:
    """Every cost carries the version string of the table that priced it."""
    table = default_price_table()
    assert table.cost("claude-opus-4-5", TokenUsage(1), at=AT).pricing_version == table.version


def test_naive_datetime_is_rejected() -> None:
    """A naive ``at`` raises PricingError rather than guessing a timezone."""
    with pytest.raises(PricingError, match="timezone-aware"):
        default_price_table().cost("claude-opus-4-5", TokenUsage(1), at=datetime(2026, 1, 1))


def test_breakdown_and_total_cache_writes_are_not_counted_twice() -> None:
    """With a 5m/1h breakdown present, the cache-creation total is not added on top."""
    usage = TokenUsage.from_anthropic(
        {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
        }
    )
    cost = default_price_table().cost("claude-sonnet-4-5", usage, at=AT)
    # 600 x 3.75 / 1e6 = 0.00225; 400 x 6 / 1e6 = 0.0024; total 0.00465
    assert cost.cache_write_usd == D("0.00465")


def test_cache_write_total_without_breakdown_counts_as_5m() -> None:
    """Only ``cache_creation_input_tokens`` given means all of it is a 5-minute write."""
    usage = TokenUsage.from_anthropic({"input_tokens": 5, "output_tokens": 0, "cache_creation_input_tokens": 1000})
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1000, 0)
    # 1000 x 3.75 / 1e6 = 0.00375
    assert default_price_table().cost("claude-sonnet-4-5", usage, at=AT).cache_write_usd == D("0.00375")


def test_thinking_tokens_are_not_added_to_output() -> None:
    """``output_tokens`` already includes thinking, so the thinking breakdown is ignored."""
    usage = TokenUsage.from_anthropic(
        {"input_tokens": 0, "output_tokens": 1000, "output_tokens_details": {"thinking_tokens": 800}}
    )
    # 1000 x 15 / 1e6 = 0.015
    assert default_price_table().cost("claude-sonnet-4-5", usage, at=AT).output_usd == D("0.015")


def test_from_anthropic_reads_an_sdk_usage_object() -> None:
    """An anthropic SDK ``Usage`` model converts field by field, nested objects included."""
    from anthropic.types import CacheCreation, ServerToolUsage, Usage

    sdk = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_read_input_tokens=30,
        cache_creation_input_tokens=100,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=60, ephemeral_1h_input_tokens=40),
        server_tool_use=ServerToolUsage(web_search_requests=2, web_fetch_requests=1),
        service_tier="priority",
        inference_geo="us",
        speed="fast",
    )
    assert TokenUsage.from_anthropic(sdk) == TokenUsage(10, 20, 30, 60, 40, 2, "priority", "us", "fast")


def test_from_anthropic_treats_missing_and_none_as_zero() -> None:
    """Absent or None fields become 0 counts and None strings."""
    usage = TokenUsage.from_anthropic({"input_tokens": 7, "output_tokens": None, "cache_creation": None})
    assert usage == TokenUsage(input_tokens=7)


def test_from_anthropic_passes_the_batch_flag() -> None:
    """``batch=True`` marks Message Batches results for batch pricing."""
    assert TokenUsage.from_anthropic({"input_tokens": 1}, batch=True).is_batch


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_from_anthropic_rejects_bad_counts(bad: object) -> None:
    """A negative, fractional, string or boolean token count raises PricingError."""
    with pytest.raises(PricingError, match="input_tokens"):
        TokenUsage.from_anthropic({"input_tokens": bad, "output_tokens": 0})


def test_token_usage_rejects_negative_counts_directly() -> None:
    """Building a TokenUsage by hand with a negative count raises PricingError."""
    with pytest.raises(PricingError, match="cache_read_tokens"):
        TokenUsage(cache_read_tokens=-5)


def test_prompt_tokens_counts_input_and_all_cache_tokens() -> None:
    """The long-context prompt size is input + both cache writes + cache read, never output."""
    assert TokenUsage(1, 1000, 2, 4, 8).prompt_tokens == 15


def test_total_of_empty_usage_is_zero() -> None:
    """No tokens and no searches cost exactly nothing."""
    cost = default_price_table().cost("claude-opus-4-5", TokenUsage(), at=AT)
    assert isinstance(cost, Cost) and cost.total_usd == 0


def test_fast_mode_on_opus_4_7_and_4_6_ended_on_its_dated_days() -> None:
    """A response reporting fast speed costs 6x until each model's fast mode ended, then 1x and is flagged."""
    table = default_price_table()
    usage = TokenUsage(input_tokens=1000, output_tokens=100, speed="fast")
    standard = Decimal("0.0075")  # 1000 x $5/M + 100 x $25/M
    cases = [
        ("claude-opus-4-7", datetime(2026, 7, 23, 23, 59, tzinfo=UTC), 6),
        ("claude-opus-4-7", datetime(2026, 7, 24, tzinfo=UTC), 1),
        ("claude-opus-4-6", datetime(2026, 9, 25, 23, 59, tzinfo=UTC), 6),
        ("claude-opus-4-6", datetime(2026, 9, 26, tzinfo=UTC), 1),
    ]
    for model, at, multiplier in cases:
        cost = table.cost(model, usage, at=at)
        assert cost.total_usd == standard * multiplier, (model, at)
        assert ("fast_unsupported" in cost.flags) is (multiplier == 1), (model, at)
