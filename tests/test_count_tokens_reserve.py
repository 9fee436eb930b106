"""WATCHER_RESERVE_COUNT_TOKENS: a Messages call a budget covers is reserved at the API's count of its input,
asked through the same client just before the call; every other call, or a failed count, keeps the size estimate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic import AnthropicVertex

import watcher
from watcher._instrument import _count
from watcher._instrument._allowance import Allowances, Reservation
from watcher._instrument._estimate import input_tokens_bound
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.pricing import default_price_table
from watcher.testing import FakeAnthropic, FakeReply

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MODEL = "claude-haiku-4-5"
COUNTED = 2_000  # what the fake's count_tokens answers: far above the ~240 the size estimate gives TEXT
USAGE = {"input_tokens": COUNTED, "output_tokens": 60}
TEXT = "x" * 700
MAX_TOKENS = 64
MESSAGES = [{"role": "user", "content": TEXT}]
BODY = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES}
AUTH = ("x-api-key", "authorization")
COUNT_PATH, MESSAGE_PATH = "/v1/messages/count_tokens", "/v1/messages"
BUDGETS = """
[[budgets]]
name = "loop"
limit_usd = 0.01
period = "day"
kill_at = 1.2
scope = { request_type = "loop" }
"""


def worst_case(input_tokens: int) -> float:
    """The ceiling of one call of MODEL at `input_tokens` prompt tokens and MAX_TOKENS out, on NOW's day."""
    day = NOW.replace(hour=0, minute=0)
    return default_price_table().ceiling(MODEL, at=day).cost(input_tokens, MAX_TOKENS)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    settings = watcher.Settings(listen="127.0.0.1:0", state_dir=tmp_path)
    daemon = build(settings, budgets=parse_budgets(BUDGETS), clock=lambda: NOW).start(tick_s=3600)
    yield daemon
    daemon.stop()


