"""Alerts reach people through apprise (real SMTP and webhook deliveries on loopback), retried, secrets hidden."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from watcher.daemon import AppriseNotifier, BudgetEvent, Delivery, Dispatcher, StateStore, apprise_targets, redact


class Webhook:
    """A local HTTP sink for apprise's json:// notifications; `status` is what it answers."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(sink.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Webhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Mailbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode())
        return "250 OK"

    def __init__(self) -> None:
        self.messages: list[str] = []


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    sink = Webhook()
    yield sink
    sink.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


def event(kind: str = "alert", budget: str = "extraction-daily") -> BudgetEvent:
    moment = datetime(2026, 11, 25, tzinfo=UTC)
    return BudgetEvent(budget, moment, kind, moment, f"Budget {budget!r} alert: 85% used.")


def drain(dispatcher: Dispatcher, now: list[float], rounds: int = 40, step_s: float = 1000.0) -> None:
    """Delivers whatever is due, moving the injected clock past every backoff, `rounds` times."""
    for _ in range(rounds):
        dispatcher.deliver_due()
        now[0] += step_s


def test_a_webhook_alert_is_delivered_as_json(webhook: Webhook) -> None:
    """apprise's json:// delivers the title and body to a webhook."""
    assert AppriseNotifier(webhook.url).send("watcher: budget alert", "85% used")
    assert webhook.received[0]["title"] == "watcher: budget alert"
    assert webhook.received[0]["message"] == "85% used"


def test_an_email_alert_is_delivered_over_smtp(smtp: tuple[Mailbox, int]) -> None:
    """apprise's mailto:// delivers the alert to an SMTP server on loopback."""
    mailbox, port = smtp
    url = f"mailto://127.0.0.1:{port}?from=watcher@example.com&to=ops@example.com&mode=insecure"
    assert AppriseNotifier(url).send("watcher: KILL SWITCH engaged", "121% used")
    assert "KILL SWITCH" in mailbox.messages[0] and "ops@example.com" in mailbox.messages[0]


def test_a_failed_delivery_reports_false_and_is_retried_with_backoff(webhook: Webhook, tmp_path: Path) -> None:
    """A webhook answering 500 fails; the dispatcher retries after 1 s, 2 s, ... and marks it delivered on success."""
    now = [0.0]
    store = StateStore(tmp_path / "state.db")
    store.record(event())
    dispatcher = Dispatcher(apprise_targets([webhook.url]), store, clock=lambda: now[0])
    webhook.status = 500
    dispatcher.resume()
    assert dispatcher.deliver_due() == 1 and dispatcher.failures["json://***", "pending"] == 1
    assert dispatcher.deliver_due() == 0, "not due again before the backoff"
    now[0] += 1.0
    assert dispatcher.deliver_due() == 1
    now[0] += 1.9
    assert dispatcher.deliver_due() == 0, "the second retry waits 2 s"
    now[0] += 0.1
    webhook.status = 200
    assert dispatcher.deliver_due() == 1
    assert dispatcher.sent["json://***"] == 1 and store.undelivered() == []
    assert len(webhook.received) == 3


def test_a_working_target_gets_each_alert_once_while_a_failing_one_is_retried_up_to_the_cap(
    tmp_path: Path,
) -> None:
    """With one webhook answering 200 and one 500, the first gets the alert once; the second is tried
    `max_attempts` times, then its delivery is `failed`, and nothing is tried again."""
    with Webhook() as good, Webhook() as bad:
        bad.status = 500
        now = [0.0]
        store = StateStore(tmp_path / "state.db")
        targets = apprise_targets([good.url, bad.url])
        dispatcher = Dispatcher(targets, store, max_attempts=4, clock=lambda: now[0])
        store.record(event())
        dispatcher.resume()
        drain(dispatcher, now)
        assert len(good.received) == 1 and len(bad.received) == 4
        [record] = store.events("extraction-daily", datetime(2026, 11, 25, tzinfo=UTC))
    assert record.deliveries == (Delivery("json://***", "delivered", 1), Delivery("json://***#2", "failed", 4))
    assert store.undelivered() == []
    assert dispatcher.failures == {("json://***#2", "pending"): 3, ("json://***#2", "failed"): 1}


def test_a_target_that_recorded_its_delivery_is_not_sent_it_again_after_a_restart(tmp_path: Path) -> None:
    """After a crash and a restart only the targets without a final state are tried, and their attempts count
    on, once the crashed daemon's delivery lease has expired (the restarted one has a new owner id)."""
    with Webhook() as good, Webhook() as bad:
        bad.status = 500
        now = [0.0]
        crashed_at = datetime(2026, 11, 25, 9, tzinfo=UTC)
        before = StateStore(tmp_path / "state.db")
        first = Dispatcher(apprise_targets([good.url, bad.url]), before, max_attempts=3, wall_clock=lambda: crashed_at)
        before.record(event())
        first.submit(event())
        first.deliver_due()
        store = StateStore(tmp_path / "state.db")  # the daemon comes back, without having stopped
        back = [crashed_at]
        targets = apprise_targets([good.url, bad.url])
        again = Dispatcher(targets, store, max_attempts=3, clock=lambda: now[0], wall_clock=lambda: back[0])
        assert again.resume() == 0, "the crashed daemon's lease still runs"
        back[0] += timedelta(seconds=60)
        assert again.resume() == 1
        drain(again, now)
        assert len(good.received) == 1 and len(bad.received) == 3
    assert [d.state for d in store.events("extraction-daily", event().at)[0].deliveries] == ["delivered", "failed"]


