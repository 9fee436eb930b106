"""A kill switch released by hand holds until its `until` or one more step of spend, then engages again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path

import pytest
from _support import http

import watcher
from watcher.budgets import parse_budgets
from watcher.cli import main
from watcher.daemon import Books, BudgetEvent, Running, StateStore, build
from watcher.ledger import Entry, open_ledger

DAILY = """
[[budgets]]
name = "daily"
limit_usd = 10
period = "day"
"""  # alert at $8, kill at $12: one step is $4
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_keys = count()


class Setup:
    """Books over a real in-memory ledger and a state file, with a clock the test moves."""

    def __init__(self, path: Path) -> None:
        self.now = START
        self.events: list[BudgetEvent] = []
        self.ledger = open_ledger("sqlite://:memory:")
        self.books = Books(parse_budgets(DAILY), self.ledger, StateStore(path), lambda: self.now, self.events.append)

    def spend(self, usd: str) -> bool:
        """Adds `usd` of spend now, evaluates, and says whether the switch is engaged."""
        entry = Entry.of(f"k{next(_keys)}", self.now, "s", "e", "r", "m", cost_usd=Decimal(usd))
        self.books.add(self.ledger.append([entry]).new_entries)
        return self.books.evaluate()["daily"].engaged

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path / "state.db")


def test_a_hand_release_lapses_once_spend_rises_one_more_step_and_the_switch_engages_again(setup: Setup) -> None:
    """Released at $12.50, the switch stays off up to $16.49 and engages again at $16.50, with a notice."""
    assert setup.spend("12.5")
    setup.now += timedelta(minutes=1)
    view = setup.books.set_switch("daily", "released")
    assert not view.engaged and view.release is not None and view.release.ceiling_usd == Decimal("16.5")
    assert not setup.spend("3.99")
    setup.now += timedelta(minutes=1)
    assert setup.spend("0.01")
    assert setup.kinds() == ["alert", "kill", "release", "reengaged"]
    assert "spend reached $16.50" in setup.events[-1].message
    assert setup.books.views["daily"].engaged_since == setup.now
    assert setup.spend("1") and len(setup.events) == 4, "the lapse is announced once"


def test_a_second_release_after_a_lapse_is_announced_and_lapses_in_turn(setup: Setup) -> None:
    """Each hand release and each lapse is its own event: none is swallowed as a repeat of the first."""
    assert setup.spend("12")
    setup.books.set_switch("daily", "released")
    assert setup.spend("4")  # $16: the first release's ceiling
    view = setup.books.set_switch("daily", "released")
    assert not view.engaged and view.release is not None and view.release.ceiling_usd == Decimal("20")
    assert setup.spend("4")
    assert setup.kinds() == ["alert", "kill", "release", "reengaged", "release", "reengaged"]


def test_a_hand_release_with_until_lapses_at_that_time(setup: Setup) -> None:
    """A release until 13:00 holds at 12:59:59 and engages the switch again at 13:00, spend unchanged."""
    assert setup.spend("13")
    until = START + timedelta(hours=1)
    assert not setup.books.set_switch("daily", "released", until=until).engaged
    setup.now = until - timedelta(seconds=1)
    assert not setup.books.evaluate()["daily"].engaged
    setup.now = until
    assert setup.books.evaluate()["daily"].engaged
    assert setup.kinds()[-1] == "reengaged" and "its time ran out" in setup.events[-1].message


def test_a_release_holds_at_most_until_the_period_ends_and_needs_an_until_after_now(setup: Setup) -> None:
    """`until` beyond the period is cut to its end; an `until` not after now is refused."""
    assert setup.spend("13")
    view = setup.books.set_switch("daily", "released", until=START + timedelta(days=3))
    assert view.release is not None and view.release.until == datetime(2026, 11, 26, tzinfo=UTC)
    with pytest.raises(ValueError, match="after now"):
        setup.books.set_switch("daily", "released", until=START)


def test_a_release_and_its_terms_survive_a_restart(setup: Setup, tmp_path: Path) -> None:
    """The books of a restarted daemon hold the same release and lapse it at the same spend."""
    assert setup.spend("12.5")
    setup.books.set_switch("daily", "released")
    again = Books(parse_budgets(DAILY), setup.ledger, StateStore(tmp_path / "state.db"), lambda: setup.now, print)
    view = again.evaluate()["daily"]
    assert not view.engaged and view.release is not None and view.release.ceiling_usd == Decimal("16.5")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path)
    running = build(config, budgets=parse_budgets(DAILY), clock=Clock(), notifier={"log": _Quiet()}).start(3600)
    yield running
    running.stop()


class _Quiet:
    def send(self, title: str, body: str) -> bool:
        return True


def _spend(daemon: Running, usd: str) -> None:
    daemon.daemon.ingest([Entry.of(f"k{next(_keys)}", START, "s", "e", "r", "m", cost_usd=Decimal(usd), rank=2)])


def test_the_release_endpoint_takes_an_until_and_the_budgets_document_shows_the_release(daemon: Running) -> None:
    """`POST .../release` with {"until": ...} answers the lapse time; /v1/budgets shows state and terms."""
    _spend(daemon, "13")
    url = daemon.address + "/v1/killswitch/daily/release"
    status, body = http(url, json.dumps({"until": "2026-11-25T14:00:00Z"}).encode())
    assert status == 200 and json.loads(body) == {"budget": "daily", "engaged": False, "until": "2026-11-25T14:00:00Z"}
    [budget] = json.loads(http(daemon.address + "/v1/budgets")[1])["budgets"]
    assert budget["state"] == "released"
    assert budget["release"] == {"since": "2026-11-25T12:00:00Z", "until": "2026-11-25T14:00:00Z", "ceiling_usd": 17.0}
    for bad in (b"{", b'{"until": "tomorrow"}', b'{"until": "2026-11-25T14:00:00"}', b'{"for": "1h"}'):
        status, body = http(url, bad)
        assert status == 400 and "RFC 3339" in json.loads(body)["error"], bad


def test_the_cli_releases_until_a_given_time_and_refuses_a_malformed_one(
    daemon: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher killswitch release NAME --until TIME` passes the time on; an unreadable TIME is a usage error."""
    _spend(daemon, "13")
    monkeypatch.setenv("WATCHER_ENDPOINT", daemon.address)
    assert main(["killswitch", "release", "daily", "--until", "2026-11-25T13:30:00+00:00"]) == 0
    assert "released until 2026-11-25T13:30:00Z" in capsys.readouterr().out
    assert main(["killswitch", "release", "daily", "--until", "soonish"]) == 2
    assert "neither a duration" in capsys.readouterr().err
