"""The daemon's state store keeps one contract on both backends: a SQLite file, and a PostgreSQL database that
several daemons share (events claimed once, loans that never lend the same headroom twice, credits that add)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _postgres import SERVER, fresh_database
from _support import race

from watcher.daemon import BudgetEvent, Delivery, StateStorage, open_state_store
from watcher.daemon import _schema as sqlite_schema
from watcher.exceptions import ConfigError
from watcher.ledger import open_ledger
from watcher.settings import Settings

pytestmark = pytest.mark.usefixtures("isolated")

WINDOW = datetime(2026, 3, 2, tzinfo=UTC)
LATER = WINDOW + timedelta(days=1)
W_US = int(WINDOW.timestamp() * 1_000_000)


@dataclass
class Backend:
    """One way to keep the state: opens stores on one shared place, reads and forces its schema version."""

    name: str
    settings: Settings
    env: dict[str, str]
    version: Callable[[], int]
    set_version: Callable[[int], None]
    latest: int
    opened: list[StateStorage] = field(default_factory=list)

    def open(self) -> StateStorage:
        """A new store on the same database, as another daemon (or the same one restarted) would open it."""
        store = open_state_store(self.settings)
        self.opened.append(store)
        return store


def _sqlite(tmp_path: Path) -> Backend:
    state_dir = tmp_path / "state"
    path = state_dir / "state.db"

    def version() -> int:
        with closing(sqlite3.connect(path)) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def set_version(value: int) -> None:
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {value}")

    env = {"WATCHER_STATE_DIR": str(state_dir)}
    return Backend("sqlite", Settings(state_dir=state_dir), env, version, set_version, sqlite_schema.VERSION)


def _postgres(tmp_path: Path, url: str) -> Backend:
    import psycopg

    from watcher.daemon import _schema_postgres

    def version() -> int:
        with psycopg.connect(url, autocommit=True) as db:
            return _schema_postgres.version(db)

    def set_version(value: int) -> None:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("UPDATE state_schema_version SET version = %s", (value,))

    settings = Settings(state_dir=tmp_path / "state", database_url=url)
    env = {"WATCHER_STATE_DIR": str(tmp_path / "state"), "WATCHER_DATABASE_URL": url}
    return Backend("postgres", settings, env, version, set_version, _schema_postgres.VERSION)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test runs on a SQLite file and on a fresh PostgreSQL database; every store opened is closed after."""
    with fresh_database() if request.param == "postgres" else nullcontext(None) as url:
        chosen = _postgres(tmp_path, url) if url else _sqlite(tmp_path)
        try:
            yield chosen
        finally:
            for store in chosen.opened:
                store.close()


def event(kind: str = "kill", *, budget: str = "daily", window: datetime = WINDOW, cause: int = 0) -> BudgetEvent:
    return BudgetEvent(budget, window, kind, window + timedelta(hours=3), f"{budget} {kind}", cause)


# --- budget events -----------------------------------------------------------------------------------


def test_an_event_is_recorded_once_and_stays_recorded_after_a_reopen(backend: Backend) -> None:
    """`record` is True for the first store of an event only, and a reopened store still has it undelivered."""
    store = backend.open()
    assert store.record(event()) is True
    assert store.record(event()) is False
    assert store.record(event(cause=7)) is True, "another cause is another event"
    reopened = backend.open()
    assert reopened.record(event()) is False
    assert reopened.undelivered() == [event(), event(cause=7)]


def test_of_three_stores_racing_to_record_the_same_events_exactly_one_claims_each(backend: Backend) -> None:
    """Three daemons on one database each record the same 30 events at once: each event is claimed (True) once,
    so exactly one daemon sends its alert."""
    stores = [backend.open() for _ in range(3)]
    events = [event(budget=f"b{i}") for i in range(30)]
    claims = race(3, lambda i: [stores[i].record(e) for e in events])
    assert [sum(claimed[n] for claimed in claims) for n in range(len(events))] == [1] * len(events)
    assert len(stores[0].undelivered()) == len(events)


