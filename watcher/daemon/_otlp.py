"""What the daemon reads of an OTLP trace export: attribute names, and a protobuf schema trimmed to them."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import Message

__all__ = [
    "ALLOWANCE_HOLDER",
    "BATCH_ID",
    "BATCH_SAVINGS_USD",
    "BOOL_KEYS",
    "CACHE_READ",
    "CACHE_READ_SAVINGS_USD",
    "CACHE_READ_USD",
    "CACHE_WRITE",
    "CACHE_WRITE_PREMIUM_USD",
    "CACHE_WRITE_USD",
    "COST",
    "COST_KEYS",
    "DOUBLE_KEYS",
    "ENVIRONMENT",
    "ESTIMATED",
    "INFERENCE_GEO",
    "INPUT",
    "INPUT_USD",
    "INT_KEYS",
    "OUTPUT",
    "OUTPUT_USD",
    "PLATFORM",
    "PRICING_VERSION",
    "PROVIDER",
    "RECORDED_USD_KEYS",
    "REQUEST_MODEL",
    "REQUEST_TYPE",
    "RESOURCE_KEYS",
    "RESPONSE_ID",
    "RESPONSE_MODEL",
    "SERVICE_NAME",
    "SERVICE_TIER",
    "SPAN_KEYS",
    "SPEED",
    "SYSTEM",
    "TOOLS_USD",
    "UNCACHED_INPUT",
    "USAGE_KEYS",
    "WEB_SEARCHES",
    "WRITE_1H",
    "WRITE_5M",
    "SpanRecord",
]

PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # the provider's name in conventions before gen_ai.provider.name
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"

# Each token count, with its names in order of preference: current convention first.
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
UNCACHED_INPUT = "anthropic.usage.uncached_input_tokens"
WRITE_5M = "anthropic.usage.cache_creation.ephemeral_5m_input_tokens"
WRITE_1H = "anthropic.usage.cache_creation.ephemeral_1h_input_tokens"
WEB_SEARCHES = "anthropic.usage.server_tool_use.web_search_requests"

SERVICE_TIER = "anthropic.response.service_tier"
INFERENCE_GEO = "anthropic.usage.inference_geo"
SPEED = "anthropic.usage.speed"

COST = "gen_ai.usage.cost.amount"
INPUT_USD = "watcher.cost.input_usd"
OUTPUT_USD = "watcher.cost.output_usd"
CACHE_READ_USD = "watcher.cost.cache_read_usd"
CACHE_WRITE_USD = "watcher.cost.cache_write_usd"
TOOLS_USD = "watcher.cost.tools_usd"
COST_KEYS = (COST, INPUT_USD, OUTPUT_USD, CACHE_READ_USD, CACHE_WRITE_USD, TOOLS_USD)  # total first
CACHE_READ_SAVINGS_USD = "watcher.cache.read_savings_usd"
CACHE_WRITE_PREMIUM_USD = "watcher.cache.write_premium_usd"
BATCH_SAVINGS_USD = "watcher.batch.savings_usd"
RECORDED_USD_KEYS = (*COST_KEYS, CACHE_READ_SAVINGS_USD, CACHE_WRITE_PREMIUM_USD, BATCH_SAVINGS_USD)
"""Every USD amount a watcher cost span records: the cost (total first), then the savings counterfactuals."""
ESTIMATED = "watcher.cost.estimated"
PRICING_VERSION = "watcher.pricing.version"
REQUEST_TYPE = "watcher.request_type"
PLATFORM = "watcher.platform"
BATCH_ID = "watcher.batch.id"
ALLOWANCE_HOLDER = "watcher.allowance.holder"
"""The id of the allowance a call's cost was reserved from (docs/enforcement.md): its spend is credited there."""

SERVICE_NAME = "service.name"
ENVIRONMENT = ("deployment.environment.name", "deployment.environment")

USAGE_KEYS = frozenset((*INPUT, *OUTPUT, *CACHE_READ, *CACHE_WRITE, UNCACHED_INPUT, WRITE_5M, WRITE_1H))
"""A span carrying any of these claims GenAI usage."""

