"""PriceTable.ceiling: float rates that never price a call below its exact cost, and not far above it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from watcher.exceptions import PricingError
from watcher.pricing import Ceiling, PriceTable, TokenUsage, default_price_table

TABLE: PriceTable = default_price_table()
# The shipped table's price changes (Opus 4.6 and Sonnet 4.6 long context ends, Sonnet 5.5 reads
# get cheaper, Opus 4.8 fast mode ends): the day before each and the day itself.
CHANGES = (date(2026, 3, 13), date(2026, 10, 7), date(2026, 11, 30))
EDGES = [day + timedelta(days=shift) for day in CHANGES for shift in (-1, 0)]
moments = (st.sampled_from(EDGES) | st.dates(date(2024, 1, 1), date(2027, 12, 31))).map(
    lambda day: datetime.combine(day, time(12), UTC)
)
models = st.sampled_from(TABLE.models)


@dataclass(frozen=True)
class Modifiers:
    """Which optional prices a call asks for: the ceiling's arguments, and the usage that reports them."""

    batch: bool
    fast: bool
    us_geo: bool
    regional: bool = False

    def usage(self, *, uncached: int, read: int, five: int, hour: int, output: int, searches: int) -> TokenUsage:
        return TokenUsage(
            input_tokens=uncached,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_5m_tokens=five,
            cache_write_1h_tokens=hour,
            web_search_requests=searches,
            service_tier="batch" if self.batch else None,
            speed="fast" if self.fast else None,
            inference_geo="us" if self.us_geo else None,
            endpoint="regional" if self.regional else None,
        )

    def ceiling(self, model: str, at: datetime) -> Ceiling:
        return TABLE.ceiling(model, at=at, batch=self.batch, fast=self.fast, us_geo=self.us_geo, regional=self.regional)


modifiers = st.builds(Modifiers, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@st.composite
def splits(draw: st.DrawFn, total: int) -> tuple[int, int, int, int]:
    """`total` prompt tokens or fewer as (uncached, read, 5m write, 1h write): all in one kind, or cut anywhere."""
    used = draw(st.just(total) | st.integers(0, total))
    if draw(st.booleans()):
        kind = draw(st.integers(0, 3))
        return (used if kind == 0 else 0, used if kind == 1 else 0, used if kind == 2 else 0, used if kind == 3 else 0)
    cuts = sorted(draw(st.integers(0, used)) for _ in range(3))
    uncached, read, five, hour = cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], used - cuts[2]
    return uncached, read, five, hour


@st.composite
def calls(draw: st.DrawFn) -> tuple[int, int, int, tuple[int, int, int, int], int, int]:
    """Ceiling counts (prompt, output, searches), then a usage within them: its prompt split, output, searches."""
    prompt = draw(st.integers(0, 400_000) | st.sampled_from([100_000, 100_001, 200_000, 200_001]))
    output = draw(st.integers(0, 128_000))
    searches = draw(st.integers(0, 50))
    return prompt, output, searches, draw(splits(prompt)), draw(st.integers(0, output)), draw(st.integers(0, searches))


@given(model=models, at=moments, mods=modifiers, call=calls())
@example(
    model="claude-opus-5",
    at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    mods=Modifiers(False, False, False),
    call=(1000, 0, 0, (0, 0, 0, 1000), 0, 0),
)
def test_the_ceiling_is_never_below_the_exact_cost_of_a_usage_within_its_counts(
    model: str, at: datetime, mods: Modifiers, call: tuple[int, int, int, tuple[int, int, int, int], int, int]
) -> None:
    """Any mix of prompt kinds up to the prompt count, any output and searches up to theirs, any date and modifiers:
    the float ceiling is at or above the exact Decimal cost, and at most 2.5x the all-uncached cost of its counts."""
    prompt, output, searches, (uncached, read, five, hour), used_output, used_searches = call
    usage = mods.usage(uncached=uncached, read=read, five=five, hour=hour, output=used_output, searches=used_searches)
    ceiling = mods.ceiling(model, at).cost(prompt, output, searches)
    assert Decimal(ceiling) >= TABLE.cost(model, usage, at=at).total_usd
    plain = mods.usage(uncached=prompt, read=0, five=0, hour=0, output=output, searches=searches)
    assert ceiling <= 2.5 * float(TABLE.cost(model, plain, at=at).total_usd)


@given(model=models, at=moments, mods=modifiers, call=calls())
def test_the_ceiling_is_the_cost_of_the_dearest_usage_within_its_counts(
    model: str, at: datetime, mods: Modifiers, call: tuple[int, int, int, tuple[int, int, int, int], int, int]
) -> None:
    """Every prompt token a 1-hour cache write, all the output, all the searches: the ceiling is that cost, give or
    take its 1e-9 nudge, so it is as low as a bound from these counts can be."""
    prompt, output, searches, *_ = call
    dearest = mods.usage(uncached=0, read=0, five=0, hour=prompt, output=output, searches=searches)
    exact = TABLE.cost(model, dearest, at=at).total_usd
    ceiling = Decimal(mods.ceiling(model, at).cost(prompt, output, searches))
    assert exact <= ceiling <= exact * Decimal("1.000000002")


