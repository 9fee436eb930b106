"""The daemon's state in PostgreSQL, shared by every daemon of a fleet (WATCHER_DATABASE_URL=postgresql://...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import IsolationLevel
from psycopg_pool import ConnectionPool

from watcher._urls import hide_password
from watcher.exceptions import ConfigError
from watcher.ledger import to_nanos

from ._schema_postgres import migrate
from ._state import _ON, BudgetEvent, Delivery, EventRecord, Override, _latest_engaged, _moment, _new_grant, _us

__all__ = ["PostgresStateStore", "migrate_database"]

_KEY = "budget = %s AND window_start_us = %s AND kind = %s AND cause = %s"
_EVENT = "budget, window_start_us, kind, at_us, message, cause"
_LENT = (
    "SELECT COALESCE(SUM(GREATEST(granted_nanos - credited_nanos, 0)), 0)::bigint, COUNT(*) FROM allowances "
    "WHERE budget = %s AND window_start_us = %s AND expires_us > %s"
)
_LEND_LOCK = int.from_bytes(b"wlnd", "big")
"""The first key of the two-key advisory lock `lend` takes per budget window (the second hashes the window):
a key space of its own, apart from the one-key locks that migrations take."""

Connection = psycopg.Connection[tuple[Any, ...]]


def _event(row: tuple[Any, ...]) -> BudgetEvent:
    budget, window_start, kind, at, message, cause = row
    return BudgetEvent(budget, _moment(window_start), kind, _moment(at), message, cause)


def migrate_database(url: str, *, connect_timeout_s: float = 10.0) -> int:
    """Connects to `url` and migrates its state tables (`_schema_postgres.migrate`); returns the version found.

    ConfigError, in one line with the password hidden, when the server cannot be reached or refuses us,
    or when the database is newer than this watcher.
    """
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))) as db:
            return migrate(db)
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split())
        raise ConfigError(
            f"cannot open the state database {hide_password(url)} ({reason}); check WATCHER_DATABASE_URL and the server"
        ) from None


def _read_committed(db: Connection) -> None:
    """Each statement sees what committed before it, whatever the server's default: `lend` reads the allowances
    after it holds the window's lock, and must see the loan of the daemon that held the lock before it."""
    db.isolation_level = IsolationLevel.READ_COMMITTED


