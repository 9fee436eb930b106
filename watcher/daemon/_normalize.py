"""Span records to ledger entries: watcher's cost spans as recorded, other GenAI spans priced here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from watcher.daemon import _otlp as names
from watcher.daemon._otlp import SpanRecord
from watcher.ledger import (
    MAX_MICROS,
    MAX_TOKENS,
    MAX_USD,
    NANOS_PER_USD,
    Entry,
    float_to_nanos,
    from_micros,
    to_nanos,
)
from watcher.pricing import PriceTable, TokenUsage, bedrock_endpoint

__all__ = ["MAX_REASONS", "REJECTIONS", "Normalized", "Window", "normalize", "resource_place"]

MAX_REASONS = 20
"""How many rejection reasons one `Normalized` keeps for the log; `rejected` counts them all."""

MALFORMED, IMPLAUSIBLE, OUT_OF_WINDOW = "malformed", "implausible_tokens", "time_out_of_window"
REJECTIONS = (MALFORMED, IMPLAUSIBLE, OUT_OF_WINDOW)
"""Why a span is rejected, as `Normalized.rejected_by` and the metrics count it."""

Window = tuple[int, int]
"""The span end times accepted, in microseconds since the epoch: `[earliest, latest]`."""

SDK_SPAN = "anthropic.messages.create"
_Counts = tuple[int, int, int, int, int, int]  # uncached input, output, cache read, 5m and 1h writes, searches
# Nano-dollars: total, input, output, cache read, cache write, tools; estimated; read savings, write premium, batch.
_Cost = tuple[int, int, int, int, int, int, bool, int, int, int]
# Provider name (gen_ai.provider.name or the older gen_ai.system, lower-cased) -> (platform, Claude-only).
_PROVIDERS = {
    "anthropic": ("anthropic", False),
    "aws.bedrock": ("aws.bedrock", True),
    "aws_bedrock": ("aws.bedrock", True),
    "bedrock": ("aws.bedrock", True),
    "gcp.vertex_ai": ("gcp.vertex_ai", True),
    "vertex_ai": ("gcp.vertex_ai", True),
    "vertexai": ("gcp.vertex_ai", True),
}


@dataclass(slots=True)
class Normalized:
    """What one batch of spans became.

    `ignored` counts spans without GenAI usage or from providers other than Claude's (not errors);
    `rejected` counts spans that claim usage but are malformed, for OTLP partial success, and
    `rejected_reasons` names the first `MAX_REASONS` of them.
    """

    entries: list[Entry] = field(default_factory=list)
    rejected: int = 0
    rejected_reasons: list[str] = field(default_factory=list)
    ignored: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    """Rejected spans per kind of reason (one of `REJECTIONS`); the counts add up to `rejected`."""
    holders: dict[str, str] = field(default_factory=dict)
    """Entry key to the allowance its cost was reserved from, for the entries that name one."""

    def reject(self, kind: str, reason: str) -> None:
        """Counts one rejected record of `kind` (one of `REJECTIONS`), keeping its reason among the first few."""
        self.rejected += 1
        self.rejected_by[kind] = self.rejected_by.get(kind, 0) + 1
        if len(self.rejected_reasons) < MAX_REASONS:
            self.rejected_reasons.append(reason)

    def add_skipped(self, other: Normalized) -> None:
        """Adds what `other` (a decoder's own findings) ignored and rejected to these counts, not its entries."""
        self.ignored += other.ignored
        self.rejected += other.rejected
        for kind, count in other.rejected_by.items():
            self.rejected_by[kind] = self.rejected_by.get(kind, 0) + count
        room = MAX_REASONS - len(self.rejected_reasons)
        self.rejected_reasons[:0] = other.rejected_reasons[: max(room, 0)]


class _Malformed(Exception):
    """The span claims usage that cannot be taken as it is; the message says why."""

    kind = MALFORMED


class _Implausible(_Malformed):
    """The span claims more tokens than one request can hold."""

    kind = IMPLAUSIBLE


class _OutOfWindow(_Malformed):
    """The span ended too long ago, or too far ahead, to be a call being reported now."""

    kind = OUT_OF_WINDOW


def normalize(
    spans: Sequence[SpanRecord | Entry],
    prices: PriceTable,
    *,
    default_request_type: str = "unlabeled",
    window: Window = (0, MAX_MICROS),
) -> Normalized:
    """One entry per span that carries Claude usage; never raises, whatever the records hold.

    Entries among `spans` (the decoder's fast path made them) are taken as they are, but for
    their end time. A span that claims usage is rejected when it ended outside `window` (the
    daemon passes one around its clock's now; the default takes any time an entry can hold).

    watcher's own cost spans keep their recorded cost (rank 2); spans of other instrumentations
    are priced with `prices` at their end time (rank 1) and get `default_request_type` unless
    they carry `watcher.request_type`. Pure: safe to call from any thread.
    """
    result = Normalized()
    resource: object = None
    place = ("", "")
    for span in spans:
        try:
            if isinstance(span, Entry):  # made by the decoder's fast path for watcher's own spans
                _check_time(span.time_us, window)
                result.entries.append(span)
                continue
            if span.resource is not resource:  # spans of one resource share its dict
                resource, place = span.resource, resource_place(span.resource)
            entry = _entry(span, place, prices, default_request_type, window)
        except _Malformed as exc:
            _reject(result, span, exc.kind, str(exc))
        except Exception as exc:  # a bug must cost one span, never the batch
            _reject(result, span, MALFORMED, f"could not be read ({type(exc).__name__})")
        else:
            if entry is None:
                result.ignored += 1
            else:
                result.entries.append(entry)
                holder = span.attributes.get(names.ALLOWANCE_HOLDER)
                if isinstance(holder, str):
                    result.holders[entry.key] = holder
    return result


def _reject(result: Normalized, span: SpanRecord | Entry, kind: str, reason: str) -> None:
    name = f"span {span.trace_id}/{span.span_id}" if isinstance(span, SpanRecord) else f"entry {span.key}"
    result.reject(kind, f"{name}: {reason}")


def _entry(
    span: SpanRecord, place: tuple[str, str], prices: PriceTable, default_request_type: str, window: Window
) -> Entry | None:
    """The entry of one span; None when it has no usage or is another provider's."""
    attributes = span.attributes
    model = _model(attributes)
    if names.COST in attributes and names.PRICING_VERSION in attributes:  # watcher's own cost span
        counts = _counts(attributes, strict=True)
        cost = _recorded_cost(attributes)
        micros = _time_us(span, window)
        return _build(span, micros, place, model, "anthropic", counts, cost, default_request_type, rank=2)
    if names.USAGE_KEYS.isdisjoint(attributes):
        return None
    platform = _platform(attributes, model)
    if platform is None:
        return None
    counts = _counts(attributes, strict=span.name == SDK_SPAN)
    micros = _time_us(span, window)
    cost = _priced_cost(attributes, model, counts, prices, from_micros(micros))
    return _build(span, micros, place, model, platform, counts, cost, default_request_type, rank=1)


def _time_us(span: SpanRecord, window: Window) -> int:
    """The span's end in microseconds since the epoch, if inside `window` and a time `datetime` can hold."""
    micros = span.end_time_ns // 1000
    if not 0 <= micros <= MAX_MICROS:
        raise _Malformed(f"end time {span.end_time_ns} ns is out of range")
    _check_time(micros, window)
    return micros


def _check_time(micros: int, window: Window) -> None:
    """Raises `_OutOfWindow` unless `micros` lies in `window`."""
    earliest, latest = window
    if not earliest <= micros <= latest:
        at, first, last = (from_micros(t).isoformat() for t in (micros, earliest, latest))
        raise _OutOfWindow(f"ended at {at}, outside the accepted {first} to {last}")


def _build(
    span: SpanRecord,
    micros: int,
    place: tuple[str, str],
    model: str,
    platform: str,
    counts: _Counts,
    cost: _Cost,
    default_request_type: str,
    *,
    rank: int,
) -> Entry:
    """The Entry, its fields given by position (cheaper than by keyword; a test pins the order)."""
    get = span.attributes.get
    response_id = _text(get(names.RESPONSE_ID))
    service, environment = place
    uncached, output, read, five, hour, searches = counts
    total, input_nanos, output_nanos, read_nanos, write_nanos, tools_nanos, estimated, *savings = cost
    return Entry(
        response_id or f"trace:{span.trace_id}:{span.span_id}",  # key
        micros,  # time_us
        response_id,
        service,
        environment,
        _text(get(names.REQUEST_TYPE)) or default_request_type,
        model,
        _text(get(names.PLATFORM)) or platform,
        uncached,  # input_tokens
        output,
        read,
        five,
        hour,
        searches,
        total,  # cost_nanos
        input_nanos,
        output_nanos,
        read_nanos,
        write_nanos,
        tools_nanos,
        estimated,
        _text(get(names.BATCH_ID)) is not None or get(names.SERVICE_TIER) == "batch",  # batch
        rank,
        *savings,
    )


def _recorded_cost(attributes: Mapping[str, object]) -> _Cost:
    """The cost watcher's span was priced at when recorded, exactly as sent (as its shortest repr reads)."""
    amounts = [_nanos(key, attributes.get(key)) for key in names.RECORDED_USD_KEYS]
    total, inputs, outputs, reads, writes, tools, read_saved, write_premium, batch_saved = amounts
    estimated = attributes.get(names.ESTIMATED) is True
    return total, inputs, outputs, reads, writes, tools, estimated, read_saved, write_premium, batch_saved


def _priced_cost(
    attributes: Mapping[str, object],
    model: str,
    counts: _Counts,
    prices: PriceTable,
    time: datetime,
) -> _Cost:
    """The cost of another instrumentation's span, priced here at the prices in effect at `time`.

    A Bedrock model id says where the call was served (`bedrock_endpoint`): a regional or geographic
    profile, or a plain in-region id, gets the regional premium on the models that have one. Such
    spans do not say which Vertex AI location served them, so those are priced as global.
    """
    uncached, output, read, five, hour, searches = counts
    usage = TokenUsage(
        uncached,
        output,
        read,
        five,
        hour,
        searches,
        service_tier=_text(attributes.get(names.SERVICE_TIER)),
        inference_geo=_text(attributes.get(names.INFERENCE_GEO)),
        speed=_text(attributes.get(names.SPEED)),
        batch=_text(attributes.get(names.BATCH_ID)) is not None,
        endpoint=_endpoint(attributes),
    )
    cost = prices.cost(model, usage, at=time)
    return (
        to_nanos(cost.total_usd),
        to_nanos(cost.input_usd),
        to_nanos(cost.output_usd),
        to_nanos(cost.cache_read_usd),
        to_nanos(cost.cache_write_usd),
        to_nanos(cost.tools_usd),
        cost.estimated,
        to_nanos(cost.cache_read_savings_usd),
        to_nanos(cost.cache_write_premium_usd),
        to_nanos(cost.batch_savings_usd),
    )


def _counts(attributes: Mapping[str, object], *, strict: bool) -> _Counts:
    """(uncached input, output, cache read, 5m writes, 1h writes, web searches) a span reports.

    Raises `_Malformed` for a count that is not a non-negative integer, for a 5m/1h breakdown that
    does not add up to the cache-write total, and (when `strict`) for input below the cached part;
    `_Implausible` for more than `MAX_TOKENS` tokens (or web searches).
    """
    read = _first_count(attributes, names.CACHE_READ) or 0
    five, hour = _cache_writes(attributes)
    uncached = _count(attributes, names.UNCACHED_INPUT)
    if uncached is None:
        uncached = _uncached(_first_count(attributes, names.INPUT) or 0, read + five + hour, strict)
    output = _first_count(attributes, names.OUTPUT) or 0
    searches = _count(attributes, names.WEB_SEARCHES) or 0
    tokens = uncached + output + read + five + hour
    if tokens > MAX_TOKENS or searches > MAX_TOKENS:
        raise _Implausible(f"{tokens} tokens and {searches} web searches: more than one request can hold")
    return uncached, output, read, five, hour, searches


def _cache_writes(attributes: Mapping[str, object]) -> tuple[int, int]:
    """(5m, 1h) cache writes: the breakdown when given, else the whole total as 5-minute writes."""
    total = _first_count(attributes, names.CACHE_WRITE)
    five = _count(attributes, names.WRITE_5M)
    hour = _count(attributes, names.WRITE_1H)
    if five is None and hour is None:
        return total or 0, 0
    five, hour = five or 0, hour or 0
    if total is not None and total != five + hour:
        raise _Malformed(f"cache writes 5m {five} + 1h {hour} do not add up to the total {total}")
    return five, hour


def _uncached(total: int, cached: int, strict: bool) -> int:
    """Uncached input from an input count that, by the GenAI convention, includes cached tokens.

    An input below the cached part cannot be such a total: a strict source (one whose contract
    says it sends the total) is then malformed; any other reported the uncached count itself.
    """
    if total >= cached:
        return total - cached
    if strict:
        raise _Malformed(f"input tokens {total} are fewer than the cached {cached} they include")
    return total


def _first_count(attributes: Mapping[str, object], keys: tuple[str, ...]) -> int | None:
    """The first of `keys` present, as a token count; None when none is."""
    for key in keys:
        if attributes.get(key) is not None:
            return _count(attributes, key)
    return None


def _count(attributes: Mapping[str, object], key: str) -> int | None:
    """Attribute `key` as a token count (an integral float is taken too); None when absent."""
    value = attributes.get(key)
    if type(value) is int and value >= 0:
        return value
    if value is None:
        return None
    if type(value) is float and value >= 0 and value.is_integer():
        return int(value)
    raise _Malformed(f"{key} is not a token count: {_brief(value)}")


def _nanos(key: str, value: object) -> int:
    """A recorded USD amount in nano-dollars, as its shortest float repr reads; 0 when absent."""
    if type(value) is float:
        if 0.0 < value <= MAX_USD:
            return float_to_nanos(value)
        if value == 0.0:
            return 0  # also -0.0
    elif value is None:
        return 0
    elif type(value) is int and 0 <= value <= MAX_USD:
        return value * NANOS_PER_USD
    raise _Malformed(f"{key} is not a USD amount: {_brief(value)}")


def _platform(attributes: Mapping[str, object], model: str) -> str | None:
    """The platform of a Claude call, or None for a span of another provider (or none named)."""
    provider = _text(attributes.get(names.PROVIDER)) or _text(attributes.get(names.SYSTEM))
    found = _PROVIDERS.get(provider.lower()) if provider else None
    if found is None:
        return None
    platform, claude_only = found
    return None if claude_only and "claude" not in model.lower() else platform


def _endpoint(attributes: Mapping[str, object]) -> str | None:
    """Where a foreign span's call was served, from the first Bedrock model id among its request and response
    models (the request's is the one sent; a response may name the plain model); None when neither is one."""
    for key in (names.REQUEST_MODEL, names.RESPONSE_MODEL):
        model = _text(attributes.get(key))
        endpoint = bedrock_endpoint(model) if model else None
        if endpoint is not None:
            return endpoint
    return None


def _model(attributes: Mapping[str, object]) -> str:
    return _text(attributes.get(names.RESPONSE_MODEL)) or _text(attributes.get(names.REQUEST_MODEL)) or "unknown"


def resource_place(resource: Mapping[str, object]) -> tuple[str, str]:
    """(service, environment) of a resource, with the defaults OpenTelemetry and watcher use."""
    service = _text(resource.get(names.SERVICE_NAME)) or "unknown_service"
    for key in names.ENVIRONMENT:
        environment = _text(resource.get(key))
        if environment:
            return service, environment
    return service, "default"


def _text(value: object) -> str | None:
    """A non-empty string attribute, else None (absent, empty, or of another type)."""
    return value if type(value) is str and value else None


def _brief(value: object) -> str:
    return repr(value)[:40]
