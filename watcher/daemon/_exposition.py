"""The `/metrics` answer: one registry built at start, written in the format and encoding the scraper asks for."""

from __future__ import annotations

import copy
import gzip
from collections.abc import Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Exposition", "Scrape", "metrics_registry"]

OPENMETRICS = "application/openmetrics-text"


class Scrape(NamedTuple):
    """One `/metrics` answer: the body, its content type, and the other headers to send with it."""

    payload: bytes
    content_type: str
    headers: dict[str, str]


def metrics_registry(collector: Collector, *, proc: str = "/proc") -> CollectorRegistry:
    """A registry holding `collector`, the process collector (`process_*`, read from `proc`) and the platform
    collector (`python_info`); built once, when the daemon is.

    Not auto-described: registering does not collect, so building reads none of the daemon's state.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(proc=proc, registry=registry)
    PlatformCollector(registry=registry)
    return registry


class Exposition:
    """Writes `registry` for one scrape; thread-safe (collectors build their families per call).

    The format follows the request's `Accept` as prometheus_client negotiates it (`choose_encoder`):
    OpenMetrics 1.0.0 to a scraper that asks for it, else the text format 0.0.4. Counters' created
    timestamps go out as `_created` samples in OpenMetrics only: the text format has no place for
    them, and prometheus_client would write them there as one extra gauge series per counter
    series, so the text view leaves them out. The body is gzipped when `Accept-Encoding` allows.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._text = _WithoutCreated(registry)

    def __call__(self, accept: str, accept_encoding: str) -> Scrape:
        encoder, content_type = choose_encoder(accept)
        payload = encoder(self._registry if content_type.startswith(OPENMETRICS) else self._text)
        headers = {"vary": "Accept, Accept-Encoding"}
        if gzip_accepted(accept_encoding):
            payload = gzip.compress(payload)
            headers["content-encoding"] = "gzip"
        return Scrape(payload, content_type, headers)


class _WithoutCreated(Collector):
    """The families of `registry` without their `_created` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            if any(s.name == created for s in metric.samples):
                metric = copy.copy(metric)
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric
