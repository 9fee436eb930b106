"""The SQLite ledger: one file in WAL mode, every acknowledged append fsynced before it returns."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from itertools import islice
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any

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

__all__ = ["SCHEMA_VERSION", "SqliteLedger"]

log = logging.getLogger("watcher.ledger")

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # version 1
        """CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            time_us INTEGER NOT NULL,
            response_id TEXT,
            service TEXT NOT NULL,
            environment TEXT NOT NULL,
            request_type TEXT NOT NULL,
            model TEXT NOT NULL,
            platform TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_5m_tokens INTEGER NOT NULL,
            cache_write_1h_tokens INTEGER NOT NULL,
            web_search_requests INTEGER NOT NULL,
            cost_nanos INTEGER NOT NULL,
            input_nanos INTEGER NOT NULL,
            output_nanos INTEGER NOT NULL,
            cache_read_nanos INTEGER NOT NULL,
            cache_write_nanos INTEGER NOT NULL,
            tools_nanos INTEGER NOT NULL,
            estimated INTEGER NOT NULL,
            batch INTEGER NOT NULL,
            rank INTEGER NOT NULL
        )""",
        "CREATE INDEX entries_by_time ON entries (time_us)",
        """CREATE TABLE dimension_values (
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (dimension, value)
        ) WITHOUT ROWID""",
    ),
    (  # version 2: the savings counterfactuals
        "ALTER TABLE entries ADD COLUMN cache_read_savings_nanos INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE entries ADD COLUMN cache_write_premium_nanos INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE entries ADD COLUMN batch_savings_nanos INTEGER NOT NULL DEFAULT 0",
    ),
    (  # version 3: hourly rollups, so a month's spend is a few hundred rows, not millions
        """CREATE TABLE hourly (
            hour_us INTEGER NOT NULL,
            request_type TEXT NOT NULL,
            model TEXT NOT NULL,
            service TEXT NOT NULL,
            environment TEXT NOT NULL,
            requests INTEGER NOT NULL,
            cost_nanos INTEGER NOT NULL,
            PRIMARY KEY (hour_us, request_type, model, service, environment)
        ) WITHOUT ROWID""",
        f"""INSERT INTO hourly SELECT time_us - time_us % {3_600_000_000}, request_type, model, service, environment,
            COUNT(*), SUM(cost_nanos) FROM entries GROUP BY 1, 2, 3, 4, 5""",
    ),
    (  # version 4: a rollup's cost is cost_high * 2**32 + cost_nanos, so no hour's sum can overflow int64
        "ALTER TABLE hourly ADD COLUMN cost_high INTEGER NOT NULL DEFAULT 0",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes; older files are migrated forward when opened."""

_COLUMNS = Entry._fields  # an Entry is a row in column order
_INSERT = f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_UPDATE = f"UPDATE entries SET {', '.join(f'{c} = ?' for c in _COLUMNS[1:])} WHERE key = ?"
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM entries"
_HOUR_US = 3_600_000_000
_ROLL_UP = (
    "INSERT INTO hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET requests = requests"
    " + excluded.requests, cost_nanos = cost_nanos + excluded.cost_nanos, cost_high = cost_high + excluded.cost_high"
)
_LOW_BITS = 0xFFFFFFFF
_SEEN_LIMIT = 10_000  # dimension values remembered as stored; beyond, INSERT OR IGNORE finds them again
_KEY_CHUNK = 500  # bound parameters per lookup; under SQLite's oldest limit of 999


