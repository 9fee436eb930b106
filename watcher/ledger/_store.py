"""The `Ledger` protocol every backend implements, its result types, and its exact encodings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from watcher.ledger._entry import NANOS_PER_USD, Entry, Scope, from_micros, from_nanos, to_micros, to_nanos

__all__ = [
    "DIMENSIONS",
    "NANOS_PER_USD",
    "AppendResult",
    "BreakdownRow",
    "Ledger",
    "from_micros",
    "from_nanos",
    "plan_append",
    "to_micros",
    "to_nanos",
]

DIMENSIONS = ("request_type", "model", "service", "environment")
"""The entry fields `breakdown()` and `top()` can group by, and that a `Scope` filters on."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one `append()` did, counted as if its entries had been appended one at a time.

    `inserted` new keys, `duplicates` entries not stored because an entry of equal or higher
    rank was already there, `upgraded` entries that replaced a lower-rank one. The three add up
    to the number of entries given. `new_entries` are the entries stored under keys that were
    not stored before (one per key; upgrades excluded, their key was already counted), and
    `replaced` pairs each upgraded key's entry stored before with the one that replaced it
    (`(old, new)`), for callers that keep running totals: they add the new entries and the
    difference new minus old. Both are left out of comparisons.
    """

    inserted: int = 0
    duplicates: int = 0
    upgraded: int = 0
    new_entries: tuple[Entry, ...] = field(default=(), compare=False, repr=False)
    replaced: tuple[tuple[Entry, Entry], ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """Totals of the entries sharing one value (`key`) of a dimension, within a time window.

    `cache_write_tokens` adds 5-minute and 1-hour writes; `estimated_cost_usd` is the part of
    `cost_usd` that comes from entries priced with an estimate. The savings are the entries'
    counterfactuals (`watcher.pricing.Cost`): net caching savings are `cache_read_savings_usd`
    minus `cache_write_premium_usd`.
    """

    key: str
    requests: int
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    estimated_cost_usd: Decimal
    cache_read_savings_usd: Decimal = Decimal(0)
    cache_write_premium_usd: Decimal = Decimal(0)
    batch_savings_usd: Decimal = Decimal(0)


class Ledger(Protocol):
    """Durable store of billed responses, deduplicated by `Entry.key`.

    Implementations are safe to call from several threads. Times must be timezone-aware
    (ValueError otherwise); windows are half-open, `since <= time < until`.
    """

    def append(self, entries: Sequence[Entry]) -> AppendResult:
        """Store `entries` in one transaction; return only once it is durably committed.

        Blocks for the commit (an fsync). A key already stored with a rank >= the new entry's is
        a duplicate; a lower stored rank is replaced (`upgraded`). Within `entries` the same
        rule applies in order, so the highest rank wins and the first-seen among equals.
        Raises ValueError for an entry that cannot be encoded (naive time, non-finite cost) and
        the backend's error if the commit fails; on any raise nothing was stored.
        """
        ...

    def spend(self, scope: Scope, since: datetime, until: datetime) -> Decimal:
        """Exact sum of `cost_usd` of the entries in `[since, until)` matching every glob of `scope`."""
        ...

    def breakdown(self, since: datetime, until: datetime, by: str) -> list[BreakdownRow]:
        """Totals per value of the dimension `by` over `[since, until)`, biggest cost first.

        Raises ValueError unless `by` is one of DIMENSIONS.
        """
        ...

    def top(self, scope: Scope, since: datetime, until: datetime, by: str, limit: int = 3) -> list[tuple[str, Decimal]]:
        """The `limit` biggest `(value, cost)` pairs of dimension `by` within `scope` and the window.

        Raises ValueError unless `by` is one of DIMENSIONS.
        """
        ...

    def close(self) -> None:
        """Release the backend's resources; idempotent. Later calls raise ValueError."""
        ...


def plan_append(entries: Sequence[Entry], stored: dict[str, int]) -> tuple[AppendResult, list[int], list[int]]:
    """Counts as if appended one at a time; indexes of the entries to insert and of those to update.

    Per key, the winner is the highest rank, the first-seen among equals, and a stored entry
    beats every entry of equal or lower rank.
    """
    best: dict[str, int] = {}
    inserted = duplicates = upgraded = 0
    for index, entry in enumerate(entries):
        held = entries[best[entry.key]].rank if entry.key in best else stored.get(entry.key)
        if held is None:
            inserted += 1
        elif entry.rank > held:
            upgraded += 1
        else:
            duplicates += 1
            continue
        best[entry.key] = index
    new = [index for key, index in best.items() if key not in stored]
    upgrades = [index for key, index in best.items() if key in stored]
    result = AppendResult(inserted, duplicates, upgraded, tuple(entries[index] for index in new))
    return result, new, upgrades
