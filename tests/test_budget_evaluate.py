"""Budget evaluation: threshold levels and projection to period end (announced once: test_books_properties)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.budgets import Budget, BudgetState

BUDGET = Budget("daily", Decimal(100), "day")
DAY = (datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC))
RANK = {"ok": 0, "alert": 1, "kill": 2}

money = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)


def state(spend: str | Decimal, window: tuple[datetime, datetime] = DAY, budget: Budget = BUDGET) -> BudgetState:
    return BudgetState(budget, window, Decimal(spend))


@pytest.mark.parametrize(
    ("spend", "level"),
    [("0", "ok"), ("79.99", "ok"), ("80", "alert"), ("119.99", "alert"), ("120", "kill"), ("1000", "kill")],
)
def test_level_switches_exactly_at_the_thresholds(spend: str, level: str) -> None:
    """Spend at 80% of the limit is an alert and at 120% a kill; a cent below is the level before."""
    assert state(spend).level == level


def test_used_ratio_is_spend_over_limit() -> None:
    """used_ratio is spend divided by limit, exactly."""
    assert state("25").used_ratio == Decimal("0.25")


def test_custom_thresholds_apply() -> None:
    """A budget's own alert_at and kill_at replace the defaults."""
    strict = Budget("strict", Decimal(10), "hour", alert_at=Decimal("0.5"), kill_at=Decimal(1))
    assert [state(s, budget=strict).level for s in ("4.99", "5", "10")] == ["ok", "alert", "kill"]


@pytest.mark.parametrize(
    ("hours", "projected"),
    [(6, "40"), (12, "20"), (24, "10"), (0, "10"), (-5, "10"), (30, "10")],
)
def test_projection_extrapolates_the_rate_so_far_to_the_window_end(hours: int, projected: str) -> None:
    """$10 after a quarter of the day projects to $40; at or outside the window edges it is the spend."""
    assert state("10").projected_usd(DAY[0] + timedelta(hours=hours)) == Decimal(projected)


@pytest.mark.parametrize(
    ("window", "spend", "match"),
    [
        ((DAY[1], DAY[0]), "1", "start < end"),
        ((DAY[0].replace(tzinfo=None), DAY[1]), "1", "aware"),
        (DAY, "-1", "negative"),
    ],
)
def test_invalid_states_are_refused(window: tuple[datetime, datetime], spend: str, match: str) -> None:
    """A reversed or naive window, or a negative spend, raises ValueError on construction."""
    with pytest.raises(ValueError, match=match):
        state(spend, window)


@given(money, money)
def test_level_is_monotone_in_spend(a: Decimal, b: Decimal) -> None:
    """More spend never gives a lower level."""
    low, high = sorted((a, b))
    assert RANK[state(low).level] <= RANK[state(high).level]


@given(money, st.integers(min_value=-(10**6), max_value=2 * 10**11))
def test_projection_is_never_below_spend(spend: Decimal, microseconds: int) -> None:
    """Whatever the moment, the projection to the window end is at least the spend so far."""
    at = DAY[0] + timedelta(microseconds=microseconds)
    assert state(spend).projected_usd(at) >= spend
