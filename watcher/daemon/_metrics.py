"""Prometheus metrics: spend counters kept at ingest, budget and alert gauges read from state at scrape time."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, SupportsFloat

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher.ledger import NANOS_PER_USD, Entry

from ._normalize import REJECTIONS

if TYPE_CHECKING:
    from ._alerts import Dispatcher
    from ._books import Books
    from ._lending import Lender

__all__ = ["Counters", "SpendCounters", "WatcherCollector"]

OTHER = "other"
_TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
Labels = tuple[str, str, str]


@dataclass
class Counters:
    """Ingestion totals since start, for the metrics."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    hook_dropped: int = 0  # spans hooks reported dropping (X-Watcher-Dropped-Spans)
    rejected_by: dict[str, int] = field(default_factory=dict)  # per reason, as `Normalized.rejected_by`
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# The per-label sums SpendCounters keeps, in order: nano-dollar amounts, then counts.
_SUMS = (
    "cost",
    "batch_cost",
    "batch_savings",
    "cache_read_savings",
    "cache_write_premium",
    "estimated_cost",
    "requests",
    *(f"tokens_{kind}" for kind in _TOKEN_TYPES),
)
_NANOS = 6  # the first six sums are nano-dollars
_USD_FAMILIES = (  # (sum index, metric name, help)
    (0, "watcher_cost_usd", "Spend on Claude calls, USD."),
    (1, "watcher_batch_cost_usd", "Spend through the Message Batches API, USD."),
    (2, "watcher_batch_savings_usd", "What the batch discount saved: standard-rate cost minus batch cost, USD."),
    (3, "watcher_cache_read_savings_usd", "What cache reads saved against the uncached input rate, USD."),
    (4, "watcher_cache_write_premium_usd", "What cache writes cost above the uncached input rate, USD."),
    (5, "watcher_estimated_cost_usd", "Spend on models priced by estimate (not in the price table), USD."),
)

_BUDGET_GAUGES = (  # (name, help), in the order _budget_metrics gives the values
    ("watcher_budget_limit_usd", "Budget limit per period, USD."),
    ("watcher_budget_spend_usd", "Spend in the current period, USD."),
    ("watcher_budget_used_ratio", "Spend / limit in the current period."),
    ("watcher_budget_projected_usd", "Projected spend at the end of the current period at its rate so far, USD."),
    ("watcher_budget_alert_ratio", "Used ratio at which the budget alerts."),
    ("watcher_budget_kill_ratio", "Used ratio at which the budget's kill switch engages."),
    ("watcher_budget_period_end_timestamp_seconds", "When the budget's current period ends, Unix seconds."),
    ("watcher_killswitch_engaged", "1 while the budget's kill switch is engaged."),
)


class _Folded:
    """One label's values: the first `limit` distinct ones of at most `max_length` characters are kept, the rest
    read as `other`. Not thread-safe (SpendCounters holds its lock)."""

    def __init__(self, limit: int, max_length: int) -> None:
        self._limit, self._max_length = limit, max_length
        self._kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._kept:
            return value
        if len(self._kept) < self._limit and len(value) <= self._max_length:
            self._kept.add(value)
            return value
        return OTHER