SPAN_KEYS = USAGE_KEYS | {
    PROVIDER,
    SYSTEM,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    RESPONSE_ID,
    WEB_SEARCHES,
    SERVICE_TIER,
    INFERENCE_GEO,
    SPEED,
    *RECORDED_USD_KEYS,
    ESTIMATED,
    PRICING_VERSION,
    REQUEST_TYPE,
    PLATFORM,
    BATCH_ID,
    ALLOWANCE_HOLDER,
}
"""Every span attribute normalisation reads; the decoder keeps these and drops the rest."""

INT_KEYS = USAGE_KEYS | {WEB_SEARCHES}
DOUBLE_KEYS = frozenset(RECORDED_USD_KEYS)
BOOL_KEYS = frozenset((ESTIMATED,))
"""The span attributes expected as int, double and bool values; all others are strings."""

RESOURCE_KEYS = frozenset((SERVICE_NAME, *ENVIRONMENT))
"""Every resource attribute normalisation reads."""


# --- the trimmed schema -----------------------------------------------------------------------
# ExportTraceServiceRequest with only the fields the daemon reads, same numbers and wire types;
# upb skips the rest in C. KeyValue lists become maps (a KeyValue is a map entry on the wire), so
# a wanted key is found by a lookup instead of by reading every attribute's key in Python.

_PACKAGE = "watcher.daemon.otlp"
_T = FieldDescriptorProto
# message -> its fields: (name, number, scalar type or message name, repeated)
_MESSAGES: dict[str, tuple[tuple[str, int, int | str, bool], ...]] = {
    "AnyValue": (
        ("string_value", 1, _T.TYPE_STRING, False),
        ("bool_value", 2, _T.TYPE_BOOL, False),
        ("int_value", 3, _T.TYPE_INT64, False),
        ("double_value", 4, _T.TYPE_DOUBLE, False),
        ("array_value", 5, "ArrayValue", False),
    ),  # kvlist_value (6) and bytes_value (7) are never read: skipped, the value reads as unset
    "ArrayValue": (("values", 1, "AnyValue", True),),
    "Resource": (("attributes", 1, "map", True),),
    "Span": (
        ("trace_id", 1, _T.TYPE_BYTES, False),
        ("span_id", 2, _T.TYPE_BYTES, False),
        ("name", 5, _T.TYPE_STRING, False),
        ("end_time_unix_nano", 8, _T.TYPE_FIXED64, False),
        ("attributes", 9, "map", True),
    ),
    "ScopeSpans": (("spans", 2, "Span", True),),
    "ResourceSpans": (("resource", 1, "Resource", False), ("scope_spans", 2, "ScopeSpans", True)),
    "ExportTraceServiceRequest": (("resource_spans", 1, "ResourceSpans", True),),
}


def _add_field(
    message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int | str, repeated: bool
) -> None:
    label = _T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL
    field = message.field.add(name=name, number=number, label=label)
    if isinstance(kind, int):
        field.type = kind
        return
    field.type = _T.TYPE_MESSAGE
    if kind == "map":
        entry = message.nested_type.add(name="AttributesEntry")
        entry.options.map_entry = True
        _add_field(entry, "key", 1, _T.TYPE_STRING, False)
        _add_field(entry, "value", 2, "AnyValue", False)
        kind = f"{message.name}.AttributesEntry"
    field.type_name = f".{_PACKAGE}.{kind}"


def _trimmed_request() -> type[Message]:
    """The message class of the trimmed ExportTraceServiceRequest, in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name="watcher/daemon/otlp.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field in fields:
            _add_field(message, *field)
    any_value = file.message_type[0]
    any_value.oneof_decl.add(name="value")
    for field in any_value.field:
        field.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    request: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest")
    )
    return request


TrimmedRequest = _trimmed_request()
"""Parses OTLP protobuf ExportTraceServiceRequest bytes, keeping only what the daemon reads."""


@dataclass(slots=True)
class SpanRecord:
    """One exported span, reduced to what normalisation reads.

    `trace_id` and `span_id` are lower-case hex. `attributes` holds only the keys in
    `SPAN_KEYS` and `resource` only those in `RESOURCE_KEYS`, each value a str, bool, int, float,
    list of those, or None; spans of one resource share one `resource` dict, which is never mutated.
    """

    trace_id: str
    span_id: str
    name: str
    end_time_ns: int
    attributes: dict[str, object]
    resource: dict[str, object]
