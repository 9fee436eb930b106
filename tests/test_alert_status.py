"""Where alerts stand is visible: per target in /v1/budgets, `watcher status` and the metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from _support import http, metrics_text, sample, wait_for

import watcher
from watcher.budgets import parse_budgets
from watcher.cli import main
from watcher.daemon import Running, build
from watcher.ledger import Entry

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
