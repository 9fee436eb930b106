"""Allowances on every kind of call the SDK makes: streams (finished and abandoned), failed calls, async clients,
Message Batches, forked children, calls no budget covers; and how the hook behaves when the daemon goes away,
lends nothing, or is left at uninstrument.

Each test runs the real anthropic SDK against the fake API and a real daemon built in this process, over real
HTTP and OTLP. The hook asks for little at a time (`allowance_horizon_s` tiny), so it asks for more only when a
call needs it: what the daemon lends then changes only by what the test does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest
from _support import wait_for
from test_pipeline import app_env

import watcher
from watcher._instrument import _hook
from watcher._instrument._allowance import Allowances, Grant
from watcher._instrument._killswitch import UNREACHABLE
from watcher._instrument._reserve import Reserver
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.pricing import TokenUsage, default_price_table
from watcher.testing import FakeAnthropic, FakeReply, SpanCapture

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp() * 1e9)
MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 200, "output_tokens": 60}
PRICES = default_price_table()
CALL_USD = PRICES.cost(MODEL, TokenUsage(input_tokens=200, output_tokens=60)).total_usd
TEXT = "x" * 700  # about 240 tokens by the hook's bound: more than the 200 the fake reports
BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": TEXT}]}
WORST = Reserver(PRICES, lambda: NOW_NS).message(BODY)
"""What the hook reserves for one call of BODY."""
BUDGETS = """
[[budgets]]
name = "loop"
limit_usd = 0.01
period = "day"
kill_at = 1.2
scope = { request_type = "loop" }
"""
LINE = Decimal("0.012")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """A daemon whose clock stands at NOW; a test may stop it early."""
    settings = watcher.Settings(listen="127.0.0.1:0", state_dir=tmp_path / "daemon")
    daemon = build(settings, budgets=parse_budgets(BUDGETS), clock=lambda: NOW).start(tick_s=3600)
    yield daemon
    if not daemon.ticker.is_set():  # set by stop()
        daemon.stop()


@contextmanager
def instrumented(endpoint: str, spool: Path, **settings: Any) -> Iterator[anthropic.Anthropic]:
    """watcher instrumented against `endpoint`, its spans timed at NOW, and a client of the fake; uninstrumented
    after. Its spool is the test's own: a spooled span must never reach another test's daemon on a reused port."""
    base_url = settings.pop("base_url")
    provider = settings.pop("tracer_provider", None)
    options: dict[str, Any] = {"killswitch_poll_s": 60, "export_delay_ms": 50, "allowance_horizon_s": 0.001}
    watcher.instrument(
        watcher.Settings(endpoint=endpoint, spool_dir=spool, **{**options, **settings}),
        tracer_provider=provider,
        clock_ns=lambda: NOW_NS,
    )
    try:
        with anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0) as client:
            yield client
    finally:
        watcher.uninstrument()


@pytest.fixture
def hooked(running: Running, fake_api: FakeAnthropic, tmp_path: Path) -> Iterator[anthropic.Anthropic]:
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    with instrumented(running.address, tmp_path / "spool", base_url=fake_api.base_url) as client:
        yield client
        running.stop()  # first: it answers the kill-switch long poll that uninstrument would wait a second for


def call(client: anthropic.Anthropic, request_type: str = "loop") -> None:
    with watcher.request_type(request_type):
        client.messages.create(**BODY)


def allowances() -> Allowances:
    """The instrumented hook's allowances (its private state: what it holds is what these tests check)."""
    found = _hook._installed[-1][3]
    assert found is not None
    return found


def grant() -> Grant:
    """The hook's grant of budget "loop"."""
    session = allowances()._session
    assert session is not None
    return session.grants["loop"]


def spend(running: Running) -> Decimal:
    running.books.evaluate()
    return running.books.views["loop"].state.spend_usd


def lent(running: Running) -> Decimal:
    assert running.daemon.lender is not None
    return running.daemon.lender.lent("loop")[0]


def held(running: Running, tmp_path: Path) -> dict[str, tuple[Decimal, Decimal]]:
    """Each holder's (granted, credited) USD of "loop", as the store of the `running` daemon of `tmp_path` keeps
    them (the credits in memory written first)."""
    assert running.daemon.lender is not None
    running.daemon.lender.flush()
    with sqlite3.connect(f"file:{tmp_path / 'daemon' / 'state.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT holder, granted_nanos, credited_nanos FROM allowances WHERE budget = 'loop'")
        found = {holder: (Decimal(g) / 10**9, Decimal(c) / 10**9) for holder, g, c in rows}
    db.close()
    return found


