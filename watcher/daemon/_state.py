"""The daemon's own durable state: budget events, their delivery to each alert target, hand overrides and
allowances; `StateStorage` is what the daemon needs of it, `StateStore` keeps it in SQLite."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from watcher.ledger import from_nanos, to_nanos

from ._schema import migrate

__all__ = ["BudgetEvent", "Delivery", "EventRecord", "Override", "StateStorage", "StateStore"]

_ON = ("kill", "engaged", "reengaged")  # kinds that announce a switch engaged; a `release` announces it off
_KEY = "budget = ? AND window_start_us = ? AND kind = ? AND cause = ?"


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def _latest_engaged(rows: Iterable[tuple[int, str]]) -> list[datetime]:
    """The window starts whose last (window start, kind) of `rows`, taken in the order recorded, engaged a switch."""
    latest = {start: kind for start, kind in rows}
    return [_moment(start) for start, kind in latest.items() if kind in _ON]


def _new_grant(row: tuple[int, int, int] | None, grant: int, now_us: int) -> int:
    """The holder's grant after adding `grant` to its row (granted, credited, expires_us), None for no row.

    An expired row held nothing any more: it starts again from what it spent (what was credited,
    when that passed what was granted), so a renewed holder is not lent its old headroom twice.
    """
    if row is None:
        return grant
    granted, credited, expires_us = row
    if expires_us <= now_us:
        return max(granted, credited) + grant
    return granted + grant


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A threshold reached (`alert`, `kill`), a switch set by hand (`engaged`), re-engaged when its hand
    release lapsed (`reengaged`) or released (`release`), in one budget window.

    `cause` tells apart events of one kind in one window: 0 for a threshold or a period end (once
    per window), the `seq` of the hand action that caused it otherwise (once per action).
    """

    budget: str
    window_start: datetime
    kind: str
    at: datetime
    message: str
    cause: int = 0

    def key(self) -> tuple[str, int, str, int]:
        return (self.budget, _us(self.window_start), self.kind, self.cause)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery to one alert target: `pending`, `delivered` or `failed` (gave up), after `attempts`."""

    target: str
    state: str
    attempts: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as stored, with its delivery to each target the dispatcher was given."""

    event: BudgetEvent
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Override:
    """A budget's switch set by hand for one window: `engaged` or `released` at `at`, the store's `seq`-th
    hand action; a release carries its `until` (None: the window's end) and the spend when it was made."""

    action: str
    at: datetime
    seq: int
    until: datetime | None
    spend_usd: Decimal | None

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> Override:
        """From a stored row: (action, at_us, seq, until_us, spend_nanos), as both backends keep it."""
        action, at, seq, until, spend = row
        until_at = None if until is None else _moment(until)
        return cls(action, _moment(at), seq, until_at, None if spend is None else from_nanos(spend))


def _use_wal(db: sqlite3.Connection, patience_s: float = 5.0) -> None:
    """Puts the file in WAL mode, waiting up to `patience_s` for another connection that holds it.

    SQLite answers a journal-mode change on a file another connection is writing (a second daemon
    creating the same fresh state.db) with "database is locked" at once, without its busy handler:
    so the change is tried again, backing off, until the other connection is done.
    """
    delay, waited = 0.005, 0.0
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or waited >= patience_s:
                raise
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.1)


