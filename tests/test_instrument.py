"""The hook records one exact cost span per billed response, on every SDK path, and never breaks a call."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import anthropic
import pytest

import watcher
from watcher._instrument._estimate import input_tokens_bound
from watcher.testing import FakeAnthropic, FakeReply, SpanCapture

HI = [{"role": "user", "content": "hi"}]
CACHED = {
    "input_tokens": 100,
    "output_tokens": 50,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 300,
    "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    "service_tier": "standard",
}


def only_cost_span(capture: SpanCapture) -> dict[str, Any]:
    spans = capture.cost_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return dict(spans[0].attributes or {})


def test_sync_create_emits_one_client_span_with_tokens_and_exact_cost(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """A plain create yields one CLIENT span named `chat {model}` with GenAI token counts and cost."""
    fake_api.reply(FakeReply(usage=CACHED, id="msg_1"))
    client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HI)
    span = capture.cost_spans()[0]
    attrs = only_cost_span(capture)
    assert span.name == "chat claude-haiku-4-5"
    assert span.kind == anthropic_kind_client()
    assert attrs["gen_ai.usage.input_tokens"] == 100 + 1000 + 300
    assert attrs["anthropic.usage.uncached_input_tokens"] == 100
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 300
    assert attrs["anthropic.usage.cache_creation.ephemeral_5m_input_tokens"] == 100
    assert attrs["anthropic.usage.cache_creation.ephemeral_1h_input_tokens"] == 200
    assert attrs["gen_ai.response.id"] == "msg_1"
    # haiku 4.5: 100x1 + 100x1.25 + 200x2 + 1000x0.10 + 50x5 = 100+125+400+100+250 = 975 per 1e6
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(975e-6, rel=1e-12)
    assert attrs["watcher.cost.cache_write_usd"] == pytest.approx(525e-6, rel=1e-12)
    assert attrs["gen_ai.usage.cost.currency"] == "USD"
    assert attrs["gen_ai.usage.cost.source"] == "local"
    assert attrs["watcher.cost.estimated"] is False
    assert attrs["watcher.request_type"] == "unlabeled"
    assert attrs["watcher.platform"] == "anthropic"


def anthropic_kind_client() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT


def test_request_type_labels_calls_inside_the_block_and_the_default_outside(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """Calls inside `request_type` carry its name; nested blocks win; calls outside get the default."""
    with watcher.request_type("extraction"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        with watcher.request_type("summary"):
            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    types = [span.attributes["watcher.request_type"] for span in capture.cost_spans()]  # type: ignore[index]
    assert types == ["extraction", "summary", "unlabeled"]


def test_request_type_works_as_a_decorator_on_sync_and_async_functions(
    client: anthropic.Anthropic, async_client: anthropic.AsyncAnthropic, capture: SpanCapture
) -> None:
    """The decorator form labels each call of a sync or an async function."""

    @watcher.request_type("sync-job")
    def job() -> None:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)

    @watcher.request_type("async-job")
    async def async_job() -> None:
        async with async_client:
            await async_client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)

    job()
    asyncio.run(async_job())
    types = [span.attributes["watcher.request_type"] for span in capture.cost_spans()]  # type: ignore[index]
    assert types == ["sync-job", "async-job"]


def test_request_type_rejects_an_empty_name() -> None:
    """An empty request type is a programming error, reported where it is written."""
    with pytest.raises(ValueError, match="non-empty"):
        watcher.request_type("  ")


def test_async_create_is_recorded(
    async_client: anthropic.AsyncAnthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """AsyncAnthropic.messages.create records the same span as the sync client."""
    fake_api.reply(FakeReply(usage={"input_tokens": 10, "output_tokens": 20}))

    async def call() -> None:
        async with async_client:
            await async_client.messages.create(model="claude-opus-4-7", max_tokens=8, messages=HI)

    asyncio.run(call())
    attrs = only_cost_span(capture)
    # opus 4.7: 10x5 + 20x25 = 550 per 1e6
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(550e-6)


def test_streamed_output_tokens_are_the_final_cumulative_count_not_a_sum(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """message_delta counts are cumulative: the span has the last one, not the sum of all deltas."""
    fake_api.reply(FakeReply(usage={**CACHED, "output_tokens": 500}, text="a b c d e f g h i j"))
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=600, messages=HI, stream=True)
    events = [event.type for event in stream]
    assert events[-1] == "message_stop"
    attrs = only_cost_span(capture)
    assert attrs["gen_ai.usage.output_tokens"] == 500
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["watcher.stream.outcome"] == "complete"


def test_stream_helper_sync_and_async_each_record_once(
    client: anthropic.Anthropic, async_client: anthropic.AsyncAnthropic, capture: SpanCapture
) -> None:
    """`messages.stream(...)` records one span per call, sync and async."""
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as stream:
        stream.get_final_message()

    async def call() -> None:
        async with (
            async_client,
            async_client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as stream,
        ):
            await stream.get_final_message()

    asyncio.run(call())
    outcomes = [span.attributes["watcher.stream.outcome"] for span in capture.cost_spans()]  # type: ignore[index]
    assert outcomes == ["complete", "complete"]


def test_async_stream_true_is_recorded(
    async_client: anthropic.AsyncAnthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """An async `stream=True` call records its usage when the stream ends."""
    fake_api.reply(FakeReply(usage={"input_tokens": 7, "output_tokens": 70}))

    async def call() -> None:
        async with async_client:
            stream = await async_client.messages.create(
                model="claude-haiku-4-5", max_tokens=80, messages=HI, stream=True
            )
            async for _ in stream:
                pass

    asyncio.run(call())
    attrs = only_cost_span(capture)
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (7, 70)


def test_beta_messages_are_recorded_plain_and_streamed(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """`beta.messages.create` and its stream form are billed calls like any other."""
    client.beta.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    with client.beta.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as stream:  # type: ignore[arg-type]
        stream.get_final_message()
    assert len(capture.cost_spans()) == 2


def test_copied_clients_carry_the_middleware_once_and_record_once(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """`with_options` copies keep exactly one watcher middleware, so a call is never counted twice."""
    copy = client.with_options(timeout=5).with_options(max_retries=0)
    assert sum(type(m).__name__ == "WatcherMiddleware" for m in copy.middleware) == 1
    copy.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    assert len(capture.cost_spans()) == 1


@pytest.mark.parametrize("status", [429, 529, 500])
def test_retried_failures_cost_nothing_and_the_success_is_recorded_once(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture, status: int
) -> None:
    """Failed attempts that the SDK retries emit no cost span; the final success emits one."""
    fake_api.fail(status, times=2)
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    attempts = [r for r in fake_api.requests if r.path.startswith("/v1/messages")]
    assert len(attempts) == 3
    assert len(capture.cost_spans()) == 1


def test_a_call_that_fails_after_all_retries_records_nothing(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """A call that never got a billed response has no cost span, and the SDK's error reaches the caller."""
    fake_api.fail(500, times=3)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    assert capture.cost_spans() == []


