"""The token usage of one call, and its priced cost."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from watcher.exceptions import PricingError

__all__ = ["Cost", "TokenUsage"]

_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_search_requests",
)
_INT = frozenset({int})
_TEXT = frozenset({str, type(None)})


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Billable usage of one Claude API call, as Anthropic reports it.

    Every count must be a non-negative ``int``, else ``PricingError`` is raised at construction.
    ``input_tokens`` excludes cached tokens; ``output_tokens`` already includes thinking tokens.
    ``endpoint`` is where a Bedrock or Vertex AI call was served: ``"global"`` or ``"regional"``
    (regional and multi-region endpoints cost more on recent models); None for the first-party
    API, or when unknown, which prices as global. The API does not report it: the caller sets it
    (``bedrock_endpoint``, ``vertex_endpoint``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    batch: bool = False
    endpoint: str | None = None

    def __post_init__(self) -> None:
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.web_search_requests,
        )
        texts = (self.service_tier, self.inference_geo, self.speed, self.endpoint)
        # One fast check for the common valid case; the slow path finds the culprit to name it.
        valid = _INT.issuperset(map(type, counts)) and min(counts) >= 0
        if not (valid and _TEXT.issuperset(map(type, texts))):
            self._raise_invalid()

    def _raise_invalid(self) -> None:
        for name in _COUNT_FIELDS:
            _check_count(name, getattr(self, name))
        for name in ("service_tier", "inference_geo", "speed", "endpoint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PricingError(f"usage {name} must be a string or None, got {value!r}")

    @property
    def prompt_tokens(self) -> int:
        """Input plus cache-write plus cache-read tokens: the size long-context tiers measure."""
        return self.input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens + self.cache_read_tokens

    @property
    def is_batch(self) -> bool:
        """True when batch pricing applies: ``batch`` is set or the service tier is ``"batch"``."""
        return self.batch or self.service_tier == "batch"

    @classmethod
    def from_anthropic(cls, usage: object, *, batch: bool = False, endpoint: str | None = None) -> TokenUsage:
        """Build from an anthropic SDK ``Usage`` object or the API's JSON ``usage`` dict (``endpoint`` as given).

        Missing or None fields count as 0 (or None). The 5m/1h cache-creation breakdown is used
        when present; otherwise ``cache_creation_input_tokens`` counts as 5-minute writes, so cache
        tokens are never counted twice. Raises ``PricingError`` on negative or non-int counts.
        """
        write_5m, write_1h = _cache_writes(usage)
        return cls(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            web_search_requests=_count(_field(usage, "server_tool_use"), "web_search_requests"),
            service_tier=_field(usage, "service_tier"),
            inference_geo=_field(usage, "inference_geo"),
            speed=_field(usage, "speed"),
            batch=batch,
            endpoint=endpoint,
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """The exact USD cost of one call, split by category; every amount is a ``Decimal``.

    ``estimated`` is True when the model was unknown and ``model`` names the table entry whose
    prices were used instead. ``flags`` names every special rule that shaped the number.

    The counterfactuals, for savings reports, are priced with the same modifiers as the call:
    ``cache_read_savings_usd`` is what the cache-read tokens would have cost more as uncached
    input, ``cache_write_premium_usd`` what the cache writes cost above uncached input (net caching
    savings are the first minus the second), and ``batch_savings_usd`` what the same usage would
    have cost more at standard (non-batch) rates. They are not part of ``total_usd``.
    """

    input_usd: Decimal
    output_usd: Decimal
    cache_read_usd: Decimal
    cache_write_usd: Decimal
    tools_usd: Decimal
    estimated: bool
    model: str
    pricing_version: str
    flags: tuple[str, ...] = ()
    cache_read_savings_usd: Decimal = Decimal(0)
    cache_write_premium_usd: Decimal = Decimal(0)
    batch_savings_usd: Decimal = Decimal(0)

    @property
    def total_usd(self) -> Decimal:
        """The sum of the five category amounts."""
        return self.input_usd + self.output_usd + self.cache_read_usd + self.cache_write_usd + self.tools_usd


def _check_count(name: str, value: object) -> None:
    if type(value) is not int:
        raise PricingError(f"usage {name} must be an int, got {value!r}")
    if value < 0:
        raise PricingError(f"usage {name} must not be negative, got {value}")


def _field(source: object, name: str) -> Any:
    """Read ``name`` from a dict or an attribute-bearing object; None when absent."""
    if source is None:
        return None
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def _count(source: object, name: str) -> int:
    value = _field(source, name)
    if value is None:
        return 0
    _check_count(name, value)
    return int(value)


def _cache_writes(usage: object) -> tuple[int, int]:
    """(5m, 1h) cache-write tokens: the breakdown if given, else the total as 5m."""
    breakdown = _field(usage, "cache_creation")
    five = _field(breakdown, "ephemeral_5m_input_tokens")
    hour = _field(breakdown, "ephemeral_1h_input_tokens")
    if five is None and hour is None:
        return _count(usage, "cache_creation_input_tokens"), 0
    return _count(breakdown, "ephemeral_5m_input_tokens"), _count(breakdown, "ephemeral_1h_input_tokens")
