"""The daemon's own durable state: budget events sent exactly once, and kill switches set by hand."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["BudgetEvent", "StateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_events (
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    message TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, window_start_us, kind)
);
CREATE TABLE IF NOT EXISTS overrides (
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    action TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (budget, window_start_us)
);
"""


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A threshold reached (`alert`, `kill`) or a switch released (`release`) in one budget window."""

    budget: str
    window_start: datetime
    kind: str
    at: datetime
    message: str


class StateStore:
    """SQLite tables beside the ledger. Thread-safe (one connection behind a lock); every write is
    committed before the method returns (WAL, synchronous=FULL), so a restart never re-sends an
    alert that was recorded as delivered, and sends one that was recorded but not yet delivered."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def record(self, event: BudgetEvent) -> bool:
        """Stores `event` unless one of its kind exists for that budget window; True when it is new."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_events (budget, window_start_us, kind, at_us, message) "
                "VALUES (?, ?, ?, ?, ?)",
                (event.budget, _us(event.window_start), event.kind, _us(event.at), event.message),
            )
            return cursor.rowcount == 1

    def event_time(self, budget: str, window_start: datetime, kind: str) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT at_us FROM budget_events WHERE budget = ? AND window_start_us = ? AND kind = ?",
                (budget, _us(window_start), kind),
            ).fetchone()
        return _moment(row[0]) if row else None

    def undelivered(self) -> list[BudgetEvent]:
        """Events recorded but not yet delivered, oldest first (to send after a restart)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT budget, window_start_us, kind, at_us, message FROM budget_events "
                "WHERE delivered = 0 ORDER BY at_us"
            ).fetchall()
        return [BudgetEvent(b, _moment(w), k, _moment(a), m) for b, w, k, a, m in rows]

    def mark_delivered(self, event: BudgetEvent) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE budget_events SET delivered = 1 WHERE budget = ? AND window_start_us = ? AND kind = ?",
                (event.budget, _us(event.window_start), event.kind),
            )

    def unreleased_kills(self, budget: str) -> list[datetime]:
        """Window starts in which `budget` was killed (by threshold or by hand) and no release was recorded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT window_start_us FROM budget_events e WHERE budget = ? AND kind IN ('kill', 'engaged') "
                "AND NOT EXISTS (SELECT 1 FROM budget_events r WHERE r.budget = e.budget "
                "AND r.window_start_us = e.window_start_us AND r.kind = 'release')",
                (budget,),
            ).fetchall()
        return [_moment(row[0]) for row in rows]

    def set_override(self, budget: str, window_start: datetime, action: str, at: datetime) -> None:
        """Engages (`engaged`) or releases (`released`) a budget's switch by hand for one window."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO overrides (budget, window_start_us, action, at_us) VALUES (?, ?, ?, ?)",
                (budget, _us(window_start), action, _us(at)),
            )

    def override(self, budget: str, window_start: datetime) -> tuple[str, datetime] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT action, at_us FROM overrides WHERE budget = ? AND window_start_us = ?",
                (budget, _us(window_start)),
            ).fetchone()
        return (row[0], _moment(row[1])) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
