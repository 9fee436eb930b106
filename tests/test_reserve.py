"""Reserver: a request body's worst-case cost, at the prices of the injected clock's UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watcher._instrument._estimate import input_tokens_bound
from watcher._instrument._reserve import WEB_SEARCH_USES, Reserver
from watcher.pricing import Ceiling, PriceTable, default_price_table

TABLE: PriceTable = default_price_table()
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def ns(moment: datetime) -> int:
    """`moment` as wall-clock nanoseconds since the epoch, exactly."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


class Clock:
    """A settable wall clock in nanoseconds."""

    def __init__(self, moment: datetime) -> None:
        self.now_ns = ns(moment)

    def __call__(self) -> int:
        return self.now_ns


class CountingTable:
    """A price table that counts the ceilings it is asked for."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.asked = 0

    def ceiling(self, model: str, **kwargs: Any) -> Ceiling:
        self.asked += 1
        return self.table.ceiling(model, **kwargs)


def body(model: str = "claude-opus-5", max_tokens: int = 4096, **extra: Any) -> dict[str, Any]:
    """A typical single-message request of about 3 KB."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": "You are a careful assistant for a logistics company. " * 20,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is parcel 1234? " * 85}]}],
        **extra,
    }


def reserver(moment: datetime = NOW) -> Reserver:
    return Reserver(TABLE, Clock(moment))


def test_a_message_is_bounded_at_its_input_estimate_and_max_tokens() -> None:
    request = body()
    expected = TABLE.ceiling("claude-opus-5", at=NOW).cost(input_tokens_bound(request), 4096)
    assert reserver().message(request) == expected
    assert expected == pytest.approx((input_tokens_bound(request) * 5 * 2 + 4096 * 25) / 1e6, rel=1e-8)


def test_fast_mode_and_us_only_inference_come_from_the_body() -> None:
    """Opus 5: `speed: fast` doubles the bound, `inference_geo: us` adds 10%; any other value changes nothing."""
    plain = reserver().message(body())
    assert reserver().message(body(speed="fast")) == pytest.approx(plain * 2)
    assert reserver().message(body(inference_geo="us")) == pytest.approx(plain * 1.1)
    assert reserver().message(body(speed="fast", inference_geo="us")) == pytest.approx(plain * 2.2)
    assert reserver().message(body(speed="standard", inference_geo="global")) == plain


def test_a_long_prompt_is_bounded_at_long_context_rates() -> None:
    """Over 100K estimated prompt tokens Claude Haiku 5.5 bills everything at its 5x row."""
    short, long = body("claude-haiku-5-5", 1000), body("claude-haiku-5-5", 1000)
    long["messages"][0]["content"][0]["text"] = "x" * 400_000
    tokens = input_tokens_bound(long)
    assert tokens > 100_000
    assert reserver().message(long) == pytest.approx((tokens * 0.50 * 2 + 1000 * 2.50) / 1e6)
    assert reserver().message(short) == pytest.approx((input_tokens_bound(short) * 0.10 * 2 + 1000 * 0.50) / 1e6)


def test_web_searches_are_bounded_by_max_uses_else_the_assumed_default() -> None:
    """$0.01 a search: a tool's `max_uses`, or `WEB_SEARCH_USES` without one; other tools add no fees."""
    plain = body(tools=[{"name": "lookup", "input_schema": {"type": "object"}}])
    limited = body(tools=[*plain["tools"], {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    unlimited = body(tools=[*plain["tools"], {"type": "web_search_20260209", "name": "web_search"}])
    fetch = body(tools=[*plain["tools"], {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 3}])
    ceiling = TABLE.ceiling("claude-opus-5", at=NOW)
    tokens = ceiling.cost(input_tokens_bound(limited), 4096)
    assert reserver().message(limited) == pytest.approx(tokens + 0.03)
    tokens = ceiling.cost(input_tokens_bound(unlimited), 4096)
    assert reserver().message(unlimited) == pytest.approx(tokens + 0.01 * WEB_SEARCH_USES)
    assert reserver().message(fetch) == ceiling.cost(input_tokens_bound(fetch), 4096)


def test_an_unknown_model_is_bounded_at_its_estimate() -> None:
    request = body("nova-1")
    assert reserver().message(request) == TABLE.ceiling("nova-1", at=NOW).cost(input_tokens_bound(request), 4096)


def test_a_batch_is_the_sum_of_its_requests_at_batch_prices() -> None:
    """Two requests of two models: each at its batch ceiling, half its online token bound; search fees unhalved."""
    first = body(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}])
    second = body("claude-haiku-4-5", 1000)
    batch = {"requests": [{"custom_id": "a", "params": first}, {"custom_id": "b", "params": second}]}
    expected = sum(
        TABLE.ceiling(params["model"], at=NOW, batch=True).cost(input_tokens_bound(params), params["max_tokens"], n)
        for params, n in ((first, 2), (second, 0))
    )
    assert reserver().batch(batch) == pytest.approx(expected, rel=1e-12)
    online = reserver().message(first) - 0.02 + reserver().message(second)
    assert reserver().batch(batch) == pytest.approx(online / 2 + 0.02)
    assert reserver().batch({"requests": []}) == 0


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (None, "mapping"),
        ({"max_tokens": 10, "messages": []}, "model"),
        ({"model": "", "max_tokens": 10}, "model"),
        ({"model": "claude-opus-5", "messages": []}, "max_tokens"),
        ({"model": "claude-opus-5", "max_tokens": -1}, "max_tokens"),
        ({"model": "claude-opus-5", "max_tokens": True}, "max_tokens"),
        ({"model": "claude-opus-5", "max_tokens": "100"}, "max_tokens"),
    ],
)
def test_a_message_without_a_model_or_max_tokens_cannot_be_bounded(request_body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reserver().message(request_body)


@pytest.mark.parametrize(
    ("batch_body", "message"),
    [
        (None, "mapping"),
        ({}, "requests"),
        ({"requests": [{"custom_id": "a"}]}, "batch request 0 has no `params`"),
        (
            {"requests": [{"custom_id": "a", "params": body()}, {"params": {"model": "m"}}]},
            "batch request 1.*max_tokens",
        ),
    ],
)
def test_a_batch_with_a_request_that_cannot_be_bounded_is_refused(batch_body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reserver().batch(batch_body)


def test_the_day_change_refreshes_the_prices() -> None:
    """Opus 4.8 fast mode ends on 2026-11-30: the last nanosecond of the 29th bounds a fast request at 2x, the
    first of the 30th at 1x, with the same Reserver."""
    clock = Clock(datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=UTC))
    clock.now_ns += 999
    fast = Reserver(TABLE, clock)
    request, plain = body("claude-opus-4-8", speed="fast"), body("claude-opus-4-8")
    standard = fast.message(plain)
    assert fast.message(request) == pytest.approx(standard * 2)
    clock.now_ns += 1
    assert fast.message(request) == pytest.approx(standard)


def test_ceilings_are_priced_once_a_day_per_model_and_modifiers() -> None:
    clock = Clock(NOW)
    table = CountingTable(TABLE)
    reserve = Reserver(table, clock)  # type: ignore[arg-type]
    for _ in range(3):
        reserve.message(body())
    reserve.message(body(speed="fast"))
    reserve.batch({"requests": [{"custom_id": "a", "params": body()}] * 3})
    assert table.asked == 3
    clock.now_ns += 12 * 3600 * 10**9
    reserve.message(body())
    assert table.asked == 4
