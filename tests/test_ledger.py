"""The ledger contract on both backends (SQLite and PostgreSQL): exact sums, scope globs, dedupe by key and rank,
breakdowns; and SQLite's own file: persistence, migrations, integrity checks."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _postgres import fresh_database
from _support import corrupt_a_page_of_entries
from hypothesis import example, given, settings
from hypothesis import strategies as st

from watcher.exceptions import ConfigError
from watcher.ledger import (
    DIMENSIONS,
    SCHEMA_VERSION,
    AppendResult,
    Entry,
    PostgresLedger,
    Scope,
    SqliteLedger,
    float_to_nanos,
    open_ledger,
    to_nanos,
)

T0 = datetime(2025, 6, 1, tzinfo=UTC)
END = T0 + timedelta(days=1)


def entry(key: str, cost: str = "0.01", **fields: Any) -> Entry:
    """A billed response at T0 (unless `time` is given) costing `cost` USD."""
    values: dict[str, Any] = {
        **{"time": T0, "service": "api", "environment": "prod", "request_type": "chat"},
        **{"model": "claude-sonnet-4-5", "cost_usd": Decimal(cost), "rank": 2},
        **fields,
    }
    return Entry.of(key, **values)


AnyLedger = SqliteLedger | PostgresLedger
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyLedger]:
    """An empty ledger of each backend: a SQLite file, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        with SqliteLedger(tmp_path / "ledger.db") as fresh:
            yield fresh
    else:
        with fresh_database() as url, PostgresLedger(url) as fresh:
            yield fresh


@pytest.fixture(scope="module")
def empty_ledger() -> Iterator[Callable[[str], AbstractContextManager[AnyLedger]]]:
    """For property tests, which want a new empty ledger per example: an in-memory SQLite ledger, or a
    ledger on one PostgreSQL database (created on first use) emptied before each example."""
    with ExitStack() as databases:
        urls: list[str] = []

        @contextmanager
        def empty(backend: str) -> Iterator[AnyLedger]:
            if backend == "sqlite":
                with SqliteLedger() as fresh:
                    yield fresh
                return
            if not urls:
                urls.append(databases.enter_context(fresh_database()))
            with PostgresLedger(urls[0]) as fresh:
                with psycopg.connect(urls[0], autocommit=True) as raw:
                    for table in ("ledger_entries", "ledger_hourly", "ledger_dimension_values"):
                        raw.execute(f"DELETE FROM {table}")
                yield fresh

        yield empty


def test_spend_sums_appended_costs_exactly(ledger: AnyLedger) -> None:
    """Costs that float addition would blur add up to the exact Decimal."""
    ledger.append([entry(f"k{i}", "0.1") for i in range(1000)] + [entry("tiny", "0.000000001")])
    assert ledger.spend(Scope(), T0, END) == Decimal("100.000000001")


def test_costs_are_kept_to_the_nano_dollar_rounding_half_even(ledger: AnyLedger) -> None:
    """Below 1e-9 USD a cost is rounded half-even: 2.5 nano-dollars become 2, 3.5 become 4."""
    ledger.append([entry("a", "0.0000000025"), entry("b", "0.0000000035")])
    assert ledger.spend(Scope(), T0, END) == Decimal("0.000000006")


def test_spend_matches_only_entries_whose_fields_match_every_glob(ledger: AnyLedger) -> None:
    """Globs on request type and model select entries; a glob matching nothing gives zero."""
    ledger.append(
        [
            entry("1", "1", request_type="extract_invoice", model="claude-sonnet-4-5"),
            entry("2", "2", request_type="extract_receipt", model="claude-haiku-4-5"),
            entry("3", "4", request_type="extract_receipt", model="claude-opus-4-1"),
            entry("4", "8", request_type="summarise", model="claude-sonnet-4-5"),
            entry("5", "16", request_type="extract_invoice", model="claude-sonnet-4-5", environment="staging"),
        ]
    )
    assert ledger.spend(Scope(request_type="extract*", model="claude-*-4-5"), T0, END) == 19
    assert ledger.spend(Scope(request_type="extract*", environment="prod"), T0, END) == 7
    assert ledger.spend(Scope(model="claude-sonnet-4-5"), T0, END) == 25
    assert ledger.spend(Scope(request_type="EXTRACT*"), T0, END) == 0
    assert ledger.spend(Scope(service="other"), T0, END) == 0


