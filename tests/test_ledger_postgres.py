"""The PostgreSQL ledger as a fleet shares it: several ledgers (pools) on one database, appending at once, one set
of books; schema versions and migrations under the advisory lock; URLs and their passwords.

The behaviour every backend shares is tested on both in tests/test_ledger.py.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from _postgres import fresh_database

from watcher._urls import hide_password
from watcher.exceptions import ConfigError
from watcher.ledger import AppendResult, Entry, PostgresLedger, Scope, open_ledger
from watcher.ledger._postgres import ADVISORY_LOCK_KEY, SCHEMA_VERSION

T0 = datetime(2025, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOUR_US = 3_600_000_000


def entry(key: str, cost_nanos: int = 10_000_000, **fields: Any) -> Entry:
    values: dict[str, Any] = {
        **{"time": T0, "service": "api", "environment": "prod", "request_type": "chat"},
        **{"model": "claude-sonnet-4-5", "rank": 2},
        **fields,
    }
    return Entry.of(key, **values)._replace(cost_nanos=cost_nanos)


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_database() as fresh:
        yield fresh


def raw_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as raw:
        return raw.execute(sql).fetchall()


def run_together(work: Callable[[int], None], threads: int) -> None:
    """Runs `work(0)` ... `work(threads - 1)` on threads of their own; re-raises the first error."""
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as error:
            errors.append(error)
            raise

    running = [threading.Thread(target=guarded, args=(index,)) for index in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if errors:
        raise errors[0]


def test_two_daemons_appending_the_same_keys_at_once_keep_one_set_of_books(url: str) -> None:
    """Two ledgers (two pools, as two daemons) on one database, two threads each, append overlapping batches of
    the same keys at once, round after round, with ranks that make upgrades race: every key is inserted once,
    each key's replacements form one chain from its inserted entry to the stored one (so running totals built
    from `new_entries` and `replaced` equal the books), and the hourly rollups equal the stored entries."""
    rng = random.Random(20250601)
    keys = [f"msg_{n}" for n in range(40)]
    serial = iter(range(1, 10**6))

    def batch() -> list[Entry]:
        chosen = rng.sample(keys, 25)
        return [
            entry(
                key,
                next(serial) * 1000,  # every entry's cost is its own, so a wrong `replaced` shows in the totals
                rank=(rank := rng.randint(1, 3)),
                time=T0 + (rank + keys.index(key) % 3) * HOUR,  # an upgrade may move the entry to another hour
                request_type=f"type{rank}",
            )
            for key in chosen
        ]

    rounds, threads = 12, 4
    plans = [[batch() for _ in range(rounds)] for _ in range(threads)]
    results: list[list[AppendResult]] = [[] for _ in range(threads)]
    with PostgresLedger(url) as first, PostgresLedger(url) as second:
        start = threading.Barrier(threads)

        def work(index: int) -> None:
            ledger = (first, second)[index % 2]
            for planned in plans[index]:
                start.wait(timeout=30)
                results[index].append(ledger.append(planned))

        run_together(work, threads)
        stored = {key: first.get(key) for key in keys}
        total = first.spend(Scope(), T0, T0 + 10 * HOUR)
        assert second.spend(Scope(), T0, T0 + 10 * HOUR) == total

    flat = [result for per_thread in results for result in per_thread]
    appended = [e for per_thread in plans for planned in per_thread for e in planned]
    assert sum(r.inserted for r in flat) == len({e.key for e in appended}) == len(keys)
    assert sum(r.inserted + r.duplicates + r.upgraded for r in flat) == len(appended)
    assert sum(r.upgraded for r in flat) == sum(len(r.replaced) for r in flat) > 0
    for key, final in stored.items():
        assert final is not None and final.rank == max(e.rank for e in appended if e.key == key)
        [inserted] = [e for r in flat for e in r.new_entries if e.key == key]
        upgrades = dict(pair for r in flat for pair in r.replaced if pair[0].key == key)
        chain = [inserted]
        while chain[-1] in upgrades:
            chain.append(upgrades[chain[-1]])
        assert chain[-1] == final and len(chain) == len(upgrades) + 1
    running = sum(e.cost_nanos for r in flat for e in r.new_entries)
    running += sum(new.cost_nanos - old.cost_nanos for r in flat for old, new in r.replaced)
    assert Decimal(running).scaleb(-9) == total == Decimal(sum(e.cost_nanos for e in stored.values() if e)).scaleb(-9)
    rollups = raw_rows(
        url,
        "SELECT hour_us, request_type, model, service, environment, requests, cost_nanos FROM ledger_hourly"
        " WHERE requests <> 0 OR cost_nanos <> 0 ORDER BY 1, 2, 3, 4, 5",
    )
    from_entries = raw_rows(
        url,
        f"SELECT time_us - time_us % {HOUR_US}, request_type, model, service, environment, COUNT(*), SUM(cost_nanos)"
        " FROM ledger_entries GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    )
    assert rollups == from_entries


def test_what_one_daemon_appends_another_reads_dedupes_and_upgrades(url: str) -> None:
    """Entries, rollups and the dimension values globs resolve against are in the database, not in a daemon:
    the second ledger's spend and breakdown see the first's entries, its glob matches a value only the first
    wrote, a retry through it is a duplicate, and its upgrade reports the entry the first stored."""
    with PostgresLedger(url) as first, PostgresLedger(url) as second:
        stored = entry("msg_1", 300_000_000, request_type="extract_invoice", rank=1)
        assert first.append([stored]) == AppendResult(inserted=1)
        assert second.spend(Scope(request_type="extract*"), T0, T0 + HOUR) == Decimal("0.3")
        assert [row.key for row in second.breakdown(T0, T0 + HOUR, "request_type")] == ["extract_invoice"]
        assert second.append([stored]) == AppendResult(duplicates=1)
        better = entry("msg_1", 500_000_000, request_type="extract_invoice", rank=2)
        assert second.append([better]).replaced == ((stored, better),)
        assert first.get("msg_1") == better and first.count() == 1


def test_spend_reads_whole_hours_from_the_rollups_and_only_the_ragged_ends_from_entries(url: str) -> None:
    """Budget evaluation is O(rollups): with the entries deleted behind the ledger's back, a window of whole
    hours still sums their rollups, while the ragged ends of a window (and windows inside one hour), read from
    the entries, find nothing."""
    with PostgresLedger(url) as ledger:
        ledger.append([entry("a", 1_000, time=T0 + HOUR / 2), entry("b", 2_000, time=T0 + 2 * HOUR + HOUR / 2)])
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute("DELETE FROM ledger_entries")
        assert ledger.spend(Scope(), T0, T0 + 3 * HOUR) == Decimal(3_000).scaleb(-9)
        assert ledger.spend(Scope(), T0 + HOUR / 4, T0 + 3 * HOUR) == Decimal(2_000).scaleb(-9)
        assert ledger.spend(Scope(), T0 + HOUR / 4, T0 + HOUR * 3 / 4) == 0


def test_the_schema_is_versioned_and_a_newer_one_is_refused_naming_both_versions(url: str) -> None:
    """The first open creates the tables and records each version once; reopening changes nothing; a version
    beyond this code's (a later watcher migrated the database) makes open_ledger raise for writers and readers."""
    open_ledger(url).close()
    open_ledger(url).close()
    assert raw_rows(url, "SELECT version FROM ledger_schema_version ORDER BY 1") == [
        (version,) for version in range(1, SCHEMA_VERSION + 1)
    ]
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute("INSERT INTO ledger_schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    newer = rf"schema version {SCHEMA_VERSION + 1} is newer than this watcher's \({SCHEMA_VERSION}\)"
    with pytest.raises(ConfigError, match=newer):
        open_ledger(url)
    with pytest.raises(ConfigError, match=rf"schema version {SCHEMA_VERSION + 1}, this watcher reads {SCHEMA_VERSION}"):
        open_ledger(url, read_only=True)


def advisory_lock_waiters(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return int(row[0]) if row else 0


def test_daemons_starting_together_migrate_once_under_the_advisory_lock(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With the migration lock held elsewhere, two opens of an empty database both wait on it (seen in pg_locks);
    released, they race to migrate: both open, and the schema was created and recorded once."""
    with psycopg.connect(url, autocommit=True) as holder, caplog.at_level("INFO", logger="watcher.ledger"):
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        opened: list[PostgresLedger] = []

        def start(_: int) -> None:
            opened.append(PostgresLedger(url))

        racing = threading.Thread(target=run_together, args=(start, 2))
        racing.start()
        deadline = time.monotonic() + 10
        while advisory_lock_waiters(holder) < 2 and racing.is_alive() and time.monotonic() < deadline:
            threading.Event().wait(0.005)  # polls the server's lock table: there is no notice to wait on
        waiting = advisory_lock_waiters(holder)
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        racing.join()
        for ledger in opened:
            ledger.close()
    assert waiting == 2 and len(opened) == 2
    assert caplog.text.count("ledger database migrated to schema version 1") == 1
    assert raw_rows(url, "SELECT version FROM ledger_schema_version") == [(SCHEMA_VERSION,)]


def test_a_reader_never_creates_or_migrates_and_cannot_write(url: str) -> None:
    """read_only on a database without a ledger is refused and creates nothing; on a ledger it reads what a
    daemon wrote, and the server refuses its writes."""
    with pytest.raises(ConfigError, match=r"no watcher ledger in database .*start a watcher daemon on it once"):
        open_ledger(url, read_only=True)
    assert raw_rows(url, "SELECT to_regclass('ledger_schema_version')") == [(None,)]
    with PostgresLedger(url) as daemon:
        daemon.append([entry("a", 7)])
    reader = open_ledger(url, read_only=True)
    try:
        assert reader.spend(Scope(), T0, T0 + HOUR) == Decimal(7).scaleb(-9)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.append([entry("b")])
    finally:
        reader.close()


def test_open_ledger_takes_postgres_urls_and_never_shows_their_password(url: str) -> None:
    """postgresql:// and postgres:// open the same database; a server that refuses the connection and a URL
    psycopg rejects raise ConfigError naming the server, with the password masked everywhere."""
    first = open_ledger(url)
    first.append([entry("a", 5)])
    first.close()
    shorter = open_ledger(url.replace("postgresql://", "postgres://", 1))
    try:
        assert shorter.spend(Scope(), T0, T0 + HOUR) == Decimal(5).scaleb(-9)
    finally:
        shorter.close()
    with socket.socket() as bound:  # a port that is bound, not listening: the connection is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"cannot open the ledger database .*127\.0\.0\.1:{port}/w: .*refused"
        ) as no:
            open_ledger(f"postgresql://watcher:s3cret@127.0.0.1:{port}/w")
    assert "s3cret" not in str(no.value) and f"postgresql://watcher:***@127.0.0.1:{port}/w" in str(no.value)
    for bad in ("postgresql://watcher:s3cret@127.0.0.1/w?bogus=1", "postgresql://watcher:s3%zzcret@127.0.0.1/w"):
        with pytest.raises(ConfigError, match="is not a PostgreSQL URL psycopg accepts") as rejected:
            open_ledger(bad)
        assert "s3" not in str(rejected.value)


def test_printed_urls_keep_everything_but_the_password() -> None:
    """What a daemon may print of its database URL: user, host, port and database; no password anywhere."""
    assert (
        hide_password("postgresql://watcher:s3cret@db.internal:5433/books")
        == "postgresql://watcher:***@db.internal:5433/books"
    )
    assert hide_password("postgresql://db/books?password=s3cret") == "postgresql://db/books?password=***"
    assert hide_password("sqlite:////var/lib/watcher/ledger.db") == "sqlite:////var/lib/watcher/ledger.db"
    assert hide_password("postgresql://watcher:s3cret@[::1/books") == "postgresql://..."
