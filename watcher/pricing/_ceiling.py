"""A float ceiling of what one call of a model can cost, for reserving spend before the call is sent."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from watcher.pricing._rates import LONG, Rates, Vector

__all__ = ["Ceiling", "make_ceiling"]

# Each exact Decimal rate is raised by this relative amount before it becomes a float. The float
# arithmetic of `Ceiling.cost` (a rate's rounding, three products, two sums) is off by at most a
# few parts in 1e16 of the result, so the nudge keeps the float above the exact Decimal cost,
# while adding a millionth of a cent to a $10 call.
_NUDGE = Decimal("1.000000001")


@dataclass(frozen=True, slots=True)
class Ceiling:
    """USD-per-token rates that bound what one call of ``model`` can cost, with fixed modifiers.

    ``cost(n, m, s)`` is never below the exact ``PriceTable.cost`` of any usage with at most ``n``
    prompt tokens (any mix of uncached input, cache reads and 5m or 1h cache writes), at most
    ``m`` output tokens and at most ``s`` web searches, priced at the same date with the same
    batch, fast-mode and US-only-inference modifiers (or fewer of the last two). Spend is
    reserved with it before a call is sent, and a budget cannot recover from spend reserved
    too low: the hard stop would be overshot. So every prompt token is taken at the highest
    input-side rate (the 1h cache write), and above ``long_above`` prompt tokens at the higher
    of the standard and long-context rates.

    ``model`` is the table entry priced; ``estimated`` is True when the asked-for model was
    unknown and that entry's prices stand in for it (as ``PriceTable.cost`` would estimate it).
    """

    model: str
    estimated: bool
    input_usd: float
    output_usd: float
    search_usd: float
    long_above: int | None = None
    long_input_usd: float = 0.0
    long_output_usd: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int, web_searches: int = 0) -> float:
        """The most a call with at most these counts can cost, in USD (see the class docstring).

        Raises ``ValueError`` for a negative count: it would make the ceiling lower than a cost.
        """
        if input_tokens < 0 or output_tokens < 0 or web_searches < 0:
            raise ValueError(
                f"token and search counts must not be negative, got {input_tokens}, {output_tokens}, {web_searches}"
            )
        searches = web_searches * self.search_usd
        above = self.long_above
        if above is not None and input_tokens > above:
            return input_tokens * self.long_input_usd + output_tokens * self.long_output_usd + searches
        return input_tokens * self.input_usd + output_tokens * self.output_usd + searches


def make_ceiling(rates: Rates, bits: int, search_usd: Decimal, *, model: str, estimated: bool) -> Ceiling:
    """The ceiling of a call priced at ``rates`` with the modifier ``bits`` (GEO, FAST, BATCH; never LONG).

    Above the long-context threshold a call's prompt may still be under it, so the long-context
    rates are the higher of the two rows, whichever way a price table sets them.
    """
    standard = rates.vectors[bits]
    input_usd, output_usd = _highest(standard)
    if rates.long_context is None:
        return Ceiling(model, estimated, _up(input_usd), _up(output_usd), _up(search_usd))
    long_input, long_output = _highest(rates.vectors[bits | LONG])
    return Ceiling(
        model,
        estimated,
        _up(input_usd),
        _up(output_usd),
        _up(search_usd),
        rates.long_context.above,
        _up(max(input_usd, long_input)),
        _up(max(output_usd, long_output)),
    )


def _highest(vector: Vector) -> tuple[Decimal, Decimal]:
    """The highest input-side rate of a rate vector (the 1h write, in any table so far), and its output rate."""
    v_in, v_5m, v_1h, v_read, v_out = vector
    return max(v_in, v_5m, v_1h, v_read), v_out


def _up(rate: Decimal) -> float:
    """``rate`` as a float a little above it, so float error cannot bring a ceiling under the exact cost."""
    return float(rate * _NUDGE)
