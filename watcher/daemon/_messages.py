"""The text of budget events, with every value that came from a span made safe to show on one line."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from watcher.budgets import Budget, BudgetState
from watcher.ledger import Scope

__all__ = ["alert_message", "hand_release_terms", "money", "one_line", "reengaged_message", "release_message"]

_LONGEST = 64
# Control characters (Cc: newlines, escape sequences), format characters (Cf: bidi overrides that
# reorder what a reader sees) and the Unicode line and paragraph separators.
_UNSAFE = frozenset(("Cc", "Cf", "Zl", "Zp"))
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(value: str) -> str:
    """`value` with control and format characters shown as escapes, cut to 64 characters with `...`.

    Request types, models and services come from span attributes anyone who can export spans
    chooses; in an email or a chat message a newline in one could forge a line of the alert.
    """
    safe = "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE else ch for ch in value)
    return safe if len(safe) <= _LONGEST else safe[: _LONGEST - 3] + "..."


def _escape(ch: str) -> str:
    code = ord(ch)
    return _SHORT.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def money(value: Decimal) -> str:
    """Dollars with cents, or with four decimals below $10 so small budgets read sensibly."""
    return f"${value:,.2f}" if abs(value) >= 10 else f"${value:,.4f}"


def _local(budget: Budget, moment: datetime) -> str:
    return moment.astimezone(budget.timezone).strftime("%Y-%m-%d %H:%M %Z")


def alert_message(
    state: BudgetState, kind: str, now: datetime, top: Mapping[str, Sequence[tuple[str, Decimal]]]
) -> str:
    """The text of an `alert` or `kill` event; `top` holds the biggest spenders by dimension name."""
    budget, end = state.budget, state.window[1]
    percent, local_end = state.used_ratio * 100, _local(budget, end)
    head = f"KILL SWITCH engaged for budget {budget.name!r}" if kind == "kill" else f"Budget {budget.name!r} alert"
    lines = [
        f"{head}: {percent:.0f}% used, {money(state.spend_usd)} of {money(budget.limit_usd)} this {budget.period}"
        f" (period ends {local_end}).",
        f"Projected spend at period end at the current rate: {money(state.projected_usd(now))}.",
    ]
    for by, pairs in top.items():
        if pairs:
            shown = ", ".join(f"{one_line(key)} {money(value)}" for key, value in pairs)
            lines.append(f"Top {by.replace('_', ' ')}s: {shown}.")
    if kind == "kill":
        lines.append(
            f"Calls in scope {_scope_text(budget.scope)} are refused until {local_end}, "
            f"or until `watcher killswitch release {budget.name}`."
        )
    return "\n".join(lines)


def release_message(budget: Budget, how: str) -> str:
    """The text of a `release` event; `how` says why, e.g. "its period ended"."""
    return f"Kill switch for budget {budget.name!r} released: {how}. Calls in its scope go ahead again."


def exhausted_message(
    budget: Budget, spend_usd: Decimal, line_usd: Decimal, need_usd: Decimal, lent_usd: Decimal
) -> str:
    """The text of an `exhausted` event: spend is within one call's worst case of the hard line."""
    return (
        f"Budget {budget.name!r} (scope {_scope_text(budget.scope)}) is exhausted: spend {money(spend_usd)} "
        f"(with {money(lent_usd)} lent to running processes) leaves less than a call's worst case "
        f"({money(need_usd)}) before its line of {money(line_usd)}. Calls in its scope are refused."
    )


def hand_release_terms(budget: Budget, until: datetime, ceiling_usd: Decimal) -> str:
    """Why a hand release holds: "it was released by hand until ..., or until spend reaches ..."."""
    return f"it was released by hand until {_local(budget, until)}, or until spend reaches {money(ceiling_usd)}"


def reengaged_message(state: BudgetState, why: str) -> str:
    """The text of a `reengaged` event: a hand release lapsed (`why`) while spend is past the kill line."""
    budget = state.budget
    return (
        f"KILL SWITCH engaged again for budget {budget.name!r}: its release by hand lapsed ({why}); "
        f"{state.used_ratio * 100:.0f}% used, {money(state.spend_usd)} of {money(budget.limit_usd)}.\n"
        f"Calls in scope {_scope_text(budget.scope)} are refused until {_local(budget, state.window[1])}, "
        f"or until `watcher killswitch release {budget.name}`."
    )


def _scope_text(scope: Scope) -> str:
    parts = [
        f"{name}={one_line(value)}"
        for name in ("request_type", "model", "service", "environment")
        if (value := getattr(scope, name)) is not None
    ]
    return "{" + ", ".join(parts) + "}" if parts else "(everything)"
