"""The daemon's work, apart from HTTP: ingest spans durably, keep the books, answer the kill-switch API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.ledger import Entry, Ledger, Scope, to_micros
from watcher.pricing import PriceTable
from watcher.reporting import report_window, row_json

from ._books import Books, BudgetView, Hold
from ._decode import SpanRecord
from ._lending import Lender
from ._metrics import Counters, SpendCounters
from ._mismatch import MismatchLog, cost_checker
from ._normalize import Normalized, normalize
from ._state import EventRecord

__all__ = ["MAX_SPAN_AHEAD", "Daemon", "IngestResult"]

MAX_SPAN_AHEAD = timedelta(hours=1)
"""How far ahead of the daemon's clock a span may end: room for the sending host's clock skew."""
_MICROSECOND = timedelta(microseconds=1)

_REPORT_PARAMETERS = frozenset({"since", "until", "by"})


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one export request did: spans stored, duplicates, and rejected spans (for partial success)."""

    stored: int
    duplicates: int
    rejected: int
    message: str = ""


def _scope_json(scope: Scope) -> dict[str, str | None]:
    return {name: getattr(scope, name) for name in ("request_type", "model", "service", "environment")}


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


class Daemon:
    """Thread-safe: the HTTP server calls `ingest` from several threads at once.

    `ingest` returns only after the entries are committed to the ledger (the server answers
    200 only then, so an exporter retries whatever was not stored), and after the budgets were
    evaluated against them (so a threshold is noticed within the batch that crosses it).
    Storage errors propagate: the server turns them into 503 and the exporter retries.
    """

    def __init__(
        self,
        ledger: Ledger,
        prices: PriceTable,
        books: Books,
        *,
        default_request_type: str,
        max_span_age: timedelta = timedelta(days=30),
        cost_mismatch_factor: float = 2.0,
        lender: Lender | None = None,
    ) -> None:
        self.ledger, self.prices, self.books, self.lender = ledger, prices, books, lender
        self.default_request_type = default_request_type
        self.counters = Counters()
        self.spend = SpendCounters()
        self._mismatched = cost_checker(prices, cost_mismatch_factor)
        self._warn = MismatchLog(cost_mismatch_factor)
        self._behind_us, self._ahead_us = max_span_age // _MICROSECOND, MAX_SPAN_AHEAD // _MICROSECOND

    def ingest(
        self,
        spans: Sequence[SpanRecord | Entry],
        holders: Mapping[str, str] | None = None,
        *,
        skipped: Normalized | None = None,
    ) -> IngestResult:
        """Stores `spans`; `holders` maps the keys of entries the decoder made to the allowance each names.

        `skipped` holds the records a decoder itself ignored or rejected (log records that are
        not API calls, or cannot be read): counted and reported as if normalisation had found them.
        """
        now = to_micros(self.books.now())  # the injected clock
        window = (now - self._behind_us, now + self._ahead_us)
        normalized = normalize(spans, self.prices, default_request_type=self.default_request_type, window=window)
        received = len(spans)
        if skipped is not None:
            normalized.add_skipped(skipped)
            received += skipped.ignored + skipped.rejected
        with self.books.lock:  # no budget resync may fall between the commit and the running totals
            appended = self.ledger.append(normalized.entries)
            self.books.add(appended.new_entries, appended.replaced)
            if self.lender is not None and (holders or normalized.holders):
                credited = _credited(appended.new_entries, appended.replaced)
                self.lender.credit(credited, {**(holders or {}), **normalized.holders})
        self._count(received, len(normalized.entries), appended.inserted + appended.upgraded, normalized)
        self.spend.add(appended.new_entries, appended.replaced)
        if appended.new_entries or appended.replaced:
            self._check_costs(appended.new_entries, appended.replaced)
            self.books.evaluate()
        message = "; ".join(normalized.rejected_reasons[:3])
        return IngestResult(appended.inserted + appended.upgraded, appended.duplicates, normalized.rejected, message)

    def _check_costs(self, entries: Sequence[Entry], replaced: Sequence[tuple[Entry, Entry]]) -> None:
        """Counts and logs the stored entries whose claimed cost is far off their tokens' price (kept as claimed)."""
        mismatches = self._mismatched([*entries, *(new for _, new in replaced)])
        if mismatches:
            self.spend.count_mismatches(entry for entry, _, _ in mismatches)
            self._warn(mismatches)

    def _count(self, received: int, entries: int, stored: int, normalized: Any) -> None:
        with self.counters.lock:
            self.counters.received += received
            self.counters.stored += stored
            self.counters.duplicates += entries - stored
            self.counters.rejected += normalized.rejected
            for kind, count in normalized.rejected_by.items():
                self.counters.rejected_by[kind] = self.counters.rejected_by.get(kind, 0) + count
            self.counters.ignored += normalized.ignored

    def killswitch(self, now: datetime) -> dict[str, Any]:
        """The `/v1/killswitch` document (docs/api.md), with the `revision` its switches are as of."""
        with self.books.lock:  # the revision and the views it marks, read together
            revision = self.books.revision.value
            engaged = [self._switch_json(view) for view in self.books.views.values() if view.engaged]
        budgets = [{"budget": b.name, "scope": _scope_json(b.scope)} for b in self.books.budgets.values()]
        return {
            "version": 1,
            "revision": revision,
            "generated_at": _iso(now),
            "engaged": engaged,
            "budgets": budgets,
            "allowances": self.lender is not None,
        }

    def await_switches(self, seen: str | None, wait_s: float) -> None:
        """Blocks while the kill switches' revision is still `seen`, for at most `wait_s` (the long poll).

        Returns at once for any other value (a stale one, or one from before a restart) and when
        the daemon stops. Holds the calling thread, not the books: evaluation goes on meanwhile.
        """
        self.books.revision.wait(seen, wait_s)

    def set_switch(self, name: str, action: str, until: datetime | None = None) -> dict[str, Any]:
        """The answer to `POST /v1/killswitch/NAME/engage|release` (docs/api.md); raises as `Books.set_switch`."""
        view = self.books.set_switch(name, action, until=until)
        return {"budget": name, "engaged": view.engaged, "until": _iso(view.release.until) if view.release else None}

    def budgets(self, now: datetime) -> dict[str, Any]:
        """The `/v1/budgets` document (docs/api.md): every budget's period, spend, limit, state, reset, the
        hand release in force, and this period's events with each alert target's delivery state."""
        return {
            "version": 1,
            "generated_at": _iso(now),
            "budgets": [self._budget_json(v, now) for v in self.books.views.values()],
        }

    def report(self, now: datetime, query: Mapping[str, str]) -> dict[str, Any]:
        """The `/v1/report` document: the ledger's spend over a window, by one dimension (docs/api.md).

        `query` holds `since` (default `7d`), `until` (default `now`) and `by` (default `request_type`),
        read as `watcher report` reads its options, relative to `now`: the daemon's clock, which is
        also the clock its entries were judged by. Raises ValueError, saying the fix, for an unknown
        parameter, a bad value or an empty window. Blocks appends while the ledger is read.
        """
        unknown = sorted(set(query) - _REPORT_PARAMETERS)
        if unknown:
            raise ValueError(f"unknown query parameter {unknown[0]!r}: use {', '.join(sorted(_REPORT_PARAMETERS))}")
        by = query.get("by", "request_type")
        since, until = report_window(query.get("since", "7d"), query.get("until"), now)
        rows = self.ledger.breakdown(since, until, by)
        return {
            "version": 1,
            "generated_at": _iso(now),
            "since": _iso(since),
            "until": _iso(until),
            "by": by,
            "rows": [row_json(row) for row in rows],
        }

    def _lent_json(self, name: str) -> dict[str, Any]:
        """What `name` has lent to running processes, for `/v1/budgets` (nothing from a daemon that lends none)."""
        if self.lender is None:
            return {}
        usd, holders = self.lender.lent(name)
        return {"lent_usd": float(usd), "allowance_holders": holders}

    @staticmethod
    def _switch_json(view: BudgetView) -> dict[str, Any]:
        return {
            "budget": view.budget.name,
            "scope": _scope_json(view.budget.scope),
            "since": _iso(view.engaged_since),
            "resets_at": _iso(view.resets_at),
            "spend_usd": float(view.state.spend_usd),
            "limit_usd": float(view.budget.limit_usd),
            "reason": view.reason,
        }

    def _budget_json(self, view: BudgetView, now: datetime) -> dict[str, Any]:
        state, hold = view.state, view.release
        events = self.books.events(view.budget.name)
        level: str = "killed" if view.engaged else "released" if hold else state.level
        if level in ("ok", "alert", "kill") and any(record.event.kind == "exhausted" for record in events):
            level = "exhausted"
        return {
            "name": view.budget.name,
            "scope": _scope_json(view.budget.scope),
            "period": view.budget.period,
            "timezone": str(view.budget.timezone),
            "window_start": _iso(state.window[0]),
            "resets_at": _iso(view.resets_at),
            "spend_usd": float(state.spend_usd),
            "limit_usd": float(view.budget.limit_usd),
            "used_ratio": float(state.used_ratio),
            "projected_usd": float(state.projected_usd(now)),
            "alert_at": float(view.budget.alert_at),
            "kill_at": float(view.budget.kill_at),
            "state": level,
            **self._lent_json(view.budget.name),
            "release": _hold_json(hold) if hold else None,
            "events": [_event_json(record) for record in events],
        }


def _credited(entries: Sequence[Entry], replaced: Sequence[tuple[Entry, Entry]]) -> list[Entry]:
    """What stored spend to credit to allowances: new entries, and what an upgrade added to a stored one."""
    more = [new._replace(cost_nanos=new.cost_nanos - old.cost_nanos) for old, new in replaced]
    return [*entries, *(entry for entry in more if entry.cost_nanos > 0)]


def _hold_json(hold: Hold) -> dict[str, Any]:
    return {"since": _iso(hold.since), "until": _iso(hold.until), "ceiling_usd": float(hold.ceiling_usd)}


def _event_json(record: EventRecord) -> dict[str, Any]:
    deliveries = [{"target": d.target, "state": d.state, "attempts": d.attempts} for d in record.deliveries]
    return {"kind": record.event.kind, "at": _iso(record.event.at), "deliveries": deliveries}
