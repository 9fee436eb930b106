"""Cost reports from the ledger: the window asked for, rows as JSON for the daemon's API, and text for people."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .ledger import BreakdownRow

__all__ = ["parse_since", "render_report", "report_window", "row_from_json", "row_json"]

_DECIMALS = frozenset(f.name for f in fields(BreakdownRow) if f.type in ("Decimal", Decimal))

_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime, option: str = "--since") -> datetime:
    """`24h`, `7d`, `2w` before `now`, or an ISO date/time (UTC when it has no offset). ValueError otherwise,
    naming `option`."""
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option} {value!r}: use 24h, 7d, 2w or an ISO date such as 2026-11-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def report_window(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The report's `[since, until)`, as `watcher report --since --until` reads them: `until` (default `now`)
    relative to `now`, `since` relative to `until`, each by `parse_since`. Raises ValueError, saying what
    to write, for a bad value or an empty window.

    `now` is passed in so that the daemon reads a window by its own clock, as its entries were judged.
    """
    end = parse_since(until, now, "--until") if until else now
    start = parse_since(since, end)
    if start >= end:
        raise ValueError(f"--since {since!r} is not before --until {end.isoformat()}: give an earlier --since")
    return start, end


def row_json(row: BreakdownRow) -> dict[str, Any]:
    """`row` as JSON: money as exact decimal strings (`"0.004500000"`), the key and counts as they are."""
    values = {f.name: getattr(row, f.name) for f in fields(row)}
    return {name: f"{value:f}" if name in _DECIMALS else value for name, value in values.items()}


def row_from_json(document: Mapping[str, Any]) -> BreakdownRow:
    """The row `row_json` wrote; ValueError for anything else."""
    try:
        values: dict[str, Any] = {f.name: document[f.name] for f in fields(BreakdownRow)}
        values.update((name, Decimal(values[name])) for name in _DECIMALS)
        return BreakdownRow(**values)
    except (KeyError, TypeError, ArithmeticError) as error:
        raise ValueError(f"not a report row ({type(error).__name__}: {error})") from None


def render_report(rows: Sequence[BreakdownRow], by: str, since: datetime, until: datetime) -> str:
    """A table: cost, requests, tokens by kind, cache hit ratio and average cost per request, biggest first."""
    lines = [f"spend from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC, by {by.replace('_', ' ')}", ""]
    header = (
        f"{by:<20} {'cost USD':>12} {'requests':>9} {'input':>11} {'output':>10} "
        f"{'cache rd':>11} {'cache wr':>10} {'hit':>5} {'$/req':>9}"
    )
    lines += [header, "-" * len(header)]
    for row in rows:
        prompt = row.input_tokens + row.cache_read_tokens + row.cache_write_tokens
        hit = f"{100 * row.cache_read_tokens / prompt:.0f}%" if prompt else "-"
        per = row.cost_usd / row.requests if row.requests else 0
        mark = " *" if row.estimated_cost_usd else ""
        lines.append(
            f"{row.key:<20} {row.cost_usd:>12.4f} {row.requests:>9} {row.input_tokens:>11} {row.output_tokens:>10} "
            f"{row.cache_read_tokens:>11} {row.cache_write_tokens:>10} {hit:>5} {per:>9.5f}{mark}"
        )
    total = sum((row.cost_usd for row in rows), start=0)
    lines += ["-" * len(header), f"{'total':<20} {total:>12.4f} {sum(r.requests for r in rows):>9}"]
    if any(row.estimated_cost_usd for row in rows):
        lines.append("* includes models priced by estimate (not in the price table)")
    lines += _savings(rows)
    return "\n".join(lines)


def _savings(rows: Sequence[BreakdownRow]) -> list[str]:
    """What prompt caching and batching saved in the window, against the same calls without them."""
    read_saved = sum((row.cache_read_savings_usd for row in rows), start=Decimal(0))
    premium = sum((row.cache_write_premium_usd for row in rows), start=Decimal(0))
    batch_saved = sum((row.batch_savings_usd for row in rows), start=Decimal(0))
    if not (read_saved or premium or batch_saved):
        return []
    return [
        "",
        f"caching saved {read_saved - premium:.4f} USD net ({read_saved:.4f} on cache reads, "
        f"{premium:.4f} paid above input rates for cache writes)",
        f"batching saved {batch_saved:.4f} USD",
    ]