class SpendCounters:
    """Spend, savings, tokens and requests per (service, request_type, model) since the daemon started.

    Updated from the entries a batch actually stored (never from duplicates), summed exactly in
    nano-dollars. Every label keeps its first `max_values` distinct values of at most
    `max_length` characters, and at most `max_series` label sets are kept; any other value (or
    set) folds into `other`, so no label can explode Prometheus or the scrape, however many
    models or services the spans name. Thread-safe.
    """

    def __init__(self, max_values: int = 50, max_length: int = 128, max_series: int = 2000) -> None:
        self._service, self._request_type, self._model = (_Folded(max_values, max_length) for _ in range(3))
        self._max_series = max_series
        self._lock = threading.Lock()
        self.sums: dict[Labels, list[int]] = {}
        self.mismatches: dict[str, int] = {}  # per (folded) service: entries whose claimed cost is far off

    def _sums(self, entry: Entry) -> list[int]:
        """The running sums of the entry's (folded) label set, new ones made while under `max_series`."""
        labels = (self._service(entry.service), self._request_type(entry.request_type), self._model(entry.model))
        sums = self.sums.get(labels)
        if sums is None:
            if len(self.sums) >= self._max_series:
                labels = (OTHER, OTHER, OTHER)
                sums = self.sums.get(labels)
            if sums is None:
                sums = self.sums[labels] = [0] * len(_SUMS)
        return sums

    def add(self, entries: Iterable[Entry], replaced: Iterable[tuple[Entry, Entry]] = ()) -> None:
        """Counts newly stored entries, and the upgrades `(old, new)` of entries counted before.

        An upgrade adds the difference new minus old, of every sum, to the label set that counted
        the old entry (requests do not change: it is the same response). A negative difference is
        not subtracted: a Prometheus counter must never go down (`rate()` would read it as a restart
        and count the whole series again), so the counters keep the higher figure; the ledger and
        the budgets have the exact one.
        """
        with self._lock:
            for e in entries:
                _accumulate(self._sums(e), e, 1)
            for old, new in replaced:
                difference = [0] * len(_SUMS)
                _accumulate(difference, new, 1)
                _accumulate(difference, old, -1)
                sums = self._sums(old)
                for index, change in enumerate(difference):
                    if change > 0:
                        sums[index] += change

    def count_mismatches(self, entries: Iterable[Entry]) -> None:
        """Counts entries whose claimed cost disagrees with the daemon's price table, per service."""
        with self._lock:
            for e in entries:
                service = self._service(e.service)
                self.mismatches[service] = self.mismatches.get(service, 0) + 1

    def snapshot(self) -> list[tuple[Labels, tuple[int, ...]]]:
        """Every label set with its sums (in `_SUMS` order), copied under the lock."""
        with self._lock:
            return [(labels, tuple(sums)) for labels, sums in self.sums.items()]

    def mismatch_snapshot(self) -> list[tuple[str, int]]:
        """(service, count) of cost mismatches, copied under the lock."""
        with self._lock:
            return list(self.mismatches.items())


def _accumulate(sums: list[int], e: Entry, sign: int) -> None:
    """Adds `sign` times the entry's part of each sum (in `_SUMS` order) to `sums`."""
    cost = sign * e.cost_nanos
    sums[0] += cost
    if e.batch:
        sums[1] += cost
        sums[2] += sign * e.batch_savings_nanos
    sums[3] += sign * e.cache_read_savings_nanos
    sums[4] += sign * e.cache_write_premium_nanos
    if e.estimated:
        sums[5] += cost
    sums[6] += sign
    sums[7] += sign * e.input_tokens
    sums[8] += sign * e.output_tokens
    sums[9] += sign * e.cache_read_tokens
    sums[10] += sign * (e.cache_write_5m_tokens + e.cache_write_1h_tokens)


