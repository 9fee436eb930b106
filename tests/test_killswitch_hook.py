"""Instrumented apps obey kill switches: refused before sending, polled off the call path, fail-open by default."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest

import watcher
from watcher._client import DaemonClient
from watcher._instrument._killswitch import KillSwitchPoller, parse_rules
from watcher.daemon import Running, build
from watcher.testing import FakeAnthropic, SpanCapture

HI = [{"role": "user", "content": "hi"}]


def engaged(*rules: dict[str, Any]) -> bytes:
    return json.dumps({"version": 1, "generated_at": "2026-11-25T19:00:00Z", "engaged": list(rules)}).encode()


def rule(budget: str = "extraction-daily", **scope: str) -> dict[str, Any]:
    full = {"request_type": None, "model": None, "service": None, "environment": None, **scope}
    return {
        "budget": budget,
        "scope": full,
        "since": "2026-11-25T18:00:00Z",
        "resets_at": "2026-11-26T00:00:00Z",
        "spend_usd": 24.5,
        "limit_usd": 20.0,
        "reason": "threshold",
    }


class FakeDaemon:
    """Serves a settable `/v1/killswitch` answer on loopback; `up = False` makes it refuse connections."""

    def __init__(self) -> None:
        self.body = engaged()
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = daemon.body
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    running = FakeDaemon()
    yield running
    running.stop()


@pytest.fixture
def poller(daemon: FakeDaemon) -> Iterator[KillSwitchPoller]:
    """watcher instrumented against the fake daemon; the test polls by hand with `refresh()`."""
    watcher.instrument(
        watcher.Settings(endpoint=daemon.endpoint, killswitch_poll_s=60), tracer_provider=SpanCapture().provider
    )
    from watcher._instrument._hook import _installed

    active = _installed[-1][2]
    assert active is not None
    yield active
    watcher.uninstrument()


def test_a_call_in_an_engaged_scope_is_refused_before_a_byte_is_sent(
    daemon: FakeDaemon, poller: KillSwitchPoller, fake_api: FakeAnthropic
) -> None:
    """BudgetExceeded names the budget, spend, limit and reset; the API never sees the request."""
    daemon.body = engaged(rule(request_type="extraction"))
    poller.refresh()
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
        with watcher.request_type("extraction"), pytest.raises(watcher.BudgetExceeded) as refused:
            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)  # other types go ahead
    assert refused.value.budget == "extraction-daily"
    assert (refused.value.spend_usd, refused.value.limit_usd) == (24.5, 20.0)
    assert refused.value.resets_at is not None and refused.value.resets_at.isoformat().startswith("2026-11-26")
    assert len([r for r in fake_api.requests if r.path.startswith("/v1/messages")]) == 1


def test_suppressing_instrumentation_silences_spans_but_does_not_lift_a_kill_switch(
    daemon: FakeDaemon, poller: KillSwitchPoller, fake_api: FakeAnthropic
) -> None:
    """A call in an engaged scope is refused even inside OpenTelemetry's `suppress_instrumentation()`."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    daemon.body = engaged(rule(request_type="extraction"))
    poller.refresh()
    with (
        anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client,
        suppress_instrumentation(),
        watcher.request_type("extraction"),
        pytest.raises(watcher.BudgetExceeded),
    ):
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    assert fake_api.requests == []


def test_scopes_match_models_by_glob_and_skip_other_services(
    daemon: FakeDaemon, poller: KillSwitchPoller, fake_api: FakeAnthropic
) -> None:
    """A model glob stops matching models only; a switch for another service stops nothing here."""
    daemon.body = engaged(rule("opus", model="claude-opus-*"), rule("elsewhere", service="billing-*"))
    poller.refresh()
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
        with pytest.raises(watcher.BudgetExceeded, match="opus"):
            client.messages.create(model="claude-opus-4-7", max_tokens=8, messages=HI)
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)


def test_released_switches_let_calls_through_at_the_next_poll(
    daemon: FakeDaemon, poller: KillSwitchPoller, fake_api: FakeAnthropic
) -> None:
    """Once the daemon stops listing a switch, the next poll lifts the refusal."""
    daemon.body = engaged(rule())
    poller.refresh()
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
        with pytest.raises(watcher.BudgetExceeded):
            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        daemon.body = engaged()
        poller.refresh()
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)


