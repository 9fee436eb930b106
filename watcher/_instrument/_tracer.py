"""Which OpenTelemetry pipeline the hook's spans go to: the application's, or a private one to the daemon."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from .._version import __version__
from ..settings import Settings
from ._delivery import Delivery
from ._spool import Spool, endpoint_dir

if TYPE_CHECKING:
    from ._otlp import FastOTLPSpanExporter

__all__ = ["TracerChoice"]

log = logging.getLogger("watcher")
SCOPE = "watcher"
_OTEL_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _app_has_provider() -> bool:
    """Whether the application set a global TracerProvider (the API's default is a proxy)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _private_provider(settings: Settings) -> tuple[TracerProvider, Delivery | None]:
    """A provider that exports to the watcher daemon, or to the endpoint the standard OTLP variables name,
    with the spool that keeps what that endpoint cannot take (None when off).

    It is not made global, so the application's own OpenTelemetry setup is untouched, and the
    SDK's own call spans stay off unless the application turns them on. `instrument()` flushes
    it at exit, after recording any stream still open. It samples every span, whatever the
    parent's flags or OTEL_TRACES_SAMPLER say: a cost span is an accounting record, and one
    sampled away is spend the daemon never books.
    """
    from ._otlp import FastOTLPSpanExporter

    if any(os.environ.get(var) for var in _OTEL_ENDPOINT_VARS):
        exporter = FastOTLPSpanExporter()
    else:
        token = settings.token.get_secret_value() if settings.token else None
        headers = {"authorization": f"Bearer {token}"} if token else None
        exporter = FastOTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=headers)
    delivery = _spool(exporter, settings)
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create(), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=settings.export_delay_ms))
    return provider, delivery


def _spool(exporter: FastOTLPSpanExporter, settings: Settings) -> Delivery | None:
    """The exporter's Delivery through a spool, started; None when WATCHER_SPOOL_DIR is empty or this
    exporter version cannot send a request once (then the exporter's own retries apply, as before)."""
    if settings.spool_dir is None:
        return None
    if not exporter.can_post_once:
        log.warning("watcher's spool needs a newer opentelemetry-exporter-otlp-proto-http; spans are not spooled")
        return None
    spool = Spool(endpoint_dir(settings.spool_dir, exporter.endpoint), int(settings.spool_max_mb * 1024 * 1024))
    delivery = Delivery(exporter.post_once, spool).start()
    exporter.spool_through(delivery)
    return delivery


class TracerChoice:
    """Gives the tracer for cost spans, settled once, at the first span.

    An explicit provider wins. Otherwise, an application that sets its global provider after
    `import watcher.auto` (the usual order) still gets the spans in its own pipeline: the
    choice is made when the first span is recorded, and the private provider, built in
    advance so that no import happens on a call, is shut down unused when it is not needed.
    """

    def __init__(self, settings: Settings, provider: trace.TracerProvider | None = None) -> None:
        self._private: TracerProvider | None = None
        self._delivery: Delivery | None = None
        self._chosen: trace.TracerProvider | None = provider
        self._lock = threading.Lock()
        if provider is not None:
            self.get: Callable[[], trace.Tracer] = self._fixed(provider.get_tracer(SCOPE, __version__))
            return
        if not _app_has_provider():
            self._private, self._delivery = _private_provider(settings)
        self.get = self._first

    @staticmethod
    def _fixed(tracer: trace.Tracer) -> Callable[[], trace.Tracer]:
        return lambda: tracer

    def _first(self) -> trace.Tracer:
        with self._lock:
            if self.get != self._first:  # another thread settled it while this one waited
                return self.get()
            if self._private is None or _app_has_provider():
                self.shutdown()
                self._chosen = trace.get_tracer_provider()
            else:
                self._chosen = self._private
            tracer = self._chosen.get_tracer(SCOPE, __version__)
            self.get = self._fixed(tracer)
            return tracer

    def force_flush(self, timeout_s: float) -> bool:
        """Exports what the chosen provider holds; True when done in time (or nothing to do)."""
        flush = getattr(self._chosen, "force_flush", None)
        return bool(flush(int(timeout_s * 1000))) if flush is not None else True

    def shutdown(self) -> None:
        """Flushes and stops the private provider, if watcher made one, then its spool's replayer (what is
        still kept stays for the next process); the application's provider is left alone."""
        if self._private is not None:
            self._private.shutdown()
            self._private = None
        if self._delivery is not None:
            self._delivery.stop()
            self._delivery = None