class StateStorage(Protocol):
    """What the daemon keeps of its state, in SQLite (`StateStore`) or PostgreSQL (`PostgresStateStore`).

    Every method commits before it returns; times are UTC datetimes or microseconds, money nano-dollars
    (or Decimal dollars where named `_usd`). Each method's contract is `StateStore`'s docstring of it.
    """

    def record(self, event: BudgetEvent) -> bool: ...
    def event_time(self, budget: str, window_start: datetime, kind: str) -> datetime | None: ...
    def undelivered(self) -> list[BudgetEvent]: ...
    def claim(self, event: BudgetEvent, owner: str, until_us: int, now_us: int) -> bool: ...
    def renew(self, event: BudgetEvent, owner: str, until_us: int) -> bool: ...
    def release(self, event: BudgetEvent, owner: str) -> None: ...
    def claimable(self, now_us: int) -> list[BudgetEvent]: ...
    def open_deliveries(self, event: BudgetEvent, targets: Iterable[str]) -> dict[str, Delivery]: ...
    def deliveries(self, event: BudgetEvent) -> dict[str, str]: ...
    def set_delivery(self, event: BudgetEvent, delivery: Delivery) -> None: ...
    def settle(self, event: BudgetEvent) -> None: ...
    def events(self, budget: str, since: datetime) -> list[EventRecord]: ...
    def unreleased_kills(self, budget: str) -> list[datetime]: ...
    def set_override(
        self,
        budget: str,
        window_start: datetime,
        action: str,
        at: datetime,
        *,
        until: datetime | None = None,
        spend_usd: Decimal | None = None,
    ) -> int: ...
    def override(self, budget: str, window_start: datetime) -> tuple[str, datetime] | None: ...
    def hand_override(self, budget: str, window_start: datetime) -> Override | None: ...
    def lend(
        self,
        holder: str,
        budget: str,
        window_start_us: int,
        decide: Callable[[int, int], int],
        *,
        now_us: int,
        expires_us: int,
        service: str = "",
    ) -> tuple[int, int]: ...
    def give_back(self, holder: str, budget: str, window_start_us: int, used_nanos: int) -> None: ...
    def credit(self, credits: Mapping[tuple[str, str, int], int]) -> None: ...
    def lent(self, budget: str, window_start_us: int, now_us: int) -> tuple[int, int]: ...
    def prune_allowances(self, before_us: int) -> int: ...
    def close(self) -> None: ...


