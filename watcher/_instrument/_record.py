"""Turns one billed response's usage into one cost span."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..pricing import PriceTable, TokenUsage
from ._allowance import Reservation
from ._context import Dimensions
from ._dimensions import DimensionPolicy
from ._failures import report_failure
from ._pending import Pending
from ._tracer import TracerChoice

__all__ = ["CallInfo", "Recorder", "field_of"]

Attributes = dict[str, AttributeValue]


def field_of(obj: object, name: str) -> Any:
    """`obj[name]` for a dict from JSON, the field `name` of an SDK model; None when absent.

    Runs for every stream event, so it avoids the slow paths: an ABC check for mappings, and
    pydantic's `__getattr__`, which raises and catches for a field the model does not have.
    A model's fields are in its `__dict__`; other objects fall back to `getattr`.
    """
    if type(obj) is dict:
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if type(fields) is dict:
        return fields.get(name)
    return getattr(obj, name, None)


@dataclass(slots=True)
class CallInfo:
    """What the hook knows of a call before its response arrives."""

    request_model: str | None
    request_type: str
    platform: str
    start_ns: int
    stream: bool = False
    parent: otel_context.Context = field(default_factory=otel_context.get_current)
    batch_id: str | None = None
    content: Attributes | None = None
    input_tokens_bound: int = 0  # streams: the request's input estimated from its size, used if no usage comes
    reservation: Reservation | None = None  # the worst case taken from this process's allowance, settled here
    holder: str | None = None  # the allowance the cost is credited to at the daemon
    endpoint: str | None = None  # Bedrock or Vertex AI: "global" or "regional" (priced with a premium)
    dimensions: Dimensions | None = None  # the `watcher.attributes` blocks' values; baggage is read from `parent`


def _token_attributes(usage: TokenUsage) -> Attributes:
    cache_write = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    return {
        "gen_ai.usage.input_tokens": usage.input_tokens + usage.cache_read_tokens + cache_write,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_write.input_tokens": cache_write,
        "anthropic.usage.uncached_input_tokens": usage.input_tokens,
        "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        "anthropic.usage.server_tool_use.web_search_requests": usage.web_search_requests,
    }


def _optional_attributes(usage: TokenUsage) -> Attributes:
    found: Attributes = {}
    if usage.service_tier:
        found["anthropic.response.service_tier"] = usage.service_tier
    if usage.inference_geo:
        found["anthropic.usage.inference_geo"] = usage.inference_geo
    if usage.speed:
        found["anthropic.usage.speed"] = usage.speed
    return found


class Recorder:
    """Prices usage and emits the cost span; built once by `instrument()`.

    `record` is called on the application's thread right after a response (or a stream's end).
    It only queues what it was given, with the time: pricing and span building happen on a
    background worker (`Pending`) with the recorded start and end times and parent context, so
    the span is the same as if built inline. It never raises and never blocks on I/O.
    """

    def __init__(
        self,
        tracer: TracerChoice,
        prices: PriceTable,
        default_request_type: str,
        capture_content: bool,
        clock_ns: Callable[[], int] = time.time_ns,
        dimensions: DimensionPolicy | None = None,
    ) -> None:
        self.tracer = tracer
        self.dimensions = dimensions if dimensions is not None else DimensionPolicy()
        self.clock_ns = clock_ns
        self.prices = prices
        self.default_request_type = default_request_type
        self.capture_content = capture_content
        self.request_content: Callable[[Mapping[str, Any] | None], Attributes | None] = (
            _request_content if capture_content else _no_content
        )
        self.response_content: Callable[[object], Attributes] = (
            _response_content if capture_content else _no_response_content
        )
        self.pending = Pending(self._process)

    def record(
        self,
        call: CallInfo,
        usage_obj: object,
        *,
        response_id: str | None,
        response_model: str | None,
        extra: Attributes | None = None,
        error: bool = False,
        estimate: str | None = None,
    ) -> None:
        """Queues the cost span of `usage_obj` (an SDK Usage or its JSON) for `call`, ended now.

        `estimate`, when given, is the flag saying why the usage is a guess rather than the API's
        report: the span is then marked estimated and carries that flag first.
        """
        self.pending.put((call, usage_obj, response_id, response_model, extra, error, estimate, self.clock_ns()))

    def _process(self, item: tuple[Any, ...]) -> None:
        """Emits one span, then settles the call's reservation to its cost (to all of it if that is unknown)."""
        call: CallInfo = item[0]
        cost: float | None = None
        try:
            cost = self._emit(*item)
        except Exception as exc:
            report_failure("record a cost span", exc)
        if call.reservation is not None:
            call.reservation.settle(call.reservation.amount if cost is None else cost)

    def _emit(
        self,
        call: CallInfo,
        usage_obj: object,
        response_id: str | None,
        response_model: str | None,
        extra: Attributes | None,
        error: bool,
        estimate: str | None,
        end_ns: int,
    ) -> float | None:
        """Starts the span with what a sampler may decide on, and only if it is recording prices the usage and
        adds the rest: a span the application's sampler drops costs no pricing and no attribute building
        (unless the call holds a reservation, which needs its cost). Returns the cost in USD, when priced.

        A failure while building leaves the span unended, so it is never exported half-made.
        """
        model = response_model or call.request_model or "unknown"
        span = self.tracer.get().start_span(
            f"chat {call.request_model or model}",
            context=call.parent,
            kind=SpanKind.CLIENT,
            attributes=_sampling_attributes(call),
            start_time=call.start_ns,
        )
        if not span.is_recording():
            if call.reservation is None:
                return None
            return float(self.prices.cost(model, _usage(call, usage_obj)).total_usd)
        attributes = self._attributes(call, model, usage_obj, response_id, response_model, extra, estimate)
        span.set_attributes(attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "the response stream did not finish"))
        span.end(end_time=end_ns)
        cost = attributes["gen_ai.usage.cost.amount"]
        return cost if isinstance(cost, float) else None

    def _attributes(
        self,
        call: CallInfo,
        model: str,
        usage_obj: object,
        response_id: str | None,
        response_model: str | None,
        extra: Attributes | None,
        estimate: str | None,
    ) -> Attributes:
        """The span's priced attributes, beyond those it was started with."""
        usage = _usage(call, usage_obj)
        cost = self.prices.cost(model, usage)
        flags = (estimate, *cost.flags) if estimate else cost.flags
        attributes: Attributes = {
            **_token_attributes(usage),
            **_optional_attributes(usage),
            "gen_ai.usage.cost.amount": float(cost.total_usd),
            "gen_ai.usage.cost.currency": "USD",
            "gen_ai.usage.cost.source": "local",
            "watcher.cost.input_usd": float(cost.input_usd),
            "watcher.cost.output_usd": float(cost.output_usd),
            "watcher.cost.cache_read_usd": float(cost.cache_read_usd),
            "watcher.cost.cache_write_usd": float(cost.cache_write_usd),
            "watcher.cost.tools_usd": float(cost.tools_usd),
            "watcher.cost.estimated": cost.estimated or estimate is not None,
            "watcher.pricing.version": cost.pricing_version,
            "watcher.pricing.model": cost.model,
            "watcher.platform": call.platform,
        }
        if call.endpoint:
            attributes["watcher.endpoint.scope"] = call.endpoint
        if flags:
            attributes["watcher.cost.flags"] = list(flags)
        if cost.cache_read_savings_usd:
            attributes["watcher.cache.read_savings_usd"] = float(cost.cache_read_savings_usd)
        if cost.cache_write_premium_usd:
            attributes["watcher.cache.write_premium_usd"] = float(cost.cache_write_premium_usd)
        if cost.batch_savings_usd:
            attributes["watcher.batch.savings_usd"] = float(cost.batch_savings_usd)
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if call.stream:
            attributes["gen_ai.request.stream"] = True
        if call.batch_id:
            attributes["watcher.batch.id"] = call.batch_id
        if call.holder:
            attributes["watcher.allowance.holder"] = call.holder
        attributes.update(self.dimensions.attributes(call.dimensions, call.parent))
        if call.content:
            attributes.update(call.content)
        if extra:
            attributes.update(extra)
        return attributes


