"""Prometheus metrics: spend counters kept at ingest, budget and alert gauges read from state at scrape time."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher.ledger import Entry

if TYPE_CHECKING:
    from ._alerts import Dispatcher
    from ._books import Books
    from ._core import Counters

__all__ = ["SpendCounters", "WatcherCollector", "render"]

OTHER = "other"
_TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
Labels = tuple[str, str, str]


class SpendCounters:
    """Cost, tokens and requests per (service, request_type, model) since the daemon started.

    Updated from the entries a batch actually stored (never from duplicates). Request types
    beyond `max_request_types` distinct values fold into `other`, so a label can never explode
    Prometheus. Thread-safe.
    """

    def __init__(self, max_request_types: int = 50) -> None:
        self._max = max_request_types
        self._types: set[str] = set()
        self._lock = threading.Lock()
        self.cost: defaultdict[Labels, float] = defaultdict(float)
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)

    def _request_type(self, value: str) -> str:
        if value in self._types:
            return value
        if len(self._types) < self._max:
            self._types.add(value)
            return value
        return OTHER

    def add(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            for entry in entries:
                labels = (entry.service, self._request_type(entry.request_type), entry.model)
                self.cost[labels] += float(entry.cost_usd)
                self.requests[labels] += 1
                counts = (
                    entry.input_tokens,
                    entry.output_tokens,
                    entry.cache_read_tokens,
                    entry.cache_write_5m_tokens + entry.cache_write_1h_tokens,
                )
                for kind, count in zip(_TOKEN_TYPES, counts, strict=True):
                    self.tokens[(*labels, kind)] += count


class WatcherCollector(Collector):
    """Builds every metric family at scrape time from the daemon's live state."""

    def __init__(self, spend: SpendCounters, counters: Counters, books: Books, dispatcher: Dispatcher) -> None:
        self._spend, self._counters, self._books, self._dispatcher = spend, counters, books, dispatcher

    def collect(self) -> Iterator[Metric]:
        yield from self._spend_metrics()
        yield from self._budget_metrics()
        yield from self._ingest_metrics()

    def _spend_metrics(self) -> Iterator[Metric]:
        names = ["service", "request_type", "model"]
        cost = CounterMetricFamily("watcher_cost_usd", "Spend on Claude calls, USD.", labels=names)
        requests = CounterMetricFamily("watcher_requests", "Billed Claude responses.", labels=names)
        tokens = CounterMetricFamily("watcher_tokens", "Tokens billed, by type.", labels=[*names, "type"])
        with self._spend._lock:
            for labels, value in self._spend.cost.items():
                cost.add_metric(list(labels), value)
            for labels, count in self._spend.requests.items():
                requests.add_metric(list(labels), count)
            for token_labels, count in self._spend.tokens.items():
                tokens.add_metric(list(token_labels), count)
        yield from (cost, requests, tokens)

    def _budget_metrics(self) -> Iterator[Metric]:
        families = {
            "limit": GaugeMetricFamily("watcher_budget_limit_usd", "Budget limit per period, USD.", labels=["budget"]),
            "spend": GaugeMetricFamily(
                "watcher_budget_spend_usd", "Spend in the current period, USD.", labels=["budget"]
            ),
            "ratio": GaugeMetricFamily(
                "watcher_budget_used_ratio", "Spend / limit in the current period.", labels=["budget"]
            ),
            "engaged": GaugeMetricFamily(
                "watcher_killswitch_engaged", "1 while the budget's kill switch is engaged.", labels=["budget"]
            ),
        }
        for name, view in list(self._books.views.items()):
            families["limit"].add_metric([name], float(view.budget.limit_usd))
            families["spend"].add_metric([name], float(view.state.spend_usd))
            families["ratio"].add_metric([name], float(view.state.used_ratio))
            families["engaged"].add_metric([name], 1.0 if view.engaged else 0.0)
        yield from families.values()
        yield CounterMetricFamily("watcher_alerts_sent", "Alerts delivered.", value=self._dispatcher.sent)
        yield CounterMetricFamily(
            "watcher_alert_failures", "Alert deliveries that failed (retried).", value=self._dispatcher.failures
        )

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
                ("watcher_spans_rejected", "Spans with malformed usage, reported as partial success.", c.rejected),
                ("watcher_estimated_cost_usd", "Spend on models priced by estimate, USD.", c.estimated_usd),
            )
        for name, doc, value in values:
            yield CounterMetricFamily(name, doc, value=value)


def render(collector: WatcherCollector) -> bytes:
    """The Prometheus text exposition of `collector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
