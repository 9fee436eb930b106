"""Property-based tests of the pricing arithmetic: linearity, monotonicity, exact multipliers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from watcher.pricing import Cost, PriceTable, TokenUsage, default_price_table

TABLE: PriceTable = default_price_table()
COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_search_requests",
)
# Keeps the prompt of a + b (four prompt fields, each at most 2 x 12,000) at or under 100K,
# the lowest long-context threshold, so no tier is crossed.
SMALL = st.integers(min_value=0, max_value=12_000)

# Opus 4.6, Sonnet 4.6 and every later model charge 1.1x for US-only inference.
US_GEO_MODELS = frozenset(
    {
        *("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-opus-5-5"),
        *("claude-sonnet-4-6", "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-5-5"),
        *("claude-fable-5", "claude-fable-5-1", "claude-fable-5-2", "claude-mythos-preview"),
        *("claude-mythos-5", "claude-mythos-5-1", "claude-mythos-5-2"),
    }
)

# Sonnet 4.5, Haiku 4.5, Opus 4.5 and every later model charge 1.1x on a Bedrock or Vertex AI regional endpoint.
REGIONAL_MODELS = US_GEO_MODELS | {"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5"}

models = st.sampled_from(TABLE.models)
moments = st.dates(date(2024, 1, 1), date(2027, 12, 31)).map(lambda d: datetime.combine(d, time(12), UTC))


@st.composite
def usages(draw: st.DrawFn, counts: st.SearchStrategy[int] = SMALL) -> TokenUsage:
    """A usage record with small counts and any mix of tier, geo, speed, batch and endpoint."""
    return TokenUsage(
        *(draw(counts) for _ in COUNT_FIELDS),
        service_tier=draw(st.sampled_from([None, "standard", "priority", "batch"])),
        inference_geo=draw(st.sampled_from([None, "us", "global"])),
        speed=draw(st.sampled_from([None, "standard", "fast"])),
        batch=draw(st.booleans()),
        endpoint=draw(st.sampled_from([None, "global", "regional"])),
    )


def plus(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    """``a`` with every count increased by ``b``'s (modifiers from ``a``)."""
    return replace(a, **{name: getattr(a, name) + getattr(b, name) for name in COUNT_FIELDS})


def tokens_usd(cost: Cost) -> Decimal:
    """Everything but the server-tool fees."""
    return cost.total_usd - cost.tools_usd


@given(models, usages(), usages(), moments)
def test_cost_is_linear_within_a_tier(model: str, a: TokenUsage, b: TokenUsage, at: datetime) -> None:
    """Pricing a + b costs exactly cost(a) + cost(b) when no tier threshold is crossed."""
    b = replace(
        b, service_tier=a.service_tier, inference_geo=a.inference_geo, speed=a.speed, batch=a.batch, endpoint=a.endpoint
    )
    both = TABLE.cost(model, plus(a, b), at=at).total_usd
    assert both == TABLE.cost(model, a, at=at).total_usd + TABLE.cost(model, b, at=at).total_usd


@given(models, usages(), st.sampled_from(COUNT_FIELDS), st.integers(1, 12_000), moments)
def test_more_tokens_never_cost_less(model: str, usage: TokenUsage, field: str, extra: int, at: datetime) -> None:
    """Raising any one count never lowers the cost, within a tier."""
    more = replace(usage, **{field: getattr(usage, field) + extra})
    assert TABLE.cost(model, more, at=at).total_usd >= TABLE.cost(model, usage, at=at).total_usd


@given(models, usages(), moments)
def test_batch_exactly_halves_token_costs(model: str, usage: TokenUsage, at: datetime) -> None:
    """Batch pricing is exactly half the token cost; server-tool fees are unchanged."""
    online = TABLE.cost(model, replace(usage, batch=False, service_tier=None), at=at)
    batch = TABLE.cost(model, replace(usage, batch=True, service_tier=None), at=at)
    assert tokens_usd(batch) * 2 == tokens_usd(online)
    assert batch.tools_usd == online.tools_usd


