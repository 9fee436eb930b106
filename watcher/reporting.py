"""Cost reports from the ledger, as text for people."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .ledger import BreakdownRow

__all__ = ["parse_since", "render_report"]

_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime) -> datetime:
    """`24h`, `7d`, `2w` before `now`, or an ISO date/time (UTC when it has no offset). ValueError otherwise."""
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {value!r}: use 24h, 7d, 2w or an ISO date such as 2026-11-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