def test_a_stream_that_breaks_off_records_the_usage_it_had_reported(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """A cut stream still records the input side from message_start, marked failed."""
    fake_api.reply(FakeReply(usage={"input_tokens": 400, "output_tokens": 90}, cut_after_events=3))
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HI, stream=True)
    with pytest.raises(Exception):  # noqa: B017 - whichever transport error the SDK raises
        for _ in stream:
            pass
    attrs = only_cost_span(capture)
    assert attrs["gen_ai.usage.input_tokens"] == 400
    assert attrs["watcher.stream.outcome"] == "failed"
    assert capture.cost_spans()[0].status.status_code.name == "ERROR"


def test_a_stream_closed_early_is_recorded_as_abandoned_when_closed(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """Leaving a `messages.stream` block after the first event records the span at once."""
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=8, messages=HI) as stream:
        for _ in stream:
            break
        assert capture.cost_spans() == []
    attrs = only_cost_span(capture)
    assert attrs["watcher.stream.outcome"] == "abandoned"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert stream is not None  # still referenced: the close, not garbage collection, recorded it


def test_a_stream_dropped_unread_is_still_recorded(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """A stream the application never reads and drops is recorded (without usage) once collected."""
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI, stream=True)
    del stream
    gc.collect()
    attrs = only_cost_span(capture)
    assert attrs["watcher.stream.outcome"] == "abandoned"
    assert attrs["watcher.usage.reported"] is False