@given(models, usages(), moments)
def test_us_geo_is_exactly_1_1x_on_eligible_models(model: str, usage: TokenUsage, at: datetime) -> None:
    """US-only inference costs exactly 1.1x the token cost on eligible models and 1x on others."""
    usage = replace(usage, endpoint=None)  # a regional endpoint is the same geographic factor: not twice
    anywhere = TABLE.cost(model, replace(usage, inference_geo=None), at=at)
    us_only = TABLE.cost(model, replace(usage, inference_geo="us"), at=at)
    factor = Decimal("1.1") if model in US_GEO_MODELS else Decimal(1)
    assert tokens_usd(us_only) == tokens_usd(anywhere) * factor


@given(models, usages(), moments)
def test_a_regional_endpoint_is_exactly_1_1x_on_eligible_models(model: str, usage: TokenUsage, at: datetime) -> None:
    """A regional Bedrock or Vertex AI endpoint costs exactly 1.1x the token cost of a global one on eligible models
    and 1x on older ones; an unknown endpoint prices as global, and with US-only inference the 1.1x applies once."""
    usage = replace(usage, inference_geo=None)
    global_ = TABLE.cost(model, replace(usage, endpoint="global"), at=at)
    regional = TABLE.cost(model, replace(usage, endpoint="regional"), at=at)
    factor = Decimal("1.1") if model in REGIONAL_MODELS else Decimal(1)
    assert tokens_usd(regional) == tokens_usd(global_) * factor
    assert TABLE.cost(model, replace(usage, endpoint=None), at=at).total_usd == global_.total_usd
    assert ("regional_endpoint" in regional.flags) == (model in REGIONAL_MODELS)
    both = TABLE.cost(model, replace(usage, endpoint="regional", inference_geo="us"), at=at)
    once = Decimal("1.1") if model in REGIONAL_MODELS | US_GEO_MODELS else Decimal(1)
    assert tokens_usd(both) == tokens_usd(global_) * once


@given(models, st.integers(0, 10**7), moments)
def test_1h_write_costs_2_over_1_25_of_5m_write(model: str, count: int, at: datetime) -> None:
    """A 1-hour cache write costs 2/1.25 of a 5-minute write of the same size (2/1.2 on Claude 3 Haiku)."""
    five = TABLE.cost(model, TokenUsage(cache_write_5m_tokens=count), at=at).cache_write_usd
    hour = TABLE.cost(model, TokenUsage(cache_write_1h_tokens=count), at=at).cache_write_usd
    five_multiplier = Decimal("1.2") if model == "claude-3-haiku" else Decimal("1.25")
    assert hour * five_multiplier == five * 2


@given(models, usages(st.integers(0, 10**7)), moments)
def test_total_is_the_sum_of_parts_and_never_negative(model: str, usage: TokenUsage, at: datetime) -> None:
    """The total is exactly the five category amounts added, and no amount is negative."""
    cost = TABLE.cost(model, usage, at=at)
    parts = (cost.input_usd, cost.output_usd, cost.cache_read_usd, cost.cache_write_usd, cost.tools_usd)
    assert cost.total_usd == sum(parts, Decimal(0))
    assert all(part >= 0 for part in parts)


@given(st.text(min_size=1, max_size=30), usages(st.integers(0, 10**6)), moments)
def test_unknown_models_never_cost_zero(name: str, usage: TokenUsage, at: datetime) -> None:
    """An unknown model with any tokens is estimated at a non-zero cost, never silently $0."""
    if TABLE.resolve(name) is not None:
        return
    cost = TABLE.cost(name, usage, at=at)
    assert cost.estimated
    assert (cost.total_usd > 0) == (usage.prompt_tokens + usage.output_tokens + usage.web_search_requests > 0)


@given(models, usages(), moments)
def test_cache_read_savings_are_what_the_reads_would_have_cost_as_uncached_input(
    model: str, usage: TokenUsage, at: datetime
) -> None:
    """Read savings = cost with the cached tokens billed as plain input - the actual cost (same prompt, same tier)."""
    uncached = replace(usage, input_tokens=usage.input_tokens + usage.cache_read_tokens, cache_read_tokens=0)
    actual = TABLE.cost(model, usage, at=at)
    assert actual.cache_read_savings_usd == TABLE.cost(model, uncached, at=at).total_usd - actual.total_usd >= 0


