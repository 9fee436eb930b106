"""The hook's side of allowances: spend leased budget headroom locally, reserving each call's worst case.

A process holds one allowance (a random holder id) with a grant per budget that covers its calls.
Before a call is sent, its worst-case cost is taken from every covering grant under one lock:
no network on the call path while a grant lasts. A background thread asks for more when a grant
runs low and renews the allowance before it expires; a call waits for the daemon only when its
grants cannot cover it, and is refused with `BudgetExceeded` when the daemon has no more to lend.
When the response (or the stream's end) arrives, the reservation is settled to the true cost.
See docs/enforcement.md for the bound this gives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from .._client import DaemonRefused
from ..exceptions import BudgetExceeded
from ._failures import report_failure
from ._killswitch import UNREACHABLE, Board, Fetcher, Rule

__all__ = ["Allowances", "Reservation"]

log = logging.getLogger("watcher")
PATH = "/v1/allowances"
FIRST_ANSWER_S = 2.0
"""How long a call made before the first kill-switch answer waits for it: the budgets it may fall under."""
_ASK_TIMEOUT_S = 2.0
_FIRST_WANT = 16
"""A first grant covers this many calls like the one that asked; later ones follow the spend rate."""
_RETRY_S = 1.0
"""After a failed request, calls go by the fail mode for this long before one asks again."""


class Poster(Fetcher, Protocol):
    """What the allowances need of a `watcher._client.DaemonClient`."""

    def post_json(self, path: str, body: bytes = b"", timeout_s: float | None = None) -> Any: ...


class Grant:
    """One budget's share of this process's allowance in one budget window, in USD.

    `granted` is the daemon's running total for the holder; `used` what reservations took from
    it (the true cost once settled), so `granted - used` is what calls may still take.
    """

    __slots__ = ("budget", "drawn", "granted", "limit_usd", "mark", "resets_at", "spend_usd", "used", "window")

    def __init__(self, budget: str, window: str) -> None:
        self.budget, self.window = budget, window
        self.granted = self.used = 0.0
        self.drawn = 0.0  # every reservation's amount, ever: the spend rate is read from it
        self.mark = (0.0, time.monotonic())  # `drawn` and the time at the last request, for the rate
        self.spend_usd = self.limit_usd = 0.0
        self.resets_at: datetime | None = None

    def refusal(self, amount: float) -> BudgetExceeded:
        """The error for a call of worst case `amount` that this grant, and the daemon, cannot cover."""
        reason = f"has too little left before its kill line for this call's worst case (${amount:.4f})"
        return BudgetExceeded(
            self.budget, spend_usd=self.spend_usd, limit_usd=self.limit_usd, resets_at=self.resets_at, reason=reason
        )


class Session:
    """This process's allowance: its holder id, when it lapses (monotonic seconds) and its grants."""

    __slots__ = ("expires", "grants", "held", "holder", "inflight", "last_used", "ttl")

    def __init__(self) -> None:
        self.holder = uuid.uuid4().hex
        self.expires = self.ttl = 0.0
        self.grants: dict[str, Grant] = {}
        self.inflight = 0  # reservations not yet settled
        self.held = 0.0  # reservations kept for batches, whose results come later
        self.last_used = time.monotonic()