LONG = [{"role": "user", "content": "x" * 3000}]


def assert_estimated_from_request(attrs: dict[str, Any]) -> None:
    bound = input_tokens_bound({"messages": LONG})
    assert bound >= 1000  # 3000 bytes of prompt over 3 bytes a token, at least
    assert attrs["watcher.usage.reported"] is False
    assert attrs["gen_ai.usage.input_tokens"] == bound
    assert attrs["gen_ai.usage.output_tokens"] == 0
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(bound * 1e-6, rel=1e-12)  # haiku: $1 per million
    assert attrs["watcher.cost.estimated"] is True
    assert attrs["watcher.cost.flags"] == ("estimated_input_from_request",)


def test_a_stream_cut_before_its_first_event_is_billed_as_an_estimate_from_the_request(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """A stream that breaks before `message_start` had its input billed: it is recorded from the request's size."""
    fake_api.reply(FakeReply(cut_after_events=0))
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=LONG, stream=True)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - whichever transport error the SDK raises
        for _ in stream:
            pass
    attrs = only_cost_span(capture)
    assert attrs["watcher.stream.outcome"] == "failed"
    assert_estimated_from_request(attrs)


@pytest.mark.parametrize("end", ["close", "drop"])
def test_a_stream_closed_or_dropped_unread_is_billed_as_an_estimate_from_the_request(
    client: anthropic.Anthropic, capture: SpanCapture, end: str
) -> None:
    """Closing or dropping a stream before its first event records its estimated input, not $0."""
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=LONG, stream=True)  # type: ignore[arg-type]
    if end == "close":
        stream.close()
    else:
        del stream
        gc.collect()
    attrs = only_cost_span(capture)
    assert attrs["watcher.stream.outcome"] == "abandoned"
    assert_estimated_from_request(attrs)


def test_open_streams_are_recorded_when_watcher_stops(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """A stream still open at shutdown (uninstrument, or interpreter exit) is recorded, not lost."""
    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI, stream=True)
    next(iter(stream))
    watcher.uninstrument()
    attrs = only_cost_span(capture)
    assert attrs["gen_ai.usage.input_tokens"] == 12
    stream.close()


def test_batch_results_are_priced_at_half_and_attributed_to_the_creating_request_type(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """Each succeeded batch result is one span at batch prices, labelled as when the batch was created."""
    fake_api.reply(
        FakeReply(usage={"input_tokens": 1000, "output_tokens": 100}),
        FakeReply(status=500),
        FakeReply(usage={"input_tokens": 2000, "output_tokens": 200}),
    )
    requests = [
        {"custom_id": f"r{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": HI}}
        for i in range(3)
    ]
    with watcher.request_type("nightly-batch"):
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    results = list(client.messages.batches.results(batch.id))
    assert len(results) == 3
    spans = capture.cost_spans()
    assert len(spans) == 2
    attrs = dict(spans[0].attributes or {})
    assert attrs["watcher.request_type"] == "nightly-batch"
    assert attrs["watcher.batch.id"] == batch.id
    # haiku 4.5 at 50%: (1000x1 + 100x5) x 0.5 = 750 per 1e6
    assert attrs["gen_ai.usage.cost.amount"] == pytest.approx(750e-6)


