"""OTLP trace encoding at the speed the hook needs, checked against the official encoder in tests.

The official encoder builds a protobuf object per attribute (about 4 µs each, some 130 µs for
one cost span); in a busy process that CPU is taken from the application's own threads. Cost
spans repeat most attribute values (provider, currency, models, request types, zero counts),
so this encoder writes the protobuf wire format directly and caches each encoded key/value
pair: a cost span encodes in a few microseconds. Same bytes on the wire as far as any OTLP
decoder can tell; `tests/test_otlp_encoding.py` proves it with hypothesis.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._failures import report_failure
from ._fork import in_child

if TYPE_CHECKING:
    from ._delivery import Delivery

__all__ = ["FastOTLPSpanExporter", "encode_spans"]

_MASK64 = (1 << 64) - 1
_CACHE_LIMIT = 8192
_kv_cache: dict[tuple[str, type, Any], bytes] = {}
_block_cache: dict[int, tuple[Resource, bytes]] = {}
_FLAG_HAS_IS_REMOTE, _FLAG_IS_REMOTE = 0x100, 0x200


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; `tag` is the field's wire tag byte (field << 3 | 2)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """The body of an AnyValue message, for every attribute type OpenTelemetry allows."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + _varint(value & _MASK64)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(_field(0x0A, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(0x0A, key.encode("utf-8")) + _field(0x12, _any_value(value))


def _attribute(tag: int, key: str, value: Any) -> bytes:
    """One repeated KeyValue field, cached when the value is hashable (most are repeats)."""
    try:
        cache_key = (key, type(value), value)
        cached = _kv_cache.get(cache_key)
    except TypeError:  # a list value: not hashable, not cached
        return _field(tag, _key_value(key, value))
    if cached is None or cached[0] != tag:
        if len(_kv_cache) >= _CACHE_LIMIT:
            _kv_cache.clear()
        cached = _kv_cache[cache_key] = _field(tag, _key_value(key, value))
    return cached


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    # The SDK's BoundedAttributes iterates through the Mapping ABC, slowly; its plain dict is
    # read directly when present (a copy of the mapping otherwise).
    plain = getattr(attributes, "_dict", None)
    items = plain.items() if isinstance(plain, dict) else dict(attributes).items()
    return b"".join([_attribute(tag, key, value) for key, value in items])


def _span_flags(span: ReadableSpan) -> int:
    parent = span.parent
    return _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if parent is not None and parent.is_remote else 0)


def _status(span: ReadableSpan) -> bytes:
    status = span.status
    body = b""
    if status.description:
        body += _field(0x12, status.description.encode("utf-8"))
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    return _field(0x7A, body)


def _events(span: ReadableSpan) -> bytes:
    out = b""
    for event in span.events:
        body = b"\x09" + struct.pack("<Q", event.timestamp) + _field(0x12, event.name.encode("utf-8"))
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out += _field(0x5A, body)
    return out


def _links(span: ReadableSpan) -> bytes:
    out = b""
    for link in span.links:
        context = link.context
        body = _field(0x0A, context.trace_id.to_bytes(16, "big")) + _field(0x12, context.span_id.to_bytes(8, "big"))
        if context.trace_state:
            body += _field(0x1A, context.trace_state.to_header().encode("utf-8"))
        body += _attributes(0x22, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        flags = _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if context.is_remote else 0)
        out += _field(0x6A, body + b"\x35" + struct.pack("<I", flags))
    return out


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None and span.start_time is not None and span.end_time is not None
    body = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        body.append(_field(0x1A, context.trace_state.to_header().encode("utf-8")))
    if span.parent is not None:
        body.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
    body.append(_field(0x2A, span.name.encode("utf-8")))
    body.append(b"\x30" + _varint(span.kind.value + 1))
    body.append(b"\x39" + struct.pack("<Q", span.start_time) + b"\x41" + struct.pack("<Q", span.end_time))
    body.append(_attributes(0x4A, span.attributes))
    if span.dropped_attributes:
        body.append(b"\x50" + _varint(span.dropped_attributes))
    body.append(_events(span))
    if span.dropped_events:
        body.append(b"\x60" + _varint(span.dropped_events))
    body.append(_links(span))
    if span.dropped_links:
        body.append(b"\x70" + _varint(span.dropped_links))
    body.append(_status(span))
    body.append(b"\x85\x01" + struct.pack("<I", _span_flags(span)))
    return b"".join(body)


