"""OTLP log export bodies (protobuf or JSON) to ledger entries: Claude Code's `api_request` events.

Claude Code reports every API call it makes as a log event (docs/claude-code.md). Its
`api_request` events become entries here; every other event is ignored. A record that claims
an API call but cannot be taken as it is (a negative or garbled count or cost) is rejected on
its own, for OTLP partial success: never the batch. A body that is not an OTLP log export at
all raises `DecodeError`, as for traces.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from watcher.daemon._decode import (
    DecodeError,
    _all_proto_attributes,
    _array,
    _field,
    _integer,
    _json_attributes,
    _json_document,
    _json_value,
    _object,
    _proto_value,
)
from watcher.daemon._normalize import (
    IMPLAUSIBLE,
    MALFORMED,
    Normalized,
    _priced_cost,
    resource_place,
)
from watcher.daemon._otlp import SPEED
from watcher.ledger import MAX_MICROS, MAX_TOKENS, MAX_USD, Entry, float_to_nanos, from_micros, to_micros
from watcher.pricing import PriceTable

__all__ = ["CLAUDE_CODE", "LogBatch", "decode_logs"]

CLAUDE_CODE = "claude-code"
"""The service of Claude Code's entries when its resource names none, and the prefix of their request type."""

_PROTOBUF = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON = "application/json"
_EVENT = "api_request"
_BODY = f"claude_code.{_EVENT}"
_UINT64 = (0, 2**64 - 1)
_MAX_MICRO_USD = MAX_USD * 10**6


@dataclass(slots=True)
class LogBatch:
    """What one log export became: an entry per `api_request` record, and the records skipped.

    `skipped` holds only counts and reasons (no entries): records that were not API calls
    (`ignored`) and API calls that could not be read (`rejected`, with reasons), for the daemon
    to add to what normalisation finds.
    """

    entries: list[Entry] = field(default_factory=list)
    skipped: Normalized = field(default_factory=Normalized)


class _Bad(Exception):
    """The record claims an API call whose fields cannot be taken as they are; `kind` says why."""

    def __init__(self, message: str, kind: str = MALFORMED) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class _Record:
    """One log record, reduced to plain values: body, attributes, times, and its resource's."""

    body: object
    attributes: Mapping[str, object]
    time_ns: int
    observed_ns: int
    resource: Mapping[str, object]


def decode_logs(body: bytes, content_type: str, prices: PriceTable) -> LogBatch:
    """The entries of an uncompressed OTLP `ExportLogsServiceRequest` body, in order.

    `content_type` as for `decode_request`. Raises `DecodeError` for another type and for a body
    that does not decode as an OTLP log export; never anything else. An `api_request` without a
    reported cost is priced with `prices` at its time (rank 1, estimated as pricing says); one
    with a cost keeps it exactly (rank 2). Pure: safe to call from any thread.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PROTOBUF:
        records = _from_protobuf(body)
    elif media == _JSON:
        records = _from_json(body)
    else:
        raise DecodeError(f"unsupported content type {content_type!r}: send application/x-protobuf or application/json")
    return _batch(records, prices)


def _batch(records: Iterable[_Record], prices: PriceTable) -> LogBatch:
    batch = LogBatch()
    for record in records:
        if not _is_api_request(record):
            batch.skipped.ignored += 1
            continue
        try:
            batch.entries.append(_entry(record, prices))
        except _Bad as error:
            batch.skipped.reject(error.kind, f"log record {_name(record)}: {error}")
        except Exception as error:  # a bug must cost one record, never the batch
            batch.skipped.reject(MALFORMED, f"log record {_name(record)}: could not be read ({type(error).__name__})")
    return batch


def _is_api_request(record: _Record) -> bool:
    """True for Claude Code's `api_request` event: named by its body or by its `event.name` attribute."""
    name = record.attributes.get("event.name")
    return record.body == _BODY or name in (_EVENT, _BODY)


# --- one record to an entry -------------------------------------------------------------------


