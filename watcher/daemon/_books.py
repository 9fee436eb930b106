"""Holds spend against budgets: evaluates after every batch, records each crossing exactly once."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from watcher.budgets import Budget, BudgetState, Window, period_window
from watcher.ledger import Entry, Scope, from_nanos, to_micros

from ._state import BudgetEvent, StateStore

__all__ = ["Books", "BudgetView"]

Clock = Callable[[], datetime]


class SpendSource(Protocol):
    """What the books need from the ledger (a structural subset of `Ledger`)."""

    def spend(self, scope: Scope, since: datetime, until: datetime) -> Decimal: ...

    def top(
        self, scope: Scope, since: datetime, until: datetime, by: str, limit: int = 3
    ) -> list[tuple[str, Decimal]]: ...


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One budget as of the last evaluation: its window's spend and whether its kill switch is engaged."""

    state: BudgetState
    engaged: bool
    engaged_since: datetime | None
    reason: str | None

    @property
    def budget(self) -> Budget:
        return self.state.budget

    @property
    def resets_at(self) -> datetime:
        return self.state.window[1]


_FIELDS = ("request_type", "model", "service", "environment")


def _matcher(scope: Scope) -> Callable[[Entry], bool]:
    """A predicate for the entries a scope covers, with its globs compiled once."""
    import fnmatch

    tests = [(name, re.compile(fnmatch.translate(v))) for name in _FIELDS if (v := getattr(scope, name)) is not None]
    if not tests:  # decided once: a budget over everything matches without looking
        return lambda entry: True
    return lambda entry: all(pattern.fullmatch(getattr(entry, name)) for name, pattern in tests)


def _money(value: Decimal) -> str:
    """Dollars with cents, or with four decimals below $10 so small budgets read sensibly."""
    return f"${value:,.2f}" if abs(value) >= 10 else f"${value:,.4f}"


