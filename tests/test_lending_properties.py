"""Lending arithmetic under any interleaving: honest holders that spend only what they were granted never
carry a budget past its line, whatever they ask, whenever their spans arrive, and across restarts."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from watcher.budgets import parse_budgets
from watcher.daemon import Books, Daemon, StateStore
from watcher.daemon._lending import Ask, Lender, LoanRequest
from watcher.ledger import Entry, Ledger, open_ledger
from watcher.pricing import default_price_table

BUDGETS = parse_budgets("""
[[budgets]]
name = "loop"
limit_usd = 1
period = "day"
kill_at = 1.2
scope = { request_type = "loop" }
""")
LINE = Decimal("1.2")
TTL = timedelta(seconds=30)
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
cents = st.integers(min_value=0, max_value=60).map(lambda c: Decimal(c) / 100)
mills = st.integers(min_value=1, max_value=40).map(lambda m: Decimal(m) / 1000)


@dataclass
class Holder:
    """What an honest hook process knows of its allowance: its grant and what it took of it."""

    id: str
    granted: Decimal = Decimal(0)
    used: Decimal = Decimal(0)
    expires: datetime = START
    unsent: list[tuple[Entry, str]] = field(default_factory=list)  # spent (with the allowance), not yet stored


class LendingMachine(RuleBasedStateMachine):
    """Holders ask, spend within their grants, deliver spans late or never, give back; the clock moves and the
    daemon restarts. Stored spend may pass the line only by spend whose span came after its allowance lapsed."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lending-"))
        self.now = START
        self.holders: list[Holder] = []
        self.late = Decimal(0)  # spend stored after the allowance it came from had lapsed at the daemon
        self.expiry: dict[str, datetime] = {}  # each allowance's expiry at the daemon
        self.granted: dict[str, Decimal] = {}  # each allowance's grant, as the daemon last answered
        self.credited: dict[str, Decimal] = {}  # the spend stored from each allowance
        self.keys = 0
        self.opened = False

    def clock(self) -> datetime:
        return self.now

    @initialize()
    def open(self) -> None:
        self.ledger: Ledger = open_ledger(f"sqlite:///{self.dir / 'ledger.db'}")
        self.store = StateStore(self.dir / "state.db")
        self.books = Books(BUDGETS, self.ledger, self.store, self.clock, lambda event: None)
        self.lender = Lender(self.books, self.store, ttl_s=TTL.total_seconds())
        self.daemon = Daemon(
            self.ledger, default_price_table(), self.books, default_request_type="x", lender=self.lender
        )
        self.books.evaluate()
        self.opened = True

    def teardown(self) -> None:
        if self.opened:
            self.ledger.close()
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(want=cents, need=mills, index=st.integers(min_value=0, max_value=4))
    def ask(self, want: Decimal, need: Decimal, index: int) -> None:
        """A holder (new, or one of the first five) asks; a lapsed one starts a new allowance, as the hook does."""
        if index >= len(self.holders):
            self.holders.append(Holder(f"holder-{len(self.holders):04d}"))
            index = len(self.holders) - 1
        holder = self.holders[index]
        if holder.expires <= self.now and holder.granted:  # lapsed: the hook mints a new id
            holder = self.holders[index] = Holder(f"{holder.id}-x", unsent=holder.unsent)
        balance = holder.granted - holder.used
        request = LoanRequest(holder.id, "s", (Ask("loop", want, need, None, balance),), False)
        spend = self._spend()
        (grant,) = self.lender.lend(request)["grants"]
        free = LINE - spend - Decimal(str(grant["lent_usd"]))
        if grant["refused"]:
            assert free < need or grant["engaged"], f"refused with {free} free for a need of {need}"
        else:
            assert free >= need, f"granted {need} with only {free} free"
        holder.granted = self.granted[holder.id] = Decimal(str(grant["granted_usd"]))
        holder.expires = self.expiry[holder.id] = self.now + TTL

    @rule(index=st.integers(min_value=0, max_value=4), share=st.integers(min_value=1, max_value=4))
    def spend(self, index: int, share: int) -> None:
        """A holder spends part of what it holds, as the hook's settled reservations do; the span waits."""
        if index >= len(self.holders):
            return
        holder = self.holders[index]
        if holder.expires <= self.now:
            return
        amount = ((holder.granted - holder.used) / share).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
        if amount <= 0:
            return
        holder.used += amount
        self.keys += 1
        entry = Entry.of(f"k{self.keys}", self.now, "s", "e", "loop", "claude-haiku-4-5", cost_usd=amount)
        holder.unsent.append((entry, holder.id))

    @rule(index=st.integers(min_value=0, max_value=4))
    def deliver(self, index: int) -> None:
        """A holder's spans reach the daemon, naming its allowance."""
        if index >= len(self.holders) or not self.holders[index].unsent:
            return
        holder = self.holders[index]
        self.late += self._lapsed(holder.unsent)  # lent no longer when it is stored
        self.daemon.ingest([entry for entry, _ in holder.unsent], {e.key: hid for e, hid in holder.unsent})
        for entry, hid in holder.unsent:
            self.credited[hid] = self.credited.get(hid, Decimal(0)) + entry.cost_usd
        holder.unsent = []

    def _lapsed(self, unsent: list[tuple[Entry, str]]) -> Decimal:
        """The spend among `unsent` whose allowance has lapsed at the daemon."""
        return sum((e.cost_usd for e, hid in unsent if self.expiry[hid] <= self.now), Decimal(0))

    @rule(index=st.integers(min_value=0, max_value=4))
    def give_back(self, index: int) -> None:
        """A holder at exit says what it spent; the rest of its grant returns."""
        if index >= len(self.holders) or self.holders[index].expires <= self.now:
            return
        holder = self.holders[index]
        final = LoanRequest(holder.id, "s", (Ask("loop", Decimal(0), Decimal(0), holder.used),), True)
        self.lender.lend(final)
        holder.granted = self.granted[holder.id] = min(holder.granted, holder.used)

    @rule(seconds=st.integers(min_value=1, max_value=45))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.books.evaluate()
        self.lender.flush()

    @precondition(lambda self: self.opened)
    @rule()
    def restart(self) -> None:
        self.lender.flush()
        self.ledger.close()
        self.store.close()
        self.open()

    def _spend(self) -> Decimal:
        self.books.evaluate()
        return self.books.views["loop"].state.spend_usd

    @invariant()
    def stored_spend_stays_under_the_line_but_for_late_spans(self) -> None:
        if self.opened:
            assert self._spend() <= LINE + self.late

    @invariant()
    def the_daemon_counts_as_lent_what_live_allowances_hold_less_their_stored_spend(self) -> None:
        if not self.opened:
            return
        live = [hid for hid, expires in self.expiry.items() if expires > self.now]
        held = sum((max(self.granted[h] - self.credited.get(h, Decimal(0)), Decimal(0)) for h in live), Decimal(0))
        assert abs(self.lender.lent("loop")[0] - held) <= Decimal("0.000001")

    @invariant()
    def what_is_lent_and_spent_fits_under_the_line(self) -> None:
        """What honest holders may still spend, with what they spent, never exceeds the line (late spans aside)."""
        if not self.opened:
            return
        balances = sum((h.granted - h.used for h in self.holders if h.expires > self.now), Decimal(0))
        unsent = sum((e.cost_usd for h in self.holders for e, _ in h.unsent), Decimal(0))
        lapsed = sum((self._lapsed(h.unsent) for h in self.holders), Decimal(0))
        assert self._spend() + balances + unsent <= LINE + self.late + lapsed + Decimal("0.000001")


LendingMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestLending = LendingMachine.TestCase