def _usage(call: CallInfo, usage_obj: object) -> TokenUsage:
    if usage_obj is None:
        return TokenUsage(endpoint=call.endpoint)
    return TokenUsage.from_anthropic(usage_obj, batch=call.batch_id is not None, endpoint=call.endpoint)


def _sampling_attributes(call: CallInfo) -> Attributes:
    """What the span carries from its start, for samplers: the GenAI conventions ask for the operation, provider
    and request model at creation; the request type is watcher's own obvious key."""
    attributes: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "watcher.request_type": call.request_type,
    }
    if call.request_model:
        attributes["gen_ai.request.model"] = call.request_model
    return attributes


def _no_content(body: Mapping[str, Any] | None) -> None:
    return None


def _no_response_content(message: object) -> Attributes:
    return {}


def _request_content(body: Mapping[str, Any] | None) -> Attributes | None:
    """The prompt as GenAI-convention JSON attributes; only used with WATCHER_CAPTURE_CONTENT=true."""
    if not body:
        return None
    found: Attributes = {"gen_ai.input.messages": json.dumps(body.get("messages"), default=str)}
    if body.get("system") is not None:
        found["gen_ai.system_instructions"] = json.dumps(body.get("system"), default=str)
    return found


def _response_content(message: object) -> Attributes:
    """The response content blocks as JSON; only used with WATCHER_CAPTURE_CONTENT=true."""
    content = field_of(message, "content")
    if content is None:
        return {}
    blocks = [block if isinstance(block, Mapping) else block.model_dump(mode="json") for block in content]
    return {"gen_ai.output.messages": json.dumps(blocks, default=str)}
