"""OTLP trace export bodies (protobuf or JSON) to light span records holding only what the daemon reads."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from watcher.daemon._fast import watcher_entry
from watcher.daemon._normalize import resource_place
from watcher.daemon._otlp import (
    ALLOWANCE_HOLDER,
    BOOL_KEYS,
    DOUBLE_KEYS,
    INT_KEYS,
    RESOURCE_KEYS,
    SPAN_KEYS,
    SpanRecord,
    TrimmedRequest,
)
from watcher.exceptions import WatcherError
from watcher.ledger import Entry

__all__ = ["DecodeError", "SpanRecord", "decode_request"]

T = TypeVar("T")

_PROTOBUF = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON = "application/json"
_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})


def _expected_field(key: str) -> str:
    """The AnyValue field the value of span attribute `key` is expected in."""
    if key in INT_KEYS:
        return "int_value"
    if key in DOUBLE_KEYS:
        return "double_value"
    return "bool_value" if key in BOOL_KEYS else "string_value"


# Each wanted key with the field its value is expected in, so that reading it takes one access.
_SPAN_FIELDS = tuple((key, _expected_field(key)) for key in sorted(SPAN_KEYS))
_RESOURCE_FIELDS = tuple((key, "string_value") for key in sorted(RESOURCE_KEYS))
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class DecodeError(WatcherError):
    """The request body is not a valid OTLP trace export in the declared format; the server answers 400."""


def decode_request(
    body: bytes,
    content_type: str,
    *,
    default_request_type: str = "unlabeled",
    fast: bool = True,
    holders: dict[str, str] | None = None,
) -> list[SpanRecord | Entry]:
    """Every span of an uncompressed OTLP `ExportTraceServiceRequest` body, in order.

    `content_type` is the request's header: `application/x-protobuf` (or `application/protobuf`)
    or `application/json`, parameters such as `; charset=utf-8` ignored. Raises `DecodeError` for
    any other type and for a body that does not decode; never raises anything else.
    watcher's own cost spans in protobuf come out as finished Entries, exactly as `normalize`
    would make them (with `default_request_type` for a span without one): the hot path, see
    `_fast`. Every other span comes out as a SpanRecord for `normalize`; with `fast=False`
    every span does (the general path, which the fast one is tested against). For the Entries,
    the allowance each names (`watcher.allowance.holder`) goes into `holders`, by entry key, when
    given: SpanRecords keep theirs among their attributes.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PROTOBUF:
        return _from_protobuf(body, default_request_type if fast else None, holders)
    if media == _JSON:
        return _from_json(body)
    raise DecodeError(f"unsupported content type {content_type!r}: send application/x-protobuf or application/json")


# --- protobuf ---------------------------------------------------------------------------------


