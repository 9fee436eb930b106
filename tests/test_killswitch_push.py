"""Kill-switch changes are pushed: a long poll carries an engage, a crossing or a release to the hook at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from _support import http, wait_for

import watcher
from watcher._client import DaemonClient
from watcher._instrument._killswitch import KillSwitchPoller
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.ledger import Entry
from watcher.testing import FakeAnthropic, SpanCapture

HI = [{"role": "user", "content": "hi"}]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUDGETS = """
[[budgets]]
name = "extraction-daily"
limit_usd = 1
period = "day"
scope = { request_type = "extraction" }
"""
GENEROUS_S = 10.0
"""Far below the 60 s poll interval the hooks here are given: a change seen within it came by push."""


def start_daemon(state_dir: Path, listen: str = "127.0.0.1:0") -> Running:
    settings = watcher.Settings(listen=listen, state_dir=state_dir)
    return build(settings, budgets=parse_budgets(BUDGETS), clock=lambda: NOW).start(tick_s=3600)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    daemon = start_daemon(tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture
def poller(running: Running) -> Iterator[KillSwitchPoller]:
    """A hook's poller against the daemon, with a poll interval no test could wait out."""
    started = KillSwitchPoller(DaemonClient(running.address), interval_s=60, service="s", environment="e").start()
    wait_for(lambda: running.books.revision.waiting == 1, "the poller's first long poll")
    yield started
    started.stop()


def engaged_budgets(poller: KillSwitchPoller) -> list[str]:
    return [rule.budget for rule in poller.board.rules]


def switch(running: Running, name: str, action: str) -> None:
    status, body = http(f"{running.address}/v1/killswitch/{name}/{action}", b"")
    assert status == 200, body


def killswitch(running: Running, query: str = "") -> tuple[dict[str, object], float]:
    """The parsed `/v1/killswitch` answer to `query`, and how many seconds it took."""
    began = time.monotonic()
    status, body = http(f"{running.address}/v1/killswitch{query}")
    assert status == 200, body
    return json.loads(body), time.monotonic() - began


def test_a_hand_engage_reaches_an_instrumented_process_without_a_poll(
    running: Running, fake_api: FakeAnthropic
) -> None:
    """An app polling every 60 s refuses calls in scope within seconds of `engage`."""
    watcher.instrument(
        watcher.Settings(endpoint=running.address, killswitch_poll_s=60), tracer_provider=SpanCapture().provider
    )
    try:
        wait_for(lambda: running.books.revision.waiting == 1, "the hook's first long poll")
        switch(running, "extraction-daily", "engage")
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client, watcher.request_type("extraction"):

            def refused() -> bool:
                try:
                    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
                except watcher.BudgetExceeded:
                    return True
                return False

            wait_for(refused, "the engaged switch to refuse a call", GENEROUS_S)
    finally:
        watcher.uninstrument()


def test_a_threshold_crossing_reaches_the_hook_without_a_poll(running: Running, poller: KillSwitchPoller) -> None:
    """The batch that takes a budget past its kill line engages the switch on the hook's board at once."""
    entry = Entry.of("crossing", NOW, "s", "e", "extraction", "claude-opus-4-7", cost_usd=Decimal("1.3"))
    running.daemon.ingest([entry])
    assert wait_for(lambda: engaged_budgets(poller), "the crossing on the board", GENEROUS_S) == ["extraction-daily"]


def test_a_hand_release_reaches_the_hook_without_a_poll(running: Running, poller: KillSwitchPoller) -> None:
    """After `release`, the board drops the switch within seconds, not at the next 60 s poll."""
    switch(running, "extraction-daily", "engage")
    wait_for(lambda: engaged_budgets(poller), "the engage on the board", GENEROUS_S)
    switch(running, "extraction-daily", "release")
    wait_for(lambda: not engaged_budgets(poller), "the release on the board", GENEROUS_S)


def test_a_long_poll_with_a_stale_revision_answers_at_once(running: Running) -> None:
    """A client that names a revision other than the current one gets the current document without waiting."""
    before, _ = killswitch(running)
    switch(running, "extraction-daily", "engage")
    after, took = killswitch(running, f"?wait=30&revision={before['revision']}")
    assert after["revision"] != before["revision"]
    assert [s["budget"] for s in after["engaged"]] == ["extraction-daily"]  # type: ignore[attr-defined]
    assert took < GENEROUS_S


def test_a_long_poll_with_the_current_revision_is_answered_by_the_next_change(running: Running) -> None:
    """A held request is answered with the new document as soon as a switch is engaged."""
    current, _ = killswitch(running)
    answers: list[dict[str, object]] = []
    waiter = threading.Thread(
        target=lambda: answers.append(killswitch(running, f"?wait=30&revision={current['revision']}")[0])
    )
    waiter.start()
    wait_for(lambda: running.books.revision.waiting == 1, "the request to be held")
    switch(running, "extraction-daily", "engage")
    waiter.join(GENEROUS_S)
    assert answers and answers[0]["engaged"], "the held request was answered with the engaged switch"