# --- streams ---------------------------------------------------------------------------------------------


def test_a_stream_holds_its_reservation_while_open_and_settles_to_its_true_cost_at_its_end(
    running: Running, hooked: anthropic.Anthropic
) -> None:
    """While the stream is read its whole worst case stays taken (and lent at the daemon); at its end the grant
    keeps only the true cost, which the daemon credits, moving it from lent to committed."""
    with watcher.request_type("loop"):
        stream = hooked.messages.create(**BODY, stream=True)
    events = iter(stream)
    assert next(events).type == "message_start"
    watcher.flush()
    assert grant().used == pytest.approx(WORST)
    assert lent(running) == Decimal(repr(grant().granted))
    for _ in events:
        pass
    watcher.flush()
    assert grant().used == pytest.approx(float(CALL_USD))
    assert spend(running) == CALL_USD
    assert float(lent(running)) == pytest.approx(grant().granted - float(CALL_USD), abs=1e-9)


def test_a_stream_closed_before_its_end_is_settled_to_the_estimate_recorded(
    running: Running, hooked: anthropic.Anthropic
) -> None:
    """A stream the application closes unread is recorded at its estimated input: the reservation settles to that
    cost, not left at the worst case, and the daemon credits the same amount."""
    with watcher.request_type("loop"):
        stream = hooked.messages.create(**BODY, stream=True)
    stream.close()
    watcher.flush()
    recorded = spend(running)
    assert 0 < recorded < Decimal(repr(WORST))
    assert grant().used == pytest.approx(float(recorded))
    assert allowances()._session.inflight == 0  # type: ignore[union-attr]
    assert float(lent(running)) == pytest.approx(grant().granted - float(recorded), abs=1e-9)


# --- failures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
def test_a_failed_call_gives_its_whole_reservation_back_and_adds_no_spend(
    running: Running, hooked: anthropic.Anthropic, fake_api: FakeAnthropic, status: int
) -> None:
    """An error answer is not billed: nothing of the call's worst case stays taken, and the daemon books nothing."""
    fake_api.fail(status)
    with pytest.raises(anthropic.APIStatusError) as raised:
        call(hooked)
    assert raised.value.status_code == status
    watcher.flush()
    assert grant().used == 0
    assert allowances()._session.inflight == 0  # type: ignore[union-attr]
    assert spend(running) == 0
    assert lent(running) == Decimal(repr(grant().granted))


# --- async -----------------------------------------------------------------------------------------------


def test_async_calls_gathered_until_refused_stay_at_or_under_the_kill_line(
    running: Running, hooked: anthropic.Anthropic, fake_api: FakeAnthropic
) -> None:
    """Waves of concurrent AsyncAnthropic calls run until a whole wave is refused: every call that went through is
    booked, and the spend stays at or under the kill line, close to it."""
    wave = 10

    async def one(client: anthropic.AsyncAnthropic) -> bool:
        with watcher.request_type("loop"):
            try:
                await client.messages.create(**BODY)
            except watcher.BudgetExceeded as exc:
                assert exc.budget == "loop"
                return False
        return True

    async def until_refused() -> int:
        done = 0
        async with anthropic.AsyncAnthropic(base_url=fake_api.base_url, api_key="k", max_retries=0) as client:
            for _ in range(20):
                through = sum(await asyncio.gather(*(one(client) for _ in range(wave))))
                done += through
                if through == 0:
                    return done
        raise AssertionError(f"never refused after {done} calls")

    calls = asyncio.run(until_refused())
    watcher.flush()
    total = spend(running)
    assert total == calls * CALL_USD
    assert total <= LINE
    assert total >= LINE - wave * Decimal(repr(WORST)), f"stopped at {total}, far below the line"


# --- batches ---------------------------------------------------------------------------------------------


def batch_requests(count: int, max_tokens: int = 64) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "params": {**BODY, "max_tokens": max_tokens}} for i in range(count)]


