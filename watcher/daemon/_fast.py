"""watcher's own cost spans straight from the protobuf attribute map to an Entry: the ingest hot path.

The general path decodes every attribute normalisation might read into a dict (`SpanRecord`)
and then normalises it. Nearly all the traffic is watcher's own cost spans, whose shape is
fixed (docs/spans.md), so this reads just the keys such a span needs, each once, with the type
it is sent in, into an Entry. On any surprise (a key missing, a value of another type, a
negative count, totals that disagree, implausibly many tokens) it returns None and the span
takes the general path, which accepts, repairs or rejects it with a reason. So the two paths
never disagree: the fast one gives the general one's Entry or none (tests/test_fast_path.py
holds them to that). The end time is checked against the accepted window by `normalize`, for
both paths alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watcher.daemon import _otlp as names
from watcher.ledger import MAX_MICROS, MAX_TOKENS, MAX_USD, Entry, float_to_nanos

__all__ = ["watcher_entry"]

_PARTS = names.RECORDED_USD_KEYS[1:]  # every recorded amount but the total, which is read first
_CACHE_READ, _CACHE_WRITE, _OUTPUT = names.CACHE_READ[0], names.CACHE_WRITE[0], names.OUTPUT[0]


class _Surprise(Exception):
    """The span is not the plain shape this path reads; the general path takes it."""


def watcher_entry(
    attributes: Mapping[str, Any], span: Any, place: tuple[str, str], default_request_type: str
) -> Entry | None:
    """The Entry of a watcher cost span as `normalize` would build it, or None for any other span.

    `attributes` is the span's protobuf attribute map (key to AnyValue), `span` the protobuf
    span (for its ids and end time) and `place` its resource's (service, environment).
    """
    get = attributes.get
    cost = get(names.COST)
    if cost is None or get(names.PRICING_VERSION) is None:
        return None
    try:
        five, hour, total_writes = _count(get(names.WRITE_5M)), _count(get(names.WRITE_1H)), _count(get(_CACHE_WRITE))
        if five + hour != total_writes:
            return None
        searches = get(names.WEB_SEARCHES)
        uncached, output, read = _count(get(names.UNCACHED_INPUT)), _count(get(_OUTPUT)), _count(get(_CACHE_READ))
        total = _nanos(cost)
        usd = [_nanos(get(key)) for key in _PARTS]  # the cost's parts, then the savings
        inputs, outputs, reads, writes, tools, read_saved, write_premium, batch_saved = usd
        searched = 0 if searches is None else _count(searches)
    except _Surprise:
        return None
    if uncached + output + read + five + hour > MAX_TOKENS or searched > MAX_TOKENS:
        return None  # the general path rejects it, naming the counts
    micros = span.end_time_unix_nano // 1000
    if micros > MAX_MICROS:
        return None
    response_id = _text(get(names.RESPONSE_ID))
    estimated = get(names.ESTIMATED)
    tier = get(names.SERVICE_TIER)
    service, environment = place
    return Entry(
        response_id or f"trace:{span.trace_id.hex()}:{span.span_id.hex()}",
        micros,
        response_id,
        service,
        environment,
        _text(get(names.REQUEST_TYPE)) or default_request_type,
        _text(get(names.RESPONSE_MODEL)) or _text(get(names.REQUEST_MODEL)) or "unknown",
        _text(get(names.PLATFORM)) or "anthropic",
        uncached,
        output,
        read,
        five,
        hour,
        searched,
        total,
        inputs,
        outputs,
        reads,
        writes,
        tools,
        estimated is not None and estimated.bool_value,
        _text(get(names.BATCH_ID)) is not None or (tier is not None and tier.string_value == "batch"),
        2,
        read_saved,
        write_premium,
        batch_saved,
    )


def _count(value: Any) -> int:
    """A present token count sent as a non-negative int; anything else is a surprise."""
    if value is None:
        raise _Surprise
    count: int = value.int_value
    if count > 0 or (count == 0 and value.HasField("int_value")):
        return count
    raise _Surprise


def _nanos(value: Any) -> int:
    """A USD amount sent as a finite non-negative double, in nano-dollars; absent is 0."""
    if value is None:
        return 0
    usd: float = value.double_value
    if 0.0 < usd <= MAX_USD:
        return float_to_nanos(usd)
    if usd == 0.0 and value.HasField("double_value"):
        return 0
    raise _Surprise


def _text(value: Any) -> str | None:
    """A non-empty string value, else None (absent, empty, or of another type), as `normalize` reads it."""
    if value is None:
        return None
    text: str = value.string_value
    return text or None
