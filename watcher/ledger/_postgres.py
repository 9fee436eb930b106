"""The PostgreSQL ledger: one database shared by several daemons, the same books whichever wrote them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from itertools import islice
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from watcher._urls import hide_password
from watcher.exceptions import ConfigError
from watcher.ledger._entry import Entry, Scope
from watcher.ledger._store import (
    BREAKDOWN_SUMS,
    DIMENSIONS,
    AppendResult,
    BreakdownRow,
    breakdown_row,
    check_dimension,
    dimension_values,
    from_nanos,
    is_glob,
    plan_append,
    to_micros,
)

__all__ = ["ADVISORY_LOCK_KEY", "SCHEMA_VERSION", "PostgresLedger"]

log = logging.getLogger("watcher.ledger")

ADVISORY_LOCK_KEY = 0x77617463686C6564  # "watchled" as 8 bytes: the ledger's migrations, one daemon at a time
"""The `pg_advisory_xact_lock` key held while the schema is checked and migrated."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # version 1: what SQLite schema version 4 holds, in PostgreSQL's types
        """CREATE TABLE ledger_entries (
            key TEXT PRIMARY KEY,
            time_us BIGINT NOT NULL,
            response_id TEXT,
            service TEXT NOT NULL,
            environment TEXT NOT NULL,
            request_type TEXT NOT NULL,
            model TEXT NOT NULL,
            platform TEXT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_write_5m_tokens BIGINT NOT NULL,
            cache_write_1h_tokens BIGINT NOT NULL,
            web_search_requests BIGINT NOT NULL,
            cost_nanos BIGINT NOT NULL,
            input_nanos BIGINT NOT NULL,
            output_nanos BIGINT NOT NULL,
            cache_read_nanos BIGINT NOT NULL,
            cache_write_nanos BIGINT NOT NULL,
            tools_nanos BIGINT NOT NULL,
            estimated BOOLEAN NOT NULL,
            batch BOOLEAN NOT NULL,
            rank INTEGER NOT NULL,
            cache_read_savings_nanos BIGINT NOT NULL,
            cache_write_premium_nanos BIGINT NOT NULL,
            batch_savings_nanos BIGINT NOT NULL
        )""",
        "CREATE INDEX ledger_entries_by_time ON ledger_entries (time_us)",
        """CREATE TABLE ledger_dimension_values (
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (dimension, value)
        )""",
        """CREATE TABLE ledger_hourly (
            hour_us BIGINT NOT NULL,
            request_type TEXT NOT NULL,
            model TEXT NOT NULL,
            service TEXT NOT NULL,
            environment TEXT NOT NULL,
            requests BIGINT NOT NULL,
            cost_nanos NUMERIC NOT NULL,
            PRIMARY KEY (hour_us, request_type, model, service, environment)
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The PostgreSQL schema version this code writes (its own numbering, apart from the SQLite file's)."""

_COLUMNS = Entry._fields  # an Entry is a row in column order
_TYPES = (
    *("text", "bigint", "text", "text", "text", "text", "text", "text"),
    *("bigint",) * 12,
    *("boolean", "boolean", "integer", "bigint", "bigint", "bigint"),
)
_NAMES = ", ".join(_COLUMNS)
_ROWS = f"unnest({', '.join(f'%s::{kind}[]' for kind in _TYPES)}) AS v ({_NAMES})"
_SELECT = f"SELECT {_NAMES} FROM ledger_entries"
_INSERT_NEW = (
    f"INSERT INTO ledger_entries ({_NAMES}) SELECT * FROM {_ROWS} ORDER BY v.key"
    " ON CONFLICT (key) DO NOTHING RETURNING key"
)
_LOCK_STORED = f"{_SELECT} WHERE key = ANY(%s) ORDER BY key FOR UPDATE"
_UPGRADE = (
    f"UPDATE ledger_entries AS e SET ({', '.join(_COLUMNS[1:])}) = ({', '.join(f'v.{c}' for c in _COLUMNS[1:])})"
    f" FROM {_ROWS} WHERE e.key = v.key AND v.rank > e.rank"
)
_ROLL_UP = (
    "INSERT INTO ledger_hourly SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bigint[], %s::numeric[]) AS d ORDER BY 1, 2, 3, 4, 5"
    " ON CONFLICT (hour_us, request_type, model, service, environment) DO UPDATE"
    " SET requests = ledger_hourly.requests + excluded.requests,"
    " cost_nanos = ledger_hourly.cost_nanos + excluded.cost_nanos"
)
_NOTE_VALUES = (
    "INSERT INTO ledger_dimension_values SELECT * FROM unnest(%s::text[], %s::text[]) AS d ORDER BY 1, 2"
    " ON CONFLICT DO NOTHING"
)
_HOUR_US = 3_600_000_000
_SEEN_LIMIT = 10_000  # dimension values remembered as stored; beyond, ON CONFLICT DO NOTHING finds them again
_CONNECT_TIMEOUT_S = 10
_WAIT_S = 3.0
"""How long a call waits for a pooled connection: well below an OTLP exporter's usual 10 s timeout (and the
daemon's 5 s export turn), so while the server is down an export is answered 503 + Retry-After, not timed out."""
_RECONNECT_S = 5.0
"""How long the pool retries one lost connection in the background (backing off from 1 s, doubling) before it
gives up; the next call then starts a new attempt at once. Short, so the back-off never grows past a few seconds
and a daemon whose server comes back after a long outage reconnects within seconds, not minutes."""
_SPEND_PART = "(SELECT SUM(cost_nanos) FROM {table} WHERE {column} >= %s AND {column} < %s{condition})"
_BREAKDOWN_SUMS = ", ".join(f"SUM({expression})" for expression in BREAKDOWN_SUMS)