@given(
    model=models,
    at=moments,
    mods=modifiers,
    call=calls(),
    fast=st.booleans(),
    us_geo=st.booleans(),
    regional=st.booleans(),
)
def test_asking_for_more_modifiers_than_the_call_used_still_bounds_it(
    model: str,
    at: datetime,
    mods: Modifiers,
    call: tuple[int, int, int, tuple[int, int, int, int], int, int],
    fast: bool,
    us_geo: bool,
    regional: bool,
) -> None:
    """A ceiling with fast mode, US-only inference or a regional endpoint bounds a call that turned out to use none."""
    prompt, output, searches, (uncached, read, five, hour), used_output, used_searches = call
    usage = mods.usage(uncached=uncached, read=read, five=five, hour=hour, output=used_output, searches=used_searches)
    wider = Modifiers(mods.batch, mods.fast or fast, mods.us_geo or us_geo, mods.regional or regional)
    assert Decimal(wider.ceiling(model, at).cost(prompt, output, searches)) >= TABLE.cost(model, usage, at=at).total_usd


AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.mark.parametrize("model", TABLE.models)
def test_float_rounding_never_brings_the_ceiling_under_the_exact_cost(model: str) -> None:
    """Rates like $8/M (0.000008) are a hair above their nearest float; the ceiling is nudged up to stay above."""
    for prompt, output in ((1, 0), (0, 1), (3, 7), (1000, 1000), (123_457, 65_537), (99_999, 3)):
        dearest = TokenUsage(cache_write_1h_tokens=prompt, output_tokens=output)
        exact = TABLE.cost(model, dearest, at=AT).total_usd
        assert Decimal(TABLE.ceiling(model, at=AT).cost(prompt, output)) >= exact


def test_crossing_the_long_context_threshold_switches_to_the_long_rates() -> None:
    """Claude Haiku 5.5 bills the whole call at its higher row over 100K prompt tokens: one token more, 5x the rate."""
    ceiling = TABLE.ceiling("claude-haiku-5-5", at=AT)
    assert ceiling.long_above == 100_000
    at_threshold = ceiling.cost(100_000, 1000)
    over = ceiling.cost(100_001, 1000)
    assert at_threshold == pytest.approx((100_000 * 0.10 * 2 + 1000 * 0.50) / 1e6)
    assert over == pytest.approx((100_001 * 0.50 * 2 + 1000 * 2.50) / 1e6)


def test_long_context_applies_only_while_the_table_prices_it() -> None:
    """Sonnet 4.6 lost its long-context row on 2026-03-13: the ceiling of a 300K prompt halves that day."""
    before = TABLE.ceiling("claude-sonnet-4-6", at=datetime(2026, 3, 12, 23, tzinfo=UTC)).cost(300_000, 0)
    after = TABLE.ceiling("claude-sonnet-4-6", at=datetime(2026, 3, 13, tzinfo=UTC)).cost(300_000, 0)
    assert before == pytest.approx(300_000 * 12 / 1e6)
    assert after == pytest.approx(300_000 * 6 / 1e6)


def test_batch_halves_the_token_ceiling_but_not_search_fees() -> None:
    online = TABLE.ceiling("claude-opus-5", at=AT)
    batch = TABLE.ceiling("claude-opus-5", at=AT, batch=True)
    assert batch.cost(10_000, 2_000) == pytest.approx(online.cost(10_000, 2_000) / 2)
    assert batch.cost(0, 0, 7) == pytest.approx(online.cost(0, 0, 7)) == pytest.approx(0.07)


def test_fast_mode_and_us_geo_multiply_where_the_model_has_them() -> None:
    """Opus 5: fast 2x, US-only 1.1x, both 2.2x; Opus 4.5 has neither, so asking changes nothing."""
    plain = TABLE.ceiling("claude-opus-5", at=AT).cost(10_000, 2_000)
    assert TABLE.ceiling("claude-opus-5", at=AT, fast=True).cost(10_000, 2_000) == pytest.approx(plain * 2)
    assert TABLE.ceiling("claude-opus-5", at=AT, us_geo=True).cost(10_000, 2_000) == pytest.approx(plain * 1.1)
    both = TABLE.ceiling("claude-opus-5", at=AT, fast=True, us_geo=True).cost(10_000, 2_000)
    assert both == pytest.approx(plain * 2.2)
    old = TABLE.ceiling("claude-opus-4-5", at=AT)
    assert TABLE.ceiling("claude-opus-4-5", at=AT, fast=True, us_geo=True) == old


def test_an_unknown_model_is_bounded_at_its_estimate_and_marked() -> None:
    """A new Opus is estimated at the family's prices, any other unknown name at the default; neither is known."""
    family = TABLE.ceiling("claude-opus-9", at=AT)
    assert family.estimated and family.model == "claude-opus-5-5"
    assert family.cost(1000, 100) == pytest.approx(TABLE.ceiling("claude-opus-5-5", at=AT).cost(1000, 100))
    other = TABLE.ceiling("nova-1", at=AT)
    assert other.estimated and other.model == "claude-opus-4-1"
    assert not TABLE.ceiling("claude-opus-4-1-20250805", at=AT).estimated


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(PricingError, match="timezone-aware"):
        TABLE.ceiling("claude-opus-5", at=datetime(2026, 11, 25, 12))


def test_negative_counts_are_refused() -> None:
    """A negative count would make the ceiling lower than the cost of the call it bounds."""
    ceiling = TABLE.ceiling("claude-opus-5", at=AT)
    for counts in ((-1, 0, 0), (0, -1, 0), (0, 0, -1)):
        with pytest.raises(ValueError, match="negative"):
            ceiling.cost(*counts)
