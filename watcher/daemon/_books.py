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

from ._messages import (
    alert_message,
    exhausted_message,
    hand_release_terms,
    money,
    reengaged_message,
    release_message,
)
from ._revision import Revision
from ._state import BudgetEvent, EventRecord, Override, StateStorage

__all__ = ["Books", "BudgetView", "Hold", "Line"]

Clock = Callable[[], datetime]


class SpendSource(Protocol):
    """What the books need from the ledger (a structural subset of `Ledger`)."""

    def spend(self, scope: Scope, since: datetime, until: datetime) -> Decimal: ...

    def top(
        self, scope: Scope, since: datetime, until: datetime, by: str, limit: int = 3
    ) -> list[tuple[str, Decimal]]: ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A hand release in force since `since`: it lapses at `until`, or once spend reaches `ceiling_usd`.

    The ceiling is one more step of spend, (kill_at - alert_at) x limit, past the higher of the
    kill line and the spend when the release was made: a release grants headroom, not a blank
    cheque. `until` is the release's own, at the latest the end of its period.
    """

    since: datetime
    until: datetime
    ceiling_usd: Decimal

    @classmethod
    def of(cls, budget: Budget, window: Window, release: Override) -> Hold:
        kill_line = budget.kill_at * budget.limit_usd
        base = kill_line if release.spend_usd is None else max(kill_line, release.spend_usd)
        until = window[1] if release.until is None else min(release.until, window[1])
        return cls(release.at, until, base + (budget.kill_at - budget.alert_at) * budget.limit_usd)

    def holds(self, now: datetime, spend_usd: Decimal) -> bool:
        return now < self.until and spend_usd < self.ceiling_usd


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One budget as of the last evaluation: its window's spend, whether its kill switch is engaged, and
    the hand release in force, if any."""

    state: BudgetState
    engaged: bool
    engaged_since: datetime | None
    reason: str | None
    release: Hold | None = None

    @property
    def budget(self) -> Budget:
        return self.state.budget

    @property
    def resets_at(self) -> datetime:
        return self.state.window[1]


@dataclass(frozen=True, slots=True)
class Line:
    """Where a budget stands against its hard line now, for lending its headroom (`Books.line`).

    `line_usd` is the spend past which no call may go: the kill line, or a hand release's ceiling
    while one holds, and 0 while the switch is engaged (nothing more may be spent).
    """

    budget: Budget
    window: Window
    line_usd: Decimal
    spend_usd: Decimal
    engaged: bool


_FIELDS = ("request_type", "model", "service", "environment")


def _matcher(scope: Scope) -> Callable[[Entry], bool]:
    """A predicate for the entries a scope covers, with its globs compiled once."""
    import fnmatch

    tests = [(name, re.compile(fnmatch.translate(v))) for name in _FIELDS if (v := getattr(scope, name)) is not None]
    if not tests:  # decided once: a budget over everything matches without looking
        return lambda entry: True
    return lambda entry: all(pattern.fullmatch(getattr(entry, name)) for name, pattern in tests)


def _hold(state: BudgetState, hand: Override | None, now: datetime) -> tuple[Hold | None, bool]:
    """The hand release in force for `state`'s window (None if none holds), and whether one has lapsed."""
    if hand is None or hand.action != "released":
        return None, False
    hold = Hold.of(state.budget, state.window, hand)
    return (hold, False) if hold.holds(now, state.spend_usd) else (None, True)