Pool = ConnectionPool[psycopg.Connection[tuple[Any, ...]]]


class PostgresLedger:
    """A `Ledger` in a PostgreSQL database, which several daemons (and threads) may share.

    Every call takes a connection from a `psycopg_pool.ConnectionPool` of up to `max_connections`,
    so calls from several threads run in parallel; a call waits up to `wait_s` seconds for one
    (the server down, the pool busy), then raises `psycopg_pool.PoolTimeout`. Each connection is checked
    before use and lost ones are replaced, so once the server is back after an outage calls succeed again
    within seconds, on the same ledger. Appends from any number of ledgers on one
    database count each key once and keep the hourly rollups equal to the stored entries (see
    `append`). Durability is the server's: an append returns once its transaction is committed.

    At construction the schema is created or migrated under a transaction-scoped advisory lock
    (`ADVISORY_LOCK_KEY`), so daemons starting together migrate once; ConfigError if the server
    cannot be reached, the URL is not one psycopg accepts, or the schema is newer than this code.
    `read_only` neither creates nor migrates: the schema must be this code's (ConfigError
    otherwise), and the server refuses writes (`default_transaction_read_only`).
    Error messages show the URL without its password.
    """

    def __init__(self, url: str, *, read_only: bool = False, max_connections: int = 4, wait_s: float = _WAIT_S) -> None:
        self._seen: set[tuple[str, str]] = set()  # dimension values known stored: a cache of _SEEN_LIMIT at most
        self._seen_lock = threading.Lock()
        self._closed = False
        kwargs = _connection_options(url, read_only)
        try:
            with psycopg.connect(url, **kwargs) as conn:
                if read_only:
                    _check_version(conn, url)
                else:
                    _migrate(conn)
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot open the ledger database {hide_password(url)}: {_scrub(str(exc), url)}"
            ) from None
        self._pool: Pool = ConnectionPool(
            url,
            kwargs={**kwargs, "autocommit": True},
            min_size=1,
            max_size=max_connections,
            timeout=wait_s,
            reconnect_timeout=_RECONNECT_S,
            open=False,
            configure=_configure,
            check=ConnectionPool.check_connection,
            name="watcher-ledger",
        )
        self._pool.open()

    def append(self, entries: Sequence[Entry]) -> AppendResult:
        """See `Ledger.append`: one READ COMMITTED transaction, exact whatever other ledgers append at once.

        First the winner per key within the batch is inserted where its key is new (`ON CONFLICT
        DO NOTHING`, which waits for a concurrent insert of the key to commit or roll back); the
        keys that were there are then read and locked (`FOR UPDATE`, in key order) and the
        winners of higher rank replace them. So the stored rank each count is planned against,
        and the old entry `replaced` reports, are those the transaction overwrote, even when
        another daemon wrote the key a moment before. Rollups and dimension values are written
        in the same transaction, every lock taken in a fixed order, so appends never deadlock.
        """
        if not entries:
            return AppendResult()
        _, firsts, _ = plan_append(entries, {})  # the batch's winner per key
        winners = [entries[i] for i in firsts]
        with self._connection() as conn, conn.transaction():
            inserted = {key for (key,) in conn.execute(_INSERT_NEW, _columns(winners)).fetchall()}
            held = [winner.key for winner in winners if winner.key not in inserted]
            stored = {row[0]: Entry._make(row) for row in conn.execute(_LOCK_STORED, [held])} if held else {}
            result, new, upgrades = plan_append(entries, {key: entry.rank for key, entry in stored.items()})
            if upgrades:
                conn.execute(_UPGRADE, _columns([entries[i] for i in upgrades]))
            written = [entries[i] for i in (*new, *upgrades)]
            replaced = [(stored[entries[i].key], entries[i]) for i in upgrades]
            deltas = _hourly_deltas(written, [old for old, _ in replaced])
            if deltas:
                conn.execute(_ROLL_UP, _transpose(deltas, 7))
            with self._seen_lock:
                unseen = sorted(dimension_values(written) - self._seen)
            if unseen:
                conn.execute(_NOTE_VALUES, _transpose(unseen, 2))
        with self._seen_lock:  # only once committed; a flood of new values grows it no further
            self._seen |= set(islice(unseen, max(0, _SEEN_LIMIT - len(self._seen))))
        return replace(result, replaced=tuple(replaced)) if replaced else result

    def spend(self, scope: Scope, since: datetime, until: datetime) -> Decimal:
        """See `Ledger.spend`. Whole UTC hours come from the hourly rollups and only the ragged ends from
        the entries, all in one statement (one snapshot), so the cost is O(hours), not O(entries)."""
        start, end = to_micros(since), to_micros(until)
        first, last = -(-start // _HOUR_US) * _HOUR_US, end // _HOUR_US * _HOUR_US  # whole hours: [first, last)
        parts = [(start, end), (0, 0), (0, 0)] if first >= last else [(start, first), (first, last), (last, end)]
        with self._connection() as conn:
            where = _scope_filter(conn, scope)
            if where is None:
                return from_nanos(0)
            condition, values = where
            tables = (("ledger_entries", "time_us"), ("ledger_hourly", "hour_us"), ("ledger_entries", "time_us"))
            sql = "SELECT " + ", ".join(
                _SPEND_PART.format(table=table, column=column, condition=condition) for table, column in tables
            )
            params = [value for low, high in parts for value in (low, high, *values)]
            row = conn.execute(sql, params).fetchone()
        return from_nanos(sum(int(part or 0) for part in row or ()))

    def breakdown(self, since: datetime, until: datetime, by: str) -> list[BreakdownRow]:
        """See `Ledger.breakdown`; ties in cost are ordered by key (as Python orders strings). Sums are exact."""
        check_dimension(by)
        sql = (
            f"SELECT {by}, COUNT(*), {_BREAKDOWN_SUMS} FROM ledger_entries"
            f" WHERE time_us >= %s AND time_us < %s GROUP BY {by}"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, (to_micros(since), to_micros(until))).fetchall()
        totals = [(key, int(requests), [int(value) for value in sums]) for key, requests, *sums in rows]
        totals.sort(key=lambda row: (-row[2][0], row[0]))
        return [breakdown_row(*row) for row in totals]

    def top(self, scope: Scope, since: datetime, until: datetime, by: str, limit: int = 3) -> list[tuple[str, Decimal]]:
        """See `Ledger.top`; ties in cost are ordered by value. A `limit` below 1 gives []."""
        check_dimension(by)
        with self._connection() as conn:
            where = _scope_filter(conn, scope)
            if where is None or limit < 1:
                return []
            sql = (
                f"SELECT {by}, SUM(cost_nanos) FROM ledger_entries"
                f" WHERE time_us >= %s AND time_us < %s{where[0]} GROUP BY {by}"
            )
            rows = conn.execute(sql, [to_micros(since), to_micros(until), *where[1]]).fetchall()
        costs = sorted(((value, int(nanos)) for value, nanos in rows), key=lambda pair: (-pair[1], pair[0]))
        return [(value, from_nanos(nanos)) for value, nanos in costs[:limit]]

    def get(self, key: str) -> Entry | None:
        """The entry stored under `key`; None if absent."""
        with self._connection() as conn:
            row = conn.execute(f"{_SELECT} WHERE key = %s", (key,)).fetchone()
        return None if row is None else Entry._make(row)

    def count(self) -> int:
        """How many entries (distinct keys) are stored."""
        with self._connection() as conn:
            row = conn.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._connection() as conn:
            row = conn.execute("SELECT MAX(version) FROM ledger_schema_version").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the pool and its connections; idempotent. Later calls raise ValueError."""
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        if self._closed:
            raise ValueError("the ledger is closed")
        with self._pool.connection() as conn:
            yield conn


def _scrub(message: str, url: str) -> str:
    """`message` on one line, any password `url` carries (in its user part or as a `password` option) masked."""
    try:
        parts = urlsplit(url)
        secrets = [parts.password or "", *(v for k, v in parse_qsl(parts.query) if k == "password")]
    except ValueError:
        secrets = []
    for secret in {variant for s in secrets if s for variant in (s, unquote(s))}:
        message = message.replace(secret, "***")
    return " ".join(message.split())


def _connection_options(url: str, read_only: bool) -> dict[str, Any]:
    """Connection keywords: a connect timeout unless the URL sets one; reads only, when `read_only`.

    ConfigError (password masked) for a URL psycopg cannot parse.
    """
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(
            f"ledger URL {hide_password(url)} is not a PostgreSQL URL psycopg accepts: {_scrub(str(exc), url)}"
        ) from None
    options: dict[str, Any] = {} if "connect_timeout" in given else {"connect_timeout": _CONNECT_TIMEOUT_S}
    if read_only:
        options["options"] = f"{given.get('options', '')} -c default_transaction_read_only=on".strip()
    return options


def _configure(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """READ COMMITTED whatever the server's default: `append` relies on its re-read of locked rows."""
    conn.isolation_level = IsolationLevel.READ_COMMITTED


def _migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction under the advisory lock; ConfigError if newer."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ledger_schema_version"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = _recorded_version(conn)
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"ledger schema version {current} is newer than this watcher's ({SCHEMA_VERSION}): upgrade watcher"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO ledger_schema_version (version) VALUES (%s)", (version,))
            log.info("ledger database migrated to schema version %d", version)


def _check_version(conn: psycopg.Connection[tuple[Any, ...]], url: str) -> None:
    """ConfigError unless the database holds a ledger at SCHEMA_VERSION: a reader neither creates nor migrates."""
    row = conn.execute("SELECT to_regclass('ledger_schema_version')").fetchone()
    if row is None or row[0] is None:
        raise ConfigError(
            f"no watcher ledger in database {hide_password(url)} (no ledger_schema_version table):"
            " check the URL, or start a watcher daemon on it once to create one"
        )
    version = _recorded_version(conn)
    if version != SCHEMA_VERSION:
        fix = "upgrade watcher" if version > SCHEMA_VERSION else "let this watcher's daemon open it once to migrate it"
        raise ConfigError(
            f"ledger database {hide_password(url)} has schema version {version},"
            f" this watcher reads {SCHEMA_VERSION}: {fix}"
        )


def _recorded_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM ledger_schema_version").fetchone()
    return int(row[0]) if row else 0


def _columns(entries: Sequence[Entry]) -> list[list[Any]]:
    """The entries as one list per column, bound as arrays to `unnest`: one statement for any batch."""
    return [list(column) for column in zip(*entries, strict=True)] if entries else [[] for _ in _COLUMNS]


def _transpose(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def _hourly_deltas(added: Sequence[Entry], removed: Sequence[Entry]) -> list[tuple[Any, ...]]:
    """Rollup rows to add: per hour and dimensions, the requests and cost `added` brings and `removed` takes;
    deltas that change nothing are left out, so they take no row lock."""
    deltas: dict[tuple[int, str, str, str, str], list[int]] = {}
    for sign, entries in ((1, added), (-1, removed)):
        for e in entries:
            bucket = (e.time_us - e.time_us % _HOUR_US, e.request_type, e.model, e.service, e.environment)
            sums = deltas.setdefault(bucket, [0, 0])
            sums[0] += sign
            sums[1] += sign * e.cost_nanos
    return [(*bucket, requests, Decimal(cost)) for bucket, (requests, cost) in deltas.items() if requests or cost]


def _scope_filter(conn: psycopg.Connection[tuple[Any, ...]], scope: Scope) -> tuple[str, list[list[str]]] | None:
    """SQL conditions and parameters selecting `scope`; None when a glob matches no stored value.

    Globs are matched in Python (`fnmatchcase`) against the values every ledger on the database has recorded.
    """
    sql, params = "", []
    for dim in DIMENSIONS:
        pattern: str | None = getattr(scope, dim)
        if pattern is None:
            continue
        if is_glob(pattern):
            seen = conn.execute("SELECT value FROM ledger_dimension_values WHERE dimension = %s", (dim,)).fetchall()
            values = [value for (value,) in seen if fnmatchcase(value, pattern)]
            if not values:
                return None
        else:
            values = [pattern]
        sql += f" AND {dim} = ANY(%s)"
        params.append(values)
    return sql, params
