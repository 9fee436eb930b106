"""`AnthropicSpendInstrumentor` drives the hook like `watcher.instrument()`, through OpenTelemetry's interface."""

from __future__ import annotations

import tomllib
from pathlib import Path

import anthropic
from packaging.requirements import Requirement

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