class StateStore:
    """SQLite tables beside the ledger. Thread-safe (one connection behind a lock); every write is
    committed before the method returns (WAL, synchronous=FULL), so a restart neither repeats an
    event nor loses one, and never re-sends to a target what it recorded as delivered there."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        _use_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        migrate(self._db)

    def record(self, event: BudgetEvent) -> bool:
        """Stores `event` unless one with its budget, window, kind and cause exists; True when it is new."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_events (budget, window_start_us, kind, cause, at_us, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event.budget, _us(event.window_start), event.kind, event.cause, _us(event.at), event.message),
            )
            return cursor.rowcount == 1

    def event_time(self, budget: str, window_start: datetime, kind: str) -> datetime | None:
        """When the latest event of `kind` in that window was recorded; None if there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT at_us FROM budget_events WHERE budget = ? AND window_start_us = ? AND kind = ? "
                "ORDER BY rowid DESC LIMIT 1",
                (budget, _us(window_start), kind),
            ).fetchone()
        return _moment(row[0]) if row else None

    def undelivered(self) -> list[BudgetEvent]:
        """Events not yet settled for every target, in the order they were recorded (to resume after a restart)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT budget, window_start_us, kind, at_us, message, cause FROM budget_events "
                "WHERE settled = 0 ORDER BY rowid"
            ).fetchall()
        return [BudgetEvent(b, _moment(w), k, _moment(a), m, c) for b, w, k, a, m, c in rows]

    def claim(self, event: BudgetEvent, owner: str, until_us: int, now_us: int) -> bool:
        """Gives `owner` the delivery lease of `event` until `until_us` if the event is unsettled and its lease
        is free, expired at `now_us`, or `owner`'s already; True when `owner` holds it now.

        One conditional update: of daemons racing for one lease, exactly one gets it. Only the holder of
        an event's lease sends it, so a live daemon's deliveries are never repeated by another.
        """
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE budget_events SET lease_owner = ?, lease_until_us = ? WHERE {_KEY} AND settled = 0 "
                "AND (lease_owner IS NULL OR lease_owner = ? OR lease_until_us <= ?)",
                (owner, until_us, *event.key(), owner, now_us),
            )
            return cursor.rowcount == 1

    def renew(self, event: BudgetEvent, owner: str, until_us: int) -> bool:
        """Moves `owner`'s lease of `event` on to `until_us`; False when `owner` does not hold it (another daemon
        took it after it expired), and then `owner` must not send it any more."""
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE budget_events SET lease_until_us = ? WHERE {_KEY} AND lease_owner = ?",
                (until_us, *event.key(), owner),
            )
            return cursor.rowcount == 1

    def release(self, event: BudgetEvent, owner: str) -> None:
        """Gives up `owner`'s lease of `event` (a daemon stopping): another daemon may take it at once."""
        with self._lock:
            self._db.execute(
                f"UPDATE budget_events SET lease_owner = NULL, lease_until_us = NULL WHERE {_KEY} AND lease_owner = ?",
                (*event.key(), owner),
            )

    def claimable(self, now_us: int) -> list[BudgetEvent]:
        """Unsettled events whose lease is free or expired at `now_us`, oldest first: what a daemon may take over."""
        with self._lock:
            rows = self._db.execute(
                "SELECT budget, window_start_us, kind, at_us, message, cause FROM budget_events "
                "WHERE settled = 0 AND (lease_owner IS NULL OR lease_until_us <= ?) ORDER BY rowid",
                (now_us,),
            ).fetchall()
        return [BudgetEvent(b, _moment(w), k, _moment(a), m, c) for b, w, k, a, m, c in rows]

    def open_deliveries(self, event: BudgetEvent, targets: Iterable[str]) -> dict[str, Delivery]:
        """Adds a `pending` delivery of `event` for each of `targets` that has none (one committed write);
        returns the delivery of every one of `targets`."""
        names = list(targets)
        with self._lock:
            with self._db:  # one transaction for all targets
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR IGNORE INTO deliveries (budget, window_start_us, kind, cause, target, state) "
                    "VALUES (?, ?, ?, ?, ?, 'pending')",
                    [(*event.key(), name) for name in names],
                )
            rows = self._db.execute(f"SELECT target, state, attempts FROM deliveries WHERE {_KEY}", event.key())
            found = {target: Delivery(target, state, attempts) for target, state, attempts in rows}
        return {name: found[name] for name in names}

    def deliveries(self, event: BudgetEvent) -> dict[str, str]:
        """The delivery state of `event` by target, for every target it was opened for."""
        with self._lock:
            rows = self._db.execute(f"SELECT target, state FROM deliveries WHERE {_KEY}", event.key()).fetchall()
        return dict(rows)

    def set_delivery(self, event: BudgetEvent, delivery: Delivery) -> None:
        """Records one target's delivery state of `event`, committed before it returns."""
        with self._lock:
            self._db.execute(
                "INSERT INTO deliveries (budget, window_start_us, kind, cause, target, state, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET state = excluded.state, "
                "attempts = excluded.attempts",
                (*event.key(), delivery.target, delivery.state, delivery.attempts),
            )

    def settle(self, event: BudgetEvent) -> None:
        """Marks `event` done: every target has its final state, so a restart does not look at it again."""
        with self._lock:
            self._db.execute(f"UPDATE budget_events SET settled = 1 WHERE {_KEY}", event.key())

    def events(self, budget: str, since: datetime) -> list[EventRecord]:
        """`budget`'s events recorded at or after `since`, oldest first, each with its deliveries by target."""
        with self._lock:
            rows = self._db.execute(
                "SELECT budget, window_start_us, kind, at_us, message, cause FROM budget_events "
                "WHERE budget = ? AND at_us >= ? ORDER BY rowid",
                (budget, _us(since)),
            ).fetchall()
            events = [BudgetEvent(b, _moment(w), k, _moment(a), m, c) for b, w, k, a, m, c in rows]
            return [EventRecord(event, self._deliveries(event)) for event in events]

    def _deliveries(self, event: BudgetEvent) -> tuple[Delivery, ...]:
        rows = self._db.execute(
            f"SELECT target, state, attempts FROM deliveries WHERE {_KEY} ORDER BY rowid", event.key()
        ).fetchall()
        return tuple(Delivery(*row) for row in rows)

    def unreleased_kills(self, budget: str) -> list[datetime]:
        """Window starts in which the latest switch event of `budget` announced it engaged (by threshold, by
        hand, or again after a hand release lapsed), with no release recorded after it."""
        marks = ", ".join("?" * len(_ON))
        with self._lock:
            rows = self._db.execute(
                f"SELECT window_start_us, kind FROM budget_events WHERE budget = ? AND kind IN ({marks}, 'release') "
                "ORDER BY rowid",
                (budget, *_ON),
            ).fetchall()
        return _latest_engaged(rows)

    def set_override(
        self,
        budget: str,
        window_start: datetime,
        action: str,
        at: datetime,
        *,
        until: datetime | None = None,
        spend_usd: Decimal | None = None,
    ) -> int:
        """Engages (`engaged`) or releases (`released`) a budget's switch by hand for one window, replacing
        an earlier hand action there; returns the action's `seq`, which grows with every hand action."""
        spend = None if spend_usd is None else to_nanos(spend_usd)
        with self._lock:
            (seq,) = self._db.execute(
                "INSERT OR REPLACE INTO overrides (budget, window_start_us, action, at_us, seq, until_us, spend_nanos) "
                "VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM overrides), ?, ?) RETURNING seq",
                (budget, _us(window_start), action, _us(at), None if until is None else _us(until), spend),
            ).fetchone()
        return int(seq)

    def override(self, budget: str, window_start: datetime) -> tuple[str, datetime] | None:
        """The hand action for that window as (action, at); None if there was none."""
        found = self.hand_override(budget, window_start)
        return (found.action, found.at) if found else None

    def hand_override(self, budget: str, window_start: datetime) -> Override | None:
        """The hand action for that window with its terms; None if there was none."""
        with self._lock:
            row = self._db.execute(
                "SELECT action, at_us, seq, until_us, spend_nanos FROM overrides "
                "WHERE budget = ? AND window_start_us = ?",
                (budget, _us(window_start)),
            ).fetchone()
        return None if row is None else Override.of_row(row)

    def lend(
        self,
        holder: str,
        budget: str,
        window_start_us: int,
        decide: Callable[[int, int], int],
        *,
        now_us: int,
        expires_us: int,
        service: str = "",
    ) -> tuple[int, int]:
        """Lends to `holder` what `decide(lent_nanos, holders)` grants of `budget`'s window; returns (granted, lent).

        In one write transaction, so daemons sharing the store never lend the same headroom twice:
        reads what every live allowance of that window still holds (`granted - credited` while not
        expired, this holder's included) and how many holders hold one (this one included), hands
        both to `decide`, which returns the nano-dollars to add to the holder's grant, and renews
        the holder's expiry. `granted` is the holder's total grant in the window after the loan,
        `lent` what all holders held before it.
        """
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            lent, holders = self._db.execute(
                "SELECT COALESCE(SUM(MAX(granted_nanos - credited_nanos, 0)), 0), COUNT(*) FROM allowances "
                "WHERE budget = ? AND window_start_us = ? AND expires_us > ?",
                (budget, window_start_us, now_us),
            ).fetchone()
            row = self._db.execute(
                "SELECT granted_nanos, credited_nanos, expires_us FROM allowances "
                "WHERE holder = ? AND budget = ? AND window_start_us = ?",
                (holder, budget, window_start_us),
            ).fetchone()
            live = row is not None and row[2] > now_us
            grant = max(0, decide(int(lent), int(holders) + (0 if live else 1)))
            granted = _new_grant(row, grant, now_us)
            self._db.execute(
                "INSERT INTO allowances (holder, budget, window_start_us, granted_nanos, expires_us, service) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET granted_nanos = excluded.granted_nanos, "
                "expires_us = excluded.expires_us",
                (holder, budget, window_start_us, granted, expires_us, service),
            )
        return granted, int(lent)

    def give_back(self, holder: str, budget: str, window_start_us: int, used_nanos: int) -> None:
        """Takes back what `holder` says it will not spend: its grant becomes `used_nanos` (never more than it was)."""
        with self._lock:
            self._db.execute(
                "UPDATE allowances SET granted_nanos = MIN(granted_nanos, ?) "
                "WHERE holder = ? AND budget = ? AND window_start_us = ?",
                (used_nanos, holder, budget, window_start_us),
            )

    def credit(self, credits: Mapping[tuple[str, str, int], int]) -> None:
        """Adds stored spend to the allowances it was drawn from, keyed (holder, budget, window start), in one
        transaction; spend of an allowance this store never lent is not kept."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE allowances SET credited_nanos = credited_nanos + ? "
                "WHERE holder = ? AND budget = ? AND window_start_us = ?",
                [(nanos, *key) for key, nanos in credits.items()],
            )

    def lent(self, budget: str, window_start_us: int, now_us: int) -> tuple[int, int]:
        """What live allowances of that window still hold, in nano-dollars, and how many holders hold one."""
        with self._lock:
            total, holders = self._db.execute(
                "SELECT COALESCE(SUM(MAX(granted_nanos - credited_nanos, 0)), 0), COUNT(*) FROM allowances "
                "WHERE budget = ? AND window_start_us = ? AND expires_us > ?",
                (budget, window_start_us, now_us),
            ).fetchone()
        return int(total), int(holders)

    def prune_allowances(self, before_us: int) -> int:
        """Forgets allowances that expired before `before_us` (their spend is in the ledger); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM allowances WHERE expires_us < ?", (before_us,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
