"""The fake Anthropic API speaks the real wire formats: the real SDK, over real HTTP, sees no difference."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from anthropic.lib.vertex import AnthropicVertex

from watcher._fake._batches import BatchStore
from watcher._fake._http import FakeHTTPServer
from watcher._fake._reply import ReplyQueue
from watcher._fake._routes import Routes
from watcher.testing import FakeAnthropic, FakeReply

HI = [{"role": "user", "content": "hi"}]
MODEL = "claude-haiku-4-5"
FULL_USAGE = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 30,
    "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
    "service_tier": "priority",
    "inference_geo": "us",
    "speed": "fast",
    "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.base_url, api_key="test", open_telemetry=False) as sdk:
        yield sdk


def raw_request(fake: FakeAnthropic, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request with the stdlib client and return the status and body."""
    host, port = fake.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_sync_create_returns_a_message_with_default_usage(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    """A plain create gets the default text, the request's model, and 12 in / 8 out tokens."""
    message = client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert message.model == MODEL
    assert message.id.startswith("msg_fake_")
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake Anthropic API."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 8)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.service_tier == "standard"


def test_requests_are_recorded_with_lowercase_headers_and_json_body(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """Every request is recorded with method, path, lowercase headers and its decoded JSON body."""
    client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"model": MODEL, "max_tokens": 16, "messages": HI}


def test_async_create_consumes_queued_replies_in_order(fake: FakeAnthropic) -> None:
    """The async client gets queued replies first-in first-out, then the default."""
    fake.reply(FakeReply(text="one", id="msg_1"), FakeReply(text="two", model="claude-other"))

    async def three_calls() -> list[anthropic.types.Message]:
        async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test", open_telemetry=False) as sdk:
            return [await sdk.messages.create(model=MODEL, max_tokens=8, messages=HI) for _ in range(3)]

    first, second, third = asyncio.run(three_calls())
    assert (first.id, first.content[0].text) == ("msg_1", "one")
    assert second.model == "claude-other"
    assert third.content[0].text == "Hello from the fake Anthropic API."


def test_usage_fields_round_trip_through_the_sdk(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    """Every usage field of the reply, including the cache TTL breakdown, reaches the SDK's Usage."""
    fake.reply(FakeReply(usage=FULL_USAGE))
    usage = client.messages.create(model=MODEL, max_tokens=16, messages=HI).usage
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 10
    assert usage.cache_creation.ephemeral_1h_input_tokens == 20
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (100, 30)
    assert (usage.service_tier, usage.inference_geo, usage.speed) == ("priority", "us", "fast")
    assert usage.server_tool_use is not None
    assert usage.server_tool_use.web_search_requests == 2


def test_stream_sends_events_in_api_order_with_cumulative_final_usage(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """A streamed reply goes start, block, three deltas, stop, message_delta (cumulative), message_stop."""
    fake.reply(FakeReply(usage=FULL_USAGE, text="abcdefghi"))
    with client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True) as stream:
        events = list(stream)
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.output_tokens == 1
    assert start.message.usage.cache_creation is not None
    assert delta.usage.output_tokens == 5
    assert (delta.usage.input_tokens, delta.usage.cache_read_input_tokens) == (10, 100)
    assert delta.usage.server_tool_use is not None
    assert delta.delta.stop_reason == "end_turn"


def test_stream_wire_format_has_a_ping_and_ends_with_message_stop(fake: FakeAnthropic) -> None:
    """On the wire each frame is `event: X` then `data: {json}`, with a ping, ending at message_stop."""
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HI, "stream": True}).encode()
    status, raw = raw_request(fake, "POST", "/v1/messages", body)
    frames = raw.decode().strip().split("\n\n")
    names = [frame.split("\n")[0].removeprefix("event: ") for frame in frames]
    assert status == 200
    assert "ping" in names
    assert names[-1] == "message_stop"
    assert all(json.loads(frame.split("\n")[1].removeprefix("data: ")) for frame in frames)