def test_a_batch_reserves_its_worst_case_and_its_results_are_credited_to_the_creating_allowance(
    running: Running, hooked: anthropic.Anthropic, tmp_path: Path
) -> None:
    """Creating a batch takes the worst case of all its requests at batch prices, kept (its cost comes later);
    the results fetched through the SDK carry the creating allowance's holder, so the daemon credits it."""
    requests = batch_requests(3)
    with watcher.request_type("loop"):
        batch = hooked.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    worst = Reserver(PRICES, lambda: NOW_NS).batch({"requests": requests})
    assert worst < 3 * WORST  # batch prices
    assert grant().used == pytest.approx(worst)
    assert allowances()._session.held == pytest.approx(worst)  # type: ignore[union-attr]
    results = list(hooked.messages.batches.results(batch.id))  # outside the request type: the batch keeps it
    assert [r.result.type for r in results] == ["succeeded"] * 3
    watcher.flush()
    cost = spend(running)
    assert 0 < cost < 3 * CALL_USD  # batch prices
    holder = allowances()._session.holder  # type: ignore[union-attr]
    assert held(running, tmp_path)[holder][1] == cost
    assert grant().used == pytest.approx(worst)  # the whole reservation is kept


def test_a_batch_whose_worst_case_exceeds_what_is_left_is_refused_before_it_is_sent(
    running: Running, hooked: anthropic.Anthropic, fake_api: FakeAnthropic
) -> None:
    """A batch of forty 4096-token requests could cost more than the whole budget: the hook refuses it with
    BudgetExceeded and the API never sees it."""
    requests = batch_requests(40, max_tokens=4096)
    assert Reserver(PRICES, lambda: NOW_NS).batch({"requests": requests}) > float(LINE)
    with watcher.request_type("loop"), pytest.raises(watcher.BudgetExceeded) as refused:
        hooked.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert refused.value.budget == "loop"
    assert not [r for r in fake_api.requests if r.path.startswith("/v1/messages/batches")]


# --- fork ------------------------------------------------------------------------------------------------

FORKED = """
import os, sys
import anthropic, watcher
from watcher._instrument import _hook

watcher.instrument(
    watcher.Settings(endpoint=ENDPOINT, spool_dir=SPOOL, killswitch_poll_s=60, allowance_horizon_s=0.001),
    clock_ns=lambda: NOW_NS,
)

def call():
    with anthropic.Anthropic(base_url=BASE_URL, api_key="k", max_retries=0) as client:
        with watcher.request_type("loop"):
            client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "x" * 700}])
    watcher.flush()
    return _hook._installed[-1][3]._session.holder

parent = call()
pid = os.fork()
if pid == 0:
    try:
        print("child", call(), flush=True)
    finally:
        os._exit(0)
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print("parent", parent, flush=True)
sys.exit(code)
"""


