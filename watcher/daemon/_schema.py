"""The state store's SQLite schema, and the migration of an older state.db to it."""

from __future__ import annotations

import sqlite3

from watcher.exceptions import ConfigError

__all__ = ["VERSION", "migrate"]

VERSION = 3

# An event is one row, keyed by budget, window, kind and cause: 0 for events of a threshold or a period
# end (one per window), the `seq` of the hand action for events a hand action caused (one per action).
# `settled` is 1 once every alert target has a final delivery state; `deliveries` holds those states.
_TABLES = """
CREATE TABLE budget_events (
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    cause INTEGER NOT NULL DEFAULT 0,
    at_us INTEGER NOT NULL,
    message TEXT NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, window_start_us, kind, cause)
);
CREATE TABLE IF NOT EXISTS deliveries (
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    cause INTEGER NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, window_start_us, kind, cause, target)
);
"""
_OVERRIDES = """
CREATE TABLE overrides (
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    action TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    until_us INTEGER,
    spend_nanos INTEGER,
    PRIMARY KEY (budget, window_start_us)
);
"""
# Allowances lent to hook processes (docs/enforcement.md): one row per holder (a process's allowance id),
# budget and window. What is still out is `granted_nanos - credited_nanos` while `expires_us` is ahead:
# spans the daemon stored that carry the holder's id are credited to its row, moving that spend from
# "lent" to "committed". Several daemons sharing one store sum the same rows.
_ALLOWANCES = """
CREATE TABLE allowances (
    holder TEXT NOT NULL,
    budget TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    granted_nanos INTEGER NOT NULL DEFAULT 0,
    credited_nanos INTEGER NOT NULL DEFAULT 0,
    expires_us INTEGER NOT NULL,
    service TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (holder, budget, window_start_us)
);
CREATE INDEX allowances_by_budget ON allowances (budget, window_start_us, expires_us);
"""
# The delivery lease of each event (docs/alerts.md): the daemon delivering it (`lease_owner`, a random id
# per daemon process) and until when (`lease_until_us`); NULL while no daemon has taken it. Daemons sharing
# the file take over an unsettled event whose lease expired, so a dead daemon's deliveries are finished.
_LEASES = """
ALTER TABLE budget_events ADD COLUMN lease_owner TEXT;
ALTER TABLE budget_events ADD COLUMN lease_until_us INTEGER;
"""
# Version 0 had one `delivered` flag per event (set when apprise took it for every URL at once), no
# cause, and overrides without seq, until or spend. Its rows are kept: a delivered event stays settled
# (never sent again), an undelivered one is pending for every target, rows keep their order.
_FROM_0 = """
ALTER TABLE budget_events RENAME TO budget_events_v0;
{tables}
INSERT INTO budget_events (budget, window_start_us, kind, cause, at_us, message, settled)
    SELECT budget, window_start_us, kind, 0, at_us, message, delivered FROM budget_events_v0 ORDER BY rowid;
DROP TABLE budget_events_v0;
ALTER TABLE overrides ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE overrides ADD COLUMN until_us INTEGER;
ALTER TABLE overrides ADD COLUMN spend_nanos INTEGER;
UPDATE overrides SET seq = rowid;
"""


def migrate(db: sqlite3.Connection) -> int:
    """Brings the file to `VERSION` in one transaction: creates it, or migrates version 0 keeping its rows;
    returns the version it found.

    Safe against a second process opening the same file at once (the write lock is taken first).
    Raises ConfigError, naming both versions, for a file written by a newer watcher: a daemon must
    not start on state it does not understand.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise ConfigError(
                f"state.db has state schema version {version}, newer than this watcher's {VERSION}: upgrade watcher"
            )
        if version < VERSION:
            _steps(db, version)
            db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(version)


def _steps(db: sqlite3.Connection, version: int) -> None:
    """Runs the statements that take a file at `version` to `VERSION`: 0 is empty, or the first schema (one
    delivery flag per event); 1 has no allowances; 2 has no delivery leases."""
    has_events = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'budget_events'").fetchone()
    to_1 = _FROM_0.format(tables=_TABLES) if has_events else _TABLES + _OVERRIDES
    script = (to_1 if version < 1 else "") + (_ALLOWANCES if version < 2 else "") + _LEASES
    for statement in script.split(";"):  # executescript would commit the open transaction
        if statement.strip():
            db.execute(statement)
