"""Per-model prices as pre-computed Decimal per-token rates, one set per effective period."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal

__all__ = [
    "BATCH",
    "BATCH_MULTIPLIER",
    "FAST",
    "GEO",
    "LONG",
    "REGIONAL",
    "REGIONAL_MULTIPLIER",
    "US_GEO_MULTIPLIER",
    "ModelPrices",
    "Rates",
    "Tier",
    "Vector",
    "optional_bits",
    "utc_midnight",
]

US_GEO_MULTIPLIER = Decimal("1.1")
REGIONAL_MULTIPLIER = Decimal("1.1")
BATCH_MULTIPLIER = Decimal("0.5")
_PER_TOKEN = Decimal(1_000_000)

# Bits of a rate-vector index: which per-call modifiers apply. REGIONAL is the Bedrock/Vertex
# regional-endpoint premium; GEO is the first-party API's US-only inference.
GEO, FAST, BATCH, LONG, REGIONAL = 1, 2, 4, 8, 16
_COMBINATIONS = 32

Vector = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]
"""USD per token for (input, 5m cache write, 1h cache write, cache read, output)."""


@dataclass(frozen=True, slots=True)
class Tier:
    """Long-context rates (USD per million tokens) that replace the standard row above ``above``."""

    above: int
    input: Decimal
    output: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class Rates:
    """Prices of one model during one effective period.

    Rates are USD per million tokens; ``write_5m``/``write_1h`` multiply the input rate.
    ``vectors`` holds the USD-per-token rates for all 32 modifier combinations, indexed by
    the ``GEO | FAST | BATCH | LONG | REGIONAL`` bits, so a call does only multiplications.

    ``us_geo`` and ``regional_premium`` say which models the GEO and REGIONAL modifiers apply
    to; the vectors themselves apply every bit given. GEO and REGIONAL are the one geographic
    factor of the pricing formula (US-only inference on the first-party API, a regional
    endpoint on Bedrock or Vertex AI), so together they multiply once, by the larger.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    write_5m: Decimal
    write_1h: Decimal
    fast: Decimal | None
    us_geo: bool
    long_context: Tier | None
    regional_premium: bool = False
    vectors: tuple[Vector, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vectors", tuple(self._vector(bits) for bits in range(_COMBINATIONS)))

    def _vector(self, bits: int) -> Vector:
        scale = max(
            US_GEO_MULTIPLIER if bits & GEO else Decimal(1),
            REGIONAL_MULTIPLIER if bits & REGIONAL else Decimal(1),
        )
        if bits & FAST and self.fast is not None:
            scale *= self.fast
        if bits & BATCH:
            scale *= BATCH_MULTIPLIER
        row: Rates | Tier = self.long_context if bits & LONG and self.long_context else self
        per_input = row.input / _PER_TOKEN * scale
        return (
            per_input,
            per_input * self.write_5m,
            per_input * self.write_1h,
            row.cache_read / _PER_TOKEN * scale,
            row.output / _PER_TOKEN * scale,
        )


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """A model's prices over time: ``periods[0]`` applies before ``starts[0]``, and so on.

    ``starts`` are aware datetimes at 00:00 UTC of each change's effective day, so an aware
    instant in any timezone compares correctly without conversion.
    """

    id: str
    starts: tuple[datetime, ...]
    periods: tuple[Rates, ...]

    def at(self, moment: datetime) -> Rates:
        """The rates in effect at the aware ``moment`` (a change applies from its day, inclusive)."""
        return self.periods[bisect_right(self.starts, moment)]


def optional_bits(rates: Rates) -> int:
    """The bits of the modifiers ``rates`` price that a usage record need not show (US-only inference, fast
    mode, a regional endpoint): what a claimed cost may include, whichever applied to the call."""
    geo = (GEO if rates.us_geo else 0) | (REGIONAL if rates.regional_premium else 0)
    return geo | (FAST if rates.fast is not None else 0)


def utc_midnight(day: date) -> datetime:
    """00:00 UTC on ``day``: the instant a change effective on ``day`` starts."""
    return datetime.combine(day, time(0), UTC)