def test_spend_window_includes_since_and_excludes_until(ledger: AnyLedger) -> None:
    """The window is half-open: an entry exactly at `until` belongs to the next window."""
    minute = timedelta(minutes=1)
    ledger.append([entry("a", "1", time=T0), entry("b", "2", time=T0 + minute), entry("c", "4", time=T0 - minute)])
    assert ledger.spend(Scope(), T0, T0 + minute) == 1
    assert ledger.spend(Scope(), T0 + minute, END) == 2
    assert ledger.spend(Scope(), T0.astimezone(timezone(timedelta(hours=2))), END) == 3


def test_retried_batch_is_not_counted_twice(ledger: AnyLedger) -> None:
    """Appending the same batch again (an exporter retry) stores nothing and counts duplicates."""
    batch = [entry(f"k{i}", "0.5") for i in range(10)]
    assert ledger.append(batch) == AppendResult(inserted=10)
    assert ledger.append(batch) == AppendResult(duplicates=10)
    assert ledger.spend(Scope(), T0, END) == 5
    assert ledger.count() == 10


def test_higher_rank_entry_replaces_lower_one_and_is_counted_as_upgraded(ledger: AnyLedger) -> None:
    """An SDK span (rank 1) then watcher's own (rank 2): the request type is updated, spend unchanged."""
    ledger.append([entry("msg_1", "0.3", request_type="unknown", rank=1)])
    upgrade = ledger.append([entry("msg_1", "0.3", request_type="extract_invoice")])
    assert upgrade == AppendResult(upgraded=1) and upgrade.new_entries == ()
    assert ledger.spend(Scope(), T0, END) == Decimal("0.3")
    assert ledger.spend(Scope(request_type="unknown"), T0, END) == 0
    assert [row.key for row in ledger.breakdown(T0, END, "request_type")] == ["extract_invoice"]
    stored = ledger.get("msg_1")
    assert stored is not None and (stored.rank, stored.request_type) == (2, "extract_invoice")


def test_an_upgrade_reports_the_entry_it_replaced_with_its_replacement(ledger: AnyLedger) -> None:
    """`AppendResult.replaced` pairs each upgraded key's old entry, as stored, with the new one, for running
    totals; a batch's duplicates and new keys are not in it, and inside one batch nothing was stored before."""
    old = entry("msg_1", "0.3", request_type="unknown", rank=1, input_tokens=7)
    ledger.append([old, entry("msg_2", "1", rank=1)])
    new = entry("msg_1", "0.5", request_type="extract_invoice")
    result = ledger.append([entry("msg_3", "2", rank=1), new, entry("msg_2", "1", rank=1)])
    assert result.replaced == ((old, new),)
    assert ledger.append([entry("msg_4", "1", rank=1), entry("msg_4", "2")]).replaced == ()


def test_lower_rank_after_higher_one_is_a_duplicate(ledger: AnyLedger) -> None:
    """Once watcher's span is stored, a later SDK span for the same response changes nothing."""
    ledger.append([entry("msg_1", "0.3", request_type="extract_invoice")])
    assert ledger.append([entry("msg_1", "0.9", request_type="unknown", rank=1)]) == AppendResult(duplicates=1)
    assert ledger.spend(Scope(), T0, END) == Decimal("0.3")


def test_duplicates_within_one_batch_keep_the_highest_rank_first_seen(ledger: AnyLedger) -> None:
    """Inside one batch the counts are those of appending one entry at a time."""
    batch = [entry("k", "1", rank=1), entry("k", "2", rank=2), entry("k", "4", rank=2), entry("k", "8", rank=1)]
    result = ledger.append(batch)
    assert result == AppendResult(inserted=1, upgraded=1, duplicates=2) and result.new_entries == (batch[1],)
    assert ledger.spend(Scope(), T0, END) == 2