def test_event_time_is_the_latest_of_its_kind_and_unreleased_kills_follow_the_last_switch_event(
    backend: Backend,
) -> None:
    """A kill with no release after it, and a re-engagement after a release, leave their windows engaged;
    a window whose last switch event is a release does not."""
    store = backend.open()
    w1, w2, w3 = WINDOW, WINDOW + timedelta(days=1), WINDOW + timedelta(days=2)
    store.record(event("kill", window=w1))
    store.record(event("engaged", window=w2, cause=1))
    store.record(event("release", window=w2, cause=2))
    store.record(event("kill", window=w3))
    store.record(event("release", window=w3, cause=3))
    store.record(event("reengaged", window=w3, cause=4))
    store.record(event("alert", window=w2))
    assert backend.open().unreleased_kills("daily") == [w1, w3]
    assert store.unreleased_kills("other") == []
    assert store.event_time("daily", w3, "release") == event(window=w3).at
    assert store.event_time("daily", w1, "release") is None


# --- deliveries --------------------------------------------------------------------------------------


def test_deliveries_are_opened_once_per_target_and_kept_across_a_reopen(backend: Backend) -> None:
    """A delivery recorded for one target stays; opening again adds only targets without one; a settled event
    is not undelivered any more; events list their deliveries in the order they were opened."""
    store = backend.open()
    first, second, third = event("alert"), event("kill"), event("release", cause=1)
    for e in (first, second, third):
        store.record(e)
    assert store.open_deliveries(first, ["a", "b"]) == {
        "a": Delivery("a", "pending", 0),
        "b": Delivery("b", "pending", 0),
    }
    store.set_delivery(first, Delivery("a", "delivered", 1))
    store.set_delivery(first, Delivery("b", "pending", 2))
    reopened = backend.open()
    opened = reopened.open_deliveries(first, ["a", "b", "c"])
    assert opened == {
        "a": Delivery("a", "delivered", 1),
        "b": Delivery("b", "pending", 2),
        "c": Delivery("c", "pending", 0),
    }
    assert reopened.deliveries(first) == {"a": "delivered", "b": "pending", "c": "pending"}
    assert reopened.deliveries(second) == {}
    reopened.settle(second)
    assert backend.open().undelivered() == [first, third]
    [record, *_] = reopened.events("daily", WINDOW)
    assert record.event == first
    assert record.deliveries == (
        Delivery("a", "delivered", 1),
        Delivery("b", "pending", 2),
        Delivery("c", "pending", 0),
    )
    assert [r.event for r in reopened.events("daily", first.at + timedelta(microseconds=1))] == []


# --- hand overrides ----------------------------------------------------------------------------------


def test_each_hand_action_gets_a_larger_seq_and_replaces_the_one_before_in_its_window(backend: Backend) -> None:
    """Hand actions are numbered in the order made, by any store of the database; the last one of a window
    is the one kept, with its terms (until, spend to the nano-dollar)."""
    store, other = backend.open(), backend.open()
    first = store.set_override("daily", WINDOW, "engaged", WINDOW + timedelta(hours=1))
    until = WINDOW + timedelta(hours=5)
    second = other.set_override(
        "daily", WINDOW, "released", WINDOW + timedelta(hours=2), until=until, spend_usd=Decimal("12.345678901")
    )
    third = store.set_override("weekly", WINDOW, "engaged", WINDOW + timedelta(hours=3))
    assert first < second < third
    found = store.hand_override("daily", WINDOW)
    assert found is not None
    assert (found.action, found.seq, found.until, found.spend_usd) == (
        "released",
        second,
        until,
        Decimal("12.345678901"),
    )
    assert backend.open().override("daily", WINDOW) == ("released", WINDOW + timedelta(hours=2))
    assert store.hand_override("daily", LATER) is None and store.override("daily", LATER) is None


# --- allowances --------------------------------------------------------------------------------------


