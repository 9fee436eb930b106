"""The daemon's books as it runs them: a real ledger and state store, a moving clock, hand switches and restarts."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from watcher.budgets import Budget, parse_budgets, period_window
from watcher.daemon import Books, BudgetEvent, BudgetView, Daemon, StateStore
from watcher.ledger import Entry, Ledger, open_ledger
from watcher.pricing import default_price_table

BUDGETS = parse_budgets("""
[[budgets]]
name = "berlin-day"
limit_usd = 10
period = "day"
timezone = "Europe/Berlin"

[[budgets]]
name = "extraction-hour"
limit_usd = 2
period = "hour"
timezone = "Europe/Berlin"
scope = { request_type = "extraction" }
alert_at = 0.5
kill_at = 1

[[budgets]]
name = "opus-week"
limit_usd = 20
period = "week"
timezone = "America/New_York"
scope = { model = "claude-opus-*" }
""")
BY_NAME = {budget.name: budget for budget in BUDGETS}
PRICES = default_price_table()
MICRO = timedelta(microseconds=1)
STARTS = (
    datetime(2026, 10, 24, 21, 50, tzinfo=UTC),  # 23:50 in Berlin; the 25-hour day (clocks go back at 01:00 UTC)
    datetime(2026, 10, 25, 0, 40, tzinfo=UTC),  # 02:40 CEST, the first of Berlin's two 02:00 hours
    datetime(2026, 3, 28, 22, 45, tzinfo=UTC),  # 23:45 in Berlin; the 23-hour day (clocks go forward at 01:00 UTC)
    datetime(2026, 11, 2, 4, 30, tzinfo=UTC),  # Sunday 23:30 in New York, a day after its clocks went back
    datetime(2026, 12, 31, 22, 55, tzinfo=UTC),  # five minutes to the new year in Berlin
)

names = st.sampled_from(sorted(BY_NAME))
costs = st.integers(min_value=0, max_value=400).map(lambda cents: Decimal(cents) / 100)
ages = st.one_of(  # seconds before the clock: mostly this hour, sometimes days back, a little ahead (clock skew)
    st.integers(min_value=-120, max_value=3600), st.integers(min_value=0, max_value=9 * 86400)
)
steps = st.one_of(st.integers(min_value=0, max_value=120), st.integers(min_value=0, max_value=2 * 86400))
labels = st.tuples(st.sampled_from(["extraction", "chat"]), st.sampled_from(["claude-opus-4-6", "claude-haiku-4-5"]))


class BooksMachine(RuleBasedStateMachine):
    """Drives `Books` as the daemon does (ingest, tick, hand switches, restart) and checks it against the ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="books-"))
        self.now = STARTS[0]
        self.events: list[BudgetEvent] = []  # every event the books announced, across restarts
        self.reached: set[tuple[str, datetime, str]] = set()  # (budget, window start, threshold) seen at evaluations
        self.hand: dict[tuple[str, datetime], str] = {}  # the last action by hand per budget window
        self.spend: dict[tuple[str, datetime], Decimal] = {}  # the spend last seen per budget window
        self.revised: set[tuple[str, datetime]] = set()  # windows whose spend a replacing span lowered
        self.windows: dict[str, tuple[datetime, datetime]] = {}  # the window of each budget last evaluated
        self.last_evaluation: datetime | None = None  # of all budgets
        self.keys = 0
        self.sent: list[Entry] = []
        self.opened = False

    def _open(self) -> None:
        """What `watcher.daemon.build` does with the files: open them, build the books, evaluate once."""
        self.ledger: Ledger = open_ledger(f"sqlite:///{self.dir / 'ledger.db'}")
        self.store = StateStore(self.dir / "state.db")
        self.books = Books(BUDGETS, self.ledger, self.store, lambda: self.now, self.events.append)
        self.daemon = Daemon(self.ledger, PRICES, self.books, default_request_type="unlabeled")
        self.opened = True
        self._observe(self.books.evaluate())

    def teardown(self) -> None:
        if self.opened:
            self.ledger.close()
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(start=st.sampled_from(STARTS), seconds=st.integers(min_value=0, max_value=3600))
    def start(self, start: datetime, seconds: int) -> None:
        self.now = start + timedelta(seconds=seconds)
        self._open()

    # Rules: what happens to a running daemon.

    @rule(batch=st.lists(st.tuples(ages, costs, labels), min_size=1, max_size=4))
    def ingest(self, batch: list[tuple[int, Decimal, tuple[str, str]]]) -> None:
        """A batch of new entries, at times around the clock, arrives over OTLP."""
        self._ingest([self._entry(self.now - timedelta(seconds=age), cost, *label) for age, cost, label in batch])

    @rule(name=names, edge=st.sampled_from([0, -1, 1]), cost=costs, label=labels)
    def ingest_at_an_edge(self, name: str, edge: int, cost: Decimal, label: tuple[str, str]) -> None:
        """An entry at a window's first instant, its last, or the next window's first."""
        start, end = period_window(BY_NAME[name].period, BY_NAME[name].timezone, self.now)
        at = {0: start, -1: end - MICRO, 1: end}[edge]
        self._ingest([self._entry(at, cost, *label)])

    @rule(index=st.integers(min_value=0), outrank=st.booleans(), cost=costs, label=labels, shift=st.integers(-5, 5))
    def resend(self, index: int, outrank: bool, cost: Decimal, label: tuple[str, str], shift: int) -> None:
        """A response already stored arrives again: as a retry, or as watcher's own span (rank 2, its own cost,
        request type and end time) that replaces the one the daemon priced from another instrumentation."""
        if not self.sent:
            return
        old = self.sent[index % len(self.sent)]
        when = old.time + timedelta(seconds=shift)
        own = Entry.of(old.key, when, "svc", "prod", label[0], label[1], cost_usd=cost, rank=2)
        self._ingest([own if outrank else old])

    @rule(seconds=steps)
    def tick(self, seconds: int) -> None:
        """The clock moves on and the timer evaluates the books."""
        self.now += timedelta(seconds=seconds)
        self._observe(self.books.evaluate())

    @rule(name=names, past=st.sampled_from([-MICRO, timedelta(0), MICRO, timedelta(seconds=1)]))
    def tick_to_a_boundary(self, name: str, past: timedelta) -> None:
        """The clock moves to just before, onto, or just past the end of a budget's window, and the timer fires."""
        end = period_window(BY_NAME[name].period, BY_NAME[name].timezone, self.now)[1]
        self.now = max(self.now, end + past)
        self._observe(self.books.evaluate())

    @rule(name=names, action=st.sampled_from(["engaged", "released"]))
    def switch_by_hand(self, name: str, action: str) -> None:
        """Someone runs `watcher killswitch engage|release NAME`."""
        view = self.books.set_switch(name, action)
        self.hand[name, view.state.window[0]] = action
        self._observe({name: view})
        assert view.engaged == (action == "engaged"), f"{name} {action} by hand yet engaged={view.engaged}"

    @rule()
    def restart(self) -> None:
        """The daemon stops and starts again on the same files."""
        self.ledger.close()
        self.store.close()
        self._open()

    # What must hold.

    @invariant()
    def each_event_is_announced_once(self) -> None:
        keys = Counter((e.budget, e.window_start, e.kind, e.cause) for e in self.events)
        twice = [key for key, n in keys.items() if n > 1]
        assert not twice, f"announced more than once: {twice}"

    @invariant()
    def thresholds_are_announced_iff_reached(self) -> None:
        announced = {(e.budget, e.window_start, e.kind) for e in self.events if e.kind in ("alert", "kill")}
        assert announced == self.reached, f"missing {self.reached - announced}, unfounded {announced - self.reached}"

    @invariant()
    def releases_follow_kills_and_every_ended_kill_is_released(self) -> None:
        killed: set[tuple[str, datetime]] = set()
        released: set[tuple[str, datetime]] = set()
        for event in self.events:
            key = (event.budget, event.window_start)
            if event.kind in ("kill", "engaged"):
                killed.add(key)
            elif event.kind == "release":
                assert key in killed, f"{key} released without having been engaged"
                released.add(key)
        for name, start in killed - released:
            budget = BY_NAME[name]
            end = period_window(budget.period, budget.timezone, start)[1]
            ended = self.last_evaluation is not None and self.last_evaluation >= end
            assert not ended, f"{name}'s switch of the window from {start} was never released after it ended"

    # The model.

    def _entry(self, at: datetime, cost: Decimal, request_type: str, model: str) -> Entry:
        self.keys += 1
        return Entry.of(f"k{self.keys}", at, "svc", "prod", request_type, model, cost_usd=cost)

    def _ingest(self, entries: list[Entry]) -> None:
        before = self.books.views
        self.daemon.ingest(entries)
        self.sent += [entry for entry in entries if entry.rank == 1]  # those a rank-2 span may replace
        if self.books.views is not before:  # the daemon evaluates after a batch that stored or replaced entries
            self._observe(self.books.views)

    def _observe(self, views: dict[str, BudgetView]) -> None:
        """Checks the views of an evaluation just made against the ledger, and notes the thresholds reached."""
        for name, view in views.items():
            budget = BY_NAME[name]
            window = period_window(budget.period, budget.timezone, self.now)
            assert view.state.window == window, f"{name}: window {view.state.window} at {self.now}, expected {window}"
            self._check_tiling(budget, self.windows.get(name, window), window)
            self.windows[name] = window
            spend = self.ledger.spend(budget.scope, *window)
            assert view.state.spend_usd == spend, f"{name}: books hold {view.state.spend_usd}, ledger {spend}"
            if spend < self.spend.get((name, window[0]), spend):
                self.revised.add((name, window[0]))
            self.spend[name, window[0]] = spend
            for kind, ratio in (("alert", budget.alert_at), ("kill", budget.kill_at)):
                if spend >= ratio * budget.limit_usd:
                    self.reached.add((name, window[0], kind))
            self._check_switch(budget, view, window[0], spend)
        if len(views) == len(BUDGETS):
            self.last_evaluation = self.now

    def _check_tiling(self, budget: Budget, last: tuple[datetime, datetime], window: tuple[datetime, datetime]) -> None:
        """A budget's windows follow one another without gap or overlap: the window after one starts at its end."""
        if window != last:
            following = period_window(budget.period, budget.timezone, last[1])
            assert following[0] == last[1] <= window[0], f"{budget.name}: {window} after {last}, then {following}"

    def _check_switch(self, budget: Budget, view: BudgetView, start: datetime, spend: Decimal) -> None:
        """Engaged by hand means engaged; untouched by hand, engaged exactly at the kill threshold, and not released
        within its window unless its spend went down (a replacing span may lower it)."""
        hand = self.hand.get((budget.name, start))
        if hand == "engaged":
            assert view.engaged and view.reason == "manual", f"{budget.name} engaged by hand, view {view}"
        if hand is None:
            killed = spend >= budget.kill_at * budget.limit_usd
            assert view.engaged == killed, f"{budget.name} at {spend}: engaged={view.engaged}"
            assert view.reason == ("threshold" if killed else None), f"{budget.name}: engaged for {view.reason}"
        if hand is None and (budget.name, start) not in self.revised:
            releases = [e for e in self.events if (e.budget, e.window_start, e.kind) == (budget.name, start, "release")]
            assert not releases, f"{budget.name}'s switch released in its window though nobody touched it"


class TestBooksAgreeWithTheLedgerAndAnnounceEachEventOnce(BooksMachine.TestCase):
    """Through ingests, clock steps across DST and period ends, hand switches and restarts, the books match the
    ledger, announce each threshold exactly once per window it was reached in, and release every ended kill."""

    settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