@pytest.mark.parametrize("by", DIMENSIONS)
def test_breakdown_totals_each_value_of_a_dimension_biggest_first(ledger: AnyLedger, by: str) -> None:
    """Rows carry requests, cost, token sums (cache writes 5m + 1h), the estimated part and the savings,
    sorted by cost."""
    tokens = {"input_tokens": 10, "output_tokens": 20, "cache_read_tokens": 30}
    writes = {"cache_write_5m_tokens": 1, "cache_write_1h_tokens": 2}
    ledger.append(
        [
            entry("1", "1", **{by: "small"}, **tokens, **writes),
            entry("2", "2", **{by: "big"}, **tokens, **writes, estimated=True, cache_read_savings_usd=Decimal("0.5")),
            entry(
                "3", "3", **{by: "big"}, **tokens, cache_write_premium_usd=Decimal("0.25"), batch_savings_usd=Decimal(3)
            ),
            entry("4", "100", **{by: "big"}, time=END),
        ]
    )
    big, small = ledger.breakdown(T0, END, by)
    assert (big.key, big.requests, big.cost_usd, big.estimated_cost_usd) == ("big", 2, Decimal(5), Decimal(2))
    assert (big.input_tokens, big.output_tokens, big.cache_read_tokens, big.cache_write_tokens) == (20, 40, 60, 3)
    assert (small.key, small.requests, small.cost_usd, small.estimated_cost_usd) == ("small", 1, Decimal(1), Decimal(0))
    savings = (big.cache_read_savings_usd, big.cache_write_premium_usd, big.batch_savings_usd)
    assert savings == (Decimal("0.5"), Decimal("0.25"), Decimal(3))
    assert (small.cache_read_savings_usd, small.cache_write_premium_usd, small.batch_savings_usd) == (0, 0, 0)


def test_grouping_by_an_unknown_dimension_raises_value_error(ledger: AnyLedger) -> None:
    """Only request_type, model, service and environment can be grouped by."""
    with pytest.raises(ValueError, match="cannot group by 'platform'"):
        ledger.breakdown(T0, END, "platform")
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.top(Scope(), T0, END, "key; DROP TABLE entries")


def test_top_lists_the_biggest_spenders_within_the_scope(ledger: AnyLedger) -> None:
    """`top` ranks values of one dimension by cost, inside the scope, and keeps `limit` of them."""
    costs = {"a": "1", "b": "5", "c": "3", "d": "4"}
    ledger.append([entry(name, cost, request_type=name) for name, cost in costs.items()])
    ledger.append([entry("x", "50", request_type="x", model="claude-haiku-4-5")])
    scope = Scope(model="claude-sonnet-*")
    assert ledger.top(scope, T0, END, "request_type", limit=2) == [("b", Decimal(5)), ("d", Decimal(4))]
    assert ledger.top(Scope(), T0, END, "model", limit=5) == [
        ("claude-haiku-4-5", Decimal(50)),
        ("claude-sonnet-4-5", Decimal(13)),
    ]
    assert ledger.top(Scope(request_type="nothing*"), T0, END, "model") == []