class WatcherCollector(Collector):
    """Builds every metric family at scrape time from the daemon's live state.

    Every counter counts from the daemon's start, so each series carries `started` (Unix seconds)
    as its created timestamp (exposed in OpenMetrics as a `_created` sample).
    """

    def __init__(
        self,
        spend: SpendCounters,
        counters: Counters,
        books: Books,
        dispatcher: Dispatcher,
        *,
        started: float,
        lender: Lender | None = None,
    ) -> None:
        self._spend, self._counters, self._books, self._dispatcher = spend, counters, books, dispatcher
        self._started, self._lender = started, lender

    def collect(self) -> Iterator[Metric]:
        yield from self._spend_metrics()
        yield from self._budget_metrics()
        yield from self._ingest_metrics()

    def _spend_metrics(self) -> Iterator[Metric]:
        names = ["service", "request_type", "model"]
        usd = [CounterMetricFamily(name, doc, labels=names) for _, name, doc in _USD_FAMILIES]
        requests = CounterMetricFamily("watcher_requests", "Billed Claude responses.", labels=names)
        tokens = CounterMetricFamily("watcher_tokens", "Tokens billed, by type.", labels=[*names, "type"])
        for labels, sums in self._spend.snapshot():
            values = list(labels)
            for family, (index, _, _) in zip(usd, _USD_FAMILIES, strict=True):
                family.add_metric(values, sums[index] / NANOS_PER_USD, created=self._started)
            requests.add_metric(values, sums[6], created=self._started)
            for kind, count in zip(_TOKEN_TYPES, sums[7:], strict=True):
                tokens.add_metric([*values, kind], count, created=self._started)
        yield from (*usd, requests, tokens)
        doc = "Stored spans whose claimed cost is more than WATCHER_COST_MISMATCH_FACTOR off their tokens' price."
        mismatch = CounterMetricFamily("watcher_cost_mismatch", doc, labels=["service"])
        for service, count in self._spend.mismatch_snapshot():
            mismatch.add_metric([service], count, created=self._started)
        yield mismatch

    def _budget_metrics(self) -> Iterator[Metric]:
        families = [GaugeMetricFamily(name, doc, labels=["budget"]) for name, doc in _BUDGET_GAUGES]
        now = self._books.now()
        for name, view in list(self._books.views.items()):
            state, budget = view.state, view.budget
            values: tuple[SupportsFloat, ...] = (
                budget.limit_usd,
                state.spend_usd,
                state.used_ratio,
                state.projected_usd(now),
                budget.alert_at,
                budget.kill_at,
                view.resets_at.timestamp(),
                view.engaged,
            )
            for family, value in zip(families, values, strict=True):
                family.add_metric([name], float(value))
        yield from families
        yield from self._allowance_metrics()
        yield from self._alert_metrics()

    def _allowance_metrics(self) -> Iterator[Metric]:
        """What each budget has lent to running processes, to how many, and the asks it refused
        (docs/enforcement.md)."""
        if self._lender is None:
            return
        lent = GaugeMetricFamily(
            "watcher_budget_lent_usd", "Allowances live processes still hold, USD.", labels=["budget"]
        )
        holders = GaugeMetricFamily(
            "watcher_budget_allowance_holders", "Processes holding a live allowance of the budget.", labels=["budget"]
        )
        refused = CounterMetricFamily(
            "watcher_allowance_refusals",
            "Calls refused because what was left before the budget's line could not cover their worst case.",
            labels=["budget"],
        )
        for name in self._books.budgets:
            usd, count = self._lender.lent(name)
            lent.add_metric([name], float(usd))
            holders.add_metric([name], count)
            refused.add_metric([name], self._lender.refused.get(name, 0), created=self._started)
        yield from (lent, holders, refused)

    def _alert_metrics(self) -> Iterator[Metric]:
        """Per target (redacted, from the configuration: bounded); `state` is `pending` for a failed try that
        will be retried, `failed` for the last one allowed."""
        sent = CounterMetricFamily("watcher_alerts_sent", "Alert messages delivered, by target.", labels=["target"])
        failures = CounterMetricFamily(
            "watcher_alert_failures",
            "Alert delivery attempts that failed, by target; state=failed when it was the last attempt.",
            labels=["target", "state"],
        )
        delivered, failed = self._dispatcher.counts()
        for target in self._dispatcher.targets:  # every series from the start, at 0: rules see it before it moves
            sent.add_metric([target], delivered.get(target, 0), created=self._started)
            for state in ("pending", "failed"):
                failures.add_metric([target, state], failed.get((target, state), 0), created=self._started)
        yield from (sent, failures)

    def _ingest_metrics(self) -> Iterator[Metric]:
        c = self._counters
        with c.lock:
            values: Sequence[tuple[str, str, float]] = (
                ("watcher_spans_received", "Spans received over OTLP.", c.received),
                ("watcher_spans_stored", "Spans stored as ledger entries.", c.stored),
                (
                    "watcher_spans_duplicate",
                    "Spans already in the ledger (exporter retries, two instrumentations).",
                    c.duplicates,
                ),
                (
                    "watcher_hook_dropped_spans",
                    "Spans hooks reported dropping before export (their disk spool was full).",
                    c.hook_dropped,
                ),
            )
            rejected = [(reason, c.rejected_by.get(reason, 0)) for reason in REJECTIONS]
        for name, doc, value in values:
            yield CounterMetricFamily(name, doc, value=value, created=self._started)
        doc = "Spans rejected (reported to the exporter as partial success), by reason."
        family = CounterMetricFamily("watcher_spans_rejected", doc, labels=["reason"])
        for reason, count in rejected:
            family.add_metric([reason], count, created=self._started)
        yield family