def test_stream_helper_final_message_carries_text_and_full_usage(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """messages.stream() assembles the deltas into the full text with the final output count."""
    fake.reply(FakeReply(text="Streaming works.", usage={"input_tokens": 7, "output_tokens": 4}))
    with client.messages.stream(model=MODEL, max_tokens=16, messages=HI) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Streaming works."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 4)


def test_count_tokens_reports_the_next_reply_without_consuming_it(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """count_tokens answers the queued reply's input_tokens and leaves it for the next create."""
    fake.reply(FakeReply(usage={"input_tokens": 42, "output_tokens": 1}, text="kept"))
    counted = client.messages.count_tokens(model=MODEL, messages=HI)
    message = client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert counted.input_tokens == 42
    assert message.content[0].text == "kept"


def test_rate_limit_is_retried_at_once_and_then_succeeds(
    client: anthropic.Anthropic, fake: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    """After one 429 the SDK retries after the fake's one-millisecond advice (not its half-second back-off),
    and the fake saw two attempts. The SDK's own log says how long it chose to wait: no wall clock is read."""
    fake.fail(429)
    with caplog.at_level(logging.INFO, logger="anthropic"):
        message = client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert message.type == "message"
    assert [request.path for request in fake.requests] == ["/v1/messages", "/v1/messages"]
    waits = [
        float(m[1])
        for r in caplog.records
        if (m := re.search(r"Retrying request to .* in ([0-9.]+) seconds", r.getMessage()))
    ]
    assert waits == [0.001]


def test_persistent_server_errors_raise_after_max_retries(fake: FakeAnthropic) -> None:
    """Five queued 500s outlast max_retries=1: the SDK raises InternalServerError after two attempts."""
    fake.fail(500, times=5)
    with (
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=1, open_telemetry=False) as sdk,
        pytest.raises(anthropic.InternalServerError) as raised,
    ):
        sdk.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert raised.value.status_code == 500
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"] == {"type": "api_error", "message": "Fake error reply with status 500."}
    assert len(fake.requests) == 2


def test_overloaded_status_maps_to_the_sdk_overloaded_error(fake: FakeAnthropic) -> None:
    """A 529 reply carries an `overloaded_error` body, which the SDK raises as OverloadedError."""
    fake.fail(529)
    with (
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0, open_telemetry=False) as sdk,
        pytest.raises(anthropic.OverloadedError),
    ):
        sdk.messages.create(model=MODEL, max_tokens=16, messages=HI)


def test_cut_stream_makes_sdk_iteration_raise_and_server_keeps_serving(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """A stream cut after three events raises while iterating; the next call still succeeds."""
    fake.reply(FakeReply(cut_after_events=3))
    seen: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True) as stream,
    ):
        seen.extend(event.type for event in stream)
    assert seen == ["message_start", "content_block_start"]  # the third event was the (hidden) ping
    assert client.messages.create(model=MODEL, max_tokens=16, messages=HI).type == "message"