def test_a_child_forked_after_instrument_gets_an_allowance_of_its_own(
    running: Running, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """The parent holds a grant when it forks; the child asks for its own: each one's span is credited to its own
    holder, and the daemon shows two holders."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    names = {"ENDPOINT": running.address, "SPOOL": str(tmp_path / "spool"), "NOW_NS": NOW_NS, "MODEL": MODEL}
    code = "".join(f"{k} = {v!r}\n" for k, v in names.items()) + f"BASE_URL = {fake_api.base_url!r}\n" + FORKED
    done = subprocess.run(
        [sys.executable, "-c", code], env=app_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    assert ids.keys() == {"parent", "child"} and ids["parent"] != ids["child"]
    credited = {holder: credit for holder, (_, credit) in held(running, tmp_path).items()}
    assert credited == {ids["parent"]: CALL_USD, ids["child"]: CALL_USD}
    assert running.daemon.lender.lent("loop")[1] == 2  # type: ignore[union-attr]


# --- the daemon goes away --------------------------------------------------------------------------------


@contextmanager
def grant_then_outage(running: Running, fake_api: FakeAnthropic, spool: Path, fail_mode: str) -> Iterator[Any]:
    """A hook that made one call (so it holds a grant) against a daemon then stopped, once its kill-switch
    poller has found the daemon gone."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    options = {"fail_mode": fail_mode, "killswitch_poll_s": 0.1}
    with instrumented(running.address, spool, base_url=fake_api.base_url, **options) as client:
        call(client)
        watcher.flush()
        running.stop()
        poller = _hook._installed[-1][2]
        assert poller is not None
        wait_for(lambda: not poller.board.reachable, "the poller to find the daemon gone")
        yield client


def test_failing_open_calls_beyond_the_grant_go_through_while_the_daemon_is_down(
    running: Running, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """With the daemon gone, calls spend the grant and then go on without one: nothing is refused."""
    with grant_then_outage(running, fake_api, tmp_path / "spool", "open") as client:
        left = grant().granted - grant().used
        beyond = int(left / WORST) + 3
        for _ in range(beyond):
            call(client)
        assert grant().granted - grant().used < WORST  # the grant was spent: the last calls went without one


def test_failing_closed_a_held_grant_is_honoured_then_calls_are_refused_as_unreachable(
    running: Running, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """With the daemon gone, calls the grant still covers go through; once it is spent they are refused, and the
    refusal names the unreachable daemon."""
    with grant_then_outage(running, fake_api, tmp_path / "spool", "closed") as client:
        covered = int((grant().granted - grant().used) / WORST)
        assert covered >= 1
        for _ in range(covered):
            call(client)
        with pytest.raises(watcher.BudgetExceeded) as refused:
            call(client)
        assert refused.value.budget == UNREACHABLE
        assert len(fake_api.requests) == 1 + covered


# --- a daemon that lends nothing -------------------------------------------------------------------------


class NoLending(ThreadingHTTPServer):
    """A daemon as old ones answer: budgets and kill switches, `allowances: true`, but 404 on /v1/allowances;
    spans taken and dropped. Keeps the paths it was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _NoLendingHandler)
        self.posts: list[str] = []
        threading.Thread(target=self.serve_forever, name="no-lending", daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _NoLendingHandler(BaseHTTPRequestHandler):
    server: NoLending

    def do_GET(self) -> None:
        budgets = [{"budget": "loop", "scope": {"request_type": "loop"}}]
        self._send(200, {"version": 1, "engaged": [], "budgets": budgets, "allowances": True})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.posts.append(self.path)
        if self.path == "/v1/allowances":
            self._send(404, {"error": "not found"})
        else:
            self._send(200, {})

    def _send(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_a_daemon_that_lends_nothing_leaves_the_kill_switch_alone_with_one_warning(
    fake_api: FakeAnthropic, tmp_path: Path, caplog: pytest.LogCaptureFixture, fail_mode: str
) -> None:
    """A 404 on /v1/allowances is asked once and logged once; every call then goes by the kill switch alone
    (none is engaged, so none is refused, whatever the fail mode) and no span names a holder."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    spans = SpanCapture()
    stub = NoLending()
    logged = caplog.at_level(logging.WARNING, logger="watcher")
    options = {"fail_mode": fail_mode, "tracer_provider": spans.provider}
    try:
        with logged, instrumented(stub.address, tmp_path / "spool", base_url=fake_api.base_url, **options) as client:
            for _ in range(3):
                call(client)
            watcher.flush()
    finally:
        stub.close()
        spans.provider.shutdown()
    assert stub.posts.count("/v1/allowances") == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "watcher" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "lends no allowances" in warnings[0], warnings
    cost_spans = spans.cost_spans()
    assert len(cost_spans) == 3
    assert not [s for s in cost_spans if "watcher.allowance.holder" in (s.attributes or {})]


# --- calls no budget covers ------------------------------------------------------------------------------


def test_a_call_no_budget_covers_takes_no_reservation_and_names_no_holder(
    running: Running, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """A call outside every budget's scope asks for no allowance and its span carries no holder; one in scope
    (the control) reserves, and its span names this process's holder."""
    fake_api.default = FakeReply(model=MODEL, usage=USAGE)
    spans = SpanCapture()
    try:
        with instrumented(
            running.address, tmp_path / "spool", base_url=fake_api.base_url, tracer_provider=spans.provider
        ) as client:
            call(client, request_type="other")
            watcher.flush()
            assert allowances()._session is None
            assert lent(running) == 0
            call(client)
            watcher.flush()
            holder = allowances()._session.holder  # type: ignore[union-attr]
    finally:
        spans.provider.shutdown()
    attributes = {str(a.get("watcher.request_type")): a for a in (dict(s.attributes or {}) for s in spans.cost_spans())}
    assert "watcher.allowance.holder" not in attributes["other"]
    assert attributes["loop"]["watcher.allowance.holder"] == holder


# --- uninstrument ----------------------------------------------------------------------------------------


def test_uninstrument_gives_back_what_the_allowance_did_not_spend(
    running: Running, hooked: anthropic.Anthropic
) -> None:
    """At uninstrument the hook records its spans, then tells the daemon what it spent: nothing stays lent, and
    the spend is all committed."""
    for _ in range(3):
        call(hooked)
    watcher.flush()
    assert lent(running) > 0
    watcher.uninstrument()
    assert lent(running) == 0
    assert spend(running) == 3 * CALL_USD