def test_lending_reads_what_is_lent_and_how_many_hold_it_and_credit_and_give_back_reduce_it(backend: Backend) -> None:
    """`decide` sees what live allowances hold and the holders counting the asker; credits move spend out of
    "lent"; a give-back lowers a grant, never raises it; expired allowances hold nothing and are pruned."""
    store = backend.open()
    seen: list[tuple[int, int]] = []

    def grant(nanos: int) -> Callable[[int, int], int]:
        return lambda lent, holders: seen.append((lent, holders)) or nanos

    now, expires = 1_000, 2_000
    assert store.lend("h1", "daily", W_US, grant(100), now_us=now, expires_us=expires) == (100, 0)
    assert store.lend("h2", "daily", W_US, grant(50), now_us=now, expires_us=expires, service="etl") == (50, 100)
    assert store.lend("h1", "daily", W_US, grant(10), now_us=now, expires_us=expires) == (110, 150)
    assert store.lend("h3", "daily", W_US, grant(-5), now_us=now, expires_us=expires) == (0, 160), "never below 0"
    assert seen == [(0, 1), (100, 2), (150, 2), (160, 3)]
    assert store.lent("daily", W_US, now) == (160, 3)
    store.credit({("h1", "daily", W_US): 30, ("ghost", "daily", W_US): 99})
    assert backend.open().lent("daily", W_US, now) == (130, 3), "a ghost's spend is not kept"
    store.give_back("h2", "daily", W_US, 20)
    store.give_back("h1", "daily", W_US, 500)
    assert store.lent("daily", W_US, now) == (100, 3), "h2 down to 20; h1 keeps 110"
    assert store.lent("daily", W_US, expires) == (0, 0), "expired allowances hold nothing"
    assert store.lent("weekly", W_US, now) == (0, 0)
    store.lend("h4", "daily", W_US, grant(1), now_us=now, expires_us=expires + 500)
    assert store.prune_allowances(expires + 1) == 3, "h1, h2, h3; h4 lives on"
    assert store.lent("daily", W_US, now) == (1, 1)


def test_a_holder_renewing_after_its_allowance_expired_counts_as_a_new_holder(backend: Backend) -> None:
    """Once expired, the holder is not among the live holders: `decide` counts it in again."""
    store = backend.open()
    store.lend("h1", "daily", W_US, lambda lent, holders: 40, now_us=0, expires_us=100)
    seen: list[tuple[int, int]] = []
    store.lend("h1", "daily", W_US, lambda lent, holders: seen.append((lent, holders)) or 5, now_us=50, expires_us=150)
    store.lend("h1", "daily", W_US, lambda lent, holders: seen.append((lent, holders)) or 5, now_us=200, expires_us=300)
    assert seen == [(40, 1), (0, 1)]
    assert store.lent("daily", W_US, 200) == (50, 1)


def test_stores_lending_one_window_at_once_never_lend_more_than_is_free(backend: Backend) -> None:
    """Two daemons on one database, eight threads asking 7 each of 1000 nano-dollars 25 times: every loan reads
    what the one before it lent, so together they lend exactly what is free, never more."""
    limit, ask = 1_000, 7
    stores = [backend.open(), backend.open()]

    def decide(lent: int, holders: int) -> int:
        return max(0, min(ask, limit - lent))

    def borrow(i: int) -> int:
        store = stores[i % 2]
        granted = [store.lend(f"t{i}-{n}", "daily", W_US, decide, now_us=0, expires_us=10**9)[0] for n in range(25)]
        return sum(granted)

    total = sum(race(8, borrow))
    assert total == limit
    assert stores[0].lent("daily", W_US, 0) == (limit, 8 * 25)


def test_credits_from_several_stores_to_one_allowance_all_count(backend: Backend) -> None:
    """Credits add in place: three daemons crediting one holder's allowance at once lose none of it."""
    stores = [backend.open() for _ in range(3)]
    stores[0].lend("h", "daily", W_US, lambda lent, holders: 10_000, now_us=0, expires_us=100)
    key = ("h", "daily", W_US)
    race(3, lambda i: [stores[i].credit({key: 10, ("other", "daily", W_US): 1}) for _ in range(40)])
    assert stores[0].lent("daily", W_US, 0) == (10_000 - 3 * 40 * 10, 1)