def test_batch_creation_in_scope_is_refused(
    daemon: FakeDaemon, poller: KillSwitchPoller, fake_api: FakeAnthropic
) -> None:
    """Creating a batch spends money too, so a switch covering one of its models refuses it."""
    daemon.body = engaged(rule(model="claude-opus-*"))
    poller.refresh()
    requests = [
        {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": HI}},
        {"custom_id": "b", "params": {"model": "claude-opus-4-7", "max_tokens": 8, "messages": HI}},
    ]
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client, pytest.raises(watcher.BudgetExceeded):
        client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert fake_api.requests == []


def test_an_unreachable_daemon_fails_open_and_is_logged_once(
    fake_api: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    """By default, calls go ahead when the daemon cannot be reached, with one warning per outage."""
    caplog.set_level(logging.WARNING, logger="watcher")
    poller = KillSwitchPoller(DaemonClient("http://127.0.0.1:9"), interval_s=3600, service="s", environment="e")
    poller.refresh()
    poller.refresh()
    poller.board.check("extraction", "claude-haiku-4-5")
    assert caplog.text.count("cannot reach the daemon") == 1


@pytest.fixture
def token_daemon(tmp_path: Path) -> Iterator[Running]:
    """A real daemon on loopback that requires the bearer token "right"."""
    settings = watcher.Settings(listen="127.0.0.1:0", state_dir=tmp_path, token="right")
    running = build(settings, budgets=[]).start(tick_s=3600)
    yield running
    running.stop()


def token_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "watcher"]
    caplog.clear()
    return found


def test_a_refused_token_is_an_error_naming_watcher_token_once_per_change_of_state(
    token_daemon: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 is logged at ERROR as a token problem, not an outage, once until it is accepted again, and anew after."""
    caplog.set_level(logging.DEBUG, logger="watcher")
    client = DaemonClient(token_daemon.address, "right")
    poller = KillSwitchPoller(client, interval_s=3600, service="s", environment="e")
    poller.refresh()
    assert token_lines(caplog) == []
    token_daemon.server.token = "rotated"  # the daemon now wants another token than the app's
    poller.refresh()
    poller.refresh()
    [(level, message)] = token_lines(caplog)
    assert level == logging.ERROR
    assert message == (
        f"the daemon at {token_daemon.address}/v1/killswitch refused watcher's token (401): "
        "set WATCHER_TOKEN to the daemon's token; kill switches are not enforced"
    )
    poller.board.check("extraction", "claude-haiku-4-5")  # fail-open: the call goes ahead
    token_daemon.server.token = "right"
    poller.refresh()
    poller.refresh()
    [(level, message)] = token_lines(caplog)
    assert level == logging.WARNING and "again" in message
    token_daemon.server.token = "rotated"
    poller.refresh()
    assert [level for level, _ in token_lines(caplog)] == [logging.ERROR]


def test_a_refused_token_with_fail_closed_refuses_calls_and_says_so(
    token_daemon: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """With WATCHER_FAIL_MODE=closed a wrong token refuses calls, and the error says that is why."""
    caplog.set_level(logging.DEBUG, logger="watcher")
    poller = KillSwitchPoller(
        DaemonClient(token_daemon.address, "wrong"), interval_s=3600, service="s", environment="e", fail_closed=True
    )
    poller.refresh()
    with pytest.raises(watcher.BudgetExceeded, match="unreachable"):
        poller.board.check("extraction", "claude-haiku-4-5")
    [(level, message)] = token_lines(caplog)
    assert level == logging.ERROR
    assert "WATCHER_TOKEN" in message and "calls are refused" in message


def test_fail_closed_refuses_calls_until_the_daemon_answers(daemon: FakeDaemon) -> None:
    """With WATCHER_FAIL_MODE=closed, an unreachable daemon refuses calls; a later answer lifts it."""
    fetches: list[bool] = [False]

    class Flaky:
        endpoint = daemon.endpoint

        def get(self, path: str, timeout_s: float | None = None) -> bytes:
            if not fetches[-1]:
                raise ConnectionRefusedError("daemon down")
            return engaged()

    poller = KillSwitchPoller(Flaky(), interval_s=3600, service="s", environment="e", fail_closed=True)
    poller.refresh()
    with pytest.raises(watcher.BudgetExceeded, match="unreachable"):
        poller.board.check("x", "claude-haiku-4-5")
    fetches.append(True)
    poller.refresh()
    poller.board.check("x", "claude-haiku-4-5")


def test_the_poller_refreshes_on_its_own_thread(daemon: FakeDaemon) -> None:
    """Polling happens in the background at the configured interval, not on calls."""
    polled = threading.Event()
    seen: list[str] = []

    class Watched:
        endpoint = daemon.endpoint

        def get(self, path: str, timeout_s: float | None = None) -> bytes:
            seen.append(threading.current_thread().name)
            if len(seen) >= 2:
                polled.set()
            return engaged(rule())

    poller = KillSwitchPoller(Watched(), interval_s=0.01, service="s", environment="e").start()
    try:
        assert polled.wait(5)
    finally:
        poller.stop()
    assert set(seen) == {"watcher-killswitch"}
    assert poller.board.rules and poller.board.rules[0].budget == "extraction-daily"


def test_answers_in_an_unknown_format_keep_the_last_state() -> None:
    """A future format version is refused loudly instead of being misread."""
    with pytest.raises(ValueError, match="version"):
        parse_rules(json.dumps({"version": 2, "engaged": []}).encode(), "s", "e")