def _entry(record: _Record, prices: PriceTable) -> Entry:
    """The entry of one `api_request` record; raises `_Bad` for a field that cannot be taken."""
    get = record.attributes.get
    micros = _time_us(record)
    model = _text(get("model")) or "unknown"
    uncached = _count(record.attributes, "input_tokens")  # uncached input, as the API's usage counts it
    output = _count(record.attributes, "output_tokens")
    read = _count(record.attributes, "cache_read_tokens")
    five, hour = _cache_writes(record.attributes)
    if uncached + output + read + five + hour > MAX_TOKENS:
        raise _Bad(f"{uncached + output + read + five + hour} tokens: more than one request can hold", IMPLAUSIBLE)
    service, environment = resource_place(record.resource)
    if not _text(record.resource.get("service.name")):
        service = CLAUDE_CODE
    source = _text(get("query_source"))
    request_type = f"{CLAUDE_CODE}:{source}" if source else CLAUDE_CODE
    key = _text(get("request_id")) or _fallback_key(record, micros)
    entry = Entry(
        key,
        micros,
        None,  # response_id: Claude Code reports the request id, not the message id
        service,
        environment,
        request_type,
        model,
        "anthropic",
        uncached,
        output,
        read,
        five,
        hour,
        rank=2,
    )
    reported = _reported_nanos(record.attributes)
    if reported is not None:  # as Claude Code reported it: authoritative for its key, not repriced
        return entry._replace(cost_nanos=reported)
    speed = {SPEED: speed} if (speed := _text(get("speed"))) else {}  # fast mode is priced higher
    counts = (uncached, output, read, five, hour, 0)
    cost = _priced_cost(speed, model, counts, prices, from_micros(micros))
    total, inputs, outputs, reads, writes, tools, estimated, read_saved, premium, batch_saved = cost
    return entry._replace(
        cost_nanos=total,
        input_nanos=inputs,
        output_nanos=outputs,
        cache_read_nanos=reads,
        cache_write_nanos=writes,
        tools_nanos=tools,
        estimated=estimated,
        rank=1,  # priced here: a later event with a reported cost replaces it
        cache_read_savings_nanos=read_saved,
        cache_write_premium_nanos=premium,
        batch_savings_nanos=batch_saved,
    )


def _reported_nanos(attributes: Mapping[str, object]) -> int | None:
    """The event's cost in nano-dollars: exactly `cost_usd_micros` times 1000 when present, else `cost_usd`."""
    micros = attributes.get("cost_usd_micros")
    if micros is not None:
        whole = _whole(micros, "cost_usd_micros")
        if whole > _MAX_MICRO_USD:
            raise _Bad(f"cost_usd_micros {whole} is beyond what one call can cost")
        return whole * 1000
    usd = attributes.get("cost_usd")
    if usd is None:
        return None
    amount = _number(usd, "cost_usd")
    if not 0 <= amount <= MAX_USD:
        raise _Bad(f"cost_usd is not a USD amount: {_brief(usd)}")
    return float_to_nanos(float(amount)) if amount else 0


def _cache_writes(attributes: Mapping[str, object]) -> tuple[int, int]:
    """(5m, 1h) cache writes: the split when the event gives one, else the total as 5-minute writes.

    Older versions report only `cache_creation_tokens`; counting them all as 5-minute writes
    prices them at the cheaper rate, which is what Claude Code writes by default.
    """
    total = _optional_count(attributes, "cache_creation_tokens")
    five = _optional_count(attributes, "cache_creation_5m_tokens")
    hour = _optional_count(attributes, "cache_creation_1h_tokens")
    if five is None and hour is None:
        return total or 0, 0
    five, hour = five or 0, hour or 0
    if total is not None and total != five + hour:
        raise _Bad(f"cache writes 5m {five} + 1h {hour} do not add up to the total {total}")
    return five, hour


def _count(attributes: Mapping[str, object], key: str) -> int:
    return _optional_count(attributes, key) or 0


def _optional_count(attributes: Mapping[str, object], key: str) -> int | None:
    """Attribute `key` as a token count, None when absent: an int, an integral float, or a decimal string."""
    value = attributes.get(key)
    return None if value is None else _whole(value, key)


