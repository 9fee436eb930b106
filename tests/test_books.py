"""Budget books roll over on local calendar boundaries (DST included), with an injected clock and a real ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from watcher.budgets import parse_budgets
from watcher.daemon import Books, BudgetEvent, Daemon, StateStore
from watcher.ledger import Entry, open_ledger
from watcher.pricing import default_price_table

BERLIN_DAILY = """
[[budgets]]
name = "berlin-daily"
limit_usd = 10
period = "day"
timezone = "Europe/Berlin"
"""


def entry(key: str, at: datetime, cost: str) -> Entry:
    return Entry.of(key=key, time=at, service="s", environment="e", request_type="r", model="m", cost_usd=Decimal(cost))


def test_a_daily_budget_rolls_over_at_local_midnight_across_the_dst_change(tmp_path: Path) -> None:
    """On 2026-10-25 Berlin's day is 25 hours: spend before local midnight belongs to the old day, the switch is
    released at midnight with a notice, and the new window ends 25 hours later."""
    now = [datetime(2026, 10, 24, 21, 30, tzinfo=UTC)]  # 23:30 in Berlin (CEST, UTC+2)
    events: list[BudgetEvent] = []
    ledger = open_ledger("sqlite://:memory:")
    books = Books(parse_budgets(BERLIN_DAILY), ledger, StateStore(tmp_path / "s.db"), lambda: now[0], events.append)
    new = ledger.append([entry("a", now[0] - timedelta(minutes=5), "12.5")]).new_entries
    books.add(new)
    view = books.evaluate()["berlin-daily"]
    assert view.engaged and view.resets_at == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert [e.kind for e in events] == ["alert", "kill"]

    now[0] = datetime(2026, 10, 24, 22, 0, 1, tzinfo=UTC)  # 00:00:01 on the 25th in Berlin
    view = books.evaluate()["berlin-daily"]
    assert not view.engaged and view.state.spend_usd == 0
    assert view.state.window == (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), datetime(2026, 10, 25, 23, 0, tzinfo=UTC))
    assert [e.kind for e in events] == ["alert", "kill", "release"]
    books.evaluate()
    assert len(events) == 3, "a release is announced once"


def test_a_late_span_for_a_past_window_does_not_count_in_the_current_one(tmp_path: Path) -> None:
    """Entries are counted in the window of their own time, not of their arrival."""
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=UTC)]
    ledger = open_ledger("sqlite://:memory:")
    books = Books(parse_budgets(BERLIN_DAILY), ledger, StateStore(tmp_path / "s.db"), lambda: now[0], lambda e: None)
    books.evaluate()
    late = ledger.append([entry("old", now[0] - timedelta(days=2), "9")]).new_entries
    books.add(late)
    assert books.evaluate()["berlin-daily"].state.spend_usd == 0


def test_a_span_that_replaces_a_stored_one_counts_at_once(tmp_path: Path) -> None:
    """When watcher's own span replaces the daemon-priced entry of the same response, its cost and scope count in
    the batch that brings it, not a resync later."""
    (budget,) = parse_budgets(
        '[[budgets]]\nname = "x"\nlimit_usd = 1\nperiod = "hour"\nscope = { request_type = "extraction" }\n'
    )
    now = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    events: list[BudgetEvent] = []
    ledger = open_ledger("sqlite://:memory:")
    books = Books([budget], ledger, StateStore(tmp_path / "s.db"), lambda: now, events.append)
    daemon = Daemon(ledger, default_price_table(), books, default_request_type="unlabeled")
    daemon.ingest([Entry.of("r", now, "s", "e", "unlabeled", "m", cost_usd=Decimal("1.5"), rank=1)])
    assert books.views["x"].state.spend_usd == 0
    daemon.ingest([Entry.of("r", now, "s", "e", "extraction", "m", cost_usd=Decimal("1.5"), rank=2)])
    view = books.views["x"]
    assert view.state.spend_usd == Decimal("1.5") == ledger.spend(budget.scope, *view.state.window)
    assert [e.kind for e in events] == ["alert", "kill"]
