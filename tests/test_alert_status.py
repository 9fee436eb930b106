"""Where alerts stand is visible: per target in /v1/budgets, `watcher status` and the metrics; alert text stays
on its lines whatever a span's attributes hold."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from _support import http, metrics_text, sample, wait_for
from hypothesis import given
from hypothesis import strategies as st

import watcher
from watcher.budgets import parse_budgets
from watcher.cli import main
from watcher.daemon import Books, BudgetEvent, Running, StateStore, build
from watcher.daemon._messages import one_line
from watcher.ledger import Entry, open_ledger

DAILY = """
[[budgets]]
name = "daily"
limit_usd = 10
period = "day"
"""
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Target:
    """A notifier that answers `ok` to every message."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.sent: list[str] = []

    def send(self, title: str, body: str) -> bool:
        self.sent.append(title)
        return self.ok


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path, alert_max_attempts=1)
    targets = {"chat": Target(True), "pager": Target(False)}
    running = build(config, budgets=parse_budgets(DAILY), clock=lambda: NOW, notifier=targets).start(3600)
    yield running
    running.stop()


def _budget(daemon: Running) -> dict[str, object]:
    [budget] = json.loads(http(daemon.address + "/v1/budgets")[1])["budgets"]
    return budget  # type: ignore[no-any-return]


def _settled(daemon: Running) -> object:
    events = _budget(daemon)["events"]
    states = [d["state"] for e in events for d in e["deliveries"]]  # type: ignore[attr-defined, index]
    return events if states and "pending" not in states else None


def test_a_delivery_given_up_shows_in_the_budgets_document_the_status_command_and_the_metrics(
    daemon: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a target that always fails and one attempt allowed, the alert is `failed` there and `delivered`
    to the other: in /v1/budgets, as `1 failed` in `watcher status`, and in watcher_alert_failures_total."""
    daemon.daemon.ingest([Entry.of("a", NOW, "s", "e", "r", "m", cost_usd=Decimal("9"), rank=2)])
    [alert] = wait_for(lambda: _settled(daemon), "the alert's deliveries to settle")
    assert alert == {
        "kind": "alert",
        "at": "2026-11-25T12:00:00Z",
        "deliveries": [
            {"target": "chat", "state": "delivered", "attempts": 1},
            {"target": "pager", "state": "failed", "attempts": 1},
        ],
    }
    monkeypatch.setenv("WATCHER_ENDPOINT", daemon.address)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "1 failed" in out and "daily: alert to pager failed after 1 attempts" in out, out
    text = metrics_text(daemon.address)
    assert sample(text, "watcher_alert_failures_total", target="pager", state="failed") == 1
    assert sample(text, "watcher_alerts_sent_total", target="chat") == 1


def test_a_request_type_cannot_add_lines_to_an_alert(tmp_path: Path) -> None:
    """A request type holding a newline and a forged line shows on the line of the top request types, escaped."""
    events: list[BudgetEvent] = []
    ledger = open_ledger("sqlite://:memory:")
    books = Books(parse_budgets(DAILY), ledger, StateStore(tmp_path / "s.db"), lambda: NOW, events.append)
    forged = "x\nKill switch for budget 'daily' released: all clear.\u2028"
    books.add(ledger.append([Entry.of("a", NOW, "s", "e", forged, "m\r\x1b[2J", cost_usd=Decimal("9"))]).new_entries)
    books.evaluate()
    lines = events[0].message.splitlines()
    assert len(lines) == 4 and not any(line.startswith("Kill switch") for line in lines), lines
    assert lines[2].startswith("Top request types: x\\nKill switch") and "\\u2028" in lines[2]
    assert lines[3] == "Top models: m\\r\\x1b[2J $9.0000."


@given(st.text())
def test_one_line_leaves_no_control_or_format_character_and_at_most_64_characters(value: str) -> None:
    """Whatever the text, the shown value has no character that breaks or reorders a line, and is short."""
    shown = one_line(value)
    assert len(shown) <= 64
    assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") for ch in shown)
    if len(value) <= 20 and value.isprintable():
        assert shown == value
