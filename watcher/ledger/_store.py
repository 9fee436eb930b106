"""The `Ledger` protocol every backend implements, its result types, and its exact encodings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from watcher.ledger._entry import NANOS_PER_USD, Entry, Scope, from_micros, from_nanos, to_micros, to_nanos

__all__ = [
    "BREAKDOWN_SUMS",
    "DIMENSIONS",
    "NANOS_PER_USD",
    "AppendResult",
    "BreakdownRow",
    "Ledger",
    "breakdown_row",
    "check_dimension",
    "dimension_values",
    "from_micros",
    "from_nanos",
    "is_glob",
    "plan_append",
    "to_micros",
    "to_nanos",
]

DIMENSIONS = ("request_type", "model", "service", "environment")
"""The entry fields `breakdown()` and `top()` can group by, and that a `Scope` filters on."""

_GLOB_CHARS = frozenset("*?[")


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


def check_dimension(by: str) -> None:
    """ValueError unless `by` is one of DIMENSIONS: it is put in SQL as a column name, so never anything else."""
    if by not in DIMENSIONS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(DIMENSIONS)}")


def is_glob(pattern: str) -> bool:
    """Whether `pattern` has glob characters; one without matches only itself, so needs no look-up."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def dimension_values(entries: Sequence[Entry]) -> set[tuple[str, str]]:
    """The `(dimension, value)` pairs `entries` carry, for the table that scope globs are resolved against."""
    return {
        *(("request_type", e.request_type) for e in entries),
        *(("model", e.model) for e in entries),
        *(("service", e.service) for e in entries),
        *(("environment", e.environment) for e in entries),
    }


BREAKDOWN_SUMS = (
    "cost_nanos",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "CASE WHEN estimated THEN cost_nanos ELSE 0 END",
    "cache_read_savings_nanos",
    "cache_write_premium_nanos",
    "batch_savings_nanos",
)
"""The SQL a breakdown sums over the entries, in the order `breakdown_row` reads its `sums`: each backend wraps
them in its own SUM."""


def breakdown_row(key: str, requests: int, sums: Sequence[int]) -> BreakdownRow:
    """A breakdown row from its exact integer sums, in this order: cost, input, output, cache-read, 5-minute and
    1-hour cache-write tokens, estimated cost, cache-read savings, cache-write premium, batch savings."""
    cost, inputs, outputs, reads, five, hour, estimated, read_saved, premium, batch_saved = sums
    return BreakdownRow(
        *(key, requests, from_nanos(cost), inputs, outputs, reads, five + hour, from_nanos(estimated)),
        *(from_nanos(read_saved), from_nanos(premium), from_nanos(batch_saved)),
    )
