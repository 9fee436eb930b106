"""Claimed costs checked against a price table at float speed, exactly where it matters: a daemon's hot path."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from watcher.pricing._rates import BATCH, LONG, ModelPrices, Rates, optional_bits
from watcher.pricing._usage import TokenUsage

__all__ = ["ClaimCheck", "make_claim_checker"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_LIMIT = 4096
_MARGIN = 1e-9  # far above float error (about 1e-15 relative), far below any factor that matters


class ClaimCheck(Protocol):
    """Whether a claimed cost agrees with the table, within the factor the check was built with."""

    def __call__(
        self, model: str, time_us: int, counts: tuple[int, int, int, int, int, int], batch: bool, claimed_nanos: int
    ) -> tuple[Decimal, Decimal] | None:
        """None when `claimed_nanos` agrees with what `counts` of `model` cost at `time_us`, or the model is
        unknown; else the exact least and most they cost (see `PriceTable.cost_bounds`).

        `counts` are (uncached input, 5m cache writes, 1h cache writes, cache reads, output, web searches);
        `time_us` is microseconds since the epoch. Thread-safe.
        """
        ...


_Period = tuple[tuple[tuple[float, ...], ...], int | None, int]  # float vectors by bits, long-context floor, extra bits
_Model = tuple[tuple[int, ...], tuple[_Period, ...]]  # period starts (µs), then each period


def make_claim_checker(
    match: Callable[[str], tuple[ModelPrices, bool]],
    search_usd: Decimal,
    exact: Callable[[str, TokenUsage, datetime], tuple[Decimal, Decimal] | None],
    factor: Decimal,
) -> ClaimCheck:
    """A `ClaimCheck` for a table given by its pieces: `match` (a model's prices, and whether they are an
    estimate), the price of a web search, and `exact` (`PriceTable.cost_bounds`).

    Each model's rates are turned into floats once. A claim clearly inside the bounds (the float
    sums, with a margin) agrees at once; any other is decided by `exact`, so the answer is the exact
    one and the float path only makes the common case cheap.
    """
    models: dict[str, _Model | None] = {}
    search, ratio = float(search_usd), float(factor)

    def prepare(model: str) -> _Model | None:
        prices, estimated = match(model)
        if estimated:
            return None
        starts = tuple((start - _EPOCH) // timedelta(microseconds=1) for start in prices.starts)
        return starts, tuple(_period(rates) for rates in prices.periods)

    def check(
        model: str, time_us: int, counts: tuple[int, int, int, int, int, int], batch: bool, claimed_nanos: int
    ) -> tuple[Decimal, Decimal] | None:
        if model in models:
            found = models[model]
        else:
            found = prepare(model)
            if len(models) < _CACHE_LIMIT:  # bounded: junk names cost time, never memory
                models[model] = found
        if found is None:
            return None
        starts, periods = found
        vectors, floor, extra = periods[bisect_right(starts, time_us) if starts else 0]
        uncached, five, hour, read, output, searches = counts
        bits = BATCH if batch else 0
        if floor is not None and uncached + five + hour + read > floor:
            bits |= LONG
        tools = searches * search
        v_in, v_5m, v_1h, v_read, v_out = vectors[bits]
        least = uncached * v_in + five * v_5m + hour * v_1h + read * v_read + output * v_out + tools
        v_in, v_5m, v_1h, v_read, v_out = vectors[bits | extra]
        most = uncached * v_in + five * v_5m + hour * v_1h + read * v_read + output * v_out + tools
        claimed = claimed_nanos / 1e9
        if claimed * ratio >= least * (1 + _MARGIN) and claimed <= most * ratio * (1 - _MARGIN):
            return None
        return _exact(model, time_us, counts, batch, claimed_nanos)

    def _exact(
        model: str, time_us: int, counts: tuple[int, int, int, int, int, int], batch: bool, claimed_nanos: int
    ) -> tuple[Decimal, Decimal] | None:
        uncached, five, hour, read, output, searches = counts
        usage = TokenUsage(uncached, output, read, five, hour, searches, batch=batch)
        bounds = exact(model, usage, _EPOCH + timedelta(microseconds=time_us))
        if bounds is None:
            return None
        claimed = Decimal(claimed_nanos).scaleb(-9)
        return bounds if claimed * factor < bounds[0] or claimed > bounds[1] * factor else None

    return check


def _period(rates: Rates) -> _Period:
    """A period's rate vectors as floats, the prompt size above which long-context rates apply, and the bits
    of the optional modifiers it prices (US-only inference, fast mode, a regional endpoint)."""
    vectors = tuple(tuple(float(rate) for rate in vector) for vector in rates.vectors)
    floor = rates.long_context.above if rates.long_context is not None else None
    return vectors, floor, optional_bits(rates)