class Probe:
    """A target that, when tried, reads through a second connection what the store has committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[Delivery, ...]] = []

    def send(self, title: str, body: str) -> bool:
        reader = StateStore(self.path)
        self.seen.append(reader.events("extraction-daily", event().at)[0].deliveries)
        reader.close()
        return True


def test_each_targets_success_is_committed_before_the_next_target_is_tried(webhook: Webhook, tmp_path: Path) -> None:
    """The crash window is one send: when the second target is tried, the first one's delivery is on disk."""
    probe = Probe(tmp_path / "state.db")
    store = StateStore(tmp_path / "state.db")
    dispatcher = Dispatcher({"first": AppriseNotifier(webhook.url), "second": probe}, store)
    store.record(event())
    dispatcher.submit(event())
    dispatcher.deliver_due()
    assert probe.seen == [(Delivery("first", "delivered", 1), Delivery("second", "pending", 0))]


def test_each_service_of_an_apprise_config_file_is_a_target_named_without_its_secrets(tmp_path: Path) -> None:
    """URLs and the services of a config file are one target each, named `scheme://***` with `#n` for repeats."""
    config = tmp_path / "apprise.yml"
    config.write_text("urls:\n  - json://127.0.0.1:9/SECRET-A\n  - mailto://user:SECRET-B@example.com\n")
    targets = apprise_targets(["json://127.0.0.1:9/SECRET-C"], str(config))
    assert list(targets) == ["json://***", "json://***#2", "mailto://***"]
    with pytest.raises(ValueError, match="no alert URL"):
        apprise_targets([], str(tmp_path / "missing.yml"))


def test_an_invalid_alert_url_is_refused_without_showing_its_secret() -> None:
    """A URL apprise cannot use is an error at start, and the error hides the token it carries."""
    with pytest.raises(ValueError) as refused:
        apprise_targets(["nosuchscheme://SECRET-TOKEN@host"])
    assert "SECRET" not in str(refused.value)
    assert redact("slack://T000/B000/XXXX") == "slack://***"


def test_recorded_events_are_never_recorded_twice(tmp_path: Path) -> None:
    """The state store keeps one event per budget, window and kind: the basis of exactly-once alerts."""
    store = StateStore(tmp_path / "state.db")
    assert store.record(event()) is True
    assert store.record(event()) is False
    reopened = StateStore(tmp_path / "state.db")
    assert reopened.record(event()) is False
    assert len(reopened.undelivered()) == 1


_FIRST_SCHEMA = """
CREATE TABLE budget_events (
    budget TEXT NOT NULL, window_start_us INTEGER NOT NULL, kind TEXT NOT NULL, at_us INTEGER NOT NULL,
    message TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (budget, window_start_us, kind)
);
CREATE TABLE overrides (
    budget TEXT NOT NULL, window_start_us INTEGER NOT NULL, action TEXT NOT NULL, at_us INTEGER NOT NULL,
    PRIMARY KEY (budget, window_start_us)
);
"""


def test_a_state_db_of_the_first_schema_keeps_every_row_and_sends_only_what_it_had_not_delivered(
    webhook: Webhook, tmp_path: Path
) -> None:
    """Opening a state.db written before per-target delivery keeps its events, their order and its overrides:
    a delivered event is never sent again, an undelivered one goes to every target."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(_FIRST_SCHEMA)
    first, second = event("alert", "a"), event("kill", "b")
    for e, delivered in ((first, 1), (second, 0)):
        old.execute("INSERT INTO budget_events VALUES (?, ?, ?, ?, ?, ?)", (*_row(e), delivered))
    old.execute("INSERT INTO overrides VALUES ('b', ?, 'released', ?)", (_row(second)[1], _row(second)[3]))
    old.commit()
    old.close()
    store = StateStore(path)
    assert store.undelivered() == [second]
    assert store.record(first) is False and store.record(second) is False
    assert store.override("b", second.window_start) == ("released", second.at)
    dispatcher = Dispatcher(apprise_targets([webhook.url]), store)
    dispatcher.resume()
    dispatcher.deliver_due()
    assert [m["message"] for m in webhook.received] == [second.message]


def _row(e: BudgetEvent) -> tuple[str, int, str, int, str]:
    micros = int(e.window_start.timestamp() * 1_000_000)
    return (e.budget, micros, e.kind, int(e.at.timestamp() * 1_000_000), e.message)
