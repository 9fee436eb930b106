"""One billed response as the ledger keeps it: who spent what, when, on which model, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

__all__ = ["Entry", "Scope", "float_to_nanos", "from_micros", "from_nanos", "to_micros", "to_nanos"]

NANOS_PER_USD = 10**9
"""Money is stored as integer nano-dollars: exact sums, resolution 1e-9 USD."""

MAX_USD = 9_000_000_000
"""The largest amount one entry may carry: below int64 nano-dollars (9.2e9 USD), and no real call costs more."""

MAX_TOKENS = 10**10
"""The most tokens one entry may carry, all kinds together (and the most web searches): a thousand times
a million-token context. Ingest rejects a span claiming more; it can only be a mistake or an attack."""

MAX_MICROS = 253_402_300_799_999_999
"""The last instant an entry may carry, 9999-12-31T23:59:59.999999Z in microseconds: the end of `datetime`."""

_INT64_MAX = 2**63 - 1
_BILLION = Decimal(NANOS_PER_USD)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = Decimal(0)


class Entry(NamedTuple):
    """One billed response, in the ledger's exact units. Never holds prompt or response content.

    It is a row: money in integer nano-dollars (`*_nanos`, exact sums) and the end of the call
    in integer microseconds since the Unix epoch, UTC (`time_us`), in the order of the ledger's
    columns, so storing it takes no conversion. This is what lets the daemon ingest tens of
    thousands of spans a second. Build one from `datetime` and `Decimal` with `Entry.of(...)`;
    read those back through `time`, `cost_usd` and the other `*_usd` properties.

    `key` identifies the billed response across retries and instrumentations: the response id
    (`gen_ai.response.id`) when known, else `trace:{trace_id}:{span_id}`. `rank` says how
    authoritative the source is: 2 for watcher's own cost span (it carries the request type),
    1 for spans of other instrumentations that the daemon priced; a higher rank replaces a
    lower one stored under the same key, an equal or lower one is a duplicate.
    The three savings amounts are counterfactuals for reports (see `watcher.pricing.Cost`),
    not part of the cost.
    """

    key: str
    time_us: int
    response_id: str | None
    service: str
    environment: str
    request_type: str
    model: str
    platform: str = "anthropic"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    cost_nanos: int = 0
    input_nanos: int = 0
    output_nanos: int = 0
    cache_read_nanos: int = 0
    cache_write_nanos: int = 0
    tools_nanos: int = 0
    estimated: bool = False
    batch: bool = False
    rank: int = 1
    cache_read_savings_nanos: int = 0
    cache_write_premium_nanos: int = 0
    batch_savings_nanos: int = 0

    @classmethod
    def of(
        cls,
        key: str,
        time: datetime,
        service: str,
        environment: str,
        request_type: str,
        model: str,
        platform: str = "anthropic",
        response_id: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        web_search_requests: int = 0,
        cost_usd: Decimal = _ZERO,
        input_usd: Decimal = _ZERO,
        output_usd: Decimal = _ZERO,
        cache_read_usd: Decimal = _ZERO,
        cache_write_usd: Decimal = _ZERO,
        tools_usd: Decimal = _ZERO,
        estimated: bool = False,
        batch: bool = False,
        rank: int = 1,
        cache_read_savings_usd: Decimal = _ZERO,
        cache_write_premium_usd: Decimal = _ZERO,
        batch_savings_usd: Decimal = _ZERO,
    ) -> Entry:
        """An entry from an aware `time` and Decimal USD amounts, rounded half-even to the nano-dollar.

        Raises ValueError for a naive `time` or an amount that is not finite or beyond int64 nanos.
        """
        return cls(
            key,
            to_micros(time),
            response_id,
            service,
            environment,
            request_type,
            model,
            platform,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_5m_tokens,
            cache_write_1h_tokens,
            web_search_requests,
            to_nanos(cost_usd),
            to_nanos(input_usd),
            to_nanos(output_usd),
            to_nanos(cache_read_usd),
            to_nanos(cache_write_usd),
            to_nanos(tools_usd),
            estimated,
            batch,
            rank,
            to_nanos(cache_read_savings_usd),
            to_nanos(cache_write_premium_usd),
            to_nanos(batch_savings_usd),
        )

    @property
    def time(self) -> datetime:
        """The end of the call, UTC."""
        return from_micros(self.time_us)

    @property
    def cost_usd(self) -> Decimal:
        """The total cost, exact to the nano-dollar."""
        return from_nanos(self.cost_nanos)

    @property
    def input_usd(self) -> Decimal:
        return from_nanos(self.input_nanos)

    @property
    def output_usd(self) -> Decimal:
        return from_nanos(self.output_nanos)

    @property
    def cache_read_usd(self) -> Decimal:
        return from_nanos(self.cache_read_nanos)

    @property
    def cache_write_usd(self) -> Decimal:
        return from_nanos(self.cache_write_nanos)

    @property
    def tools_usd(self) -> Decimal:
        return from_nanos(self.tools_nanos)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which entries a budget or query covers: each given field is a glob (fnmatch) the entry's
    field must match; None matches everything."""

    request_type: str | None = None
    model: str | None = None
    service: str | None = None
    environment: str | None = None


def to_nanos(usd: Decimal) -> int:
    """`usd` in integer nano-dollars, rounded half-even. ValueError if not finite or beyond int64."""
    if not usd:  # most cost parts are zero
        return 0
    if not usd.is_finite():
        raise ValueError(f"cost {usd} is not a finite amount")
    nanos = int((usd * _BILLION).to_integral_value(rounding=ROUND_HALF_EVEN))
    if abs(nanos) > _INT64_MAX:
        raise ValueError(f"cost {usd} USD is beyond what the ledger stores")
    return nanos


def float_to_nanos(usd: float) -> int:
    """`to_nanos(Decimal(repr(usd)))`, the nano-dollars of a float as its shortest repr reads, mostly without Decimal.

    The product `usd * 1e9` is within 0.23 of the exact one below 1e15 nanos (two roundings of
    at most 2**-53 relative each), so when it lies within 0.25 of an integer that integer is the
    exact half-even rounding too; only the rare product near a half, or a huge amount, takes the
    Decimal path. ValueError like `to_nanos` for a non-finite amount.
    """
    scaled = usd * 1e9
    if -1e15 < scaled < 1e15:
        nearest = round(scaled)
        if -0.25 <= scaled - nearest <= 0.25:
            return nearest
    return to_nanos(Decimal(repr(usd)))


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-dollars back to an exact Decimal USD amount with nine decimal places."""
    return Decimal(nanos).scaleb(-9)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact. ValueError for a naive datetime."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no timezone: the ledger needs aware datetimes (UTC)")
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Microseconds since the Unix epoch back to a UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)