@given(models, usages(), moments)
def test_cache_write_premium_is_what_the_writes_cost_above_uncached_input(
    model: str, usage: TokenUsage, at: datetime
) -> None:
    """Write premium = the actual cost - the cost with the 5m and 1h writes billed as plain input."""
    writes = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    plain = replace(usage, input_tokens=usage.input_tokens + writes, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    actual = TABLE.cost(model, usage, at=at)
    assert actual.cache_write_premium_usd == actual.total_usd - TABLE.cost(model, plain, at=at).total_usd >= 0


@given(models, usages(), moments)
def test_batch_savings_are_the_standard_cost_minus_the_batch_cost(model: str, usage: TokenUsage, at: datetime) -> None:
    """A batch call saves exactly what the same usage costs more online; a call not in a batch saves nothing."""
    online = TABLE.cost(model, replace(usage, batch=False, service_tier=None), at=at)
    batch = TABLE.cost(model, replace(usage, batch=True, service_tier=None), at=at)
    assert batch.batch_savings_usd == online.total_usd - batch.total_usd
    assert online.batch_savings_usd == 0


@given(model=models, usage=usages(st.integers(0, 300_000)), at=moments)
def test_cost_bounds_hold_the_cost_whatever_geo_and_speed_applied(model: str, usage: TokenUsage, at: datetime) -> None:
    """cost_bounds() brackets cost() for any usage, tier, batch, geo, speed and endpoint; with no geo, fast mode or
    regional endpoint its lower bound is the cost itself."""
    bounds = TABLE.cost_bounds(model, usage, at=at)
    assert bounds is not None
    least, most = bounds
    assert least <= TABLE.cost(model, usage, at=at).total_usd <= most
    plain = replace(usage, inference_geo=None, speed=None, endpoint=None)
    assert TABLE.cost(model, plain, at=at).total_usd == least


def test_cost_bounds_are_none_for_a_model_the_table_only_estimates() -> None:
    """An unknown model has no firm price to check a claimed cost against."""
    assert TABLE.cost_bounds("claude-nova-1", TokenUsage(1000, 100), at=datetime(2026, 11, 25, tzinfo=UTC)) is None


@given(
    model=st.sampled_from([*TABLE.models, "claude-nova-1"]),
    usage=usages(st.integers(0, 300_000)),
    at=moments,
    factor=st.sampled_from([Decimal("1.5"), Decimal(2), Decimal(10)]),
    scale=st.one_of(
        st.sampled_from([Decimal(0), Decimal(1), Decimal("0.5"), Decimal(2), Decimal(10), Decimal("0.1")]),
        st.decimals(Decimal(0), Decimal(30), places=4),
    ),
    nudge=st.integers(-2, 2),
    end=st.sampled_from(["least", "most"]),
)
def test_the_claim_checker_decides_exactly_as_cost_bounds_says(
    model: str, usage: TokenUsage, at: datetime, factor: Decimal, scale: Decimal, nudge: int, end: str
) -> None:
    """For claims at, around and far from either bound times or over the factor (to the nano-dollar), the fast
    checker flags exactly the claims below least / factor or above most x factor, and no unknown model."""
    check = TABLE.claim_checker(factor)
    bounds = TABLE.cost_bounds(model, usage, at=at)
    base = (bounds[0] if end == "least" else bounds[1]) if bounds else Decimal("0.01")
    claimed_nanos = max(0, int(base * scale * 10**9) + nudge)
    counts = (
        usage.input_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.cache_read_tokens,
        usage.output_tokens,
        usage.web_search_requests,
    )
    time_us = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    found = check(model, time_us, counts, usage.is_batch, claimed_nanos)
    claimed = Decimal(claimed_nanos).scaleb(-9)
    off = bounds is not None and (claimed * factor < bounds[0] or claimed > bounds[1] * factor)
    assert found == (bounds if off else None)
