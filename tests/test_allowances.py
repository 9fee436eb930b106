"""Allowances hold a budget's hard line under concurrency: processes reserve each call's worst case from
headroom the daemon lends them, and stored spans move their cost from lent to committed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from _support import http

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.pricing import TokenUsage, default_price_table
from watcher.testing import FakeAnthropic, FakeReply

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 200, "output_tokens": 60}
CALL_USD = default_price_table().cost(MODEL, TokenUsage(input_tokens=200, output_tokens=60)).total_usd
TEXT = "x" * 700  # about 240 tokens by the hook's bound: more than the 200 the fake reports
BUDGETS = """
[[budgets]]
name = "loop"
limit_usd = 0.01
period = "day"
kill_at = 1.2
scope = { request_type = "loop" }
"""
LINE = Decimal("0.012")


class Clock:
    """The daemon's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def start(state_dir: Path, clock: Clock, ttl_s: float = 30.0) -> Running:
    settings = watcher.Settings(listen="127.0.0.1:0", state_dir=state_dir, allowance_ttl_s=ttl_s)
    return build(settings, budgets=parse_budgets(BUDGETS), clock=clock).start(tick_s=3600)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def running(tmp_path: Path, clock: Clock) -> Iterator[Running]:
    daemon = start(tmp_path, clock)
    yield daemon
    daemon.stop()


@pytest.fixture
def hooked(running: Running, fake_api: FakeAnthropic, clock: Clock) -> Iterator[anthropic.Anthropic]:
    """An instrumented client whose spans go to the daemon, timed by the daemon's clock. It asks for little at a
    time, so its grant grows only when a call needs more: what is lent changes only by what the test does."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    settings = watcher.Settings(
        endpoint=running.address, killswitch_poll_s=60, export_delay_ms=50, allowance_horizon_s=0.001
    )
    watcher.instrument(settings, clock_ns=lambda: int(clock.now.timestamp() * 1e9))
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            yield client
    finally:
        watcher.uninstrument()


def call(client: anthropic.Anthropic) -> None:
    with watcher.request_type("loop"):
        client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": TEXT}])


def spend(running: Running) -> Decimal:
    running.books.evaluate()
    return running.books.views["loop"].state.spend_usd


def lend(running: Running, holder: str, want: float, need: float = 0.0) -> dict[str, object]:
    body = {"version": 1, "holder": holder, "asks": [{"budget": "loop", "want_usd": want, "need_usd": need}]}
    status, answer = http(f"{running.address}/v1/allowances", json.dumps(body).encode())
    assert status == 200, answer
    grants: list[dict[str, object]] = json.loads(answer)["grants"]
    return grants[0]


def test_a_call_in_scope_is_reserved_and_its_span_credits_the_allowance(
    running: Running, hooked: anthropic.Anthropic
) -> None:
    """After one call and its span, what is lent is the grant less the call's true cost, and spend holds the cost."""
    call(hooked)
    lent, holders = running.daemon.lender.lent("loop")  # type: ignore[union-attr]
    assert holders == 1 and lent > 0
    watcher.flush()
    assert spend(running) == CALL_USD
    after, _ = running.daemon.lender.lent("loop")  # type: ignore[union-attr]
    assert after == lent - CALL_USD


def test_threads_racing_to_the_line_never_pass_it(running: Running, hooked: anthropic.Anthropic) -> None:
    """Twenty threads call until refused: the stored spend stays at or under the kill line, and close to it."""
    refused: list[watcher.BudgetExceeded] = []
    calls = [0]
    lock = threading.Lock()

    def loop() -> None:
        for _ in range(200):
            try:
                call(hooked)
            except watcher.BudgetExceeded as exc:
                refused.append(exc)
                return
            with lock:
                calls[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    watcher.flush()
    total = spend(running)
    assert total == calls[0] * CALL_USD
    assert total <= LINE
    assert total >= LINE - 20 * 2 * CALL_USD, f"stopped at {total}, far below the line"
    assert len(refused) == 20 and all(exc.budget == "loop" for exc in refused)
    (budget,) = running.daemon.budgets(running.books.now())["budgets"]
    assert sorted(event["kind"] for event in budget["events"]) == ["alert", "exhausted"]  # each once
    assert budget["state"] == "exhausted"


def test_an_allowance_lost_with_its_process_expires_and_its_headroom_returns(running: Running, clock: Clock) -> None:
    """A holder that never comes back keeps its grant only until the allowance's time runs out."""
    first = lend(running, "lost-holder-1", want=0.011, need=0.011)
    assert first["granted_usd"] == pytest.approx(0.011)
    assert lend(running, "other-holder", want=0.011, need=0.007)["refused"] is True
    clock.now += timedelta(seconds=31)
    again = lend(running, "other-holder", want=0.011, need=0.007)
    assert again["refused"] is False and again["granted_usd"] == pytest.approx(0.007)


def test_allowances_out_survive_a_daemon_restart(tmp_path: Path, clock: Clock) -> None:
    """What was lent before a restart still counts after it, until it expires."""
    daemon = start(tmp_path, clock)
    try:
        lend(daemon, "holder-before", want=0.011, need=0.011)
    finally:
        daemon.stop()
    again = start(tmp_path, clock)
    try:
        assert again.daemon.lender.lent("loop")[0] == Decimal("0.011")  # type: ignore[union-attr]
        assert lend(again, "holder-after", want=0.011, need=0.007)["refused"] is True
    finally:
        again.stop()


def test_a_budget_the_daemon_no_longer_has_is_lent_nothing_and_named(running: Running) -> None:
    """An ask for a budget missing from the daemon's configuration is answered, not refused: it is named unknown."""
    body = {"version": 1, "holder": "stale-holder", "asks": [{"budget": "gone", "want_usd": 1, "need_usd": 0.1}]}
    status, answer = http(f"{running.address}/v1/allowances", json.dumps(body).encode())
    assert status == 200, answer
    assert json.loads(answer)["unknown"] == ["gone"] and json.loads(answer)["grants"] == []


class StaleDaemon:
    """Answers every allowance request as a daemon whose configuration dropped the budget `gone`."""

    endpoint = "http://stale.invalid"

    def __init__(self) -> None:
        self.asked = 0

    def get(self, path: str, timeout_s: float | None = None) -> bytes:
        raise OSError("not used")

    def post_json(self, path: str, body: bytes = b"", timeout_s: float | None = None) -> object:
        self.asked += 1
        holder = json.loads(body)["holder"]
        return {"version": 1, "holder": holder, "expires_in_s": 30, "grants": [], "unknown": ["gone"]}


def test_a_hook_with_a_stale_budget_lets_the_call_through_and_stops_reserving_for_it() -> None:
    """Calls under a budget the daemon no longer has are neither refused nor reserved, after one ask."""
    from watcher._instrument._allowance import Allowances
    from watcher._instrument._killswitch import Board, Rule

    board = Board(fail_closed=True)
    board.scopes, board.lends = (Rule("gone", None, None, 0.0, 0.0, None),), True
    board.ready.set()
    daemon = StaleDaemon()
    allowances = Allowances(daemon, board, service="s", fail_closed=True, horizon_s=5)
    assert allowances.budgets_for("loop", MODEL) == ("gone",)
    assert allowances.reserve(("gone",), 0.01) is None
    assert allowances.budgets_for("loop", MODEL) == ()
    assert daemon.asked == 1