def _whole(value: object, key: str) -> int:
    """A non-negative integer from an int, an integral float, or a string of decimal digits (older versions)."""
    if type(value) is int and value >= 0:
        return value
    if type(value) is float and value >= 0 and value.is_integer() and value <= 2**63:
        return int(value)
    if type(value) is str:
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            return int(text)
    raise _Bad(f"{key} is not a count: {_brief(value)}")


def _number(value: object, key: str) -> float:
    """A finite number from an int, a float, or a decimal string (older versions)."""
    number: float | None = None
    if type(value) is int or type(value) is float:
        number = float(value)
    elif type(value) is str and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise _Bad(f"{key} is not a number: {_brief(value)}")
    return number


def _time_us(record: _Record) -> int:
    """When the call was made: `event.timestamp` (ISO 8601), else the record's time, else when it was observed."""
    stamp = record.attributes.get("event.timestamp")
    if stamp is not None:
        try:
            moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            micros = to_micros(moment)
        except (ValueError, OverflowError):
            raise _Bad(f"event.timestamp is not an ISO 8601 time with an offset: {_brief(stamp)}") from None
    else:
        nanos = record.time_ns or record.observed_ns
        if not nanos:
            raise _Bad("the record has no time")
        micros = nanos // 1000
    if not 0 <= micros <= MAX_MICROS:
        raise _Bad(f"time {micros} µs is out of range")
    return micros


def _fallback_key(record: _Record, micros: int) -> str:
    """A key for an event without `request_id`: a hash of its session and its place in it, stable across retries.

    The place is `event.sequence` when given, else the call's time in microseconds.
    """
    session = str(record.attributes.get("session.id") or "")
    sequence = record.attributes.get("event.sequence")
    place = f"seq:{sequence}" if sequence is not None else f"us:{micros}"
    digest = hashlib.sha256(f"{session}\0{place}".encode()).hexdigest()[:32]
    return f"{CLAUDE_CODE}:{digest}"


def _name(record: _Record) -> str:
    return _text(record.attributes.get("request_id")) or "without request_id"


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def _brief(value: object) -> str:
    return repr(value)[:40]


# --- protobuf ---------------------------------------------------------------------------------


def _from_protobuf(body: bytes) -> list[_Record]:
    """The records of a protobuf body (the full OTLP schema: log events are few, one per call)."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # upb raises DecodeError, but any failure means the same: a bad body
        raise DecodeError(f"body is not an OTLP protobuf ExportLogsServiceRequest: {exc}") from None
    records: list[_Record] = []
    for resource_logs in request.resource_logs:
        resource = _all_proto_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for log in scope_logs.log_records:
                attributes = _all_proto_attributes(log.attributes)
                body_value = _proto_value(log.body) if log.HasField("body") else None
                records.append(
                    _Record(body_value, attributes, log.time_unix_nano, log.observed_time_unix_nano, resource)
                )
    return records


# --- JSON -------------------------------------------------------------------------------------


def _from_json(body: bytes) -> list[_Record]:
    return _json_document(body, _json_records)


def _json_records(request: dict[str, Any]) -> Iterator[_Record]:
    for resource_logs in _array(_field(request, "resourceLogs", "resource_logs")):
        resource_logs = _object(resource_logs)
        resource = _object(_field(resource_logs, "resource", "resource") or {})
        resource_attributes = _json_attributes(_field(resource, "attributes", "attributes"))
        for scope_logs in _array(_field(resource_logs, "scopeLogs", "scope_logs")):
            for log in _array(_field(_object(scope_logs), "logRecords", "log_records")):
                log = _object(log)
                yield _Record(
                    _json_value(_field(log, "body", "body")),
                    _json_attributes(_field(log, "attributes", "attributes")),
                    _integer(_field(log, "timeUnixNano", "time_unix_nano") or 0, _UINT64),
                    _integer(_field(log, "observedTimeUnixNano", "observed_time_unix_nano") or 0, _UINT64),
                    resource_attributes,
                )
