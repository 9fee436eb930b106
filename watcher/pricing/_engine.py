"""The PriceTable: name resolution, unknown-model estimates and the per-call cost arithmetic."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

from watcher.exceptions import PricingError
from watcher.pricing._ceiling import Ceiling, make_ceiling
from watcher.pricing._check import ClaimCheck, make_claim_checker
from watcher.pricing._names import REGIONAL_ENDPOINT, candidates
from watcher.pricing._rates import BATCH, FAST, GEO, LONG, REGIONAL, ModelPrices, Rates, Vector, optional_bits
from watcher.pricing._usage import Cost, TokenUsage

__all__ = ["PriceTable"]

_log = logging.getLogger("watcher.pricing")
_ZERO = Decimal(0)
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class _Match:
    """What a model name prices as: the table entry, and the flags an estimate adds."""

    prices: ModelPrices
    estimated: bool
    flags: tuple[str, ...]


class PriceTable:
    """Immutable model prices; ``cost`` turns a model name and usage into an exact ``Cost``.

    Thread-safe: the only mutable state is the per-name resolution cache, whose entries are
    idempotent. Build one with ``load_price_table`` or ``default_price_table``.
    """

    __slots__ = ("_families", "_matches", "_models", "_names", "_search", "_unknown", "version")

    def __init__(
        self,
        *,
        version: str,
        models: Mapping[str, ModelPrices],
        names: Mapping[str, str],
        families: Mapping[str, str],
        unknown: str,
        web_search_per_request: Decimal,
    ) -> None:
        self.version = version
        self._models = MappingProxyType(dict(models))
        self._names = MappingProxyType(dict(names))
        self._families = MappingProxyType(dict(families))
        self._unknown = unknown
        self._search = web_search_per_request
        self._matches: dict[str, _Match] = {}

    @property
    def models(self) -> tuple[str, ...]:
        """Every canonical model id in the table."""
        return tuple(self._models)

    def resolve(self, model: str) -> str | None:
        """The canonical table id for ``model`` (id, alias, snapshot, Bedrock or Vertex), or None."""
        match = self._match(model)
        return None if match.estimated else match.prices.id

    def cost(self, model: str, usage: TokenUsage, *, at: datetime | None = None) -> Cost:
        """The exact cost of one call of ``model`` with ``usage``, at prices in effect on ``at``.

        ``at`` must be timezone-aware (default: now); its UTC date selects the prices. An unknown
        model is estimated, never priced at zero. Raises ``PricingError`` for a naive ``at``.
        """
        if at is not None and at.utcoffset() is None:
            raise PricingError(f"`at` must be timezone-aware, got naive {at.isoformat()}; pass tzinfo=UTC")
        match = self._matches.get(model) or self._match(model)
        prices = match.prices
        rates = prices.periods[0] if not prices.starts else prices.at(at or datetime.now(UTC))
        bits, flags = _modifiers(rates, usage, match.flags)
        vector = rates.vectors[bits]
        v_in, v_5m, v_1h, v_read, v_out = vector
        read, five, hour = usage.cache_read_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens
        searches = usage.web_search_requests
        return Cost(
            input_usd=usage.input_tokens * v_in,
            output_usd=usage.output_tokens * v_out,
            cache_read_usd=read * v_read,
            cache_write_usd=five * v_5m + hour * v_1h,
            tools_usd=searches * self._search if searches else _ZERO,
            estimated=match.estimated,
            model=prices.id,
            pricing_version=self.version,
            flags=flags,
            cache_read_savings_usd=read * (v_in - v_read) if read else _ZERO,
            cache_write_premium_usd=five * (v_5m - v_in) + hour * (v_1h - v_in) if five or hour else _ZERO,
            batch_savings_usd=_batch_savings(usage, vector, rates.vectors[bits & ~BATCH]) if bits & BATCH else _ZERO,
        )

    def cost_bounds(self, model: str, usage: TokenUsage, *, at: datetime) -> tuple[Decimal, Decimal] | None:
        """The least and the most ``usage`` of ``model`` can cost at ``at``, whichever of the optional modifiers
        (US-only inference, fast mode, a regional Bedrock or Vertex AI endpoint) applied; None for a model
        the table does not know.

        Batch and long-context pricing follow ``usage`` as in ``cost``; ``usage``'s geo, speed and
        endpoint are ignored. For checking a cost priced elsewhere from a record that does not say which modifiers
        applied; an unknown model would be an estimate, nothing to check against. Cheaper than two
        ``cost`` calls: no ``Cost`` is built. Raises ``PricingError`` for a naive ``at``.
        """
        if at.utcoffset() is None:
            raise PricingError(f"`at` must be timezone-aware, got naive {at.isoformat()}; pass tzinfo=UTC")
        match = self._matches.get(model) or self._match(model)
        if match.estimated:
            return None
        prices = match.prices
        rates = prices.periods[0] if not prices.starts else prices.at(at)
        bits = BATCH if usage.is_batch else 0
        if rates.long_context is not None and usage.prompt_tokens > rates.long_context.above:
            bits |= LONG
        most = bits | optional_bits(rates)
        counts = _counts(usage)
        tools = usage.web_search_requests * self._search if usage.web_search_requests else _ZERO
        least, highest = (
            sum((n * rate for n, rate in zip(counts, rates.vectors[b], strict=True) if n), tools) for b in (bits, most)
        )
        return least, highest

    def ceiling(
        self,
        model: str,
        *,
        at: datetime,
        batch: bool = False,
        fast: bool = False,
        us_geo: bool = False,
        regional: bool = False,
    ) -> Ceiling:
        """Rates bounding what one call of ``model`` can cost at ``at``, for reserving spend before it is sent.

        ``Ceiling.cost(n, m, s)`` is never below ``cost(model, usage, at=at)`` for any usage with at
        most ``n`` prompt tokens of any kind, ``m`` output tokens and ``s`` web searches, batch
        exactly as ``batch``, and fast mode, US-only inference or a regional endpoint (``endpoint``
        ``"regional"``) only where asked for; a budget cannot recover from spend reserved too low.
        ``fast``, ``us_geo`` and ``regional`` change nothing on a model (or date) whose prices have
        no such modifier, as in ``cost``. An unknown model gets
        the ceiling of the prices ``cost`` would estimate it at, marked ``estimated``. Raises
        ``PricingError`` for a naive ``at``.
        """
        if at.utcoffset() is None:
            raise PricingError(f"`at` must be timezone-aware, got naive {at.isoformat()}; pass tzinfo=UTC")
        match = self._matches.get(model) or self._match(model)
        prices = match.prices
        rates = prices.periods[0] if not prices.starts else prices.at(at)
        bits = BATCH if batch else 0
        if us_geo and rates.us_geo:
            bits |= GEO
        if regional and rates.regional_premium:
            bits |= REGIONAL
        if fast and rates.fast is not None:
            bits |= FAST
        return make_ceiling(rates, bits, self._search, model=prices.id, estimated=match.estimated)

    def claim_checker(self, factor: Decimal) -> ClaimCheck:
        """A function telling whether a cost claimed for some usage is within `factor` of this table's price.

        For checking many costs priced elsewhere (the daemon checks every cost span): the claim is off
        when below `cost_bounds`' least divided by `factor`, or above its most times `factor`, and
        models the table does not know are not checked. Each model's rates are turned into floats once,
        so a claim that clearly agrees costs about a microsecond; the rest are decided exactly.
        """

        def match(model: str) -> tuple[ModelPrices, bool]:
            found = self._matches.get(model) or self._match(model)
            return found.prices, found.estimated

        return make_claim_checker(match, self._search, lambda m, u, at: self.cost_bounds(m, u, at=at), factor)

    def _match(self, model: str) -> _Match:
        """Resolve ``model`` once and cache the result (bounded, so junk names cannot grow it)."""
        match = self._matches.get(model)
        if match is None:
            match = self._lookup(model)
            if len(self._matches) < _CACHE_LIMIT:
                self._matches[model] = match
        return match

    def _lookup(self, model: str) -> _Match:
        key = ""
        for key in candidates(model):
            model_id = self._names.get(key)
            if model_id is not None:
                return _Match(self._models[model_id], False, ())
        for family, model_id in self._families.items():
            if family in key:
                _log.warning("unknown model %r: estimating at %s prices", model, model_id)
                return _Match(self._models[model_id], True, (f"estimated_family:{family}",))
        _log.warning("unknown model %r: estimating at default %s prices", model, self._unknown)
        return _Match(self._models[self._unknown], True, ("estimated_default",))


def _batch_savings(usage: TokenUsage, batch: Vector, standard: Vector) -> Decimal:
    """What ``usage`` would have cost more at the ``standard`` rates than at the ``batch`` ones."""
    pairs = zip(_counts(usage), standard, batch, strict=True)
    return sum((n * (full - discounted) for n, full, discounted in pairs), _ZERO)


def _counts(usage: TokenUsage) -> tuple[int, int, int, int, int]:
    """``usage``'s token counts in the order of a rate ``Vector``: input, 5m write, 1h write, cache read, output."""
    return (
        usage.input_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.cache_read_tokens,
        usage.output_tokens,
    )


def _modifiers(rates: Rates, usage: TokenUsage, flags: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """The rate-vector bits for this call, and its flags (estimate flags first)."""
    bits = 0
    batch = usage.is_batch
    if batch:
        bits |= BATCH
    if usage.inference_geo == "us" and rates.us_geo:
        bits |= GEO
    if usage.endpoint == REGIONAL_ENDPOINT and rates.regional_premium:
        bits |= REGIONAL
        flags += ("regional_endpoint",)
    if usage.service_tier == "priority":
        flags += ("priority_tier",)
    tier = rates.long_context
    if tier is not None and usage.prompt_tokens > tier.above:
        bits |= LONG
        flags += ("long_context",)
    if usage.speed == "fast":
        if rates.fast is None:
            flags += ("fast_unsupported",)
        else:
            bits |= FAST
            if batch:
                flags += ("fast_with_batch",)
    return bits, flags