@pytest.fixture
def reserved(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The amount of every reservation the hook takes, in order."""
    amounts: list[float] = []
    original = Allowances.reserve

    def spy(self: Allowances, budgets: tuple[str, ...], amount: float) -> Reservation | None:
        amounts.append(amount)
        return original(self, budgets, amount)

    monkeypatch.setattr(Allowances, "reserve", spy)
    return amounts


@pytest.fixture
def failures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the count reported as failed (the rate-limited failure log is process-wide, so it is spied on)."""
    reported: list[str] = []
    monkeypatch.setattr(_count, "report_failure", lambda what, exc: reported.append(what))
    return reported


def instrumented(running: Running, fake_api: FakeAnthropic, *, count: bool) -> Callable[[], None]:
    """Instruments watcher against the daemon, counting or not; returns the way to undo it."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    settings = watcher.Settings(endpoint=running.address, killswitch_poll_s=60, reserve_count_tokens=count)
    watcher.instrument(settings, clock_ns=lambda: int(NOW.timestamp() * 1e9))
    return watcher.uninstrument


@pytest.fixture
def counting(running: Running, fake_api: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """A client instrumented with WATCHER_RESERVE_COUNT_TOKENS on."""
    undo = instrumented(running, fake_api, count=True)
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            yield client
    finally:
        undo()


def call(client: anthropic.Anthropic, request_type: str = "loop") -> None:
    with watcher.request_type(request_type):
        client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)  # type: ignore[arg-type]


def paths(fake: FakeAnthropic) -> list[str]:
    return [request.path for request in fake.requests]


def test_a_covered_call_is_counted_first_and_reserved_at_the_count(
    counting: anthropic.Anthropic, fake_api: FakeAnthropic, reserved: list[float]
) -> None:
    """One count_tokens request goes first, with the call's auth and its body less what count_tokens refuses;
    the reservation is the worst case at the counted input, not at the size estimate."""
    call(counting)
    assert paths(fake_api) == [COUNT_PATH, MESSAGE_PATH]
    count = fake_api.requests[0]
    assert count.json == {"model": MODEL, "messages": MESSAGES}
    message = fake_api.requests[1]
    assert [count.headers.get(name) for name in AUTH] == [message.headers.get(name) for name in AUTH] != [None] * 2
    assert float(count.headers["x-stainless-timeout"]) == _count.COUNT_TIMEOUT_S  # a slow count is given up
    assert reserved == [pytest.approx(worst_case(COUNTED))]
    assert worst_case(COUNTED) > 2 * worst_case(input_tokens_bound(BODY))


def test_a_streamed_call_is_counted_with_a_plain_request(
    counting: anthropic.Anthropic, fake_api: FakeAnthropic, reserved: list[float]
) -> None:
    """`messages.stream()` marks its request as a stream; its count is still an ordinary JSON answer."""
    streamed = counting.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)  # type: ignore[arg-type]
    with watcher.request_type("loop"), streamed as stream:
        stream.get_final_message()
    assert paths(fake_api) == [COUNT_PATH, MESSAGE_PATH]
    assert "stream" not in fake_api.requests[0].json  # type: ignore[operator]
    assert reserved == [pytest.approx(worst_case(COUNTED))]


def test_a_call_no_budget_covers_is_not_counted(
    counting: anthropic.Anthropic, fake_api: FakeAnthropic, reserved: list[float]
) -> None:
    """Outside every budget's scope nothing is reserved, so nothing is counted."""
    call(counting, request_type="elsewhere")
    assert paths(fake_api) == [MESSAGE_PATH]
    assert reserved == []


def test_with_the_setting_off_the_size_estimate_is_reserved_and_nothing_counted(
    running: Running, fake_api: FakeAnthropic, reserved: list[float]
) -> None:
    """The default: no extra request, the worst case at the body's size bound."""
    undo = instrumented(running, fake_api, count=False)
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            call(client)
    finally:
        undo()
    assert paths(fake_api) == [MESSAGE_PATH]
    assert reserved == [pytest.approx(worst_case(input_tokens_bound(BODY)))]


def test_a_failed_count_falls_back_to_the_size_estimate_and_the_call_goes_on(
    counting: anthropic.Anthropic, fake_api: FakeAnthropic, reserved: list[float], failures: list[str]
) -> None:
    """count_tokens answering 500 is logged as a hook failure; the call is reserved at the estimate and answered."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE, count_status=500)
    with watcher.request_type("loop"):
        message = counting.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)  # type: ignore[arg-type]
    assert message.usage.input_tokens == COUNTED
    assert paths(fake_api) == [COUNT_PATH, MESSAGE_PATH]
    assert reserved == [pytest.approx(worst_case(input_tokens_bound(BODY)))]
    assert failures == ["count a request's input tokens"]


def test_an_async_client_awaits_its_count(
    running: Running, fake_api: FakeAnthropic, reserved: list[float], failures: list[str]
) -> None:
    """On an async client the count is awaited on the event loop, and the call is reserved at it."""
    undo = instrumented(running, fake_api, count=True)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            with watcher.request_type("loop"):
                await client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES)  # type: ignore[arg-type]

    try:
        asyncio.run(main())
    finally:
        undo()
    assert paths(fake_api) == [COUNT_PATH, MESSAGE_PATH]
    assert fake_api.requests[0].json == {"model": MODEL, "messages": MESSAGES}
    assert reserved == [pytest.approx(worst_case(COUNTED))]
    assert failures == []


def test_vertex_keeps_the_size_estimate(counting: anthropic.Anthropic, fake_api: FakeAnthropic) -> None:
    """Only the first-party API is counted: Vertex's count endpoint is another route, with other auth."""
    vertex = AnthropicVertex(region="us-east5", project_id="p", access_token="t", base_url=fake_api.base_url + "/v1")
    with vertex, watcher.request_type("loop"):
        vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=MAX_TOKENS, messages=MESSAGES)  # type: ignore[arg-type]
    assert len(fake_api.requests) == 1
    assert "count" not in fake_api.requests[0].path


def test_the_count_body_keeps_only_what_count_tokens_accepts() -> None:
    """Every input-bearing field is kept; max_tokens, stream, sampling and metadata are dropped."""
    kept = {"model": MODEL, "messages": MESSAGES, "system": "s", "tools": [], "tool_choice": {"type": "auto"}}
    kept |= {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    dropped = {"max_tokens": 5, "stream": True, "temperature": 0.5, "metadata": {"user_id": "u"}, "stop_sequences": []}
    options: Any = anthropic._models.FinalRequestOptions(method="post", url="/v1/messages?beta=true")
    options.json_data = kept | dropped
    request = _count.count_request(anthropic.APIRequest(options=options, cast_to=object, stream=True))
    assert request.json == kept
    assert request.url == "/v1/messages/count_tokens?beta=true"
    assert request.stream is False