class Books:
    """Evaluates every budget against the ledger; thread-safe (one evaluation at a time).

    `evaluate()` runs after each ingested batch (so a crossing is noticed within the batch that
    crosses it) and on a timer (so a period rolls over even without traffic). Each threshold
    is recorded once per budget window in the state store, before `on_event` is told, so a
    restart neither repeats nor loses it. A kill switch is released when its window ends, or
    by hand until a `Hold` lapses; each release, and each engagement after a lapse, is an event too.
    `revision` moves on whenever the set of engaged switches changes (which switches, since when,
    why, until when; not their spend, which moves with every batch), so long polls wake on it.
    """

    def __init__(
        self,
        budgets: Sequence[Budget],
        ledger: SpendSource,
        store: StateStorage,
        clock: Clock,
        on_event: Callable[[BudgetEvent], None],
        *,
        resync_s: float = 60.0,
        revision: Revision | None = None,
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
        self.revision = revision or Revision()
        self._engaged: tuple[tuple[str, datetime | None, str | None, datetime], ...] = ()

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

    def window(self, name: str) -> Window:
        """`name`'s current window by the books' clock (KeyError for an unknown budget)."""
        budget = self.budgets[name]
        return period_window(budget.period, budget.timezone, self._clock())

    def line(self, name: str) -> Line:
        """`name`'s spend and hard line in its current window (KeyError for an unknown budget).

        Call with `lock` held to read the spend together with what was credited against it. The
        engaged state and hand release are those of the last evaluation.
        """
        budget = self.budgets[name]
        now = self._clock()
        window = period_window(budget.period, budget.timezone, now)
        spend = self._spend(budget, window, now)
        view = self.views.get(name)
        current = view is not None and view.state.window == window
        engaged = current and view is not None and view.engaged
        hold = view.release if current and view is not None else None
        line = Decimal(0) if engaged else hold.ceiling_usd if hold else budget.kill_at * budget.limit_usd
        return Line(budget, window, line, spend, engaged)

    def covering(self, entry: Entry) -> list[tuple[str, int]]:
        """The budgets whose running window holds `entry` and whose scope covers it, with each window's start
        in microseconds: where spend from an allowance is credited (lock held)."""
        found = []
        for name, (window, _, _) in self._totals.items():
            since = to_micros(window[0])
            if since <= entry.time_us < to_micros(window[1]) and self._matchers[name](entry):
                found.append((name, since))
        return found

    def exhausted(self, name: str, need_usd: Decimal, lent_usd: Decimal) -> None:
        """Records, once per window, that `name`'s spend and what it lent left less than a call's worst case
        (`need_usd`) before its line.

        Calls are then refused by their allowances, not by the kill switch: spend stops just short
        of the line, so the threshold itself may never be reached. The event (kind `exhausted`)
        tells the alert targets so.
        """
        with self.lock:
            line = self.line(name)
            if line.engaged or line.spend_usd + lent_usd + need_usd <= line.line_usd:
                return
            message = exhausted_message(line.budget, line.spend_usd, line.line_usd, need_usd, lent_usd)
            self._emit(line.budget, line.window, "exhausted", self._clock(), message)

    def now(self) -> datetime:
        """The books' clock (injected, so tests and metrics agree on the time)."""
        return self._clock()

    def evaluate(self) -> dict[str, BudgetView]:
        """Re-reads every budget's spend and returns the new views."""
        now = self._clock()
        with self.lock:
            self.views = {name: self._evaluate(budget, now) for name, budget in self.budgets.items()}
            self._announce()
            return self.views

    def events(self, name: str) -> list[EventRecord]:
        """`name`'s events recorded since its current window began (as of the last evaluation), with
        each target's delivery state; KeyError for a budget not yet evaluated."""
        return self._store.events(name, self.views[name].state.window[0])

    def set_switch(self, name: str, action: str, *, until: datetime | None = None) -> BudgetView:
        """Engages (`engaged`) or releases (`released`) `name`'s kill switch by hand; returns its new view.

        An engagement holds until the period ends; engaging a switch already engaged by hand in this
        period changes nothing (and announces nothing). A release holds until `until` (aware; default
        and at the latest the period's end) or until spend reaches the release's ceiling, whichever
        comes first (`Hold`); then the threshold rule applies again. Raises KeyError for an unknown
        budget, ValueError for an `until` not after now or given with `engaged`.
        """
        budget = self.budgets.get(name)
        if budget is None:
            raise KeyError(f"no budget named {name!r}; known: {', '.join(sorted(self.budgets)) or 'none'}")
        now = self._clock()
        if until is not None and (action != "released" or until <= now):
            raise ValueError(f"until must be a time after now ({now.isoformat()}), and only with a release")
        window = period_window(budget.period, budget.timezone, now)
        with self.lock:
            current = self._store.hand_override(name, window[0])
            if action == "engaged" and current is not None and current.action == "engaged":
                return self.views.get(name) or self._evaluate(budget, now)  # already engaged by hand: nothing new
            spend = self._spend(budget, window, now) if action == "released" else None
            seq = self._store.set_override(name, window[0], action, now, until=until, spend_usd=spend)
            if action == "engaged":
                text = f"Kill switch for budget {name!r} engaged by hand."
                self._emit(budget, window, "engaged", now, text, cause=seq)
            self.views[name] = self._evaluate(budget, now)
            self._announce()
            return self.views[name]

    def _announce(self) -> None:
        """Bumps `revision` if the engaged switches differ from the last announced ones (lock held)."""
        engaged = tuple((n, v.engaged_since, v.reason, v.resets_at) for n, v in self.views.items() if v.engaged)
        if engaged != self._engaged:
            self._engaged = engaged
            self.revision.bump()

    def _evaluate(self, budget: Budget, now: datetime) -> BudgetView:
        window = period_window(budget.period, budget.timezone, now)
        state = BudgetState(budget, window, self._spend(budget, window, now))
        if state.level in ("alert", "kill"):
            self._threshold(state, "alert", now)
        if state.level == "kill":
            self._threshold(state, "kill", now)
        hand = self._store.hand_override(budget.name, window[0])
        hold, lapsed = _hold(state, hand, now)
        engaged = (hand is not None and hand.action == "engaged") or (state.level == "kill" and hold is None)
        if lapsed and engaged and hand:
            self._reengage(state, hand, now)
        self._releases(budget, window, engaged, hand, hold, now)
        if not engaged:
            return BudgetView(state, False, None, None, hold)
        if hand and hand.action == "engaged":
            return BudgetView(state, True, hand.at, "manual")
        since = self._store.event_time(budget.name, window[0], "reengaged" if lapsed else "kill")
        return BudgetView(state, True, since, "threshold")

    def _threshold(self, state: BudgetState, kind: str, now: datetime) -> None:
        if self._store.event_time(state.budget.name, state.window[0], kind) is None:
            self._emit(state.budget, state.window, kind, now, self._message(state, kind, now))

    def _reengage(self, state: BudgetState, hand: Override, now: datetime) -> None:
        """Announces, once per hand release, that it lapsed and the switch is engaged again."""
        budget = state.budget
        full = Hold.of(budget, state.window, hand)
        why = f"spend reached {money(full.ceiling_usd)}" if state.spend_usd >= full.ceiling_usd else "its time ran out"
        self._emit(budget, state.window, "reengaged", now, reengaged_message(state, why), cause=hand.seq)

    def _releases(
        self, budget: Budget, window: Window, engaged: bool, hand: Override | None, hold: Hold | None, now: datetime
    ) -> None:
        for start in self._store.unreleased_kills(budget.name):
            if start == window[0] and engaged:
                continue
            cause, how = 0, "its period ended"
            if start == window[0] and hold is not None and hand is not None:
                cause, how = hand.seq, hand_release_terms(budget, hold.until, hold.ceiling_usd)
            elif start == window[0]:
                how = "spend is below its kill line again"
            self._emit(budget, (start, window[1]), "release", now, release_message(budget, how), cause=cause)

    def _emit(self, budget: Budget, window: Window, kind: str, now: datetime, message: str, cause: int = 0) -> None:
        event = BudgetEvent(budget.name, window[0], kind, now, message, cause)
        if self._store.record(event):
            self._on_event(event)

    def _message(self, state: BudgetState, kind: str, now: datetime) -> str:
        start, end = state.window
        scope = state.budget.scope
        top = {by: self._ledger.top(scope, start, end, by, 3) for by in ("request_type", "model")}
        return alert_message(state, kind, now, top)