class Reservation:
    """A call's worst case taken from its grants; `settle` gives back what the call did not cost. Once."""

    __slots__ = ("_lock", "_settled", "amount", "grants", "holder", "session")

    def __init__(self, lock: threading.Lock, session: Session, grants: Sequence[Grant], amount: float) -> None:
        self._lock, self.session, self.grants, self.amount = lock, session, grants, amount
        self.holder = session.holder
        self._settled = False

    def settle(self, cost_usd: float) -> None:
        """The call cost `cost_usd` (0 for a call that failed before it was billed); the rest goes back."""
        back = max(0.0, self.amount - cost_usd)
        with self._lock:
            if self._settled:
                return
            self._settled = True
            self.session.inflight -= 1
            for grant in self.grants:
                grant.used -= back

    def keep(self) -> None:
        """Keeps the whole reservation (a batch: its cost is known only when its results come)."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
            self.session.inflight -= 1
            self.session.held += self.amount


class Allowances:
    """Reserves calls' worst cases against this process's allowance; one per `instrument()`.

    `board` is the kill-switch poller's: it says which budgets exist (their scopes, already
    narrowed to this process's service and environment) and whether the daemon lends at all.
    `drain` settles what the span worker still holds (called before refusing for want of headroom).
    """

    def __init__(
        self,
        client: Poster,
        board: Board,
        *,
        service: str,
        fail_closed: bool,
        horizon_s: float,
        drain: Callable[[], None] = lambda: None,
    ) -> None:
        self._client, self._board = client, board
        self._service, self._fail_closed, self._horizon_s = service, fail_closed, horizon_s
        self._drain = drain
        self._lock = threading.Lock()
        self._asking = threading.Lock()  # one request at a time: single flight for threads short together
        self._session: Session | None = None
        self._covering: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self._scopes: tuple[Rule, ...] | None = None
        self._retry_at = 0.0  # after a failed request, monotonic time before which none is sent
        self._unsupported = False  # the daemon answered 404: it lends nothing
        self._unknown: frozenset[str] = frozenset()  # budgets the daemon said it does not have
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-allowances", daemon=True)

    def start(self) -> Allowances:
        self._board.allowances_decide = True
        self._thread.start()
        return self

    def uncovered(self) -> None:
        """For a call no budget's grant covers: refused failing closed while the daemon cannot be reached."""
        if self._fail_closed and not self._board.reachable:
            raise BudgetExceeded(UNREACHABLE, spend_usd=0.0, limit_usd=0.0)

    # --- the call path ---------------------------------------------------------------------------

    def budgets_for(self, request_type: str, model: str | None) -> tuple[str, ...]:
        """The budgets that cover a call (none while the daemon lends nothing); cached per request type and model."""
        scopes = self._board.scopes
        if scopes is None and not self._board.ready.is_set():
            self._board.ready.wait(FIRST_ANSWER_S)
            scopes = self._board.scopes
        if not scopes or not self._board.lends or self._unsupported:
            return ()
        if self._unknown and scopes is not self._scopes:
            self._unknown = frozenset()  # a new document: its budgets are the daemon's
        if scopes is not self._scopes:
            self._covering, self._scopes = {}, scopes
        key = (request_type, model)
        found = self._covering.get(key)
        if found is None:
            found = tuple(r.budget for r in scopes if r.covers(request_type, model) and r.budget not in self._unknown)
            if len(self._covering) < 4096:
                self._covering[key] = found
        return found

    def reserve(self, budgets: tuple[str, ...], amount: float) -> Reservation | None:
        """Takes `amount` from each of `budgets`' grants; None when the call goes without one (fail open).

        Waits for the daemon only when the grants cannot cover it. Raises BudgetExceeded when the
        daemon lends no more (or, failing closed, cannot be asked and no grant covers the call).
        """
        taken = self._take(budgets, amount)
        if taken is not None:
            return taken
        for attempt in range(2):
            if not self._ask_now(budgets, amount):
                self._unanswered()
                return None
            budgets = tuple(name for name in budgets if name not in self._unknown)
            if not budgets:  # the daemon no longer has them: nothing to hold the call against
                return None
            taken = self._take(budgets, amount)
            if taken is None and attempt == 0:
                self._drain()  # settle what the span worker holds: true costs give back part of each reservation
                taken = self._take(budgets, amount)
            if taken is not None:
                return taken
        raise self._short(budgets, amount).refusal(amount)

    def _take(self, budgets: tuple[str, ...], amount: float) -> Reservation | None:
        with self._lock:
            session = self._session
            if session is None or time.monotonic() >= session.expires:
                return None
            grants = [session.grants.get(name) for name in budgets]
            if not all(g is not None and g.granted - g.used >= amount for g in grants):
                return None
            low = False
            for grant in grants:
                assert grant is not None
                grant.used += amount
                grant.drawn += amount
                low = low or grant.granted - grant.used < self._low_water(grant)
            session.inflight += 1
            session.last_used = time.monotonic()
            reservation = Reservation(self._lock, session, grants, amount)  # type: ignore[arg-type]
        if low:
            self._wake.set()
        return reservation

    def _short(self, budgets: tuple[str, ...], amount: float) -> Grant:
        """The first of `budgets` whose grant cannot cover `amount` (for the refusal's numbers)."""
        session = self._session
        for name in budgets:
            grant = session.grants.get(name) if session else None
            if grant is None or grant.granted - grant.used < amount:
                return grant or Grant(name, "")
        return Grant(budgets[0], "")

    def _unanswered(self) -> None:
        """No answer from the daemon: the call goes through (fail open, logged) or is refused (closed).

        A daemon that answered that it lends nothing (404) was reached: the call goes by its kill switches alone,
        whatever the fail mode, as every later call does.
        """
        if self._fail_closed and not self._unsupported:
            raise BudgetExceeded(UNREACHABLE, spend_usd=0.0, limit_usd=0.0)

    def _ask_now(self, budgets: tuple[str, ...], amount: float) -> bool:
        """Asks the daemon for what `budgets` lack, unless another thread's request covers it; True if answered."""
        with self._asking:
            if self._take_would_fit(budgets, amount):
                return True
            if time.monotonic() < self._retry_at or self._unsupported:
                return False
            return self._request(needs=dict.fromkeys(budgets, amount))

    def _take_would_fit(self, budgets: tuple[str, ...], amount: float) -> bool:
        with self._lock:
            session = self._session
            if session is None or time.monotonic() >= session.expires:
                return False
            return all((g := session.grants.get(n)) is not None and g.granted - g.used >= amount for n in budgets)

    # --- requests --------------------------------------------------------------------------------

    def _low_water(self, grant: Grant) -> float:
        return self._want(grant) / 4

    def _want(self, grant: Grant, now: float | None = None) -> float:
        """About `horizon_s` seconds of this process's spend on the budget, from its rate since the last request."""
        drawn, at = grant.mark
        elapsed = max((now or time.monotonic()) - at, 0.05)
        return (grant.drawn - drawn) / elapsed * self._horizon_s

    def _request(self, needs: dict[str, float] | None = None, final: bool = False) -> bool:
        """One allowance request for every budget this process drew on (and those in `needs`); True if answered."""
        with self._lock:
            session = self._session
            if session is None or time.monotonic() >= session.expires:
                if final:
                    return True
                session = self._session = Session()
            now = time.monotonic()
            asks = [self._ask_of(session, name, (needs or {}).get(name, 0.0), now, final) for name in session.grants]
            fresh = [(n, a) for n, a in (needs or {}).items() if n not in session.grants]
            asks += [{"budget": n, "want_usd": a * _FIRST_WANT, "need_usd": a} for n, a in fresh]
        body = {"version": 1, "holder": session.holder, "service": self._service, "asks": asks, "final": final}
        sent = time.monotonic()
        try:
            answer = self._client.post_json(PATH, json.dumps(body).encode(), _ASK_TIMEOUT_S)
        except DaemonRefused as exc:
            return self._failed(exc, unsupported=exc.status == 404)
        except Exception as exc:
            return self._failed(exc)
        try:
            self._apply(session, answer, sent)
        except Exception as exc:
            report_failure("read an allowance answer", exc)
            return False
        return True

    def _ask_of(self, session: Session, name: str, need: float, now: float, final: bool) -> dict[str, Any]:
        grant = session.grants[name]
        if final:
            return {"budget": name, "used_usd": max(grant.used, 0.0)}
        balance = max(grant.granted - grant.used, 0.0)
        want = max(self._want(grant, now), need * 4) - balance
        grant.mark = (grant.drawn, now)
        return {"budget": name, "want_usd": max(want, need, 0.0), "need_usd": need, "balance_usd": balance}

    def _apply(self, session: Session, answer: Any, sent: float) -> None:
        ttl = float(answer["expires_in_s"])
        unknown = frozenset(str(name) for name in answer.get("unknown") or ())
        if unknown != self._unknown:
            self._unknown, self._covering = self._unknown | unknown, {}
        with self._lock:
            for item in answer["grants"]:
                name, window = str(item["budget"]), str(item["window_start"])
                grant = session.grants.get(name)
                if grant is None or grant.window != window:  # a new budget window: a new grant
                    grant = session.grants[name] = Grant(name, window)
                grant.granted = float(item["granted_usd"])
                grant.spend_usd, grant.limit_usd = float(item["spend_usd"]), float(item["limit_usd"])
                grant.resets_at = datetime.fromisoformat(str(item["resets_at"]).replace("Z", "+00:00"))
            session.ttl = ttl
            session.expires = sent + ttl - min(2.0, ttl / 5)  # lapses here before it does at the daemon
        if self._retry_at:
            log.warning("watcher reached the daemon for allowances again")
        self._retry_at = 0.0

    def _failed(self, exc: Exception, unsupported: bool = False) -> bool:
        if unsupported:
            self._unsupported = True
            log.warning("the daemon lends no allowances (%s); only its kill switches are enforced", exc)
            return False
        if not self._retry_at:
            mode = "refusing calls" if self._fail_closed else "letting calls through"
            log.warning("watcher cannot get an allowance from the daemon (%s); %s", type(exc).__name__, mode)
        self._retry_at = time.monotonic() + _RETRY_S
        return False

    # --- the background thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._renew_every())
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._wanted():
                with self._asking:
                    self._request()

    def _renew_every(self) -> float:
        """Sleeps until half the allowance's life is left (a second while there is none), unless woken."""
        session = self._session
        left = session.expires - time.monotonic() if session else 0.0
        return max(0.05, left - session.ttl / 2) if session and left > 0 else 1.0

    def _wanted(self) -> bool:
        """Whether to ask now: the allowance is in use (in the last TTL, in flight, or held for a batch) and a
        grant ran low or half its life is gone."""
        session = self._session
        now = time.monotonic()
        if session is None or not session.grants or now < self._retry_at or session.expires <= now:
            return False
        busy = session.inflight > 0 or session.held > 0 or now - session.last_used < session.ttl
        if not busy:
            return False
        low = any(g.granted - g.used < self._low_water(g) for g in session.grants.values())
        return low or session.expires - now < session.ttl / 2

    def give_back(self) -> None:
        """Tells the daemon what this process spent, so the rest of its allowance returns now (at exit)."""
        session = self._session
        if session is None or not session.grants or self._unsupported:
            return
        with self._asking:
            self._request(final=True)

    def stop(self) -> None:
        self._board.allowances_decide = False
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def restart_in_child(self) -> None:
        """In a forked child: its own allowance (asked for anew) and thread; the parent's grants stay the parent's."""
        if self._stop.is_set():
            return
        self._lock, self._asking = threading.Lock(), threading.Lock()
        self._session = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-allowances", daemon=True)
        self._thread.start()