def _resource(resource: Resource) -> bytes:
    cached = _block_cache.get(id(resource))
    if cached is None or cached[0] is not resource:
        if len(_block_cache) >= 64:
            _block_cache.clear()
        cached = _block_cache[id(resource)] = (resource, _field(0x0A, _attributes(0x0A, resource.attributes)))
    return cached[1]


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return _field(0x0A, b"")
    body = _field(0x0A, scope.name.encode("utf-8"))
    if scope.version:
        body += _field(0x12, scope.version.encode("utf-8"))
    return _field(0x0A, body + _attributes(0x1A, scope.attributes))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """A serialized ExportTraceServiceRequest for `spans`, grouped by resource and scope.

    Grouped by object identity: hashing a Resource serializes it to JSON, per span.
    """
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_field(0x12, _span(span)))
    out = []
    for resource, scopes in groups.values():
        body = _resource(resource)
        for scope, encoded in scopes.values():
            scope_body = _scope(scope) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(0x1A, scope.schema_url.encode("utf-8"))
            body += _field(0x12, scope_body)
        if resource.schema_url:
            body += _field(0x1A, resource.schema_url.encode("utf-8"))
        out.append(_field(0x0A, body))
    return b"".join(out)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The standard OTLP/HTTP exporter (endpoint, headers, TLS, compression, retries, timeouts
    from its arguments and the OTEL_* variables), with the fast encoder in front.

    Decided once, when built: if this version of the exporter has no sending client that takes
    serialized bytes, every export takes the standard path instead. `spool_through` hands
    every encoded request to a `Delivery` instead of the client's retries; `post_once` is how
    a Delivery sends, when this version's client has a transport (`can_post_once`). In a forked
    child the connections inherited from the parent are dropped, never shared with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        client = getattr(self, "_client", None)
        self._send = getattr(client, "export", None) if client is not None else None
        self._transport = getattr(client, "_transport", None)
        self.can_post_once = self._send is not None and all(
            hasattr(client, name) for name in ("_transport", "_endpoint", "_headers", "_timeout", "_compress")
        )
        self._ship: Callable[[bytes, int], bool] = self._send_with_retries
        in_child(self._forget_connections)

    @property
    def endpoint(self) -> str:
        """The URL export requests are posted to."""
        return str(self._endpoint)

    def spool_through(self, delivery: Delivery) -> None:
        """From now on, encoded requests go to `delivery`, which sends them once and keeps what fails."""
        self._ship = delivery.deliver

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._send is None or self._shutdown:
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except Exception as exc:
            report_failure("encode spans with its fast encoder (the standard one was used)", exc)
            return super().export(spans)
        return SpanExportResult.SUCCESS if self._ship(data, len(spans)) else SpanExportResult.FAILURE

    def _send_with_retries(self, data: bytes, count: int) -> bool:
        assert self._send is not None
        return bool(getattr(self._send(data), "success", False))

    def post_once(self, data: bytes, headers: Mapping[str, str]) -> int | None:
        """Posts one encoded request through the client's transport, with its headers and compression, plus `headers`.

        One attempt, and one more at once when the first failed at once on a connection error
        (a pooled connection the daemon closed when it restarted). The HTTP status, or None when
        no answer came in the client's timeout. Only when `can_post_once`.
        """
        client: Any = self._client
        body = client._compress(data)
        request = {"headers": {**client._headers, **headers}, "data": body, "timeout": client._timeout}
        started = time.monotonic()
        result = client._transport.request("POST", client._endpoint, **request)
        if (
            result.status_code is None
            and client._transport.is_connection_error(result.error)
            and time.monotonic() - started < min(1.0, client._timeout / 2)
        ):
            result = client._transport.request("POST", client._endpoint, **request)
        status: int | None = result.status_code
        return status

    def _forget_connections(self) -> None:
        close = getattr(self._transport, "close", None)
        if close is not None:
            close()