def test_batch_results_are_succeeded_messages_on_the_batch_tier(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """A created batch has already ended; its results carry one succeeded message per request."""
    fake.reply(FakeReply(text="first"), FakeReply(text="second"))
    requests = [{"custom_id": f"r{i}", "params": {"model": MODEL, "max_tokens": 8, "messages": HI}} for i in (1, 2)]
    batch = client.messages.batches.create(requests=requests)
    results = list(client.messages.batches.results(batch.id))
    assert batch.id.startswith("msgbatch_fake_")
    assert batch.processing_status == "ended"
    assert batch.request_counts.succeeded == 2
    assert [result.custom_id for result in results] == ["r1", "r2"]
    for result, text in zip(results, ("first", "second"), strict=True):
        assert result.result.type == "succeeded"
        assert result.result.message.usage.service_tier == "batch"
        assert result.result.message.content[0].text == text


def test_batch_request_with_error_reply_is_errored(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    """A batch request that draws a non-200 reply is counted and reported as errored."""
    fake.fail(400)
    requests = [{"custom_id": "bad", "params": {"model": MODEL, "max_tokens": 8, "messages": HI}}]
    batch = client.messages.batches.create(requests=requests)
    [line] = client.messages.batches.results(batch.id)
    assert (batch.request_counts.errored, batch.request_counts.succeeded) == (1, 0)
    assert line.result.type == "errored"
    assert line.result.error.error.type == "invalid_request_error"
    assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert [listed.id for listed in client.messages.batches.list()] == [batch.id]


def test_beta_messages_create_gets_a_message_with_the_beta_header_recorded(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    """beta.messages.create gets a message, and the recorded request carries its anthropic-beta header."""
    message = client.beta.messages.create(model=MODEL, max_tokens=16, messages=HI, betas=["fake-beta"])
    assert message.usage.input_tokens == 12
    assert fake.requests[0].headers["anthropic-beta"] == "fake-beta"


def test_beta_query_variant_of_messages_is_served(fake: FakeAnthropic) -> None:
    """POST /v1/messages?beta=true, the path older SDKs use for beta calls, is a message create."""
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HI}).encode()
    status, raw = raw_request(fake, "POST", "/v1/messages?beta=true", body)
    assert status == 200
    assert json.loads(raw)["type"] == "message"


def test_vertex_client_gets_its_model_from_the_url(fake: FakeAnthropic) -> None:
    """AnthropicVertex's rawPredict, streamRawPredict and count-tokens are served; the model is the path's."""
    with AnthropicVertex(
        region="us-east5",
        project_id="proj",
        access_token="test",
        base_url=fake.base_url + "/v1",
        open_telemetry=False,
    ) as vertex:
        message = vertex.messages.create(model="claude-sonnet-4@20250514", max_tokens=8, messages=HI)
        with vertex.messages.stream(model="claude-sonnet-4@20250514", max_tokens=8, messages=HI) as stream:
            streamed = stream.get_final_message()
        counted = vertex.messages.count_tokens(model="claude-sonnet-4@20250514", messages=HI)
    assert message.model == streamed.model == "claude-sonnet-4@20250514"
    assert fake.requests[0].path.endswith("/models/claude-sonnet-4@20250514:rawPredict")
    assert fake.requests[1].path.endswith(":streamRawPredict")
    assert counted.input_tokens == 12
    assert fake.requests[2].path.endswith("/models/count-tokens:rawPredict")


def test_malformed_json_gets_400_and_the_server_survives(fake: FakeAnthropic) -> None:
    """A body that is not JSON gets an invalid_request_error; the server answers the next request."""
    status, body = raw_request(fake, "POST", "/v1/messages", b"{not json")
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert raw_request(fake, "POST", "/v1/messages", json.dumps({"model": MODEL}).encode())[0] == 200


def test_unknown_path_gets_404_with_an_anthropic_error_body(fake: FakeAnthropic) -> None:
    """A path the fake does not serve gets 404 and a not_found_error body."""
    status, body = raw_request(fake, "GET", "/v1/nothing-here")
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"


def test_stop_ends_open_keepalive_connections_promptly() -> None:
    """stop() returns quickly even while an SDK client still holds a keep-alive connection."""
    fake = FakeAnthropic().start()
    with anthropic.Anthropic(base_url=fake.base_url, api_key="test", open_telemetry=False) as sdk:
        sdk.messages.create(model=MODEL, max_tokens=16, messages=HI)
        stopper = threading.Thread(target=fake.stop)
        stopper.start()
        stopper.join(timeout=20)  # a stop that waited on the connection would hang until the client closed it
        assert not stopper.is_alive()


def test_a_burst_of_connects_is_queued_while_the_server_is_busy_accepting() -> None:
    """A server not yet accepting still completes 64 connects at once (its listen backlog holds them), so
    many threads connecting together are served, not dropped or reset; a backlog of 5 would time out."""
    replies = ReplyQueue(FakeReply())
    server = FakeHTTPServer(("127.0.0.1", 0), Routes(replies, BatchStore(replies)), lambda request: None)
    address = ("127.0.0.1", int(server.server_address[1]))
    clients: list[socket.socket] = []
    try:
        for _ in range(64):
            clients.append(socket.create_connection(address, timeout=0.5))
    finally:
        for connection in clients:
            connection.close()
        server.server_close()


def test_clear_forgets_requests_and_queued_replies(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    """clear() empties the request log and the reply queue, so the default answers next."""
    client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    fake.reply(FakeReply(text="dropped"))
    fake.clear()
    message = client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert message.content[0].text == "Hello from the fake Anthropic API."
    assert len(fake.requests) == 1


def test_base_url_before_start_raises_with_the_fix() -> None:
    """Reading base_url before start() raises RuntimeError that says to call start()."""
    with pytest.raises(RuntimeError, match="start"):
        _ = FakeAnthropic().base_url


def test_delay_holds_the_reply_back_for_delay_s(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    """A reply with delay_s arrives no sooner than that many seconds after the request."""
    fake.reply(FakeReply(delay_s=0.1))
    began = time.perf_counter()
    client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert time.perf_counter() - began >= 0.1


def test_docs_testing_example_tests_pass() -> None:
    """Every test in docs/testing.md's example passes when given the fixtures it defines."""
    markdown = (Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    namespace: dict[str, object] = {}
    exec(markdown.split("```python\n")[1].split("```")[0], namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    assert len(tests) == 2
    for test in tests:
        with (
            FakeAnthropic() as fake_api,
            anthropic.Anthropic(base_url=fake_api.base_url, api_key="test", open_telemetry=False) as sdk,
        ):
            run: Callable[..., None] = test
            run(client=sdk, fake_api=fake_api)
