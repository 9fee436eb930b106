"""`AnthropicSpendInstrumentor` drives the hook like `watcher.instrument()`, through OpenTelemetry's interface."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import anthropic
from opentelemetry import context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from packaging.requirements import Requirement

import watcher
from watcher.instrumentation import AnthropicSpendInstrumentor
from watcher.testing import FakeAnthropic, SpanCapture

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