class PostgresStateStore:
    """`StateStore`'s tables and contracts in one PostgreSQL database, which several daemons share.

    Thread-safe (a pool of autocommit connections); every write is committed before its method
    returns. What SQLite gets from a single writer, this gets from the database: an event is
    claimed by the one insert that creates its row (`record` is True for one daemon only), a
    loan holds an advisory lock on its budget window for its transaction, credits add in place,
    and hand actions are numbered by a sequence. Migrates the schema when opened. Each pooled connection is
    checked before use, so after a database outage no call fails on a connection the server dropped.
    """

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout_s: float = 10.0) -> None:
        """Connects to `url`, migrates it (ConfigError if it cannot be reached, or is newer than this watcher),
        and keeps a pool of up to `max_connections` connections."""
        migrate_database(url, connect_timeout_s=connect_timeout_s)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=_read_committed,
            name="watcher-state",
            timeout=connect_timeout_s * 3,
            check=ConnectionPool.check_connection,  # one the server dropped (an outage) is replaced, not used
            reconnect_timeout=5.0,  # see the ledger's pool: the back-off stays short, so it reconnects soon after
            open=True,
        )

    def record(self, event: BudgetEvent) -> bool:
        """Stores `event` unless one with its budget, window, kind and cause exists; True when it is new, for
        exactly one of several daemons recording the same event."""
        with self._pool.connection() as db:
            row = db.execute(
                "INSERT INTO budget_events (budget, window_start_us, kind, cause, at_us, message) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (event.budget, _us(event.window_start), event.kind, event.cause, _us(event.at), event.message),
            ).fetchone()
        return row is not None

    def event_time(self, budget: str, window_start: datetime, kind: str) -> datetime | None:
        """When the latest event of `kind` in that window was recorded; None if there is none."""
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT at_us FROM budget_events WHERE budget = %s AND window_start_us = %s AND kind = %s "
                "ORDER BY id DESC LIMIT 1",
                (budget, _us(window_start), kind),
            ).fetchone()
        return _moment(row[0]) if row else None

    def undelivered(self) -> list[BudgetEvent]:
        """Events not yet settled for every target, in the order they were recorded (to resume after a restart)."""
        with self._pool.connection() as db:
            rows = db.execute(f"SELECT {_EVENT} FROM budget_events WHERE NOT settled ORDER BY id").fetchall()
        return [_event(row) for row in rows]

    def claim(self, event: BudgetEvent, owner: str, until_us: int, now_us: int) -> bool:
        """`StateStore.claim`'s contract across daemons: one conditional update, which PostgreSQL runs on the
        row's latest version after waiting for its lock, so of daemons racing for one lease one gets it."""
        with self._pool.connection() as db:
            row = db.execute(
                f"UPDATE budget_events SET lease_owner = %s, lease_until_us = %s WHERE {_KEY} AND NOT settled "
                "AND (lease_owner IS NULL OR lease_owner = %s OR lease_until_us <= %s) RETURNING 1",
                (owner, until_us, *event.key(), owner, now_us),
            ).fetchone()
        return row is not None

    def renew(self, event: BudgetEvent, owner: str, until_us: int) -> bool:
        """Moves `owner`'s lease of `event` on to `until_us`; False when `owner` does not hold it (another daemon
        took it after it expired), and then `owner` must not send it any more."""
        with self._pool.connection() as db:
            row = db.execute(
                f"UPDATE budget_events SET lease_until_us = %s WHERE {_KEY} AND lease_owner = %s RETURNING 1",
                (until_us, *event.key(), owner),
            ).fetchone()
        return row is not None

    def release(self, event: BudgetEvent, owner: str) -> None:
        """Gives up `owner`'s lease of `event` (a daemon stopping): another daemon may take it at once."""
        with self._pool.connection() as db:
            db.execute(
                f"UPDATE budget_events SET lease_owner = NULL, lease_until_us = NULL WHERE {_KEY} AND lease_owner = %s",
                (*event.key(), owner),
            )

    def claimable(self, now_us: int) -> list[BudgetEvent]:
        """Unsettled events whose lease is free or expired at `now_us`, oldest first: what a daemon may take over."""
        with self._pool.connection() as db:
            rows = db.execute(
                f"SELECT {_EVENT} FROM budget_events WHERE NOT settled "
                "AND (lease_owner IS NULL OR lease_until_us <= %s) ORDER BY id",
                (now_us,),
            ).fetchall()
        return [_event(row) for row in rows]

    def open_deliveries(self, event: BudgetEvent, targets: Iterable[str]) -> dict[str, Delivery]:
        """Adds a `pending` delivery of `event` for each of `targets` that has none (one transaction);
        returns the delivery of every one of `targets`."""
        names = list(targets)
        with self._pool.connection() as db:
            with db.transaction(), db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO deliveries (budget, window_start_us, kind, cause, target, state) "
                    "VALUES (%s, %s, %s, %s, %s, 'pending') ON CONFLICT DO NOTHING",
                    [(*event.key(), name) for name in names],
                )
            rows = db.execute(f"SELECT target, state, attempts FROM deliveries WHERE {_KEY}", event.key()).fetchall()
        found = {target: Delivery(target, state, attempts) for target, state, attempts in rows}
        return {name: found[name] for name in names}

    def deliveries(self, event: BudgetEvent) -> dict[str, str]:
        """The delivery state of `event` by target, for every target it was opened for."""
        with self._pool.connection() as db:
            rows = db.execute(f"SELECT target, state FROM deliveries WHERE {_KEY}", event.key()).fetchall()
        return {target: state for target, state in rows}

    def set_delivery(self, event: BudgetEvent, delivery: Delivery) -> None:
        """Records one target's delivery state of `event`, committed before it returns."""
        with self._pool.connection() as db:
            db.execute(
                "INSERT INTO deliveries (budget, window_start_us, kind, cause, target, state, attempts) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (budget, window_start_us, kind, cause, target) "
                "DO UPDATE SET state = excluded.state, attempts = excluded.attempts",
                (*event.key(), delivery.target, delivery.state, delivery.attempts),
            )

    def settle(self, event: BudgetEvent) -> None:
        """Marks `event` done: every target has its final state, so a restart does not look at it again."""
        with self._pool.connection() as db:
            db.execute(f"UPDATE budget_events SET settled = TRUE WHERE {_KEY}", event.key())

    def events(self, budget: str, since: datetime) -> list[EventRecord]:
        """`budget`'s events recorded at or after `since`, oldest first, each with its deliveries by target."""
        with self._pool.connection() as db:
            rows = db.execute(
                f"SELECT {_EVENT} FROM budget_events WHERE budget = %s AND at_us >= %s ORDER BY id",
                (budget, _us(since)),
            ).fetchall()
            sent = db.execute(
                "SELECT d.budget, d.window_start_us, d.kind, d.cause, d.target, d.state, d.attempts "
                "FROM deliveries d JOIN budget_events e USING (budget, window_start_us, kind, cause) "
                "WHERE e.budget = %s AND e.at_us >= %s ORDER BY d.id",
                (budget, _us(since)),
            ).fetchall()
        by_event: dict[tuple[Any, ...], list[Delivery]] = {}
        for *key, target, state, attempts in sent:
            by_event.setdefault(tuple(key), []).append(Delivery(target, state, attempts))
        events = [_event(row) for row in rows]
        return [EventRecord(event, tuple(by_event.get(event.key(), ()))) for event in events]

    def unreleased_kills(self, budget: str) -> list[datetime]:
        """Window starts in which the latest switch event of `budget` announced it engaged (by threshold, by
        hand, or again after a hand release lapsed), with no release recorded after it."""
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT window_start_us, kind FROM budget_events WHERE budget = %s AND kind = ANY(%s) ORDER BY id",
                (budget, [*_ON, "release"]),
            ).fetchall()
        return _latest_engaged((start, kind) for start, kind in rows)

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
        an earlier hand action there; returns the action's `seq`, which grows with every hand action of
        every daemon sharing the database (a sequence: no two actions share one)."""
        spend = None if spend_usd is None else to_nanos(spend_usd)
        with self._pool.connection() as db:
            row = db.execute(
                "INSERT INTO overrides (budget, window_start_us, action, at_us, seq, until_us, spend_nanos) "
                "VALUES (%s, %s, %s, %s, nextval('override_seq'), %s, %s) "
                "ON CONFLICT (budget, window_start_us) DO UPDATE SET action = excluded.action, "
                "at_us = excluded.at_us, seq = excluded.seq, until_us = excluded.until_us, "
                "spend_nanos = excluded.spend_nanos RETURNING seq",
                (budget, _us(window_start), action, _us(at), None if until is None else _us(until), spend),
            ).fetchone()
        assert row is not None  # an upsert with RETURNING always returns its row
        return int(row[0])

    def override(self, budget: str, window_start: datetime) -> tuple[str, datetime] | None:
        """The hand action for that window as (action, at); None if there was none."""
        found = self.hand_override(budget, window_start)
        return (found.action, found.at) if found else None

    def hand_override(self, budget: str, window_start: datetime) -> Override | None:
        """The hand action for that window with its terms; None if there was none."""
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT action, at_us, seq, until_us, spend_nanos FROM overrides "
                "WHERE budget = %s AND window_start_us = %s",
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

        `StateStore.lend`'s contract, across daemons: the transaction first takes an advisory lock on the
        budget window, so loans of one window from any daemon run one after another, each reading what
        the one before it committed (READ COMMITTED takes a new snapshot per statement, after the lock);
        the holder's row is locked too, against a give-back or credit racing the rewrite of its grant.
        """
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LEND_LOCK, f"{budget}@{window_start_us}"))
            row = db.execute(
                "SELECT granted_nanos, credited_nanos, expires_us FROM allowances "
                "WHERE holder = %s AND budget = %s AND window_start_us = %s FOR UPDATE",
                (holder, budget, window_start_us),
            ).fetchone()
            totals = db.execute(_LENT, (budget, window_start_us, now_us)).fetchone()
            lent, holders = totals if totals else (0, 0)
            live = row is not None and row[2] > now_us
            grant = max(0, decide(int(lent), int(holders) + (0 if live else 1)))
            granted = _new_grant(None if row is None else (row[0], row[1], row[2]), grant, now_us)
            db.execute(
                "INSERT INTO allowances (holder, budget, window_start_us, granted_nanos, expires_us, service) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (holder, budget, window_start_us) "
                "DO UPDATE SET granted_nanos = excluded.granted_nanos, expires_us = excluded.expires_us",
                (holder, budget, window_start_us, granted, expires_us, service),
            )
        return granted, int(lent)

    def give_back(self, holder: str, budget: str, window_start_us: int, used_nanos: int) -> None:
        """Takes back what `holder` says it will not spend: its grant becomes `used_nanos` (never more than it was)."""
        with self._pool.connection() as db:
            db.execute(
                "UPDATE allowances SET granted_nanos = LEAST(granted_nanos, %s) "
                "WHERE holder = %s AND budget = %s AND window_start_us = %s",
                (used_nanos, holder, budget, window_start_us),
            )

    def credit(self, credits: Mapping[tuple[str, str, int], int]) -> None:
        """Adds stored spend to the allowances it was drawn from, keyed (holder, budget, window start), in one
        transaction; each addition is made in place (`credited + n`), so daemons crediting one row both count.
        Rows are updated in key order, so two daemons crediting the same rows cannot deadlock."""
        if not credits:
            return
        with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
            cursor.executemany(
                "UPDATE allowances SET credited_nanos = credited_nanos + %s "
                "WHERE holder = %s AND budget = %s AND window_start_us = %s",
                [(nanos, *key) for key, nanos in sorted(credits.items())],
            )

    def lent(self, budget: str, window_start_us: int, now_us: int) -> tuple[int, int]:
        """What live allowances of that window still hold, in nano-dollars, and how many holders hold one."""
        with self._pool.connection() as db:
            row = db.execute(_LENT, (budget, window_start_us, now_us)).fetchone()
        total, holders = row if row else (0, 0)
        return int(total), int(holders)

    def prune_allowances(self, before_us: int) -> int:
        """Forgets allowances that expired before `before_us` (their spend is in the ledger); returns how many."""
        with self._pool.connection() as db:
            return db.execute("DELETE FROM allowances WHERE expires_us < %s", (before_us,)).rowcount

    def close(self) -> None:
        """Closes every connection of the pool."""
        self._pool.close()
