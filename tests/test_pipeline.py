"""Which OpenTelemetry pipeline the spans take, proven with the real OTLP/HTTP exporter in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from watcher.testing import FakeAnthropic, OTLPReceiver

CALL = """
import anthropic
client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
"""


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def app_env(**env: str) -> dict[str, str]:
    """The environment of a fresh application process: this one's, without OTEL_, WATCHER_ and ANTHROPIC_
    settings, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WATCHER_", "ANTHROPIC_"))}
    full_env.update(env)
    return full_env


def run_app(
    script: str, fake: FakeAnthropic, launcher: Sequence[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs `script` as a fresh application process, as a user would (behind the `launcher` command, if any),
    and waits for it to exit.

    Its spool is a directory of its own unless `env` names one (WATCHER_SPOOL_DIR).
    """
    code = f"BASE_URL = {fake.base_url!r}\n" + textwrap.dedent(script)
    with tempfile.TemporaryDirectory(prefix="watcher-spool-") as spool:
        done = subprocess.run(
            [*launcher, sys.executable, "-c", code],
            env=app_env(**{"WATCHER_SPOOL_DIR": spool, **env}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    return done


def test_import_auto_exports_cost_spans_to_the_daemon_endpoint_and_flushes_at_exit(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """`import watcher.auto` sends spans over real OTLP/HTTP to WATCHER_ENDPOINT; exit flushes them."""
    run_app(
        "import watcher.auto\n" + CALL,
        fake_api,
        WATCHER_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="billing-api",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging",
    )
    [span] = receiver.wait_for(1)
    assert span.name == "chat claude-haiku-4-5"
    assert span.attributes["gen_ai.usage.cost.amount"] > 0
    assert span.resource["service.name"] == "billing-api"
    assert span.resource["deployment.environment"] == "staging"


# The console script that ships with opentelemetry-instrumentation, beside this interpreter.
OTEL_INSTRUMENT = str(Path(sys.executable).with_name("opentelemetry-instrument"))


def test_opentelemetry_instrument_turns_the_hook_on_with_no_change_to_the_application(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """`opentelemetry-instrument python app.py` finds watcher's instrumentor by its entry point: an application
    that never imports watcher reports its cost span."""
    run_app(CALL, fake_api, launcher=[OTEL_INSTRUMENT], WATCHER_ENDPOINT=receiver.endpoint)
    [span] = receiver.wait_for(1)
    assert span.name == "chat claude-haiku-4-5"
    assert span.attributes["gen_ai.usage.cost.amount"] > 0


def test_opentelemetry_instrument_with_import_auto_too_records_each_call_once(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """The instrumentor and `import watcher.auto` in one process install one hook: a call has one span."""
    script = "import watcher.auto\n" + CALL + "import watcher\nwatcher.flush()\nprint(len(client.middleware))\n"
    done = run_app(script, fake_api, launcher=[OTEL_INSTRUMENT], WATCHER_ENDPOINT=receiver.endpoint)
    assert done.stdout.split() == ["1"]
    assert len(receiver.wait_for(1)) == 1
    assert len(receiver.spans) == 1  # the process has exited and flushed: nothing more is coming


def test_opentelemetry_instrument_leaves_the_hook_off_when_it_is_disabled(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=anthropic_spend, or WATCHER_ENABLED=false, keeps watcher out."""
    for env in ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "anthropic_spend"}, {"WATCHER_ENABLED": "false"}):
        done = run_app(
            CALL + "print(len(client.middleware))\n",
            fake_api,
            launcher=[OTEL_INSTRUMENT],
            WATCHER_ENDPOINT=receiver.endpoint,
            **env,
        )
        assert done.stdout.split() == ["0"], env
    assert receiver.spans == []


def test_a_stream_left_open_at_exit_is_recorded_not_lost(fake_api: FakeAnthropic, receiver: OTLPReceiver) -> None:
    """An application that exits mid-stream still reports the spend that stream had reported."""
    script = """
    import watcher.auto, anthropic
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=8, stream=True,
                                    messages=[{"role": "user", "content": "hi"}])
    next(iter(stream))
    """
    run_app(script, fake_api, WATCHER_ENDPOINT=receiver.endpoint)
    [span] = receiver.wait_for(1)
    assert span.attributes["watcher.stream.outcome"] == "abandoned"
    assert span.attributes["gen_ai.usage.input_tokens"] == 12


def test_standard_otlp_variables_take_precedence_over_the_watcher_endpoint(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, spans go where the application's OpenTelemetry settings say."""
    run_app(
        "import watcher.auto\n" + CALL,
        fake_api,
        WATCHER_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
    )
    assert len(receiver.wait_for(1)) == 1


def test_an_application_provider_set_after_import_gets_the_spans_and_watcher_adds_none(
    fake_api: FakeAnthropic,
) -> None:
    """When the app sets a global TracerProvider (even after `import watcher.auto`), spans go there only."""
    script = """
    import json, watcher, watcher.auto, anthropic
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    watcher.flush()
    print(json.dumps([[s.name, "gen_ai.usage.cost.amount" in s.attributes] for s in exporter.get_finished_spans()]))
    """
    done = run_app(script, fake_api, WATCHER_ENDPOINT="http://127.0.0.1:9")
    spans = json.loads(done.stdout)
    assert ["chat claude-haiku-4-5", True] in spans
    assert sum(has_cost for _, has_cost in spans) == 1


def test_with_the_sdks_own_tracing_on_there_is_exactly_one_cost_bearing_span(fake_api: FakeAnthropic) -> None:
    """The SDK's `anthropic.messages.create` span and watcher's coexist; only watcher's carries a cost."""
    script = """
    import json, watcher, watcher.auto, anthropic
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=8,
                                messages=[{"role": "user", "content": "hi"}]) as s:
        s.get_final_message()
    watcher.flush()
    spans = exporter.get_finished_spans()
    print(json.dumps([[s.name, "gen_ai.usage.cost.amount" in s.attributes,
                       s.parent.span_id if s.parent else None, s.context.span_id] for s in spans]))
    """
    done = run_app(script, fake_api, ANTHROPIC_OPEN_TELEMETRY="true")
    spans = json.loads(done.stdout)
    names = [name for name, *_ in spans]
    assert names.count("anthropic.messages.create") == 2
    costed = [span for span in spans if span[1]]
    assert len(costed) == 2
    sdk_ids = {span_id for name, _, _, span_id in spans if name == "anthropic.messages.create"}
    assert all(parent in sdk_ids for _, _, parent, _ in costed)


def test_an_application_provider_set_after_import_still_gets_the_last_spans_at_exit(
    fake_api: FakeAnthropic, receiver: OTLPReceiver
) -> None:
    """Exit records watcher's queued spans before the application's own provider (built later) shuts down."""
    script = f"""
    import watcher.auto, anthropic
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="{receiver.endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    for _ in range(3):
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{{"role": "user", "content": "hi"}}])
    """
    env = {"WATCHER_ENDPOINT": "http://127.0.0.1:9", "WATCHER_KILLSWITCH_POLL_S": "0"}
    run_app(script, fake_api, ANTHROPIC_OPEN_TELEMETRY="false", **env)
    spans = receiver.wait_for(3)
    assert [span.attributes["gen_ai.usage.cost.amount"] > 0 for span in spans] == [True] * 3
