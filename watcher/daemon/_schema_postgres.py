"""The state store's PostgreSQL schema, and its versioned migrations (run at start, or by `watcher db upgrade`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from watcher.exceptions import ConfigError

if TYPE_CHECKING:
    import psycopg

__all__ = ["LOCK_KEY", "VERSION", "migrate", "version"]

LOCK_KEY = int.from_bytes(b"wstate\x00\x01", "big")
"""The `pg_advisory_xact_lock` key the state migrations run under: one daemon migrates while the others wait.
Fixed, and other than the ledger's, so the two migrate side by side."""

# The tables of the SQLite schema (_schema.py), with `id` in place of SQLite's rowid for the order rows
# were recorded in, and `override_seq` numbering hand actions across every daemon of the database.
_V1 = """
CREATE TABLE budget_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    budget TEXT NOT NULL,
    window_start_us BIGINT NOT NULL,
    kind TEXT NOT NULL,
    cause BIGINT NOT NULL DEFAULT 0,
    at_us BIGINT NOT NULL,
    message TEXT NOT NULL,
    settled BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (budget, window_start_us, kind, cause)
);
CREATE INDEX budget_events_unsettled ON budget_events (id) WHERE NOT settled;
CREATE INDEX budget_events_by_time ON budget_events (budget, at_us);
CREATE TABLE deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    budget TEXT NOT NULL,
    window_start_us BIGINT NOT NULL,
    kind TEXT NOT NULL,
    cause BIGINT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, window_start_us, kind, cause, target)
);
CREATE SEQUENCE override_seq;
CREATE TABLE overrides (
    budget TEXT NOT NULL,
    window_start_us BIGINT NOT NULL,
    action TEXT NOT NULL,
    at_us BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    until_us BIGINT,
    spend_nanos BIGINT,
    PRIMARY KEY (budget, window_start_us)
);
CREATE TABLE allowances (
    holder TEXT NOT NULL,
    budget TEXT NOT NULL,
    window_start_us BIGINT NOT NULL,
    granted_nanos BIGINT NOT NULL DEFAULT 0,
    credited_nanos BIGINT NOT NULL DEFAULT 0,
    expires_us BIGINT NOT NULL,
    service TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (holder, budget, window_start_us)
);
CREATE INDEX allowances_by_budget ON allowances (budget, window_start_us, expires_us);
CREATE INDEX allowances_by_expiry ON allowances (expires_us);
"""

# The delivery lease of each event, as in the SQLite schema: who delivers it and until when (NULL: nobody).
_V2 = """
ALTER TABLE budget_events ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until_us BIGINT;
"""

_STEPS: tuple[str, ...] = (_V1, _V2)
"""Step N takes the database from version N to N + 1; add a step, never edit one that has shipped."""

VERSION = len(_STEPS)

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS state_schema_version (version INTEGER NOT NULL)"


def version(db: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The state schema version of the database `db` is connected to; 0 when it has none yet."""
    exists = db.execute("SELECT to_regclass('state_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = db.execute("SELECT max(version) FROM state_schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(db: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Brings the database to `VERSION` in one transaction, under the state's advisory lock; returns the version
    it found.

    Several daemons starting at once migrate once: the first takes the lock, the others wait for it
    and find the work done. DDL is transactional in PostgreSQL, so a migration that fails leaves the
    database as it was. Raises ConfigError, naming both versions, for a database a newer watcher
    migrated: a daemon must not start on state it does not understand.
    """
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        found = version(db)
        if found > VERSION:
            raise ConfigError(
                f"the database has state schema version {found}, newer than this watcher's {VERSION}: upgrade watcher"
            )
        if found < VERSION:
            db.execute(_VERSION_TABLE)
            for step in _STEPS[found:]:
                db.execute(step.encode())  # several statements: PostgreSQL runs them in this transaction
            db.execute("DELETE FROM state_schema_version")
            db.execute("INSERT INTO state_schema_version (version) VALUES (%s)", (VERSION,))
    return found