# --- schema --------------------------------------------------------------------------------------------


def test_a_store_newer_than_this_watcher_is_refused_naming_both_versions(backend: Backend) -> None:
    """A daemon must not start on state a newer watcher wrote: opening says which versions disagree."""
    backend.open().close()
    backend.set_version(backend.latest + 1)
    with pytest.raises(ConfigError, match=f"version {backend.latest + 1}, newer than this watcher's {backend.latest}"):
        backend.open()


def test_daemons_starting_together_on_a_fresh_database_migrate_it_once(backend: Backend) -> None:
    """Four stores opened at once on nothing all start, on one schema at this watcher's version: the first
    migrates under the lock while the others wait, then find it done."""
    stores = race(4, lambda i: backend.open())
    assert backend.version() == backend.latest
    assert [store.record(event()) for store in stores].count(True) == 1


def _db_upgrade(backend: Backend, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env |= {**backend.env, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    command = [sys.executable, "-m", "watcher.cli", "db", "upgrade"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_db_upgrade_migrates_a_fresh_store_to_this_watchers_schema_and_then_finds_it_up_to_date(
    backend: Backend, tmp_path: Path
) -> None:
    """`watcher db upgrade` creates the state schema (and the ledger's) and exits; run again, it changes nothing."""
    first = _db_upgrade(backend, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"schema version 0 -> {backend.latest}" in first.stdout
    assert backend.version() == backend.latest
    ledger_line = next(line for line in first.stdout.splitlines() if line.startswith("ledger "))
    assert ledger_line.endswith("up to date")
    if backend.name == "sqlite":
        assert (tmp_path / "state" / "ledger.db").is_file()
    else:  # the ledger's tables are there, at its version
        ledger = open_ledger(backend.settings.ledger_url(), read_only=True)
        try:
            assert ledger.schema_version() == 1  # type: ignore[attr-defined]
        finally:
            ledger.close()
    again = _db_upgrade(backend, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"up to date (schema version {backend.latest})" in again.stdout
    backend.open().record(event())


def test_db_upgrade_refuses_a_store_newer_than_this_watcher_in_one_line(backend: Backend, tmp_path: Path) -> None:
    """A newer schema stops `watcher db upgrade` with exit code 2 and one line naming both versions."""
    backend.open().close()
    backend.set_version(backend.latest + 3)
    done = _db_upgrade(backend, tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert f"version {backend.latest + 3}, newer than this watcher's {backend.latest}" in done.stderr


# --- PostgreSQL only -------------------------------------------------------------------------------------


def test_every_spelling_of_a_postgresql_url_reaches_the_same_shared_state(tmp_path: Path) -> None:
    """`postgresql://`, `postgres://` and `postgresql+psycopg://` name one database: an event one daemon
    recorded is already there for the others, whatever URL they were given."""
    with fresh_database() as url:
        rest = url.split("://", 1)[1]
        stores = [
            open_state_store(Settings(state_dir=tmp_path, database_url=f"{scheme}://{rest}"))
            for scheme in ("postgresql", "postgres", "postgresql+psycopg")
        ]
        try:
            assert [store.record(event()) for store in stores] == [True, False, False]
        finally:
            for store in stores:
                store.close()
    assert not (tmp_path / "state.db").exists(), "no SQLite state beside a PostgreSQL one"


def test_an_unreachable_database_is_a_config_error_without_its_password(tmp_path: Path) -> None:
    """A daemon that cannot reach its state database stops with one line naming it, its password hidden."""
    pytest.importorskip("psycopg")
    parts = urlsplit(SERVER)
    netloc = f"{parts.username or 'postgres'}:hunter2@{parts.hostname}:{parts.port or 5432}"
    missing = Settings(state_dir=tmp_path, database_url=f"postgresql://{netloc}/watcher_no_such_database")
    with pytest.raises(ConfigError, match="cannot open the state database") as refused:
        open_state_store(missing)
    assert "hunter2" not in str(refused.value) and ":***@" in str(refused.value)
