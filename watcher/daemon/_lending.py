"""Lends each budget's headroom to hook processes as allowances that expire (docs/enforcement.md).

A budget's headroom is its hard line (the kill line, or a hand release's ceiling) less the spend
committed to the ledger, less what live allowances still hold. A process spends its allowance
locally, reserving each call's worst case before sending it, and asks for more before it runs
out; so spend cannot pass the line by more than what was sent with a reservation below its true
cost, which the worst-case estimate makes zero. Spans that carry a holder's id are credited to
its allowance as they are stored, moving their spend from lent to committed in one step.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from watcher.ledger import Entry, from_nanos, to_micros, to_nanos

from ._books import Books, Line
from ._state import StateStorage

__all__ = ["MAX_ASKS", "Lender", "LoanRequest"]

MAX_ASKS = 64
"""The most budgets one allowance request may name."""
_SHARE = 2
"""A loan tops a holder up to at most 1/(_SHARE x holders) of what is free to it (the free headroom and what
it holds unspent): however many processes ask, together they hold about half of the headroom at most, so a
process that comes late still finds its share, and loans shrink as the line nears."""
_FEW = 4
"""Shares are counted as if at least this many processes held one: the first to ask cannot take the headroom
that processes starting a moment later will want."""
_MAX_USD = Decimal(1_000_000)
_HOLDER_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-_.")


@dataclass(frozen=True, slots=True)
class Ask:
    """One budget in an allowance request: how much more the holder would like, how much it needs now
    (a call's worst case it is holding back; 0 for a refill ahead of need), what it has not yet
    taken of its grant (for its fair share only: what is lent is counted from the store), and,
    when giving back, what it spent."""

    budget: str
    want_usd: Decimal
    need_usd: Decimal
    used_usd: Decimal | None = None
    balance_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class LoanRequest:
    """A parsed `POST /v1/allowances` body (docs/api.md)."""

    holder: str
    service: str
    asks: tuple[Ask, ...]
    final: bool

    @classmethod
    def parse(cls, body: bytes) -> LoanRequest:
        """Raises ValueError, saying what is wrong, for anything but a well-formed request."""
        try:
            document = json.loads(body)
        except ValueError:
            raise ValueError("the body must be a JSON object") from None
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ValueError('the body must be a JSON object with "version": 1')
        holder = document.get("holder")
        if not isinstance(holder, str) or not 8 <= len(holder) <= 64 or not set(holder) <= _HOLDER_CHARS:
            raise ValueError("holder must be 8 to 64 characters of a-z, 0-9, '-', '_' and '.'")
        asks = document.get("asks")
        if not isinstance(asks, list) or len(asks) > MAX_ASKS:
            raise ValueError(f"asks must be a list of at most {MAX_ASKS} objects")
        service = document.get("service")
        return cls(
            holder,
            service[:200] if isinstance(service, str) else "",
            tuple(_ask(item) for item in asks),
            document.get("final") is True,
        )


def _ask(item: object) -> Ask:
    if not isinstance(item, dict) or not isinstance(item.get("budget"), str):
        raise ValueError('each ask must be an object with a "budget" name')
    used = item.get("used_usd")
    return Ask(
        item["budget"],
        _usd(item.get("want_usd", 0), "want_usd"),
        _usd(item.get("need_usd", 0), "need_usd"),
        None if used is None else _usd(used, "used_usd"),
        _usd(item.get("balance_usd", 0), "balance_usd"),
    )


def _usd(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_USD:
        raise ValueError(f"{name} must be a number of dollars from 0 to {_MAX_USD}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


class Lender:
    """Answers allowance requests and credits stored spend to the allowances it came from. Thread-safe.

    Loans and credits both happen under the books' lock, so a loan reads spend and credits that
    agree: a stored span is either still lent (not yet credited, not yet in the spend) or
    committed (in both), never counted twice or not at all. Credits are kept in memory and
    written to the store before the next loan reads it, and by `flush` (on the evaluation timer),
    so ingest adds no write of its own. Allowances live `ttl_s`; a holder renews before then.
    """

    def __init__(self, books: Books, store: StateStorage, *, ttl_s: float = 30.0) -> None:
        self.books, self._store = books, store
        self.ttl = timedelta(seconds=ttl_s)
        self._credits: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()
        self.refused: dict[str, int] = dict.fromkeys(books.budgets, 0)  # asks refused for want of headroom

    def credit(self, entries: Sequence[Entry], holders: Mapping[str, str]) -> None:
        """Credits each of `entries` whose key is in `holders` to that holder's allowance of every budget that
        covers it (call with the books' lock held, right after the books took the entries)."""
        if not holders:
            return
        with self._lock:
            for entry in entries:
                holder = holders.get(entry.key)
                if holder is None or not entry.cost_nanos:
                    continue
                for budget, start in self.books.covering(entry):
                    key = (holder, budget, start)
                    self._credits[key] = self._credits.get(key, 0) + entry.cost_nanos

    def flush(self) -> None:
        """Writes the credits kept in memory to the store."""
        with self._lock:
            credits, self._credits = self._credits, {}
        if credits:
            try:
                self._store.credit(credits)
            except BaseException:
                with self._lock:  # kept for the next flush: a credit lost counts as still lent, never as spent
                    for key, nanos in credits.items():
                        self._credits[key] = self._credits.get(key, 0) + nanos
                raise

    def lend(self, request: LoanRequest) -> dict[str, Any]:
        """The answer to one allowance request (docs/api.md).

        A budget the daemon does not know (a hook that has not yet seen a configuration change) is
        listed in `unknown` and lent nothing: the hook stops reserving for it, as the next kill-switch
        document will tell it anyway.
        """
        unknown = sorted({ask.budget for ask in request.asks if ask.budget not in self.books.budgets})
        request = LoanRequest(
            request.holder, request.service, tuple(a for a in request.asks if a.budget not in unknown), request.final
        )
        now = self.books.now()
        expires = now + self.ttl
        grants = []
        with self.books.lock:
            self.flush()
            for ask in request.asks:
                start = to_micros(self.books.window(ask.budget)[0])
                if request.final and ask.used_usd is not None:
                    self._store.give_back(request.holder, ask.budget, start, to_nanos(ask.used_usd))
                    continue
                grants.append(self._loan(request, ask, start, now, expires))
        for grant in grants:
            if grant["refused"] and not grant["engaged"]:
                self.books.exhausted(grant["budget"], Decimal(str(grant["need_usd"])), Decimal(str(grant["lent_usd"])))
        return {
            "version": 1,
            "holder": request.holder,
            "expires_in_s": self.ttl.total_seconds(),
            "grants": grants,
            "unknown": unknown,
        }

    def _loan(self, request: LoanRequest, ask: Ask, start: int, now: datetime, expires: datetime) -> dict[str, Any]:
        """One budget's loan. The spend is read after what is lent, inside the store's transaction: where
        other daemons store spans and credit allowances on a shared store (a span is stored before it is
        credited), a loan may count a span twice, never not at all."""
        need = to_nanos(ask.need_usd)
        free_at: list[int] = []
        lines: list[Line] = []

        def decide(lent: int, holders: int) -> int:
            line = self.books.line(ask.budget)
            lines.append(line)
            free = to_nanos(line.line_usd) - to_nanos(line.spend_usd) - lent
            if to_micros(line.window[0]) != start:  # the period turned over meanwhile: ask again
                free = 0
            free_at.append(free)
            if line.engaged or free < need or free <= 0:
                return 0
            balance = to_nanos(ask.balance_usd)
            fair = (free + balance) // (_SHARE * max(holders, _FEW)) - balance
            return min(free, max(need, min(to_nanos(ask.want_usd), fair)))

        granted, lent = self._store.lend(
            request.holder,
            ask.budget,
            start,
            decide,
            now_us=to_micros(now),
            expires_us=to_micros(expires),
            service=request.service,
        )
        line = lines[0]
        refused = need > 0 and (line.engaged or free_at[0] < need)
        if refused:
            with self._lock:
                self.refused[ask.budget] += 1
        budget = line.budget
        return {
            "budget": budget.name,
            "window_start": _iso(line.window[0]),
            "resets_at": _iso(line.window[1]),
            "granted_usd": float(from_nanos(granted)),
            "refused": refused,
            "engaged": line.engaged,
            "need_usd": float(ask.need_usd),
            "lent_usd": float(from_nanos(lent)),
            "spend_usd": float(line.spend_usd),
            "limit_usd": float(budget.limit_usd),
        }

    def lent(self, name: str) -> tuple[Decimal, int]:
        """What live allowances of `name`'s current window hold, and how many processes hold one."""
        with self.books.lock:
            self.flush()
            window = self.books.window(name)
        nanos, holders = self._store.lent(name, to_micros(window[0]), to_micros(self.books.now()))
        return from_nanos(nanos), holders

    def prune(self) -> None:
        """Forgets allowances that expired over an hour ago."""
        self._store.prune_allowances(to_micros(self.books.now() - timedelta(hours=1)))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