class SqliteLedger:
    """A `Ledger` in one SQLite file (or `":memory:"`), safe for concurrent use.

    Threading: every method may be called from any thread; one connection is shared behind a
    lock, so calls are serialised and a query waits for an append's fsync. Several processes
    may share the file: writers take SQLite's write lock (`BEGIN IMMEDIATE`) and wait up to
    `busy_timeout` seconds for it, then raise `sqlite3.OperationalError`.
    Durability: WAL journal with `synchronous=FULL`, so an append that returned survives a
    killed process and a power loss. Raises ConfigError at construction if the file cannot be
    opened as a ledger, or fails SQLite's `quick_check` (run, and its time logged, at every open:
    a corrupt page found at start beats a wrong sum or a failed append found later). `read_only`
    opens an existing file for queries only (SQLite `mode=ro`): it is neither created nor migrated,
    so its schema must be this code's; appends raise.
    """

    def __init__(
        self, path: str | PathLike[str] = ":memory:", *, busy_timeout: float = 5.0, read_only: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()  # dimension values known stored: a cache of _SEEN_LIMIT at most
        connect, need = (_connect_read_only, "readable") if read_only else (_connect, "writable")
        try:
            self._conn: sqlite3.Connection | None = connect(path, busy_timeout)
        except sqlite3.Error as exc:  # ConfigError (corrupt, too new) passes through as it is
            raise ConfigError(f"cannot open ledger {path}: {exc}; check it is a {need} watcher ledger") from exc

    def append(self, entries: Sequence[Entry]) -> AppendResult:
        """See `Ledger.append`: one IMMEDIATE transaction, fsynced on commit before returning.

        The entries an upgrade replaces are read in the same transaction, so `replaced` is exact.
        """
        if not entries:
            return AppendResult()
        with self._lock, _transaction(self._connection()) as conn:
            stored = _stored_ranks(conn, {entry.key for entry in entries})
            result, new, upgrades = plan_append(entries, stored)
            written = [entries[i] for i in (*new, *upgrades)]
            replaced = _stored_entries(conn, [entries[i].key for i in upgrades]) if upgrades else []
            conn.executemany(_INSERT, [entries[i] for i in new])
            conn.executemany(_UPDATE, [(*entries[i][1:], entries[i][0]) for i in upgrades])
            conn.executemany(_ROLL_UP, _hourly_deltas(written, replaced))
            unseen = dimension_values(written) - self._seen  # pairs this connection has not written before
            conn.executemany("INSERT OR IGNORE INTO dimension_values VALUES (?, ?)", unseen)
            if replaced:
                by_key = {entry.key: entry for entry in replaced}
                result = replace(result, replaced=tuple((by_key[entries[i].key], entries[i]) for i in upgrades))
        if len(self._seen) < _SEEN_LIMIT:  # only once committed; a flood of new values grows it no further
            self._seen |= set(islice(unseen, _SEEN_LIMIT - len(self._seen)))
        return result

    def spend(self, scope: Scope, since: datetime, until: datetime) -> Decimal:
        """See `Ledger.spend`. Globs are matched (case-sensitively) against the values seen so far.

        Whole UTC hours inside the window are read from the hourly rollups and only the ragged
        ends from the entries, so a month's spend costs about the same at a thousand entries as
        at ten million.
        """
        start, end = to_micros(since), to_micros(until)
        first, last = -(-start // _HOUR_US) * _HOUR_US, end // _HOUR_US * _HOUR_US  # whole hours: [first, last)
        with self._lock:
            conn = self._connection()
            where = _scope_filter(conn, scope)
            if where is None:
                return from_nanos(0)
            condition, values = where
            if first >= last:
                parts = [("entries", "time_us", start, end)]
            else:
                parts = [("entries", "time_us", start, first), ("hourly", "hour_us", first, last)]
                parts.append(("entries", "time_us", last, end))
            total = 0
            for table, column, low, high in parts:
                if low < high:
                    sql = f"SELECT {_COST_SUM[table]} FROM {table} WHERE {column} >= ? AND {column} < ?"
                    total += _exact(conn.execute(sql + condition, [low, high, *values]).fetchone())
        return from_nanos(total)

    def breakdown(self, since: datetime, until: datetime, by: str) -> list[BreakdownRow]:
        """See `Ledger.breakdown`; ties in cost are ordered by key. Sums are exact whatever the entries hold."""
        check_dimension(by)
        sql = f"SELECT {by}, COUNT(*), {_BREAKDOWN_SUMS} FROM entries WHERE time_us >= ? AND time_us < ? GROUP BY {by}"
        window = (to_micros(since), to_micros(until))
        with self._lock:
            rows = self._connection().execute(sql, window).fetchall()
        totals = [(key, requests, _exact_pairs(sums)) for key, requests, *sums in rows]
        totals.sort(key=lambda row: (-row[2][0], row[0]))
        return [breakdown_row(*row) for row in totals]

    def top(self, scope: Scope, since: datetime, until: datetime, by: str, limit: int = 3) -> list[tuple[str, Decimal]]:
        """See `Ledger.top`; ties in cost are ordered by value. A `limit` below 1 gives []."""
        check_dimension(by)
        window = [to_micros(since), to_micros(until)]
        with self._lock:
            conn = self._connection()
            where = _scope_filter(conn, scope)
            if where is None or limit < 1:
                return []
            sql = (
                f"SELECT {by}, {_wide_sum('cost_nanos')} FROM entries"
                f" WHERE time_us >= ? AND time_us < ?{where[0]} GROUP BY {by}"
            )
            rows = conn.execute(sql, [*window, *where[1]]).fetchall()
        costs = sorted(((value, _exact(sums)) for value, *sums in rows), key=lambda pair: (-pair[1], pair[0]))
        return [(value, from_nanos(nanos)) for value, nanos in costs[:limit]]

    def get(self, key: str) -> Entry | None:
        """The entry stored under `key`, costs at the ledger's 1e-9 USD resolution; None if absent."""
        with self._lock:
            row = self._connection().execute(f"{_SELECT} WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decode(row)

    def count(self) -> int:
        """How many entries (distinct keys) are stored."""
        with self._lock:
            (n,) = self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()
        return int(n)

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        with self._lock:
            (version,) = self._connection().execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(version)

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise ValueError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("the ledger is closed")
        return self._conn


def _connect(path: str | PathLike[str], busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on commit, checked, migrated."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        _check_integrity(conn, path)
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: str | PathLike[str], busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot write to the existing file `path`, checked to be at SCHEMA_VERSION."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        if version != SCHEMA_VERSION:
            fix = (
                "upgrade watcher"
                if version > SCHEMA_VERSION
                else "let this watcher's daemon open it once to migrate it"
            )
            raise ConfigError(f"ledger {path} has schema version {version}, this watcher reads {SCHEMA_VERSION}: {fix}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_integrity(conn: sqlite3.Connection, path: str | PathLike[str]) -> None:
    """Runs `PRAGMA quick_check` (every page and b-tree, in about a second per few million entries) and logs
    its time; ConfigError naming the file and the first problems if it finds any."""
    started = time.perf_counter()
    try:
        problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:  # a page too broken to walk
        problems = [str(exc)]
    elapsed = time.perf_counter() - started
    if problems != ["ok"]:
        raise ConfigError(
            f"ledger {path} is corrupt (SQLite quick_check: {'; '.join(problems)}): restore it from a backup, or"
            f" salvage it with `sqlite3 {path} .recover | sqlite3 recovered.db` and point watcher at the copy"
        )
    log.info("ledger %s passed its integrity check (quick_check) in %.3f s", path, elapsed)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed (and fsynced) on exit, rolled back on any raise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file's schema to SCHEMA_VERSION; ConfigError if it is newer than this code."""
    with _transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"ledger schema version {current} is newer than this watcher's ({SCHEMA_VERSION}): upgrade"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, datetime.now(UTC).isoformat()))


def _rows_by_key(conn: sqlite3.Connection, select: str, keys: Sequence[str]) -> list[Any]:
    """The rows of `select` (a query without WHERE on `entries`) whose key is among `keys`, in chunks."""
    rows: list[Any] = []
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        rows += conn.execute(f"{select} WHERE key IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
    return rows


def _stored_ranks(conn: sqlite3.Connection, keys: set[str]) -> dict[str, int]:
    """The rank stored under each of `keys` that is present."""
    return dict(_rows_by_key(conn, "SELECT key, rank FROM entries", sorted(keys)))


def _stored_entries(conn: sqlite3.Connection, keys: list[str]) -> list[Entry]:
    """The entries stored under `keys` (those present), e.g. the lower-rank ones an upgrade replaces."""
    return [_decode(row) for row in _rows_by_key(conn, _SELECT, keys)]


def _hourly_deltas(added: Sequence[Entry], removed: Sequence[Entry]) -> list[tuple[int | str, ...]]:
    """Rollup rows to add: per hour and dimensions, the requests and cost `added` brings and `removed` takes.

    The cost goes in two parts, its low 32 bits (never negative) and the rest: `cost_nanos` then grows
    by less than 2**32 an append, and no sum of billions of entries overflows a column.
    """
    deltas: dict[tuple[int, str, str, str, str], list[int]] = {}
    for sign, entries in ((1, added), (-1, removed)):
        for e in entries:
            bucket = (e.time_us - e.time_us % _HOUR_US, e.request_type, e.model, e.service, e.environment)
            sums = deltas.get(bucket)
            if sums is None:
                sums = deltas[bucket] = [0, 0]
            sums[0] += sign
            sums[1] += sign * e.cost_nanos
    return [(*bucket, requests, cost & _LOW_BITS, cost >> 32) for bucket, (requests, cost) in deltas.items()]


def _wide_sum(expression: str) -> str:
    """Two SQL aggregates, of the high and the low 32 bits of `expression`, that `_exact` joins into its sum.

    SQLite's SUM raises on int64 overflow and TOTAL is a float; summed in two halves, the total of
    up to 2**31 int64 values (per group) is exact.
    """
    return f"SUM(({expression}) >> 32), SUM(({expression}) & {_LOW_BITS})"


def _exact(sums: Sequence[int | None]) -> int:
    """The exact total from `_wide_sum`'s two aggregates, after any whole multiples of 2**32 before them."""
    *highs, high, low = (value or 0 for value in sums)
    return (sum(highs) << 32) + (high << 32) + low


def _exact_pairs(sums: Sequence[int | None]) -> list[int]:
    """`_exact` of each consecutive pair of aggregates (one `_wide_sum` each)."""
    return [_exact(sums[i : i + 2]) for i in range(0, len(sums), 2)]


_COST_SUM = {"entries": _wide_sum("cost_nanos"), "hourly": f"SUM(cost_high), {_wide_sum('cost_nanos')}"}
_BREAKDOWN_SUMS = ", ".join(_wide_sum(expression) for expression in BREAKDOWN_SUMS)


def _scope_filter(conn: sqlite3.Connection, scope: Scope) -> tuple[str, list[str]] | None:
    """SQL conditions and parameters selecting `scope`; None when a glob matches no stored value."""
    sql, params = "", []
    for dim in DIMENSIONS:
        pattern: str | None = getattr(scope, dim)
        if pattern is None:
            continue
        if not is_glob(pattern):
            values = [pattern]
        else:
            seen = conn.execute("SELECT value FROM dimension_values WHERE dimension = ?", (dim,)).fetchall()
            values = [value for (value,) in seen if fnmatchcase(value, pattern)]
            if not values:
                return None
        sql += f" AND {dim} IN ({', '.join('?' * len(values))})"
        params += values
    return sql, params


def _decode(row: Sequence[Any]) -> Entry:
    """The Entry of an `entries` row in _COLUMNS order (SQLite gives the two flags back as ints)."""
    return Entry._make((*row[:20], bool(row[20]), bool(row[21]), *row[22:]))