def test_reopened_file_finds_every_entry_and_the_schema_version(tmp_path: Path) -> None:
    """Entries and the schema version persist across close and reopen."""
    url = f"sqlite:///{tmp_path}/sub/ledger.db"
    original = entry("msg_1", "0.123456789", response_id="msg_1", input_tokens=5, estimated=True, batch=True)
    first = open_ledger(url)
    first.append([original, entry("msg_2", "1")])
    first.close()
    with SqliteLedger(tmp_path / "sub" / "ledger.db") as reopened:
        assert reopened.get("msg_1") == original
        assert reopened.spend(Scope(), T0, END) == Decimal("1.123456789")
        assert reopened.schema_version() == SCHEMA_VERSION == 4
    with sqlite3.connect(tmp_path / "sub" / "ledger.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,), (3,), (4,)]


def test_a_ledger_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    """A file migrated by a later watcher raises ConfigError instead of being misread."""
    SqliteLedger(tmp_path / "ledger.db").close()
    with sqlite3.connect(tmp_path / "ledger.db") as raw:
        raw.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer than this watcher"):
        SqliteLedger(tmp_path / "ledger.db")


def test_open_ledger_accepts_sqlite_urls_and_refuses_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative and absolute paths and :memory: open; junk raises ConfigError saying what to use, and never
    shows a password it may hold."""
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///relative.db", f"sqlite:///{tmp_path}/absolute.db", "sqlite://:memory:"):
        open_ledger(url).close()
    assert (tmp_path / "relative.db").exists() and (tmp_path / "absolute.db").exists()
    for bad in ("mysql://db", "sqlite:/x.db", "sqlite:///", "sqlite:///x.db?mode=ro", "postgresql+psycopg://db/w"):
        with pytest.raises(ConfigError, match="sqlite:///"):
            open_ledger(bad)
    with pytest.raises(ConfigError, match=r"mysql://\.\.\. is not understood") as refused:
        open_ledger("mysql://user:s3cret@db/watcher")
    assert "s3cret" not in str(refused.value)


def test_a_naive_time_raises_and_stores_nothing(ledger: AnyLedger) -> None:
    """Entries and windows must be timezone-aware; a bad entry rejects its whole batch."""
    with pytest.raises(ValueError, match="no timezone"):
        ledger.append([entry("ok"), entry("naive", time=datetime(2025, 6, 1))])
    with pytest.raises(ValueError, match="no timezone"):
        ledger.spend(Scope(), datetime(2025, 6, 1), END)
    assert ledger.count() == 0


def test_appends_from_many_threads_all_land(ledger: AnyLedger) -> None:
    """append and spend may be called concurrently from several threads."""

    def work(thread: int) -> None:
        for n in range(5):
            ledger.append([entry(f"t{thread}-{n}-{i}", "0.001") for i in range(20)])
            ledger.spend(Scope(request_type="c*"), T0, END)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.count() == 400 and ledger.spend(Scope(), T0, END) == Decimal("0.4")


def test_a_closed_ledger_raises_value_error(ledger: AnyLedger) -> None:
    """close() is idempotent; any call after it raises ValueError."""
    ledger.close()
    ledger.close()
    with pytest.raises(ValueError, match="closed"):
        ledger.spend(Scope(), T0, END)
    with pytest.raises(ValueError, match="closed"):
        ledger.append([entry("late")])


keys_and_ranks = st.tuples(st.integers(0, 7), st.integers(1, 3), st.integers(0, 10**12))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(st.lists(keys_and_ranks, max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_spend_is_the_sum_of_the_highest_rank_first_seen_entry_per_key(
    empty_ledger: Callable[[str], AbstractContextManager[AnyLedger]],
    backend: str,
    drawn: list[tuple[int, int, int]],
    cuts: list[int],
) -> None:
    """Whatever the duplicates and however they are split into batches, each key counts once, at its best."""
    entries = [entry(f"k{key}", str(Decimal(nanos).scaleb(-9)), rank=rank) for key, rank, nanos in drawn]
    bounds = [0, *sorted(cuts), len(entries)]
    batches = [entries[a:b] for a, b in pairwise(bounds)]
    best: dict[str, Entry] = {}
    for e in entries:
        if e.key not in best or e.rank > best[e.key].rank:
            best[e.key] = e
    with empty_ledger(backend) as ledger:
        results = [ledger.append(batch) for batch in batches]
        assert ledger.spend(Scope(), T0, END) == sum((e.cost_usd for e in best.values()), Decimal(0))
    assert sum(r.inserted for r in results) == len(best)
    assert sum(r.inserted + r.duplicates + r.upgraded for r in results) == len(entries)


def test_a_version_1_ledger_is_migrated_and_keeps_its_entries(tmp_path: Path) -> None:
    """Opening a file written before the savings columns and the hourly rollups existed adds them (savings
    zero, rollups computed from the entries) and loses nothing."""
    path = tmp_path / "ledger.db"
    with SqliteLedger(path) as ledger:
        ledger.append([entry("old", "0.5", input_tokens=7)])
    with sqlite3.connect(path) as raw:  # turn it back into a version-1 file
        for column in ("cache_read_savings_nanos", "cache_write_premium_nanos", "batch_savings_nanos"):
            raw.execute(f"ALTER TABLE entries DROP COLUMN {column}")
        raw.execute("DROP TABLE hourly")
        raw.execute("DELETE FROM schema_version WHERE version > 1")
    with SqliteLedger(path) as migrated:
        assert migrated.schema_version() == SCHEMA_VERSION
        assert migrated.spend(Scope(), T0, END) == Decimal("0.5")  # a whole-hour window: read from the rollups
        assert migrated.get("old") == entry("old", "0.5", input_tokens=7)
        saved = entry("new", "1", cache_read_savings_usd=Decimal("0.25"), batch_savings_usd=Decimal("1"))
        migrated.append([saved])
        assert migrated.get("new") == saved
        assert migrated.spend(Scope(), T0, END) == Decimal("1.5")


@given(
    st.one_of(
        st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
        st.integers(0, 10**12).map(lambda n: n / 10**9),  # exact-looking amounts, halves included
        st.integers(0, 10**6).map(lambda n: (n + 0.5) / 10**9),
    )
)
@example(7.5e-09)  # x 1e9 is 7.4999...: the exact half must still round (half-even) to 8
@example(3.05e-08)  # x 1e9 is 30.5000...04: the exact half must round to 30
def test_float_amounts_become_the_nanos_of_their_shortest_repr(usd: float) -> None:
    """The fast float-to-nanos path agrees with the exact Decimal rounding of the float's repr, halves included."""
    assert float_to_nanos(usd) == to_nanos(Decimal(repr(usd)))


SCOPES = st.builds(
    Scope,
    request_type=st.sampled_from([None, "chat", "ext*", "none"]),
    model=st.sampled_from([None, "claude-haiku-4-5", "claude-*-4-6"]),
)


def test_an_upgrade_moves_its_cost_out_of_the_old_entrys_hour_and_scope(ledger: AnyLedger) -> None:
    """A higher-rank entry replacing a stored one takes the old cost out of the old hour's rollup and puts the
    new cost, under the new dimensions, in its own hour."""
    hour = timedelta(hours=1)
    ledger.append([entry("a", "1", rank=1, time=T0 + hour, request_type="unlabeled")])
    assert ledger.append([entry("a", "3", rank=2, time=T0 + 5 * hour, request_type="chat")]).upgraded == 1
    assert ledger.spend(Scope(), T0, END) == Decimal(3)
    assert ledger.spend(Scope(), T0, T0 + 2 * hour) == 0
    assert ledger.spend(Scope(request_type="unlabeled"), T0, END) == 0
    assert ledger.spend(Scope(request_type="chat"), T0 + 5 * hour, T0 + 6 * hour) == Decimal(3)


WINDOW_US = st.integers(0, 3 * 86_400_000_000)  # microseconds after T0, over three days
entries_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),  # keys: repeats make duplicates and upgrades
        WINDOW_US,
        st.sampled_from(["chat", "extract"]),
        st.sampled_from(["claude-haiku-4-5", "claude-opus-4-6"]),
        st.one_of(st.integers(0, 10**9), st.integers(0, 2**63 - 1)),  # up to int64 max, which two rows overflow
        st.sampled_from([1, 2]),
    ),
    max_size=12,
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(batches=st.lists(entries_strategy, max_size=4), since=WINDOW_US, length=WINDOW_US, scope=SCOPES)
def test_spend_from_hourly_rollups_equals_the_sum_of_the_stored_entries(
    empty_ledger: Callable[[str], AbstractContextManager[AnyLedger]],
    backend: str,
    batches: list[list[tuple[str, int, str, str, int, int]]],
    since: int,
    length: int,
    scope: Scope,
) -> None:
    """Whatever the appends (duplicates, upgrades across batches) and however ragged the window's ends,
    spend() equals the sum of the entries stored in the window and scope."""
    with empty_ledger(backend) as ledger:
        for batch in batches:
            ledger.append(
                [
                    entry(
                        key, time=T0 + timedelta(microseconds=at), request_type=kind, model=model, rank=rank
                    )._replace(cost_nanos=nanos)
                    for key, at, kind, model, nanos, rank in batch
                ]
            )
        start, end = T0 + timedelta(microseconds=since), T0 + timedelta(microseconds=since + length)
        stored = [ledger.get(key) for key in "abcdef"]
        expected = sum(
            e.cost_nanos
            for e in stored
            if e is not None
            and start <= e.time < end
            and all(getattr(scope, d) is None or fnmatchcase(getattr(e, d), getattr(scope, d)) for d in DIMENSIONS)
        )
        assert ledger.spend(scope, start, end) == Decimal(expected).scaleb(-9)