def test_batch_results_of_a_batch_made_elsewhere_get_the_default_type(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """Results of a batch this process did not create are labelled with the default request type."""
    requests = [{"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": HI}}]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    watcher.uninstrument()
    watcher.instrument(tracer_provider=capture.provider)  # a fresh process's view: nothing remembered
    with watcher.request_type("ignored-at-results-time"):
        list(client.messages.batches.results(batch.id))
    assert only_cost_span(capture)["watcher.request_type"] == "unlabeled"


def test_count_tokens_costs_nothing_and_emits_no_cost_span(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """count_tokens is free, so it has no cost span."""
    client.messages.count_tokens(model="claude-haiku-4-5", messages=HI)  # type: ignore[arg-type]
    assert capture.cost_spans() == []


def test_raw_and_streaming_response_wrappers_are_recorded(client: anthropic.Anthropic, capture: SpanCapture) -> None:
    """`with_raw_response` and `with_streaming_response` calls are billed and recorded too."""
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    assert raw.parse().usage.output_tokens == 8
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5", max_tokens=8, messages=HI
    ) as response:
        response.parse()
    assert len(capture.cost_spans()) == 2


def test_vertex_calls_are_recorded_and_marked_with_their_platform(
    capture: SpanCapture, fake_api: FakeAnthropic
) -> None:
    """AnthropicVertex calls are priced like first-party calls and carry `watcher.platform`."""
    with anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token="token", base_url=f"{fake_api.base_url}/v1"
    ) as vertex:
        vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=8, messages=HI)  # type: ignore[arg-type]
    attrs = only_cost_span(capture)
    assert attrs["watcher.platform"] == "gcp.vertex_ai"
    assert attrs["watcher.pricing.model"] == "claude-haiku-4-5"
    assert attrs["watcher.cost.estimated"] is False


def test_an_unknown_model_is_estimated_and_flagged_never_free(
    client: anthropic.Anthropic, capture: SpanCapture
) -> None:
    """A model missing from the price table is priced by estimate and marked, not silently $0."""
    client.messages.create(model="claude-sonnet-9-9", max_tokens=8, messages=HI)
    attrs = only_cost_span(capture)
    assert attrs["watcher.cost.estimated"] is True
    assert attrs["gen_ai.usage.cost.amount"] > 0


def test_no_prompt_or_response_content_is_on_spans_by_default(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """Neither the prompt nor the reply text appears in any attribute unless capture is turned on."""
    fake_api.reply(FakeReply(text="SECRET-REPLY"))
    client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=8,
        system="SECRET-SYSTEM",
        messages=[{"role": "user", "content": "SECRET-PROMPT"}],
    )
    text = repr([dict(span.attributes or {}) for span in capture.spans()])
    assert "SECRET" not in text


def test_content_capture_puts_prompt_and_reply_on_the_span_when_turned_on(
    fake_api: FakeAnthropic,
) -> None:
    """With capture_content on, the span carries the messages and the reply as JSON."""
    spans = SpanCapture()
    watcher.instrument(watcher.Settings(capture_content=True), tracer_provider=spans.provider)
    try:
        fake_api.reply(FakeReply(text="SECRET-REPLY"))
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=8,
                messages=[{"role": "user", "content": "SECRET-PROMPT"}],
            )
    finally:
        watcher.uninstrument()
    attrs = only_cost_span(spans)
    assert "SECRET-PROMPT" in attrs["gen_ai.input.messages"]
    assert "SECRET-REPLY" in attrs["gen_ai.output.messages"]


def test_instrument_and_uninstrument_are_idempotent_and_uninstrument_stops_recording(
    fake_api: FakeAnthropic,
) -> None:
    """Calling either twice is harmless; after uninstrument, even old clients record nothing."""
    spans = SpanCapture()
    watcher.instrument(tracer_provider=spans.provider)
    watcher.instrument(tracer_provider=SpanCapture().provider)
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        watcher.uninstrument()
        watcher.uninstrument()
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as fresh:
        assert fresh.middleware == ()
    assert len(spans.cost_spans()) == 1


