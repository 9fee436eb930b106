"""Which state store the settings name: PostgreSQL for a fleet, else SQLite in the state directory."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass

from watcher._urls import hide_password, postgres_dsn
from watcher.settings import Settings

from ._state import StateStorage, StateStore

__all__ = ["Upgraded", "open_state_store", "upgrade_state_store"]


def open_state_store(settings: Settings) -> StateStorage:
    """The daemon's state store: in the PostgreSQL database of WATCHER_DATABASE_URL when it names one (beside
    the ledger, shared by every daemon using it), else `state.db` in the state directory (created).

    Migrates it when opened; ConfigError for a database that cannot be reached or is newer than this watcher.
    """
    dsn = postgres_dsn(settings.database_url)
    if dsn is not None:
        from ._state_postgres import PostgresStateStore  # psycopg is the `postgres` extra: imported only here

        return PostgresStateStore(dsn)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return StateStore(settings.state_dir / "state.db")


@dataclass(frozen=True)
class Upgraded:
    """What `upgrade_state_store` did: where the state is (its password hidden), and its version before and after."""

    where: str
    before: int
    after: int


def upgrade_state_store(settings: Settings) -> Upgraded:
    """Migrates the state store the settings name to this watcher's schema, and nothing else (`watcher db upgrade`).

    ConfigError as for `open_state_store`, for a store newer than this watcher among others.
    """
    dsn = postgres_dsn(settings.database_url)
    if dsn is not None:
        from ._schema_postgres import VERSION
        from ._state_postgres import migrate_database

        return Upgraded(hide_password(dsn), migrate_database(dsn), VERSION)
    from . import _schema

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "state.db"
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        before = _schema.migrate(db)
    return Upgraded(str(path), before, _schema.VERSION)