INT64_MAX = 2**63 - 1


def test_sums_over_many_max_size_rows_are_exact_and_never_overflow(ledger: AnyLedger) -> None:
    """2,000 entries each at int64's largest cost and token counts (as ledgers written before ingest bounded
    tokens may hold) in one hour and scope: spend, breakdown and top give the exact totals, an upgrade
    still takes one out of the hour's rollup, and appending more still works."""
    biggest = {f: INT64_MAX for f in ("input_tokens", "output_tokens", "cache_read_tokens", "web_search_requests")}
    big = [
        entry(f"k{i}", rank=1, **biggest)._replace(
            cost_nanos=INT64_MAX, cache_write_5m_tokens=INT64_MAX, cache_write_1h_tokens=INT64_MAX, estimated=True
        )
        for i in range(2000)
    ]
    for start in range(0, 2000, 500):
        ledger.append(big[start : start + 500])
    assert ledger.append([entry("k0", "0", rank=2)]).upgraded == 1
    n = 1999
    assert ledger.spend(Scope(), T0, END) == Decimal(n * INT64_MAX).scaleb(-9)
    assert ledger.spend(Scope(request_type="ch*"), T0 - timedelta(minutes=1), END) == Decimal(n * INT64_MAX).scaleb(-9)
    [row] = ledger.breakdown(T0, END, "model")
    assert (row.requests, row.cost_usd, row.estimated_cost_usd) == (2000, *[Decimal(n * INT64_MAX).scaleb(-9)] * 2)
    assert (row.input_tokens, row.cache_write_tokens) == (n * INT64_MAX, 2 * n * INT64_MAX)
    assert ledger.top(Scope(), T0, END, "service") == [("api", Decimal(n * INT64_MAX).scaleb(-9))]
    assert ledger.append([entry("more", "1")]).inserted == 1


def test_a_ledger_with_a_corrupt_page_is_refused_at_open_naming_the_file(tmp_path: Path) -> None:
    """A page of entries overwritten on disk is found when the file is opened: ConfigError names the file and
    the damage, before anything is read or written."""
    path = tmp_path / "ledger.db"
    with SqliteLedger(path) as ledger:
        ledger.append([entry(f"k{i}") for i in range(2000)])
    corrupt_a_page_of_entries(path)
    with pytest.raises(ConfigError, match=rf"ledger {path} is corrupt \(SQLite quick_check: .*Page \d+.*\.recover"):
        open_ledger(f"sqlite:///{path}")


def test_opening_a_ledger_logs_how_long_its_integrity_check_took(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each open runs SQLite's quick_check and logs its duration, so a slow start on a big ledger is explained."""
    with caplog.at_level("INFO", logger="watcher.ledger"), SqliteLedger(tmp_path / "ledger.db"):
        pass
    assert re.search(r"ledger .*ledger\.db passed its integrity check \(quick_check\) in \d+\.\d{3} s", caplog.text)