def test_a_billed_response_the_sdk_cannot_parse_is_still_recorded(
    client: anthropic.Anthropic, fake_api: FakeAnthropic, capture: SpanCapture
) -> None:
    """`messages.parse()` whose output fails validation raises for the caller, but its spend is recorded."""
    from pydantic import BaseModel

    class Invoice(BaseModel):
        total: float

    fake_api.reply(FakeReply(text="this is not JSON", usage={"input_tokens": 40, "output_tokens": 4}))
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own parsing error reaches the caller
        client.messages.parse(model="claude-haiku-4-5", max_tokens=64, messages=HI, output_format=Invoice)
    attrs = only_cost_span(capture)
    assert attrs["gen_ai.usage.input_tokens"] == 40


def call_with_failing_prices(fake_api: FakeAnthropic, error: str) -> anthropic.types.Message:
    """One call through a hook whose price table raises RuntimeError(error); returns the call's message."""

    class FailingPrices:
        def cost(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError(error)

    spans = SpanCapture()
    watcher.instrument(tracer_provider=spans.provider, price_table=FailingPrices())  # type: ignore[arg-type]
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            message = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        watcher.flush()
    finally:
        watcher.uninstrument()
    return message


def test_a_failure_inside_the_hook_never_breaks_the_call(
    fake_api: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    """If pricing blows up, the application still gets its message and a warning is logged."""
    caplog.set_level(logging.DEBUG, logger="watcher")
    message = call_with_failing_prices(fake_api, "price table exploded")
    assert message.usage.output_tokens == 8
    assert "could not record a cost span" in caplog.text


def test_hook_failures_are_logged_without_content(fake_api: FakeAnthropic, caplog: pytest.LogCaptureFixture) -> None:
    """A failure's log line names the error type and place, never its message (which may quote content)."""
    caplog.set_level(logging.DEBUG, logger="watcher")
    call_with_failing_prices(fake_api, "SECRET-CONTENT in an error message")
    assert "RuntimeError" in caplog.text
    assert "SECRET" not in caplog.text


def test_bedrock_calls_are_recorded_and_marked_with_their_platform(
    capture: SpanCapture, fake_api: FakeAnthropic
) -> None:
    """AnthropicBedrock calls are priced by their Bedrock model id and carry `watcher.platform`."""
    with anthropic.AnthropicBedrock(api_key="token", aws_region="us-east-1", base_url=fake_api.base_url) as bedrock:
        bedrock.messages.create(
            model="us.anthropic.claude-haiku-4-5-20251001-v1:0",
            max_tokens=8,
            messages=HI,  # type: ignore[arg-type]
        )
    attrs = only_cost_span(capture)
    assert attrs["watcher.platform"] == "aws.bedrock"
    assert attrs["watcher.pricing.model"] == "claude-haiku-4-5"
    assert fake_api.requests[-1].path.startswith("/model/")


def test_a_stream_ended_from_several_threads_at_once_is_recorded_once() -> None:
    """Completion, close and garbage collection may race to end a stream: exactly one span results."""
    import threading

    from watcher._instrument._record import CallInfo
    from watcher._instrument._streams import StreamTally

    recorded: list[object] = []

    class Recorder:
        def record(self, *args: object, **kwargs: object) -> None:
            recorded.append(args)

    tally = StreamTally(Recorder(), CallInfo("claude-haiku-4-5", "t", "anthropic", 0))  # type: ignore[arg-type]
    barrier = threading.Barrier(8)

    def end(outcome: str) -> None:
        barrier.wait()
        tally.finish(outcome)

    threads = [threading.Thread(target=end, args=(f"o{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorded) == 1
