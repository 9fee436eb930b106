"""watcher follows OpenTelemetry's conventions for instrumentations: an instrumentor, suppression, sampling."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Sequence
from pathlib import Path

import anthropic
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes
from packaging.requirements import Requirement

import watcher
from watcher.instrumentation import AnthropicSpendInstrumentor
from watcher.pricing import Cost, PriceTable, TokenUsage, load_price_table
from watcher.testing import FakeAnthropic, OTLPReceiver, SpanCapture

HI = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parent.parent


def call(fake_api: FakeAnthropic) -> None:
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)


def test_the_instrumentor_sends_spans_to_the_provider_it_is_given_until_uninstrumented(
    fake_api: FakeAnthropic,
) -> None:
    """`instrument(tracer_provider=...)` reaches the hook; a second `instrument()` changes nothing; `uninstrument()`
    stops recording."""
    spans, other = SpanCapture(), SpanCapture()
    instrumentor = AnthropicSpendInstrumentor()
    instrumentor.instrument(tracer_provider=spans.provider)
    try:
        instrumentor.instrument(tracer_provider=other.provider)
        assert instrumentor.is_instrumented_by_opentelemetry
        call(fake_api)
    finally:
        instrumentor.uninstrument()
    call(fake_api)
    assert len(spans.cost_spans()) == 1
    assert other.cost_spans() == []
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_the_instrumentors_dependency_is_the_anthropic_range_the_package_requires() -> None:
    """The dependency check accepts exactly the anthropic versions pyproject.toml installs with watcher."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [Requirement(dep) for dep in project["dependencies"] if Requirement(dep).name == "anthropic"]
    [declared] = [Requirement(dep) for dep in AnthropicSpendInstrumentor().instrumentation_dependencies()]
    assert [declared.name] == [dep.name for dep in required]
    assert declared.specifier == required[0].specifier


def test_calls_made_while_instrumentation_is_suppressed_get_no_span(
    client: anthropic.Anthropic, async_client: anthropic.AsyncAnthropic, capture: SpanCapture
) -> None:
    """Inside `suppress_instrumentation()` plain, streamed and async calls record nothing; calls after it do."""

    async def async_call() -> None:
        async with async_client:
            await async_client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)

    with suppress_instrumentation():
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as stream:
            stream.get_final_message()
        asyncio.run(async_call())
    client.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=HI)
    assert [span.name for span in capture.cost_spans()] == ["chat claude-sonnet-4-6"]


def test_batch_results_fetched_while_suppressed_get_no_span_and_a_suppressed_create_keeps_its_type(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """Results read under suppression record nothing; a batch created under it is still labelled when its
    results are read outside."""
    requests = [{"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": HI}}]
    with suppress_instrumentation(), watcher.request_type("nightly"):
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        list(client.messages.batches.results(batch.id))
    assert capture.cost_spans() == []
    list(client.messages.batches.results(batch.id))
    [span] = capture.cost_spans()
    assert (span.attributes or {})["watcher.request_type"] == "nightly"


def test_the_plain_string_suppression_key_of_older_instrumentations_is_honoured(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """A context carrying the string key `suppress_instrumentation` also records nothing."""
    token = context.attach(context.set_value("suppress_instrumentation", True))
    try:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    finally:
        context.detach(token)
    assert capture.cost_spans() == []


class CountingPrices:
    """The shipped price table, counting the calls it prices."""

    def __init__(self) -> None:
        self.table: PriceTable = load_price_table()
        self.priced = 0

    def cost(self, model: str, usage: TokenUsage) -> Cost:
        self.priced += 1
        return self.table.cost(model, usage)


class DropRequestType(Sampler):
    """Drops the spans of one request type, deciding on the attributes a span is started with."""

    def __init__(self, dropped: str) -> None:
        self.dropped = dropped
        self.seen: list[dict[str, object]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        keep = (attributes or {}).get("watcher.request_type") != self.dropped
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

    def get_description(self) -> str:
        return f"DropRequestType({self.dropped})"


def calls_through(provider: TracerProvider, fake_api: FakeAnthropic, *request_types: str) -> CountingPrices:
    """One call per request type with watcher instrumented into `provider`; the prices it used."""
    prices = CountingPrices()
    watcher.instrument(tracer_provider=provider, price_table=prices)  # type: ignore[arg-type]
    try:
        for name in request_types:
            with watcher.request_type(name):
                call(fake_api)
        watcher.flush()
    finally:
        watcher.uninstrument()
    return prices


def test_a_span_the_applications_sampler_drops_is_not_priced(fake_api: FakeAnthropic) -> None:
    """With an ALWAYS_OFF sampler, calls go through but watcher prices nothing and builds no attributes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prices = calls_through(provider, fake_api, "extraction", "summary")
    assert prices.priced == 0
    assert exporter.get_finished_spans() == ()
    assert len([r for r in fake_api.requests if r.path.startswith("/v1/messages")]) == 2


def test_a_sampler_can_decide_on_the_request_type_model_and_operation_at_span_creation(
    fake_api: FakeAnthropic,
) -> None:
    """The span starts with the GenAI operation, provider, request model and watcher's request type, so a sampler
    can keep one request type and drop another; only the kept one is priced."""
    sampler = DropRequestType("bulk")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prices = calls_through(provider, fake_api, "bulk", "interactive")
    assert sampler.seen[0] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "watcher.request_type": "bulk",
    }
    [kept] = exporter.get_finished_spans()
    assert (kept.attributes or {})["watcher.request_type"] == "interactive"
    assert (kept.attributes or {})["gen_ai.usage.cost.amount"] > 0
    assert prices.priced == 1


def test_watchers_own_pipeline_records_every_cost_span_even_under_an_unsampled_parent(fake_api: FakeAnthropic) -> None:
    """A call made inside a trace its caller chose not to sample (traceparent flags 00) still reaches the daemon:
    cost spans are accounting records, so watcher's private pipeline samples every one of them."""
    unsampled = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(0))
    with OTLPReceiver() as receiver:
        watcher.instrument(watcher.Settings(endpoint=receiver.endpoint, killswitch_poll_s=0, spool_dir=""))
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
        try:
            with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
            assert watcher.flush()
        finally:
            context.detach(token)
            watcher.uninstrument()
        [span] = receiver.wait_for(1)
    assert span.attributes["gen_ai.usage.cost.amount"] > 0
