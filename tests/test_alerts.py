"""Alerts reach people through apprise (real SMTP and webhook deliveries on loopback), retried, secrets hidden."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from watcher.daemon import AppriseNotifier, BudgetEvent, Dispatcher, StateStore, redact


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


def event(kind: str = "alert") -> BudgetEvent:
    moment = datetime(2026, 11, 25, tzinfo=UTC)
    return BudgetEvent("extraction-daily", moment, kind, moment, "Budget 'extraction-daily' alert: 85% used.")


def test_a_webhook_alert_is_delivered_as_json(webhook: Webhook) -> None:
    """apprise's json:// delivers the title and body to a webhook."""
    assert AppriseNotifier([webhook.url]).send("watcher: budget alert", "85% used")
    assert webhook.received[0]["title"] == "watcher: budget alert"
    assert webhook.received[0]["message"] == "85% used"


def test_an_email_alert_is_delivered_over_smtp(smtp: tuple[Mailbox, int]) -> None:
    """apprise's mailto:// delivers the alert to an SMTP server on loopback."""
    mailbox, port = smtp
    url = f"mailto://127.0.0.1:{port}?from=watcher@example.com&to=ops@example.com&mode=insecure"
    assert AppriseNotifier([url]).send("watcher: KILL SWITCH engaged", "121% used")
    assert "KILL SWITCH" in mailbox.messages[0] and "ops@example.com" in mailbox.messages[0]


def test_a_failed_delivery_reports_false_and_is_retried_with_backoff(webhook: Webhook, tmp_path: Path) -> None:
    """A webhook answering 500 fails; the dispatcher retries after 1 s, 2 s, ... and marks it delivered on success."""
    now = [0.0]
    store = StateStore(tmp_path / "state.db")
    store.record(event())
    dispatcher = Dispatcher(AppriseNotifier([webhook.url]), store, clock=lambda: now[0])
    webhook.status = 500
    dispatcher.resume()
    assert dispatcher.deliver_due() == 1 and dispatcher.failures == 1
    assert dispatcher.deliver_due() == 0, "not due again before the backoff"
    now[0] += 1.0
    webhook.status = 200
    assert dispatcher.deliver_due() == 1
    assert dispatcher.sent == 1 and store.undelivered() == []


def test_an_invalid_alert_url_is_refused_without_showing_its_secret() -> None:
    """A URL apprise cannot use is an error at start, and the error hides the token it carries."""
    with pytest.raises(ValueError) as refused:
        AppriseNotifier(["nosuchscheme://SECRET-TOKEN@host"])
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