def test_a_restarted_daemon_never_repeats_a_revision_of_its_predecessor(tmp_path: Path) -> None:
    """A long poll naming the previous run's revision answers at once, though the new run counted as far."""
    first = start_daemon(tmp_path)
    switch(first, "extraction-daily", "engage")
    seen, _ = killswitch(first)
    first.stop()
    second = start_daemon(tmp_path, f"127.0.0.1:{first.server.server_address[1]}")
    try:
        answer, took = killswitch(second, f"?wait=30&revision={seen['revision']}")
    finally:
        second.stop()
    assert answer["revision"] != seen["revision"] and answer["engaged"]
    assert took < GENEROUS_S


def test_the_plain_get_answers_at_once_with_the_format_version(running: Running) -> None:
    """Without `wait` the document comes back at once, as before long polls, `version` still the format's."""
    document, took = killswitch(running)
    assert document["version"] == 1 and isinstance(document["revision"], str)
    assert took < GENEROUS_S


def test_a_wait_that_is_not_a_number_is_refused(running: Running) -> None:
    """`wait=soon` is a 400 naming the expected form, not a request held for nothing."""
    status, body = http(f"{running.address}/v1/killswitch?wait=soon")
    assert status == 400 and b"wait must be a number" in body


def test_stopping_the_daemon_answers_the_long_polls_it_holds(tmp_path: Path) -> None:
    """`Running.stop()` wakes a held request, which gets its answer at once instead of after its 30 s."""
    running = start_daemon(tmp_path)
    current, _ = killswitch(running)
    answered = threading.Event()

    def hold() -> None:
        killswitch(running, f"?wait=30&revision={current['revision']}")
        answered.set()

    threading.Thread(target=hold, daemon=True).start()
    wait_for(lambda: running.books.revision.waiting == 1, "the request to be held")
    running.stop()
    assert answered.wait(GENEROUS_S)


def test_uninstrument_returns_while_a_long_poll_is_still_held(running: Running) -> None:
    """Stopping the hook does not wait for the daemon to answer the request in flight."""
    watcher.instrument(
        watcher.Settings(endpoint=running.address, killswitch_poll_s=60), tracer_provider=SpanCapture().provider
    )
    wait_for(lambda: running.books.revision.waiting == 1, "the hook's long poll")
    watcher.uninstrument()
    assert running.books.revision.waiting == 1, "uninstrument() returned before the daemon answered"


class Scripted:
    """A fetcher that answers with `revision` (none: a daemon older than long polls) and records each path asked."""

    endpoint = "http://127.0.0.1:9"

    def __init__(self, revision: str | None, again_at: int = 2) -> None:
        self.revision, self.again_at = revision, again_at
        self.paths: list[str] = []
        self.again = threading.Event()

    def get(self, path: str, timeout_s: float | None = None) -> bytes:
        self.paths.append(path)
        if len(self.paths) >= self.again_at:
            self.again.set()
        document = {"version": 1, "engaged": [], **({"revision": self.revision} if self.revision else {})}
        return json.dumps(document).encode()


def test_the_next_long_poll_goes_out_at_once_naming_the_revision_last_seen() -> None:
    """After an answer with a revision the hook asks again without waiting its interval, with that revision."""
    fetcher = Scripted("r-7")
    poller = KillSwitchPoller(fetcher, interval_s=3600, service="s", environment="e").start()
    try:
        assert fetcher.again.wait(GENEROUS_S)
    finally:
        poller.stop()
    assert fetcher.paths[:2] == ["/v1/killswitch?wait=10", "/v1/killswitch?wait=10&revision=r-7"]


def test_a_daemon_that_ignores_wait_is_polled_at_the_interval_not_in_a_spin() -> None:
    """An answer without a revision sends the hook back to waiting `interval_s` between requests."""
    fetcher = Scripted(None)
    poller = KillSwitchPoller(fetcher, interval_s=3600, service="s", environment="e").start()
    try:
        wait_for(lambda: fetcher.paths, "the first request")
        assert not fetcher.again.wait(0.5), "a spinning hook asks again at once"
    finally:
        poller.stop()


def test_a_daemon_that_answers_at_once_with_an_unchanged_revision_is_not_asked_in_a_spin() -> None:
    """Something that drops `wait` but passes the revision on sends the hook back to its interval too."""
    fetcher = Scripted("r-7", again_at=3)
    poller = KillSwitchPoller(fetcher, interval_s=3600, service="s", environment="e").start()
    try:
        wait_for(lambda: len(fetcher.paths) >= 2, "the request naming the revision")
        assert not fetcher.again.wait(0.5), "a spinning hook asks again at once"
    finally:
        poller.stop()


def test_spend_alone_does_not_move_the_revision_but_a_crossing_does(running: Running) -> None:
    """Held long polls wake for a change in which switches are engaged, not for every batch of spend."""
    before, _ = killswitch(running)
    spend = Entry.of("small", NOW, "s", "e", "extraction", "claude-opus-4-7", cost_usd=Decimal("0.1"))
    running.daemon.ingest([spend])
    assert killswitch(running)[0]["revision"] == before["revision"]
    crossing = Entry.of("crossing", NOW, "s", "e", "extraction", "claude-opus-4-7", cost_usd=Decimal("1.3"))
    running.daemon.ingest([crossing])
    engaged, _ = killswitch(running)
    assert engaged["revision"] != before["revision"]
    more = Entry.of("more", NOW, "s", "e", "extraction", "claude-opus-4-7", cost_usd=Decimal("0.5"))
    running.daemon.ingest([more])
    assert killswitch(running)[0]["revision"] == engaged["revision"]
