"""A budget window's spend from the hourly rollups, against summing its entries, in the same run.

Usage: python bench/ledger_spend.py [--entries N]

Fills a file ledger with N entries (default 1,000,000) spread over 24 days in 8 request types,
then times `SqliteLedger.spend` over a 30-day window (whole hours from the `hourly` rollups, the
ragged ends from the entries) for a budget over everything, one request type, and a glob.
Baseline: the same sum taken straight from the `entries` table, as spend() did before rollups.
The daemon re-reads each budget's window this way every minute, under the ledger's lock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watcher.ledger import Entry, Scope, SqliteLedger

START = datetime(2026, 11, 1, tzinfo=UTC)
SCOPES = (Scope(), Scope(request_type="rt1"), Scope(request_type="rt*"))


def fill(ledger: SqliteLedger, count: int) -> None:
    first = int(START.timestamp() * 1_000_000)
    step = 24 * 86_400_000_000 // count
    for batch in range(0, count, 5000):
        ledger.append(
            [
                Entry(f"k{i}", first + i * step, None, "svc", "prod", f"rt{i % 8}", "claude-haiku-4-5", cost_nanos=1000)
                for i in range(batch, min(batch + 5000, count))
            ]
        )


def best_ms(run: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    end = START + timedelta(days=30)
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as folder, SqliteLedger(Path(folder) / "l.db") as ledger:
        fill(ledger, args.entries)
        conn = ledger._connection()  # the baseline reads the table directly
        window = (int(START.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000))
        for scope in SCOPES:
            where = " AND request_type GLOB ?" if scope.request_type else ""
            params = [*window, scope.request_type] if scope.request_type else list(window)
            sql = f"SELECT SUM(cost_nanos) FROM entries WHERE time_us >= ? AND time_us < ?{where}"
            baseline = best_ms(lambda sql=sql, params=params: conn.execute(sql, params).fetchone())
            rollups = best_ms(lambda scope=scope: ledger.spend(scope, START, end))
            print(
                f"{scope.request_type or 'everything':<12} spend() {rollups:8.2f} ms   "
                f"summing {args.entries:,} entries {baseline:8.2f} ms   ratio {rollups / baseline:.3f}"
            )


if __name__ == "__main__":
    main()