class Books:
    """Evaluates every budget against the ledger; thread-safe (one evaluation at a time).

    `evaluate()` runs after each ingested batch (so a crossing is noticed within the batch that
    crosses it) and on a timer (so a period rolls over even without traffic). Each threshold
    is recorded once per budget window in the state store, before `on_event` is told, so a
    restart neither repeats nor loses it. A kill switch is released when its window ends, or
    by hand; the release is an event too.
    """

    def __init__(
        self,
        budgets: Sequence[Budget],
        ledger: SpendSource,
        store: StateStore,
        clock: Clock,
        on_event: Callable[[BudgetEvent], None],
        *,
        resync_s: float = 60.0,
    ) -> None:
        self.budgets = {budget.name: budget for budget in budgets}
        self._ledger, self._store, self._clock, self._on_event = ledger, store, clock, on_event
        # Re-entrant: the daemon holds it across "append to the ledger, then add()" so that a
        # resync reading the ledger between the two cannot count a batch twice.
        self.lock = threading.RLock()
        self.views: dict[str, BudgetView] = {}
        self._matchers = {budget.name: _matcher(budget.scope) for budget in budgets}
        self._totals: dict[str, tuple[Window, Decimal, datetime]] = {}
        self._resync_s = resync_s

    def add(self, entries: Iterable[Entry], replaced: Iterable[tuple[Entry, Entry]] = ()) -> None:
        """Adds newly stored entries, and the upgrades `(old, new)` of stored ones, to the running totals.

        An upgrade adds the new entry and takes the old one out of the windows and scopes each falls
        in (they may differ: the new one often carries the request type the old one lacked).
        Keeps evaluation after each batch O(budgets x batch), not a sum over the whole period
        (a month can hold millions of entries). The ledger stays the truth: a window's total is
        read from it when the window starts (and at start-up) and again every `resync_s`.
        """
        changes = [(entry, 1) for entry in entries]
        for old, new in replaced:
            changes += ((new, 1), (old, -1))
        with self.lock:
            for name, (window, total, synced) in list(self._totals.items()):
                matches = self._matchers[name]
                since, until = to_micros(window[0]), to_micros(window[1])
                extra = sum(sign * e.cost_nanos for e, sign in changes if since <= e.time_us < until and matches(e))
                self._totals[name] = (window, total + from_nanos(extra), synced)

    def _spend(self, budget: Budget, window: Window, now: datetime) -> Decimal:
        cached = self._totals.get(budget.name)
        if cached and cached[0] == window and (now - cached[2]).total_seconds() < self._resync_s:
            return cached[1]
        total = self._ledger.spend(budget.scope, *window)
        self._totals[budget.name] = (window, total, now)
        return total

    def now(self) -> datetime:
        """The books' clock (injected, so tests and metrics agree on the time)."""
        return self._clock()

    def evaluate(self) -> dict[str, BudgetView]:
        """Re-reads every budget's spend and returns the new views."""
        now = self._clock()
        with self.lock:
            self.views = {name: self._evaluate(budget, now) for name, budget in self.budgets.items()}
            return self.views

    def set_switch(self, name: str, action: str) -> BudgetView:
        """Engages (`engaged`) or releases (`released`) `name`'s kill switch by hand until its period ends."""
        budget = self.budgets.get(name)
        if budget is None:
            raise KeyError(f"no budget named {name!r}; known: {', '.join(sorted(self.budgets)) or 'none'}")
        now = self._clock()
        window = period_window(budget.period, budget.timezone, now)
        with self.lock:
            self._store.set_override(name, window[0], action, now)
            if action == "engaged":
                self._emit(budget, window, "engaged", now, f"Kill switch for budget {name!r} engaged by hand.")
            self.views[name] = self._evaluate(budget, now)
            return self.views[name]

    def _evaluate(self, budget: Budget, now: datetime) -> BudgetView:
        window = period_window(budget.period, budget.timezone, now)
        state = BudgetState(budget, window, self._spend(budget, window, now))
        if state.level in ("alert", "kill"):
            self._threshold(state, "alert", now)
        if state.level == "kill":
            self._threshold(state, "kill", now)
        override = self._store.override(budget.name, window[0])
        manual = override[0] if override else None
        engaged = manual == "engaged" or (state.level == "kill" and manual != "released")
        self._releases(budget, window, engaged, now)
        if not engaged:
            return BudgetView(state, False, None, None)
        if manual == "engaged" and override:
            return BudgetView(state, True, override[1], "manual")
        return BudgetView(state, True, self._store.event_time(budget.name, window[0], "kill"), "threshold")

    def _threshold(self, state: BudgetState, kind: str, now: datetime) -> None:
        if self._store.event_time(state.budget.name, state.window[0], kind) is None:
            self._emit(state.budget, state.window, kind, now, self._message(state, kind, now))

    def _releases(self, budget: Budget, window: Window, engaged: bool, now: datetime) -> None:
        for start in self._store.unreleased_kills(budget.name):
            if start != window[0] or not engaged:
                how = "its period ended" if start != window[0] else "it was released by hand"
                text = f"Kill switch for budget {budget.name!r} released: {how}. Calls in its scope go ahead again."
                self._emit(budget, (start, window[1]), "release", now, text)

    def _emit(self, budget: Budget, window: Window, kind: str, now: datetime, message: str) -> None:
        event = BudgetEvent(budget.name, window[0], kind, now, message)
        if self._store.record(event):
            self._on_event(event)

    def _message(self, state: BudgetState, kind: str, now: datetime) -> str:
        budget, (start, end) = state.budget, state.window
        percent = state.used_ratio * 100
        local_end = end.astimezone(budget.timezone).strftime("%Y-%m-%d %H:%M %Z")
        head = f"KILL SWITCH engaged for budget {budget.name!r}" if kind == "kill" else f"Budget {budget.name!r} alert"
        lines = [
            f"{head}: {percent:.0f}% used, {_money(state.spend_usd)} of {_money(budget.limit_usd)} this {budget.period}"
            f" (period ends {local_end}).",
            f"Projected spend at period end at the current rate: {_money(state.projected_usd(now))}.",
        ]
        for by in ("request_type", "model"):
            top = self._ledger.top(budget.scope, start, end, by, 3)
            if top:
                lines.append(f"Top {by.replace('_', ' ')}s: " + ", ".join(f"{k} {_money(v)}" for k, v in top) + ".")
        if kind == "kill":
            lines.append(
                f"Calls in scope {_scope_text(budget.scope)} are refused until {local_end}, "
                f"or until `watcher killswitch release {budget.name}`."
            )
        return "\n".join(lines)


def _scope_text(scope: Scope) -> str:
    parts = [
        f"{name}={value}"
        for name in ("request_type", "model", "service", "environment")
        if (value := getattr(scope, name)) is not None
    ]
    return "{" + ", ".join(parts) + "}" if parts else "(everything)"