def _from_protobuf(
    body: bytes, default_request_type: str | None, holders: dict[str, str] | None = None
) -> list[SpanRecord | Entry]:
    """The spans of a protobuf body; watcher's cost spans as Entries unless `default_request_type` is None."""
    request: Any = TrimmedRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # upb raises DecodeError, but any failure means the same: a bad body
        raise DecodeError(f"body is not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    records: list[SpanRecord | Entry] = []
    append = records.append
    for resource_spans in request.resource_spans:
        resource = _proto_attributes(resource_spans.resource.attributes, _RESOURCE_FIELDS)
        place = resource_place(resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if default_request_type is not None:
                    entry = watcher_entry(span.attributes, span, place, default_request_type)
                    if entry is not None:
                        append(entry)
                        holder = span.attributes.get(ALLOWANCE_HOLDER)
                        if holder is not None and holders is not None and holder.string_value:
                            holders[entry.key] = holder.string_value
                        continue
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                attributes = _proto_attributes(span.attributes, _SPAN_FIELDS)
                append(SpanRecord(trace_id, span_id, span.name, span.end_time_unix_nano, attributes, resource))
    return records


def _proto_attributes(attributes: Mapping[str, Any], wanted: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """The wanted attributes as plain values: a map lookup each, no Python work for the others.

    `wanted` pairs each key with the AnyValue field its value usually is in. Reading that field
    is one access; a falsy result may be a zero or a value of another type, so only then is its
    presence checked, and only a value of another type is read generically.
    """
    found: dict[str, object] = {}
    get = attributes.get
    for key, field in wanted:
        value = get(key)
        if value is not None:
            plain = getattr(value, field)
            found[key] = plain if plain or value.HasField(field) else _proto_value(value)
    return found


def _proto_value(value: Any) -> object:
    kind = value.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return [_proto_value(item) for item in value.array_value.values]
    return None  # unset, or bytes or a key-value list (skipped by the trimmed schema)


# --- JSON -------------------------------------------------------------------------------------


def _from_json(body: bytes) -> list[SpanRecord | Entry]:
    return _json_document(body, _json_spans)


def _json_document(body: bytes, walk: Callable[[dict[str, Any]], Iterable[T]]) -> list[T]:
    """What `walk` finds in the OTLP/JSON export `body` (traces, logs or metrics); DecodeError for a body that is
    not a JSON object, or nests too deeply."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    try:
        return list(walk(_object(document)))
    except RecursionError:
        raise DecodeError("body nests values too deeply") from None


def _json_spans(request: dict[str, Any]) -> Iterable[SpanRecord]:
    for resource_spans in _array(_field(request, "resourceSpans", "resource_spans")):
        resource_spans = _object(resource_spans)
        resource = _object(_field(resource_spans, "resource", "resource") or {})
        resource_attributes = _json_attributes(_field(resource, "attributes", "attributes"), RESOURCE_KEYS)
        for scope_spans in _array(_field(resource_spans, "scopeSpans", "scope_spans")):
            for span in _array(_field(_object(scope_spans), "spans", "spans")):
                yield _json_span(_object(span), resource_attributes)


def _json_span(span: dict[str, Any], resource: dict[str, object]) -> SpanRecord:
    name = _field(span, "name", "name") or ""
    if not isinstance(name, str):
        raise DecodeError(f"span name must be a string, got {type(name).__name__}")
    return SpanRecord(
        trace_id=_hex_id(_field(span, "traceId", "trace_id")),
        span_id=_hex_id(_field(span, "spanId", "span_id")),
        name=name,
        end_time_ns=_integer(_field(span, "endTimeUnixNano", "end_time_unix_nano") or 0, _UINT64),
        attributes=_json_attributes(_field(span, "attributes", "attributes"), SPAN_KEYS),
        resource=resource,
    )


def _json_attributes(pairs: object, wanted: frozenset[str] | None = None) -> dict[str, object]:
    """The JSON key-value list `pairs` as a dict: the keys in `wanted`, or every key when it is None."""
    found: dict[str, object] = {}
    for pair in _array(pairs):
        pair = _object(pair)
        key = pair.get("key")
        if not isinstance(key, str):
            raise DecodeError("attribute key must be a string")
        if wanted is None or key in wanted:
            found[key] = _json_value(pair.get("value"))
    return found


def _all_proto_attributes(pairs: Iterable[Any]) -> dict[str, object]:
    """Every protobuf key-value pair of `pairs` as a dict (logs and metrics keep all their attributes)."""
    return {pair.key: _proto_value(pair.value) for pair in pairs}


def _json_value(value: object) -> object:
    """An OTLP/JSON AnyValue as a plain value; None when unset or of a kind the daemon never reads."""
    if value is None:
        return None
    value = _object(value)
    if (text := _field(value, "stringValue", "string_value")) is not None:
        if not isinstance(text, str):
            raise DecodeError("stringValue must be a string")
        return _utf8(text)
    if (flag := _field(value, "boolValue", "bool_value")) is not None:
        if not isinstance(flag, bool):
            raise DecodeError("boolValue must be true or false")
        return flag
    if (number := _field(value, "intValue", "int_value")) is not None:
        return _integer(number, _INT64)
    if (number := _field(value, "doubleValue", "double_value")) is not None:
        return _double(number)
    if (array := _field(value, "arrayValue", "array_value")) is not None:
        return [_json_value(item) for item in _array(_field(_object(array), "values", "values"))]
    return None


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON (lowerCamelCase) name or its proto name; null counts as absent."""
    found = obj.get(camel)
    return obj.get(snake) if found is None else found


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _array(value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"expected a JSON array, got {type(value).__name__}")
    return value


def _integer(value: object, bounds: tuple[int, int]) -> int:
    """A JSON int64/uint64: a number or a decimal string, as protobuf's JSON mapping allows."""
    if isinstance(value, bool):
        raise DecodeError("integer value must not be a boolean")
    try:
        if isinstance(value, float):
            number = int(value) if value.is_integer() else None
        else:
            number = int(value) if isinstance(value, int | str) else None
    except (ValueError, OverflowError):
        number = None
    if number is None or not bounds[0] <= number <= bounds[1]:
        raise DecodeError(f"not a 64-bit integer: {str(value)[:40]!r}")
    return number


def _double(value: object) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, value)
    if isinstance(value, str):
        special = _SPECIAL_DOUBLES.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise DecodeError(f"not a double: {str(value)[:40]!r}")


def _utf8(text: str) -> str:
    """`text` if it is valid Unicode: JSON may smuggle lone surrogates that protobuf would reject."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise DecodeError("string value is not valid UTF-8") from None
    return text


def _hex_id(value: object) -> str:
    """A trace or span id: hex in OTLP/JSON (not base64), normalised to lower case."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            pass
    raise DecodeError(f"trace and span ids must be hex strings, got {str(value)[:40]!r}")
