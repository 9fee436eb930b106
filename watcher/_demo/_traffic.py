"""`watcher traffic`: endless demo spend through the real SDK, the hook and OTLP, as several services would send it."""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ..settings import Settings
from ._service_providers import ServiceProviders

__all__ = ["ROTATION", "Call", "TrafficStats", "run_traffic"]

log = logging.getLogger("watcher.traffic")
_OTEL_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
HI = [{"role": "user", "content": "Hello from watcher traffic."}]


@dataclass(frozen=True)
class Call:
    """One kind of call the generator makes: who makes it, what it is, and the usage the fake API reports."""

    service: str
    request_type: str
    model: str
    kind: str  # plain | stream | batch
    usage: Mapping[str, Any]


ROTATION: tuple[Call, ...] = (
    Call("checkout-api", "extraction", "claude-haiku-4-5", "plain", {"input_tokens": 1800, "output_tokens": 350}),
    Call("support-bot", "summarise", "claude-sonnet-4-6", "stream", {"input_tokens": 9000, "output_tokens": 1200}),
    Call(
        "checkout-api",
        "extraction",
        "claude-haiku-4-5",
        "plain",
        {"input_tokens": 200, "output_tokens": 340, "cache_read_input_tokens": 1600, "cache_creation_input_tokens": 0},
    ),
    Call(
        "research-agent",
        "agent",
        "claude-opus-4-7",
        "plain",
        {"input_tokens": 25000, "output_tokens": 4000, "server_tool_use": {"web_search_requests": 3}},
    ),
    Call(
        "support-bot",
        "summarise",
        "claude-sonnet-4-6",
        "stream",
        {
            "input_tokens": 500,
            "output_tokens": 1100,
            "cache_creation_input_tokens": 8500,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 8500},
        },
    ),
    Call("checkout-api", "extraction", "claude-haiku-4-5", "plain", {"input_tokens": 2400, "output_tokens": 420}),
    Call("nightly-etl", "backfill", "claude-haiku-4-5", "batch", {"input_tokens": 1800, "output_tokens": 350}),
    Call("support-bot", "summarise", "claude-sonnet-4-6", "stream", {"input_tokens": 7000, "output_tokens": 900}),
    Call(
        "checkout-api",
        "extraction",
        "claude-haiku-4-5",
        "plain",
        {"input_tokens": 150, "output_tokens": 300, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 0},
    ),
    Call("research-agent", "experiment", "claude-nova-1", "plain", {"input_tokens": 1000, "output_tokens": 100}),
)
"""The calls made in turn: four request types and a model unknown to the price table, over four services."""

BATCH_SIZE = 4


@dataclass
class TrafficStats:
    """What a run did: calls made, calls refused by a kill switch, and calls per request type."""

    calls: int = 0
    refused: int = 0
    by_request_type: Counter[str] = field(default_factory=Counter)


def _exporter(settings: Settings) -> SpanExporter:
    """OTLP/HTTP to the standard OTEL_EXPORTER_OTLP_* endpoint when one is set (a Collector), else to the daemon."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if any(os.environ.get(var) for var in _OTEL_ENDPOINT_VARS):
        return OTLPSpanExporter()
    token = settings.token.get_secret_value() if settings.token else None
    headers = {"authorization": f"Bearer {token}"} if token else None
    return OTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=headers)


def _scaled(usage: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """`usage` with every token count times `factor` (nested breakdowns too); request counts unchanged."""
    scaled: dict[str, Any] = {}
    for key, value in usage.items():
        if isinstance(value, Mapping):
            scaled[key] = _scaled(value, factor)
        elif key.endswith("_tokens") and isinstance(value, int):
            scaled[key] = round(value * factor)
        else:
            scaled[key] = value
    return scaled


def _make(client: Any, fake: Any, call: Call, usage: dict[str, Any]) -> None:
    """Makes one call through the real SDK, with the fake API answering `usage`."""
    from ..testing import FakeReply

    if call.kind == "batch":
        fake.reply(*(FakeReply(usage=usage) for _ in range(BATCH_SIZE)))
        params = {"model": call.model, "max_tokens": 512, "messages": HI}
        requests = [{"custom_id": f"r{i}", "params": params} for i in range(BATCH_SIZE)]
        batch = client.messages.batches.create(requests=requests)
        list(client.messages.batches.results(batch.id))
        return
    fake.reply(FakeReply(usage=usage))
    if call.kind == "stream":
        with client.messages.stream(model=call.model, max_tokens=2048, messages=HI) as stream:
            stream.get_final_message()
    else:
        client.messages.create(model=call.model, max_tokens=2048, messages=HI)


def run_traffic(
    *,
    rate: float = 2.0,
    count: int | None = None,
    settings: Settings | None = None,
    seed: int | None = None,
    rotation: Sequence[Call] = ROTATION,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TrafficStats:
    """Makes `count` calls (forever when None), `rate` a second, through the hook; returns what it did.

    Blocks; meant for a process of its own (it instruments the SDK for the whole process). It
    starts a FakeAnthropic on loopback, so no API key is needed and nothing is billed. Calls
    follow `rotation` with token counts jittered by up to 30% (`seed` for a repeatable run).
    Spans go to OTEL_EXPORTER_OTLP_ENDPOINT when set (a Collector), else to WATCHER_ENDPOINT;
    kill switches are polled from WATCHER_ENDPOINT either way. A refused call (BudgetExceeded)
    is logged and counted, and the loop goes on, so an engaged kill switch shows. On return
    every span has been exported. `clock` and `sleep` pace the loop; tests pass their own.
    Raises ValueError for a rate that is not positive.
    """
    if rate <= 0:
        raise ValueError(f"rate must be above 0 calls a second, got {rate}")
    import anthropic

    from .. import BudgetExceeded, flush, instrument, request_type, uninstrument
    from ..testing import FakeAnthropic

    settings = settings if settings is not None else Settings()
    services = list(dict.fromkeys(call.service for call in rotation))
    providers = ServiceProviders(services, lambda: _exporter(settings), settings.export_delay_ms)
    rng = random.Random(seed)
    stats = TrafficStats()
    instrument(settings, tracer_provider=providers)
    try:
        with (
            FakeAnthropic() as fake,
            anthropic.Anthropic(base_url=fake.base_url, api_key="traffic", max_retries=0, open_telemetry=False) as sdk,
        ):
            log.info("watcher traffic: %s calls a second against a fake Anthropic API at %s", rate, fake.base_url)
            start = clock()
            while count is None or stats.calls < count:
                sleep(max(0.0, start + stats.calls / rate - clock()))
                call = rotation[stats.calls % len(rotation)]
                stats.calls += 1
                stats.by_request_type[call.request_type] += 1
                try:
                    with providers.as_service(call.service), request_type(call.request_type):
                        _make(sdk, fake, call, _scaled(call.usage, rng.uniform(0.7, 1.3)))
                except BudgetExceeded as refused:
                    stats.refused += 1
                    log.warning("%s %s call refused: %s", call.service, call.request_type, refused)
                fake.clear()  # a refused call leaves its reply queued; a long run must not keep every request
                if stats.calls % 100 == 0:
                    log.info("watcher traffic: %d calls, %d refused by a kill switch", stats.calls, stats.refused)
        flush()
    finally:
        uninstrument()
        providers.shutdown()
    return stats
